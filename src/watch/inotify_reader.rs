//! inotify asked for the events that mean "the code changed", and for nothing else.
//!
//! notify 8.2's inotify watcher always subscribes to IN_OPEN and IN_MODIFY, and offers no way
//! to drop them. Both are noise for a reloader and cost it time: a save (open, truncate, write,
//! close) wakes the reader three times, each wake sets the writer back, and the save is only
//! known to be whole at the close, which arrived last (measured with a bare reader on the
//! benchmark VM: write → IN_CLOSE_WRITE read in 0.88–1.01 ms with OPEN|MODIFY|CLOSE_WRITE,
//! 0.65–0.78 ms with CLOSE_WRITE alone). A log file written inside the tree, or any reader
//! opening the code, woke hupwatch for nothing. Each of notify's `watch` calls is also a round
//! trip to its thread; here `inotify_add_watch` is called directly, on the walking thread.
//!
//! A change is therefore a file closed after writing, created, deleted, renamed, or given new
//! attributes (`touch app.py` reloads). A writer that never closes its file (a log) is not a
//! change. Events are translated into notify's `Event` so `scope` classifies both this
//! and notify's poll watcher.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use notify::event::{
    AccessKind, AccessMode, CreateKind, EventKind, MetadataKind, ModifyKind, RemoveKind, RenameMode,
};
use notify::{Config, Event, EventHandler, RecursiveMode, Watcher, WatcherKind};

/// IN_EXCL_UNLINK: files already unlinked (Gunicorn's worker heartbeat files, editors'
/// temporaries) send nothing.
const MASK: WatchMask = WatchMask::CLOSE_WRITE
    .union(WatchMask::ATTRIB)
    .union(WatchMask::CREATE)
    .union(WatchMask::DELETE)
    .union(WatchMask::MOVED_FROM)
    .union(WatchMask::MOVED_TO)
    .union(WatchMask::DELETE_SELF)
    .union(WatchMask::MOVE_SELF)
    .union(WatchMask::EXCL_UNLINK);

/// Which path each watch descriptor stands for, both ways (one inode watched through two
/// paths shares a descriptor; the last path added names it, as in notify).
#[derive(Default)]
struct Paths {
    by_wd: HashMap<WatchDescriptor, PathBuf>,
    by_path: HashMap<PathBuf, WatchDescriptor>,
}

/// Non-recursive watches only: `watch::TreeWatcher` walks the tree itself.
pub struct InotifyWatcher {
    watches: Watches,
    paths: Arc<Mutex<Paths>>,
    /// Writing a byte here ends the reader thread.
    stop: io::PipeWriter,
    reader: Option<JoinHandle<()>>,
}

impl Watcher for InotifyWatcher {
    fn new<F: EventHandler>(handler: F, _config: Config) -> notify::Result<Self> {
        let inotify = Inotify::init().map_err(notify::Error::io)?;
        let (stop_rx, stop) = io::pipe().map_err(notify::Error::io)?;
        let paths = Arc::new(Mutex::new(Paths::default()));
        let watches = inotify.watches();
        let shared = Arc::clone(&paths);
        let reader = std::thread::Builder::new()
            .name("inotify".into())
            .spawn(move || read_events(inotify, stop_rx, &shared, handler))
            .map_err(notify::Error::io)?;
        Ok(Self {
            watches,
            paths,
            stop,
            reader: Some(reader),
        })
    }

    fn watch(&mut self, path: &Path, _mode: RecursiveMode) -> notify::Result<()> {
        let wd = self
            .watches
            .add(path, MASK)
            .map_err(|e| notify::Error::io(e).add_path(path.to_path_buf()))?;
        let mut paths = lock(&self.paths);
        paths.by_wd.insert(wd.clone(), path.to_path_buf());
        paths.by_path.insert(path.to_path_buf(), wd);
        Ok(())
    }

    fn unwatch(&mut self, path: &Path) -> notify::Result<()> {
        let mut paths = lock(&self.paths);
        let wd = paths
            .by_path
            .remove(path)
            .ok_or_else(|| notify::Error::watch_not_found().add_path(path.to_path_buf()))?;
        if paths.by_wd.get(&wd).is_some_and(|p| p == path) {
            paths.by_wd.remove(&wd);
        }
        drop(paths);
        // EINVAL: the kernel already dropped it (the directory was deleted).
        let _ = self.watches.remove(wd);
        Ok(())
    }

    fn kind() -> WatcherKind {
        WatcherKind::Inotify
    }
}

impl Drop for InotifyWatcher {
    fn drop(&mut self) {
        let _ = self.stop.write_all(b"x");
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

fn lock(paths: &Mutex<Paths>) -> std::sync::MutexGuard<'_, Paths> {
    paths.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The reader thread: sleeps in poll(2) on the inotify fd and the stop pipe.
fn read_events(
    mut inotify: Inotify,
    mut stop: io::PipeReader,
    paths: &Mutex<Paths>,
    mut handler: impl EventHandler,
) {
    let mut buffer = [0u8; 16 * 1024];
    loop {
        let (fd, stop_fd) = (inotify.as_fd(), stop.as_fd());
        let mut fds = [
            PollFd::new(fd, PollFlags::POLLIN),
            PollFd::new(stop_fd, PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                handler.handle_event(Err(notify::Error::io(e.into())));
                return;
            }
        }
        if fds[1].any().unwrap_or(true) {
            let _ = stop.read(&mut [0u8; 1]);
            return;
        }
        loop {
            let events = match inotify.read_events(&mut buffer) {
                Ok(events) => events,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    handler.handle_event(Err(notify::Error::io(e)));
                    return;
                }
            };
            for event in events {
                if let Some(event) = translate(paths, event.wd, event.mask, event.name) {
                    handler.handle_event(Ok(event));
                }
            }
        }
    }
}

/// One raw event as notify would describe it, or `None` when it says nothing about the code.
fn translate(
    paths: &Mutex<Paths>,
    wd: WatchDescriptor,
    mask: EventMask,
    name: Option<&OsStr>,
) -> Option<Event> {
    if mask.contains(EventMask::Q_OVERFLOW) {
        return Some(Event::new(EventKind::Other).set_flag(notify::event::Flag::Rescan));
    }
    let mut paths = lock(paths);
    if mask.contains(EventMask::IGNORED) {
        // The watch is gone (removed, or its directory deleted): forget the descriptor.
        if let Some(path) = paths.by_wd.remove(&wd)
            && paths.by_path.get(&path) == Some(&wd)
        {
            paths.by_path.remove(&path);
        }
        return None;
    }
    let dir = paths.by_wd.get(&wd)?;
    let path = name.map_or_else(|| dir.clone(), |name| dir.join(name));
    drop(paths);
    let is_dir = mask.contains(EventMask::ISDIR);
    let kind = if mask.contains(EventMask::CLOSE_WRITE) {
        EventKind::Access(AccessKind::Close(AccessMode::Write))
    } else if mask.contains(EventMask::CREATE) {
        EventKind::Create(if is_dir {
            CreateKind::Folder
        } else {
            CreateKind::File
        })
    } else if mask.contains(EventMask::DELETE) {
        EventKind::Remove(if is_dir {
            RemoveKind::Folder
        } else {
            RemoveKind::File
        })
    } else if mask.contains(EventMask::DELETE_SELF) {
        EventKind::Remove(RemoveKind::Any)
    } else if mask.contains(EventMask::MOVED_FROM) || mask.contains(EventMask::MOVE_SELF) {
        EventKind::Modify(ModifyKind::Name(RenameMode::From))
    } else if mask.contains(EventMask::MOVED_TO) {
        EventKind::Modify(ModifyKind::Name(RenameMode::To))
    } else if mask.contains(EventMask::ATTRIB) && name.is_some() {
        // A watched directory's own attributes say nothing about the code in it.
        EventKind::Modify(ModifyKind::Metadata(MetadataKind::Any))
    } else {
        return None;
    };
    Some(Event::new(kind).add_path(path))
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;
    use std::time::Duration;

    use super::*;
    use crate::scratch_dir::ScratchDir;

    /// Every event until none arrives for 200 ms.
    fn drain(rx: &mpsc::Receiver<notify::Result<Event>>) -> Vec<(EventKind, PathBuf)> {
        let mut seen = Vec::new();
        while let Ok(event) = rx.recv_timeout(Duration::from_millis(200)) {
            let event = event.unwrap();
            seen.push((event.kind, event.paths.first().cloned().unwrap_or_default()));
        }
        seen
    }

    #[test]
    fn reports_finished_saves_and_tree_changes_but_not_reads_or_open_writes() {
        let dir = ScratchDir::new("inotify");
        let file = dir.join("app.py");
        std::fs::write(&file, "v1").unwrap();
        let (tx, rx) = mpsc::channel();
        let mut watcher = InotifyWatcher::new(tx, Config::default()).unwrap();
        watcher.watch(&dir, RecursiveMode::NonRecursive).unwrap();

        // Reading, and writing without closing, say nothing.
        let _ = std::fs::read(&file).unwrap();
        let mut open = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        open.write_all(b"more").unwrap();
        assert_eq!(drain(&rx), []);
        drop(open);
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        assert_eq!(drain(&rx), [(close, file.clone())]);

        std::fs::rename(&file, dir.join("moved.py")).unwrap();
        std::fs::create_dir(dir.join("pkg")).unwrap();
        assert_eq!(
            drain(&rx),
            [
                (
                    EventKind::Modify(ModifyKind::Name(RenameMode::From)),
                    file.clone()
                ),
                (
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)),
                    dir.join("moved.py")
                ),
                (EventKind::Create(CreateKind::Folder), dir.join("pkg")),
            ]
        );

        watcher.unwatch(&dir).unwrap();
        std::fs::write(dir.join("after.py"), "x").unwrap();
        assert_eq!(drain(&rx), []);
    }

    #[test]
    fn a_missing_path_is_an_error_naming_it() {
        let (tx, _rx) = mpsc::channel();
        let mut watcher = InotifyWatcher::new(tx, Config::default()).unwrap();
        let missing = Path::new("/nonexistent/hupwatch-test");
        let err = watcher
            .watch(missing, RecursiveMode::NonRecursive)
            .unwrap_err();
        assert_eq!(err.paths, [missing.to_path_buf()]);
    }
}
