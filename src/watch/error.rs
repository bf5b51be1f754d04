//! Running out of inotify watches, said so that a person can act on it: how many are armed,
//! the limit in force, and a value to raise it to.

use std::path::PathBuf;

use nix::errno::Errno;

#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    #[error(
        "out of inotify watches at {path}: {armed} armed{}, and \
         fs.inotify.max_user_watches is {limit} (shared by all of this user's programs). Raise it: \
         `sysctl fs.inotify.max_user_watches={suggested}` (persist it in /etc/sysctl.d/), \
         exclude large directories, or use --poll",
        estimate(*.needed)
    )]
    TooManyWatches {
        path: PathBuf,
        armed: usize,
        /// How many this app's walk would have armed in all; `None` where nothing was walked
        /// (a file root's directory), so no estimate is shown rather than a made-up one.
        needed: Option<usize>,
        limit: String,
        suggested: usize,
    },
    #[error("cannot watch {path}: {source}")]
    Notify {
        path: PathBuf,
        #[source]
        source: notify::Error,
    },
    #[error("cannot start the file watcher: {0}")]
    Start(#[source] notify::Error),
}

/// The out-of-watches error with the limit in force and a value worth raising it to: enough for
/// what is needed (or at least one more than armed), and never below the current limit.
pub fn out_of_watches(path: PathBuf, armed: usize, needed: Option<usize>) -> WatchError {
    let limit = watch_limit();
    let at_least = needed.unwrap_or(armed + 1);
    let current = limit.parse::<usize>().unwrap_or(0);
    WatchError::TooManyWatches {
        path,
        armed,
        needed,
        suggested: (at_least * 2).max(current.saturating_mul(2)).max(524_288),
        limit,
    }
}

/// ", about N needed" when the walk could count them; nothing when it could not.
fn estimate(needed: Option<usize>) -> String {
    needed.map_or_else(String::new, |n| format!(", about {n} needed"))
}

/// The effective limit: the sysctl, or the user namespace's own (`/proc/sys/user/`) if lower.
fn watch_limit() -> String {
    let read = |p: &str| std::fs::read_to_string(p).ok()?.trim().parse::<u64>().ok();
    match (
        read("/proc/sys/fs/inotify/max_user_watches"),
        read("/proc/sys/user/max_inotify_watches"),
    ) {
        (Some(a), Some(b)) => a.min(b).to_string(),
        (Some(a), None) | (None, Some(a)) => a.to_string(),
        (None, None) => "unknown".into(),
    }
}

/// ENOSPC from inotify_add_watch (max_user_watches) arrives as `MaxFilesWatch`; EMFILE from
/// inotify_init (max_user_instances) as a plain I/O error.
pub fn is_out_of_watches(e: &notify::Error) -> bool {
    match &e.kind {
        notify::ErrorKind::MaxFilesWatch => true,
        notify::ErrorKind::Io(io) => {
            let code = io.raw_os_error();
            code == Some(Errno::ENOSPC as i32) || code == Some(Errno::EMFILE as i32)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Out of watches on a file root's directory (or a re-armed one): nothing was walked, so
    /// there is no count to show, and the limit and the value to raise it to must be real.
    #[test]
    fn out_of_watches_without_a_walk_shows_no_made_up_numbers() {
        let message = out_of_watches(PathBuf::from("/srv/app"), 7, None).to_string();
        assert!(message.contains("at /srv/app: 7 armed, and"), "{message}");
        assert!(!message.contains("needed"), "{message}");
        assert!(!message.contains("max_user_watches is  "), "{message}");
        assert!(!message.contains("max_user_watches=0`"), "{message}");
        let walked = out_of_watches(PathBuf::from("/srv/app"), 10, Some(61)).to_string();
        assert!(
            walked.contains("10 armed, about 61 needed, and"),
            "{walked}"
        );
    }
}
