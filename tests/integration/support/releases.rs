//! A Capistrano-style deploy tree inside an `AppDir`: `releases/<id>/app.py` and a `current`
//! symlink replaced atomically (a new link renamed over the old one, as `mv -T` does), so the
//! tests deploy exactly the way the deploy tools they stand for do.

use std::os::unix::fs::symlink;
use std::path::PathBuf;

use super::appdir::{AppDir, app_source};

pub struct ReleaseTree<'a> {
    dir: &'a AppDir,
}

impl<'a> ReleaseTree<'a> {
    /// `releases/<first>` with a working app answering `first`, and `current` pointing at it.
    pub fn new(dir: &'a AppDir, first: &str) -> Self {
        let tree = Self { dir };
        tree.good(first);
        tree.swap(first);
        tree
    }

    /// `releases/<id>/app.py` answering `"<id> pid=N"`.
    pub fn good(&self, id: &str) -> PathBuf {
        self.dir
            .write(&format!("releases/{id}/app.py"), &app_source(id));
        self.release(id)
    }

    /// `releases/<id>/app.py` that fails to import, as a broken deploy does.
    pub fn broken(&self, id: &str) -> PathBuf {
        self.dir.write(
            &format!("releases/{id}/app.py"),
            "import module_that_this_release_forgot_to_ship\n",
        );
        self.release(id)
    }

    pub fn release(&self, id: &str) -> PathBuf {
        self.dir.join("releases").join(id)
    }

    /// The `current` link (not resolved).
    pub fn current(&self) -> PathBuf {
        self.dir.join("current")
    }

    /// Point `current` at `releases/<id>` (or at any relative target) in one rename.
    pub fn swap(&self, id: &str) {
        self.swap_to(&format!("releases/{id}"));
    }

    pub fn swap_to(&self, target: &str) {
        let tmp = self.dir.join("current.tmp");
        let _ = std::fs::remove_file(&tmp);
        symlink(target, &tmp).expect("create the new link");
        std::fs::rename(&tmp, self.current()).expect("rename the new link over current");
    }
}
