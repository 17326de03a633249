//! `interf-image dirty` end to end: outputs, headers, and bad input that must fail cleanly with
//! the input left byte-identical.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use interf_image::io::read_image;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn ms_3c273() -> PathBuf {
    root().join("tests/data/vla_3c273_xband.ms")
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .args(args)
        .output()
        .expect("the binary runs")
}

/// Every file under `dir` with its bytes, to prove an input was not touched.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn dirty_writes_fits_with_wcs_and_leaves_input_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("c273");
    let before = snapshot(&ms_3c273());
    let out = run(&[
        "dirty",
        ms_3c273().to_str().unwrap(),
        "--size",
        "128",
        "--scale",
        "1asec",
        "--weight",
        "natural",
        "--name",
        name.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("theoretical beam"),
        "summary missing: {stdout}"
    );
    assert_eq!(
        before,
        snapshot(&ms_3c273()),
        "the Measurement Set was modified"
    );

    let dirty = read_image(&tmp.path().join("c273-dirty.fits")).unwrap();
    let psf = read_image(&tmp.path().join("c273-psf.fits")).unwrap();
    let (ny, nx, d) = dirty.plane();
    assert_eq!((ny, nx), (128, 128));
    let (_, _, p) = psf.plane();
    let argmax = |v: &[f64]| {
        v.iter()
            .enumerate()
            .fold((0, f64::MIN), |a, (i, &x)| if x > a.1 { (i, x) } else { a })
    };
    assert_eq!(
        argmax(&d).0,
        64 * 128 + 64,
        "3C 273's core is at the phase centre"
    );
    let (ip, pp) = argmax(&p);
    assert_eq!(ip, 64 * 128 + 64);
    assert!((pp - 1.0).abs() < 1e-6);
    // The B1950 phase centre of this MS, precessed to J2000 as WSClean wrote it (to 10 mas).
    let wsclean =
        read_image(&root().join("tests/data/reference/3c273_natural-dirty.fits")).unwrap();
    for key in ["CRVAL1", "CRVAL2"] {
        let (ours, theirs) = (dirty.get_f64(key).unwrap(), wsclean.get_f64(key).unwrap());
        // WSClean writes RA in (−180°, 180°]: compare on the circle.
        let d = (ours - theirs + 180.0).rem_euclid(360.0) - 180.0;
        assert!(
            d.abs() < 10e-3 / 3600.0,
            "{key}: {ours} vs WSClean {theirs}"
        );
    }
    assert!((dirty.get_f64("CRVAL1").unwrap() - 187.2779).abs() < 1e-3);
    assert!((dirty.get_f64("CDELT1").unwrap() + 1.0 / 3600.0).abs() < 1e-12);
    assert_eq!(dirty.get_f64("CRPIX1").unwrap(), 65.0);
    assert_eq!(dirty.get_str("BUNIT"), Some("JY/BEAM"));
}

/// Runs a command that must fail: non-zero exit, one clear message naming `expect`, nothing
/// written, no panic.
fn fails(args: &[&str], expect: &str) {
    let out = run(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{args:?} succeeded");
    assert!(
        stderr.contains(expect),
        "{args:?}: error should mention '{expect}', got: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{args:?} panicked: {stderr}");
}

#[test]
fn bad_input_fails_cleanly() {
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("bad");
    let name = name.to_str().unwrap();
    let ms = ms_3c273();
    let ms = ms.to_str().unwrap();
    let before = snapshot(&ms_3c273());

    fails(
        &["dirty", "/nonexistent/x.ms", "--name", name],
        "/nonexistent/x.ms",
    );
    let plain = tmp.path().join("plain.ms");
    std::fs::write(&plain, b"not a table").unwrap();
    fails(
        &["dirty", plain.to_str().unwrap(), "--name", name],
        "plain.ms",
    );
    fails(
        &["dirty", ms, "--field", "NGC 1234", "--name", name],
        "NGC 1234",
    );
    fails(&["dirty", ms, "--field", "7", "--name", name], "7");
    fails(&["dirty", ms, "--spw", "3", "--name", name], "3");
    fails(
        &["dirty", ms, "--channels", "0", "5", "--name", name],
        "channel",
    );
    fails(
        &["dirty", ms, "--column", "CORRECTED_DATA", "--name", name],
        "CORRECTED_DATA",
    );
    fails(&["dirty", ms, "--scale", "fast", "--name", name], "fast");
    fails(
        &["dirty", ms, "--weight", "briggs", "5", "--name", name],
        "5",
    );
    fails(
        &[
            "dirty", ms, "--size", "7", "--scale", "1asec", "--name", name,
        ],
        "7",
    );
    fails(
        &[
            "dirty",
            ms,
            "--epsilon",
            "0.5",
            "--scale",
            "1asec",
            "--name",
            name,
        ],
        "epsilon",
    );
    // Pixels so large that every baseline is beyond the uv grid.
    fails(
        &[
            "dirty", ms, "--size", "64", "--scale", "1deg", "--name", name,
        ],
        "scale",
    );

    assert_eq!(
        before,
        snapshot(&ms_3c273()),
        "the Measurement Set was modified"
    );
    let leftovers: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| n != "plain.ms")
        .collect();
    assert!(leftovers.is_empty(), "failed runs wrote {leftovers:?}");
}
