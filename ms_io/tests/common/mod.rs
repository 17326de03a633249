//! Helpers shared by the integration tests: the committed test data, copies in temporary
//! directories, and a content hash of a directory tree to prove that inputs stay unchanged.

#![allow(dead_code)]

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

pub const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/data");

pub fn ms(name: &str) -> PathBuf {
    Path::new(DATA).join(name)
}

/// Recursive copy; files and directories of the copy are writable (the committed data may be
/// read-only), so that a test can modify the copy and the temporary directory can be removed.
pub fn copy_tree(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        let to = dst.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_tree(&e.path(), &to);
        } else {
            std::fs::copy(e.path(), &to).unwrap();
            let mut p = std::fs::metadata(&to).unwrap().permissions();
            #[allow(clippy::permissions_set_readonly_false)]
            p.set_readonly(false);
            std::fs::set_permissions(&to, p).unwrap();
        }
    }
    let mut p = std::fs::metadata(dst).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    p.set_readonly(false);
    std::fs::set_permissions(dst, p).unwrap();
}

/// Copies the MS `name` into a new temporary directory; returns the guard and the copy's path.
pub fn temp_copy(name: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join(name);
    copy_tree(&ms(name), &to);
    (dir, to)
}

/// Hash of every file's relative path and bytes under `root` (or of the file itself), plus the
/// list of entries: changes to content, names, or new/removed files all change it.
pub fn tree_hash(root: &Path) -> u64 {
    fn walk(base: &Path, p: &Path, h: &mut DefaultHasher) {
        let Ok(meta) = std::fs::symlink_metadata(p) else {
            "missing".hash(h);
            return;
        };
        p.strip_prefix(base).unwrap().hash(h);
        if meta.is_dir() {
            let mut entries: Vec<_> = std::fs::read_dir(p)
                .unwrap()
                .map(|e| e.unwrap().path())
                .collect();
            entries.sort();
            for e in entries {
                walk(base, &e, h);
            }
        } else {
            std::fs::read(p).unwrap().hash(h);
        }
    }
    let mut h = DefaultHasher::new();
    walk(root, root, &mut h);
    h.finish()
}
