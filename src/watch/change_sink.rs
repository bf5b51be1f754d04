//! Where one app's watcher thread puts what it saw: changes into the queue every app shares,
//! bookkeeping into the unbounded control channel — and changes that find the shared queue
//! full into the app's own spill slot, which cannot overflow.
//!
//! The shared queue is bounded, and dropping a change when it is full is not harmless: the
//! queue may be full of another app's burst (a large rsync), and then the dropped change may
//! be this app's only one; and a dropped change is also the latest of its app's burst, whose
//! quiet period must run from it. The slot keeps what the debouncer needs of any number of
//! spilled changes (the earliest and the latest stamp) in two `Instant`s, and the loop is told
//! once per fill with a [`WatchEvent::Spilled`] on the control channel. The fast path is
//! untouched: a change that fits in the queue costs what it did (one `try_send`, no lock, no
//! allocation, no extra thread hop); only a spilled one takes the slot's lock.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;

use crate::watch::AppTag;
use crate::watch::code_files::LoadedFiles;
use crate::watch::scope::WatchEvent;

/// The span of the changes of one app that found the shared queue full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spilled {
    pub first: Instant,
    pub last: Instant,
}

/// One app's spill slot, shared by its watcher thread and the loop.
#[derive(Debug, Default)]
pub struct SpillSlot(Mutex<Option<Spilled>>);

impl SpillSlot {
    /// Record a change seen at `seen`; true when the slot was empty (the loop must be told).
    fn add(&self, seen: Instant) -> bool {
        let mut slot = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let was_empty = slot.is_none();
        *slot = Some(match *slot {
            Some(s) => Spilled {
                first: s.first.min(seen),
                last: s.last.max(seen),
            },
            None => Spilled {
                first: seen,
                last: seen,
            },
        });
        was_empty
    }

    /// What was spilled since the last take, emptying the slot.
    pub fn take(&self) -> Option<Spilled> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).take()
    }
}

/// The sending side of one app's watcher.
pub struct ChangeSink {
    tag: AppTag,
    changes: mpsc::Sender<(AppTag, WatchEvent)>,
    control: mpsc::UnboundedSender<(AppTag, WatchEvent)>,
    spill: Arc<SpillSlot>,
}

impl ChangeSink {
    pub fn new(
        tag: AppTag,
        changes: mpsc::Sender<(AppTag, WatchEvent)>,
        control: mpsc::UnboundedSender<(AppTag, WatchEvent)>,
        spill: Arc<SpillSlot>,
    ) -> Self {
        Self {
            tag,
            changes,
            control,
            spill,
        }
    }

    /// Hand one event to the loop; never blocks, never loses a change. A closed channel means
    /// the app was replaced or hupwatch is stopping: nothing is waiting for the event.
    pub fn emit(&self, event: WatchEvent) {
        let seen = match event {
            WatchEvent::Changed(_, seen) | WatchEvent::Saved(_, seen) => seen,
            // Only a debug line, kept in order with the changes; one lost to a full queue is a
            // log line lost, never a change.
            WatchEvent::Ignored(_) => {
                let _ = self.changes.try_send((self.tag, event));
                return;
            }
            _ => {
                let _ = self.control.send((self.tag, event));
                return;
            }
        };
        if let Err(TrySendError::Full(_)) = self.changes.try_send((self.tag, event))
            && self.spill.add(seen)
        {
            let _ = self.control.send((self.tag, WatchEvent::Spilled));
        }
    }
}

/// Where a survey of the app's load, running on a thread of its own, reports what the app read.
#[derive(Debug, Clone)]
pub struct LoadedSink {
    tag: AppTag,
    control: mpsc::UnboundedSender<(AppTag, WatchEvent)>,
}

impl LoadedSink {
    pub fn new(tag: AppTag, control: mpsc::UnboundedSender<(AppTag, WatchEvent)>) -> Self {
        Self { tag, control }
    }

    pub fn send(&self, loaded: Option<LoadedFiles>) {
        let _ = self.control.send((self.tag, WatchEvent::Loaded(loaded)));
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    fn changed(path: &str, seen: Instant) -> WatchEvent {
        WatchEvent::Changed(Some(PathBuf::from(path)), seen)
    }

    /// App A's burst fills the queue both apps share; B's one change, sent then, must still
    /// reach the loop, and so must the stamp of A's latest change.
    #[test]
    fn a_burst_in_one_app_fills_the_shared_queue_without_losing_another_apps_change() {
        let (changes_tx, mut changes) = mpsc::channel(8);
        let (control_tx, mut control) = mpsc::unbounded_channel();
        let (a_spill, b_spill) = (
            Arc::new(SpillSlot::default()),
            Arc::new(SpillSlot::default()),
        );
        let a = ChangeSink::new(
            1,
            changes_tx.clone(),
            control_tx.clone(),
            Arc::clone(&a_spill),
        );
        let b = ChangeSink::new(2, changes_tx, control_tx, Arc::clone(&b_spill));
        let t0 = Instant::now();
        let ms = Duration::from_millis(1);
        for i in 0..1000 {
            a.emit(changed("a/static/f.txt", t0 + i * ms));
        }
        let b_seen = t0 + 1000 * ms;
        b.emit(changed("b/app.py", b_seen));

        // What the loop receives: the queue, then the control channel; spills from the slots.
        let mut queued = Vec::new();
        while let Ok((tag, event)) = changes.try_recv() {
            queued.push((tag, event));
        }
        assert_eq!(queued.len(), 8, "the queue was full");
        assert!(queued.iter().all(|(tag, _)| *tag == 1));
        let mut told = Vec::new();
        while let Ok((tag, event)) = control.try_recv() {
            assert!(matches!(event, WatchEvent::Spilled), "{event:?}");
            told.push(tag);
        }
        assert_eq!(told, [1, 2], "each app's loop is told once per fill");
        assert_eq!(
            b_spill.take(),
            Some(Spilled {
                first: b_seen,
                last: b_seen
            }),
            "B's change arrives"
        );
        assert_eq!(
            a_spill.take(),
            Some(Spilled {
                first: t0 + 8 * ms,
                last: t0 + 999 * ms
            }),
            "A's quiet period runs from its latest change"
        );
        assert_eq!(b_spill.take(), None, "taken once");

        // Once taken, the next spill tells the loop again.
        for i in 0..9 {
            b.emit(changed("b/app.py", b_seen + i * ms));
        }
        let retold: Vec<AppTag> = std::iter::from_fn(|| control.try_recv().ok())
            .map(|(tag, _)| tag)
            .collect();
        assert_eq!(retold, [2]);
    }
}
