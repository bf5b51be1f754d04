//! Which master a command acts on: selected once, by exactly one of pid, pidfile or match,
//! optionally restricted to one user's masters.

use std::path::PathBuf;

use crate::cli::TargetArgs;
use crate::config::ConfigError;

/// Which master a command acts on: how it is named, and optionally whose it must be.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSelector {
    pub by: By,
    /// `--user`: only masters run by this user are ever targets.
    pub user: Option<UserFilter>,
    /// `watch` without a selector: the watched directories and release link, which tell which
    /// master is meant when several run (`master_choice`). Empty elsewhere.
    pub near: Vec<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum By {
    Pidfile(PathBuf),
    /// Kept signed so `--pid=0` or `--pid=-1` is refused by discovery with its own message.
    Pid(i64),
    Match(String),
    /// No selector: the single master on the host, refused when there are several.
    OnlyOne,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserFilter {
    pub uid: u32,
    pub name: String,
}

impl TargetSelector {
    pub fn from_args(args: &TargetArgs) -> Result<Self, ConfigError> {
        let given: Vec<&'static str> = [
            ("pidfile", args.pidfile.is_some()),
            ("pid", args.pid.is_some()),
            ("match", args.match_text.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect();
        if let [first, second, ..] = given[..] {
            return Err(ConfigError::TwoSelectors(first, second));
        }
        let by = match (&args.pidfile, args.pid, &args.match_text) {
            (Some(path), _, _) => By::Pidfile(std::path::absolute(path).unwrap_or(path.clone())),
            (_, Some(pid), _) => By::Pid(pid),
            (_, _, Some(text)) if text.is_empty() => return Err(ConfigError::EmptyMatch),
            (_, _, Some(text)) => By::Match(text.clone()),
            _ => By::OnlyOne,
        };
        let user = args.user.as_deref().map(user_filter).transpose()?;
        Ok(Self {
            by,
            user,
            near: Vec::new(),
        })
    }
}

/// A user name or numeric uid that exists on this host.
fn user_filter(text: &str) -> Result<UserFilter, ConfigError> {
    use nix::unistd::{Uid, User};
    let found = match text.parse::<u32>() {
        Ok(uid) => User::from_uid(Uid::from_raw(uid)).ok().flatten(),
        Err(_) => User::from_name(text).ok().flatten(),
    };
    found
        .map(|u| UserFilter {
            uid: u.uid.as_raw(),
            name: u.name,
        })
        .ok_or_else(|| ConfigError::UnknownUser(text.to_string()))
}
