//! `interf-image clean` end to end: the four WSClean-style products with their units, beam and
//! WCS; bad input fails with a clear message and writes nothing.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use interf_image::imaging::PixelBeam;
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

fn files_in(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    v.sort();
    v
}

#[test]
fn clean_writes_model_residual_image_psf() {
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("c273");
    let out = run(&[
        "clean",
        ms_3c273().to_str().unwrap(),
        "--size",
        "128",
        "--scale",
        "1asec",
        "--niter",
        "300",
        "--mgain",
        "0.8",
        "--auto-threshold",
        "3",
        "--name",
        name.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("iterations") && stdout.contains("beam"),
        "{stdout}"
    );

    let read = |suffix: &str| {
        let p = tmp.path().join(format!("c273-{suffix}.fits"));
        read_image(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    };
    let (model, residual, image, psf) =
        (read("model"), read("residual"), read("image"), read("psf"));
    assert_eq!(model.get_str("BUNIT"), Some("JY/PIXEL"));
    for f in [&residual, &image, &psf] {
        assert_eq!(f.get_str("BUNIT"), Some("JY/BEAM"));
        assert!(f.get_f64("BMAJ").unwrap() > 0.0);
        assert_eq!(f.get_f64("BMAJ"), image.get_f64("BMAJ"));
        assert_eq!(f.get_str("CTYPE1"), Some("RA---SIN"));
        assert_eq!(f.get_f64("CRPIX1"), Some(65.0));
        assert!((f.get_f64("CDELT2").unwrap() * 3600.0 - 1.0).abs() < 1e-9);
    }
    let bmaj = image.get_f64("BMAJ").unwrap() * 3600.0;
    let bmin = image.get_f64("BMIN").unwrap() * 3600.0;
    // 3C 273's beam at this weighting is about 3.2″ × 3.1″ (WSClean, 0.5″ pixels).
    assert!(bmaj > 2.8 && bmaj < 3.6 && bmin <= bmaj, "{bmaj} × {bmin}");
    let iters = image.get_i64("MINORIT").unwrap();
    assert!(iters > 0 && iters <= 300, "{iters}");

    // image = model ⊛ beam + residual, the beam of peak 1 from the header.
    let (ny, nx, m) = model.plane();
    let (_, _, r) = residual.plane();
    let (_, _, im) = image.plane();
    let beam = PixelBeam {
        major: bmaj,
        minor: bmin,
        pa: image.get_f64("BPA").unwrap().to_radians(),
    };
    let mut worst = 0.0f64;
    for (iy, ix) in [(64usize, 64usize), (60, 62), (70, 58), (10, 100)] {
        let mut conv = 0.0;
        for (k, &v) in m.iter().enumerate() {
            if v != 0.0 {
                let dx = ix as f64 - (k % nx) as f64;
                let dy = iy as f64 - (k / nx) as f64;
                conv += v * beam.value(dx, dy);
            }
        }
        let expect = conv + r[iy * nx + ix];
        worst = worst.max((im[iy * nx + ix] - expect).abs());
    }
    assert!(
        worst < 1e-4,
        "restored differs from model ⊛ beam + residual by {worst}"
    );
    let peak = im.iter().cloned().fold(f64::MIN, f64::max);
    assert!((peak - im[(ny / 2) * nx + nx / 2]).abs() < 1e-9);
    assert!(peak > 29.0 && peak < 31.0, "restored peak {peak}");
    // PSF peaks at 1 at the centre.
    let (_, _, p) = psf.plane();
    assert!((p[(ny / 2) * nx + nx / 2] - 1.0).abs() < 1e-6);
}

#[test]
fn bad_input_fails_cleanly_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("x");
    let ms = ms_3c273();
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["--niter", "0"], "--niter"),
        (vec!["--niter", "lots"], "niter"),
        (vec!["--gain", "1.5"], "--gain"),
        (vec!["--mgain", "0"], "--mgain"),
        (vec!["--auto-threshold", "-1"], "--auto-threshold"),
    ];
    for (extra, expect) in cases {
        let mut args = vec![
            "clean",
            ms.to_str().unwrap(),
            "--size",
            "64",
            "--scale",
            "1asec",
            "--name",
            name.to_str().unwrap(),
        ];
        args.extend(extra.iter().copied());
        let out = run(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{extra:?} succeeded");
        assert!(stderr.contains(expect), "{extra:?}: {stderr}");
        assert!(files_in(tmp.path()).is_empty(), "{extra:?} wrote files");
    }
    let missing = tmp.path().join("nothing-here.ms");
    let out = run(&[
        "clean",
        missing.to_str().unwrap(),
        "--name",
        name.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("nothing-here.ms"), "{stderr}");
    assert!(files_in(tmp.path()).is_empty());
}
