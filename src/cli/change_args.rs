//! The flag groups that say which changes count, shared by `watch` and `run`: what to watch,
//! the release link, the filter and the debounce.

use std::path::PathBuf;
use std::time::Duration;

use clap::Args;

use super::{defaults, parse_duration};

#[derive(Debug, Args)]
#[command(next_help_heading = "Watching")]
pub struct PathArgs {
    /// Directory or file to watch recursively (repeatable). Default: the current directory.
    #[arg(
        long = "watch",
        short = 'w',
        value_name = "PATH",
        env = "HUPWATCH_WATCH",
        value_delimiter = ':'
    )]
    pub watch: Vec<PathBuf>,

    /// Poll for changes at this interval instead of using inotify (NFS, some container mounts).
    #[arg(long, value_name = "DURATION", env = "HUPWATCH_POLL", value_parser = parse_duration)]
    pub poll: Option<Duration>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Release directories")]
pub struct ReleaseArgs {
    /// The `current` symlink of a releases/ + current deploy. `watch` reloads when it is swapped;
    /// every reload checks that the new workers run its target. `run` starts each generation in
    /// the link's target, and a swap deploys at once.
    #[arg(long, value_name = "PATH", env = "HUPWATCH_RELEASE_LINK")]
    pub release_link: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Filtering")]
pub struct FilterArgs {
    /// Only changes to files matching GLOB count (repeatable). A glob without `/` matches the
    /// file name; one with `/` matches the path relative to the watched directory.
    #[arg(
        long,
        value_name = "GLOB",
        env = "HUPWATCH_INCLUDE",
        value_delimiter = ','
    )]
    pub include: Vec<String>,

    /// Changes to files matching GLOB never count (repeatable). A trailing `/` names a directory,
    /// which is then not watched at all.
    #[arg(
        long,
        value_name = "GLOB",
        env = "HUPWATCH_EXCLUDE",
        value_delimiter = ','
    )]
    pub exclude: Vec<String>,

    /// Do not apply the built-in excludes (__pycache__/, *.pyc, .git/, .venv/, editor swap
    /// files, ...), nor skip virtualenvs (pyvenv.cfg) and .gitignore'd paths.
    #[arg(long, env = "HUPWATCH_NO_DEFAULT_EXCLUDES")]
    pub no_default_excludes: bool,
}

#[derive(Debug, Args)]
#[command(next_help_heading = "Debounce")]
pub struct DebounceArgs {
    /// Quiet period: reload once no change has arrived for this long. Default 150ms, and
    /// 30ms while a burst has at most 4 file changes (an editor's save); a release-link swap
    /// needs none. Given, it applies to every burst. Raise it for deploys that pause longer.
    #[arg(long, value_name = "DURATION", env = "HUPWATCH_DEBOUNCE", value_parser = parse_duration)]
    pub debounce: Option<Duration>,

    /// Reload at the latest this long after the first change, even if changes keep coming.
    #[arg(long, value_name = "DURATION", default_value = defaults::MAX_WAIT, env = "HUPWATCH_MAX_WAIT", value_parser = parse_duration)]
    pub max_wait: Duration,
}
