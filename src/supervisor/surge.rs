//! `--max-surge N` (issue 22): a switch between generations that never runs more than N workers
//! beyond COMMAND's count W, instead of booting a whole second copy of the app (blue/green
//! doubles its memory at every deploy).
//!
//! Decided once, here (`Surge::decide`), from the flag, W and what the undo needs; every stage
//! reads the decision. A rolling switch goes: the new generation starts with N workers
//! (`-w N`, also a check generation's), and each time its workers have booted the old one gives
//! up as many (`worker remove`, waited for until they have exited: the memory bound) and the
//! new one grows by as many (`worker add`), until the new one has W and the old master gets
//! TERM. Both generations serve meanwhile: requests are answered by both releases.
//!
//! Refused where the undo cannot be safe. A new worker that cannot boot halts its master, and
//! its serving workers go with it; the old generation is then grown back to W, which loads the
//! old code only when the old generation is pinned to its own release directory (`pin`): in an
//! edit-in-place tree its new workers would import the broken code. So `--release-link` is
//! required; and the resizing needs each generation's own control socket (Gunicorn ≥ 25.1).

use std::path::Path;

/// A Unix socket path longer than this cannot be bound (`sun_path` is 108 bytes).
const MAX_SOCKET_PATH: usize = 107;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SurgeError {
    #[error(
        "--max-surge 0 would never let a new worker start: give 1 or more (COMMAND's worker count or more is blue/green, the default)"
    )]
    Zero,
    #[error(
        "--max-surge needs COMMAND's worker count (-w/--workers or WEB_CONCURRENCY), to know when a switch is complete; give -w N"
    )]
    NoWorkerCount,
    #[error(
        "--max-surge needs --release-link: a rolling switch that fails midway grows the old generation back, and only a generation pinned to its own release directory then loads the old code (in an edit-in-place tree its new workers would import the broken code); deploy into release directories behind a `current` link and pass --release-link, or drop --max-surge (blue/green)"
    )]
    NoReleaseLink,
    #[error(
        "--max-surge resizes each generation through its own control socket (`worker add`/`worker remove`), which this Gunicorn does not have (25.1 or later does); upgrade Gunicorn or drop --max-surge"
    )]
    NoControlSocket,
    #[error(
        "--max-surge gives each generation a control socket in {dir}, but {path} would be longer than a Unix socket path can be ({MAX_SOCKET_PATH} bytes); choose a shorter --runtime-dir"
    )]
    SocketPathTooLong { dir: String, path: String },
}

/// The rolling switch's numbers: `step` (N) workers at a time, up to `workers` (W).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Surge {
    pub step: u32,
    pub workers: u32,
}

/// What the decision is made from.
#[derive(Debug, Clone, Copy)]
pub struct SurgeInputs<'a> {
    pub max_surge: Option<u32>,
    /// COMMAND's worker count, W.
    pub workers: Option<u32>,
    pub release_link: bool,
    /// Gunicorn has a control socket (≥ 25.1).
    pub control_socket: bool,
    /// The 0700 directory each generation's control socket lives in.
    pub runtime_dir: &'a Path,
}

impl Surge {
    /// `None` is blue/green: no `--max-surge`, or one of W or more (a whole second copy may
    /// start anyway, and blue/green is the faster switch).
    pub fn decide(inputs: SurgeInputs<'_>) -> Result<Option<Self>, SurgeError> {
        let Some(step) = inputs.max_surge else {
            return Ok(None);
        };
        if step == 0 {
            return Err(SurgeError::Zero);
        }
        let workers = inputs.workers.ok_or(SurgeError::NoWorkerCount)?;
        if step >= workers {
            return Ok(None);
        }
        if !inputs.release_link {
            return Err(SurgeError::NoReleaseLink);
        }
        if !inputs.control_socket {
            return Err(SurgeError::NoControlSocket);
        }
        // The longest name a generation's socket gets (`control_socket_path`).
        let longest = control_socket_path(inputs.runtime_dir, u32::MAX);
        if longest.as_os_str().len() > MAX_SOCKET_PATH {
            return Err(SurgeError::SocketPathTooLong {
                dir: inputs.runtime_dir.display().to_string(),
                path: longest.display().to_string(),
            });
        }
        Ok(Some(Self { step, workers }))
    }

    /// How many workers the next growth adds to a new generation that has `new` booted, `None`
    /// once it has all W: then the old generation stops.
    pub fn next_step(&self, new: u32) -> Option<u32> {
        (new < self.workers).then(|| self.step.min(self.workers - new))
    }
}

/// Generation `number`'s own control socket, in the runtime directory.
pub fn control_socket_path(dir: &Path, number: u32) -> std::path::PathBuf {
    dir.join(format!("generation-{number}.ctl"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(max_surge: Option<u32>, workers: Option<u32>) -> SurgeInputs<'static> {
        SurgeInputs {
            max_surge,
            workers,
            release_link: true,
            control_socket: true,
            runtime_dir: Path::new("/run/hupwatch/run-1"),
        }
    }

    #[test]
    fn zero_is_refused_and_w_or_more_is_blue_green() {
        assert_eq!(
            Surge::decide(inputs(Some(0), Some(4))),
            Err(SurgeError::Zero)
        );
        assert_eq!(Surge::decide(inputs(Some(4), Some(4))), Ok(None));
        assert_eq!(Surge::decide(inputs(Some(9), Some(4))), Ok(None));
        assert_eq!(Surge::decide(inputs(None, Some(4))), Ok(None));
        let surge = Surge::decide(inputs(Some(1), Some(4))).unwrap();
        assert_eq!(
            surge,
            Some(Surge {
                step: 1,
                workers: 4
            })
        );
    }

    #[test]
    fn refused_where_the_undo_cannot_be_safe_or_the_count_is_unknown() {
        let edit_in_place = SurgeInputs {
            release_link: false,
            ..inputs(Some(1), Some(4))
        };
        let err = Surge::decide(edit_in_place).unwrap_err();
        assert_eq!(err, SurgeError::NoReleaseLink);
        assert!(err.to_string().contains("--release-link"), "{err}");
        assert_eq!(
            Surge::decide(inputs(Some(1), None)),
            Err(SurgeError::NoWorkerCount)
        );
        let old = SurgeInputs {
            control_socket: false,
            ..inputs(Some(1), Some(4))
        };
        assert_eq!(Surge::decide(old), Err(SurgeError::NoControlSocket));
        let long = "/tmp/".to_string() + &"d".repeat(100);
        let deep = SurgeInputs {
            runtime_dir: Path::new(&long),
            ..inputs(Some(1), Some(4))
        };
        let err = Surge::decide(deep).unwrap_err();
        assert!(err.to_string().contains("--runtime-dir"), "{err}");
    }

    #[test]
    fn the_steps_add_up_to_w_and_the_last_one_may_be_smaller() {
        let steps = |step, workers| {
            let surge = Surge { step, workers };
            let mut new = step;
            let mut seen = vec![new];
            while let Some(add) = surge.next_step(new) {
                new += add;
                seen.push(new);
            }
            seen
        };
        assert_eq!(steps(1, 4), [1, 2, 3, 4]);
        assert_eq!(steps(2, 5), [2, 4, 5]);
        assert_eq!(steps(3, 4), [3, 4]);
    }
}
