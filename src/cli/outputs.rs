//! The one output policy of every command: an output never replaces or lands inside an input,
//! and an existing checkpoint folder is never replaced without being asked to.
//!
//! Paths are compared by what they point to, not by how they are spelled: `./d-mean.fits`,
//! `../D/./d-mean.fits` and `/abs/D/d-mean.fits` are one file, and so are two hard links or a
//! symlink and its target (same device and inode).

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

/// What a path points to: its canonical form and, when it exists, its device and inode.
struct Identity {
    canonical: PathBuf,
    dev_ino: Option<(u64, u64)>,
    is_dir: bool,
}

/// The identity of an existing path, or `None` when it does not exist (an input that does
/// not exist cannot be overwritten; the command reports it missing on its own).
fn existing_identity(p: &Path) -> Option<Identity> {
    let meta = std::fs::metadata(p).ok()?;
    let canonical = p.canonicalize().ok()?;
    Some(Identity {
        canonical,
        dev_ino: Some((meta.dev(), meta.ino())),
        is_dir: meta.is_dir(),
    })
}

/// The identity an output will have: its own when it exists, else its canonical parent folder
/// joined with its file name. Errors when the folder it goes into does not exist, so that a
/// command fails before its work rather than when it writes.
fn output_identity(out: &Path) -> anyhow::Result<Identity> {
    if let Some(id) = existing_identity(out) {
        return Ok(id);
    }
    let Some(file) = out.file_name() else {
        bail!("{}: not a file name for an output", out.display());
    };
    let parent = match out.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = parent.canonicalize().with_context(|| {
        format!(
            "cannot write {}: the folder {} does not exist",
            out.display(),
            parent.display()
        )
    })?;
    if !dir.is_dir() {
        bail!(
            "cannot write {}: {} is not a folder",
            out.display(),
            parent.display()
        );
    }
    Ok(Identity {
        canonical: dir.join(file),
        dev_ino: None,
        is_dir: false,
    })
}

/// Refuses an output that is one of `inputs` (by canonical path or by device and inode) or
/// that lies inside an input folder (a Measurement Set, a checkpoint). Inputs that do not exist
/// are skipped.
pub fn check_output(out: &Path, inputs: &[&Path]) -> anyhow::Result<()> {
    let o = output_identity(out)?;
    for input in inputs {
        let Some(i) = existing_identity(input) else {
            continue;
        };
        let same = o.canonical == i.canonical || (o.dev_ino.is_some() && o.dev_ino == i.dev_ino);
        if same {
            bail!(
                "output {} would overwrite the input {}; choose another --name/--out",
                out.display(),
                input.display()
            );
        }
        if i.is_dir && o.canonical.starts_with(&i.canonical) {
            let how = if o.dev_ino.is_some() {
                "would overwrite a file of"
            } else {
                "would be written inside"
            };
            bail!(
                "output {} {how} the input {}; choose another --name/--out",
                out.display(),
                input.display()
            );
        }
    }
    Ok(())
}

/// Checks an output prefix given with `--name`: not empty, and not a folder (`out/` would
/// write hidden files `out/-mean.fits`).
pub fn check_name(name: &str) -> anyhow::Result<()> {
    if name.trim().is_empty() {
        bail!("--name must not be empty (it is the prefix of every output file)");
    }
    if name.ends_with('/') || name.ends_with("/.") || name == "." || name == ".." {
        bail!("--name {name:?} is a folder; give a file prefix such as {name:?}/run1");
    }
    Ok(())
}

/// `NAME-suffix.fits`, checked against the inputs.
pub fn output_path(name: &str, suffix: &str, inputs: &[&Path]) -> anyhow::Result<PathBuf> {
    let p = PathBuf::from(format!("{name}-{suffix}.fits"));
    check_output(&p, inputs)?;
    Ok(p)
}

/// Checks every `NAME-file` (each of `files` with its extension) before any work is done, so
/// that a refused output never leaves its siblings half-written.
pub fn check_outputs(name: &str, files: &[&str], inputs: &[&Path]) -> anyhow::Result<()> {
    check_name(name)?;
    for f in files {
        check_output(Path::new(&format!("{name}-{f}")), inputs)?;
    }
    Ok(())
}

/// Refuses to replace an existing, non-empty checkpoint folder unless `resume` (continue it)
/// or `force` (overwrite it) says so; also checks the folder against the inputs.
pub fn check_checkpoint_dir(
    out: &Path,
    resume: bool,
    force: bool,
    inputs: &[&Path],
) -> anyhow::Result<()> {
    if out.exists() && !out.is_dir() {
        bail!("--out {}: exists and is not a folder", out.display());
    }
    if !out.exists() {
        // Created with `create_dir_all`, as `mkdir -p` would; it still must not land inside an
        // input folder.
        let canon = canonical_to_be(out)?;
        for input in inputs {
            if let Some(i) = existing_identity(input) {
                if i.is_dir && canon.starts_with(&i.canonical) {
                    bail!(
                        "--out {} would be created inside the input {}",
                        out.display(),
                        input.display()
                    );
                }
            }
        }
        return Ok(());
    }
    if !resume {
        for input in inputs {
            if let (Some(i), Some(o)) = (existing_identity(input), existing_identity(out)) {
                if i.canonical.starts_with(&o.canonical)
                    || (i.is_dir && o.canonical.starts_with(&i.canonical))
                {
                    bail!(
                        "--out {} holds or is the input {}; choose another --out",
                        out.display(),
                        input.display()
                    );
                }
            }
        }
    }
    let non_empty = std::fs::read_dir(out)
        .with_context(|| format!("cannot read the folder {}", out.display()))?
        .next()
        .is_some();
    if non_empty && !resume && !force {
        bail!(
            "--out {} already exists and is not empty (a trained checkpoint?); use --resume to \
             continue its training, --force to replace it, or another --out",
            out.display()
        );
    }
    Ok(())
}

/// The canonical path a not-yet-existing path will have: its nearest existing ancestor,
/// canonicalised, joined with the rest.
fn canonical_to_be(p: &Path) -> anyhow::Result<PathBuf> {
    let abs = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()
            .context("cannot read the current folder")?
            .join(p)
    };
    let base = abs
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    let rest = abs.strip_prefix(base).unwrap_or(Path::new(""));
    Ok(base
        .canonicalize()
        .with_context(|| format!("cannot resolve {}", base.display()))?
        .join(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_file_by_any_spelling_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().canonicalize().unwrap();
        let input = d.join("d-mean.fits");
        std::fs::write(&input, b"x").unwrap();
        std::fs::create_dir(d.join("sub")).unwrap();
        for spelled in [
            d.join("d-mean.fits"),
            d.join("./d-mean.fits"),
            d.join("sub/../d-mean.fits"),
        ] {
            assert!(check_output(&spelled, &[&input]).is_err(), "{spelled:?}");
        }
        // A hard link is the same file under another name.
        let link = d.join("link.fits");
        std::fs::hard_link(&input, &link).unwrap();
        assert!(check_output(&link, &[&input]).is_err());
        // A symlink to the input too.
        let sym = d.join("sym.fits");
        std::os::unix::fs::symlink(&input, &sym).unwrap();
        assert!(check_output(&sym, &[&input]).is_err());
        // Another file in the same folder is fine.
        assert!(check_output(&d.join("d-std.fits"), &[&input]).is_ok());
    }

    #[test]
    fn outputs_inside_an_input_folder_or_in_a_missing_folder_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let ms = dir.path().join("x.ms");
        std::fs::create_dir(&ms).unwrap();
        assert!(check_output(&ms.join("a-dirty.fits"), &[&ms]).is_err());
        let e = check_output(&dir.path().join("nope/a.fits"), &[&ms]).unwrap_err();
        assert!(format!("{e:#}").contains("does not exist"), "{e:#}");
        assert!(check_output(&dir.path().join("a-dirty.fits"), &[&ms]).is_ok());
    }

    #[test]
    fn names_and_checkpoint_folders() {
        assert!(check_name("").is_err());
        assert!(check_name("out/").is_err());
        assert!(check_name("out/run").is_ok());
        let dir = tempfile::tempdir().unwrap();
        let ck = dir.path().join("ck");
        assert!(check_checkpoint_dir(&ck, false, false, &[]).is_ok());
        std::fs::create_dir(&ck).unwrap();
        assert!(check_checkpoint_dir(&ck, false, false, &[]).is_ok());
        std::fs::write(ck.join("config.json"), b"{}").unwrap();
        assert!(check_checkpoint_dir(&ck, false, false, &[]).is_err());
        assert!(check_checkpoint_dir(&ck, true, false, &[]).is_ok());
        assert!(check_checkpoint_dir(&ck, false, true, &[]).is_ok());
        // Training data inside the folder to be replaced: refused even with --force.
        let data = ck.join("x.npy");
        std::fs::write(&data, b"").unwrap();
        assert!(check_checkpoint_dir(&ck, false, true, &[&data]).is_err());
        // A new folder inside an input folder is refused too.
        assert!(check_checkpoint_dir(&ck.join("new"), false, false, &[&ck]).is_err());
    }
}
