//! Which of several masters `watch` means when no selector names one: the one that runs the
//! watched code, judged by its working directory.
//!
//! The quick start (`gunicorn app:app & hupwatch watch`) broke the moment a second project's
//! master started on the same laptop: "2 Gunicorn masters are running". A master's cwd is where
//! its app is imported from, so the master whose cwd is the watched directory — or a directory
//! under it (`--chdir src`), or above it (`--watch src` in the project) — is the one meant. Only
//! `watch` asks: `reload` has no directory that says which app it is about.

use std::path::{Path, PathBuf};

/// How a master's cwd relates to a watched place; the closest relation wins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Closeness {
    Same,
    Under,
    Above,
}

/// The places a master serving the watched app would run in: each given path and, when it
/// differs, where it resolves to (`/proc/PID/cwd` is always resolved: a master started in the
/// release link `current` shows the release's own directory). Resolved now, so a swapped link
/// names its new target; and for a link, its releases directory too: right after a swap the
/// master to reload still runs in the previous release.
pub fn places(near: &[PathBuf]) -> Vec<PathBuf> {
    let mut places = Vec::new();
    for path in near {
        let resolved = std::fs::canonicalize(path).ok();
        let is_link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
        let releases = resolved
            .as_deref()
            .filter(|_| is_link)
            .and_then(|target| crate::config::release_link::releases_dir(path, target))
            .map(Path::to_path_buf);
        for place in std::iter::once(path.clone())
            .chain(resolved)
            .chain(releases)
        {
            if !places.contains(&place) {
                places.push(place);
            }
        }
    }
    places
}

fn closeness(cwd: &Path, places: &[PathBuf]) -> Option<Closeness> {
    places
        .iter()
        .filter_map(|place| {
            if cwd == place {
                Some(Closeness::Same)
            } else if cwd.starts_with(place) {
                Some(Closeness::Under)
            } else if place.starts_with(cwd) && cwd.parent().is_some() {
                // `/` is above everything: a master left in `/` (systemd without a
                // WorkingDirectory) says nothing about which app it serves.
                Some(Closeness::Above)
            } else {
                None
            }
        })
        .min()
}

/// The indices of the masters (given by their cwds, `None` when unreadable) that are closest to
/// `places`: all those sharing the best relation. Empty when no cwd relates to any place.
pub fn closest(cwds: &[Option<&Path>], places: &[PathBuf]) -> Vec<usize> {
    let judged: Vec<Option<Closeness>> = cwds
        .iter()
        .map(|cwd| cwd.and_then(|c| closeness(c, places)))
        .collect();
    let Some(best) = judged.iter().flatten().min().copied() else {
        return Vec::new();
    };
    judged
        .iter()
        .enumerate()
        .filter(|(_, c)| **c == Some(best))
        .map(|(i, _)| i)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(cwds: &[&str], places: &[&str]) -> Vec<usize> {
        let cwds: Vec<Option<&Path>> = cwds.iter().map(|c| Some(Path::new(*c))).collect();
        let places: Vec<PathBuf> = places.iter().map(PathBuf::from).collect();
        closest(&cwds, &places)
    }

    #[test]
    fn the_master_running_in_the_watched_directory_is_meant() {
        assert_eq!(pick(&["/home/me/b", "/home/me/a"], &["/home/me/a"]), [1]);
    }

    #[test]
    fn a_master_under_or_above_the_watched_directory_is_meant_when_none_runs_in_it() {
        assert_eq!(
            pick(&["/home/me/b", "/home/me/a/src"], &["/home/me/a"]),
            [1]
        );
        assert_eq!(
            pick(&["/home/me/a", "/home/me/b"], &["/home/me/a/src"]),
            [0]
        );
        // The same directory beats one above it.
        assert_eq!(
            pick(&["/home/me/a", "/home/me/a/src"], &["/home/me/a/src"]),
            [1]
        );
    }

    #[test]
    fn two_masters_in_the_watched_directory_stay_ambiguous() {
        assert_eq!(pick(&["/srv/a", "/srv/a", "/srv/b"], &["/srv/a"]), [0, 1]);
    }

    #[test]
    fn unrelated_or_root_or_unknown_cwds_are_never_preferred() {
        assert!(pick(&["/srv/b", "/"], &["/srv/a"]).is_empty());
        let places = [PathBuf::from("/srv/a")];
        assert!(closest(&[None, None], &places).is_empty());
    }

    #[test]
    fn a_release_link_is_matched_by_its_path_or_its_target() {
        let link_places = ["/srv/app/current", "/srv/app/releases/2"];
        assert_eq!(
            pick(&["/srv/other", "/srv/app/releases/2"], &link_places),
            [1]
        );
        assert_eq!(pick(&["/srv/app/current", "/srv/other"], &link_places), [0]);
        // After a swap: the master still runs the previous release.
        let swapped = [
            "/srv/app/current",
            "/srv/app/releases/2",
            "/srv/app/releases",
        ];
        assert_eq!(pick(&["/srv/other", "/srv/app/releases/1"], &swapped), [1]);
    }

    #[test]
    fn a_link_adds_its_target_and_releases_directory() {
        let dir = crate::scratch_dir::ScratchDir::new("choice-places");
        std::fs::create_dir_all(dir.join("releases/2")).unwrap();
        std::os::unix::fs::symlink("releases/2", dir.join("current")).unwrap();
        let root = std::fs::canonicalize(dir.as_path()).unwrap();
        assert_eq!(
            places(&[dir.join("current")]),
            [
                dir.join("current"),
                root.join("releases/2"),
                root.join("releases")
            ]
        );
        // A plain directory adds no parent.
        assert!(!places(&[dir.join("releases")]).contains(&root));
    }
}
