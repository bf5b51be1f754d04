//! `--metrics-file` (or the config file's top-level `metrics_file`, `watch`'s; the flag wins):
//! checked once at start, so a typo is exit 2 and not a warning at every reload. The directory
//! must exist already: it is node_exporter's textfile directory, not hupwatch's to create. A
//! config file re-read by `watch` keeps the file it started with.

use std::path::{Path, PathBuf};

use crate::config::ConfigError;

/// The file to write, absolute; `None` when neither the flag nor the file names one.
pub fn resolve(flag: Option<&Path>, file: Option<&Path>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(given) = flag.or(file) else {
        return Ok(None);
    };
    let bad = |why: &str| ConfigError::MetricsFile(given.to_path_buf(), why.to_string());
    let path = std::path::absolute(given).map_err(|e| bad(&e.to_string()))?;
    if path.file_name().is_none() || given.as_os_str().to_string_lossy().ends_with('/') {
        return Err(bad("names a directory, not a file"));
    }
    if path.is_dir() {
        return Err(bad("is a directory"));
    }
    match path.parent() {
        Some(dir) if dir.is_dir() => Ok(Some(path)),
        Some(dir) => Err(bad(&format!(
            "its directory {} does not exist (node_exporter's textfile directory is usually /var/lib/prometheus/node-exporter)",
            dir.display()
        ))),
        None => Err(bad("has no directory")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flag_wins_and_a_missing_directory_is_named() {
        let tmp = std::env::temp_dir();
        let flag = tmp.join("a.prom");
        let got = resolve(Some(&flag), Some(Path::new("/elsewhere/b.prom"))).unwrap();
        assert_eq!(got.as_deref(), Some(flag.as_path()));
        assert_eq!(resolve(None, None).unwrap(), None);
        let err = resolve(None, Some(Path::new("/no/such/dir/hupwatch.prom")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/no/such/dir/hupwatch.prom")
                && err.contains("/no/such/dir does not exist"),
            "{err}"
        );
        assert!(resolve(Some(&tmp), None).is_err());
    }
}
