//! The main job end to end: `interf-image image` on the shipped 3C 273 observation with the
//! built-in prior (few samples, the default method and steps: DPS, 100), and Ctrl-C.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use interf_image::io::read_image;

fn ms() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vla_3c273_xband.ms")
}

#[test]
fn posterior_products_with_the_builtin_prior() {
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("c273");
    let out = Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .args(["image", ms().to_str().unwrap(), "--samples", "3"])
        .args([
            "--batch",
            "3",
            "--seed",
            "7",
            "--name",
            name.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("reduced χ²"), "{stdout}");

    let samples = read_image(&tmp.path().join("c273-samples.fits")).unwrap();
    assert_eq!(samples.shape, vec![1, 3, 64, 64]);
    assert_eq!(samples.get_str("CTYPE3"), Some("SAMPLE"));
    assert_eq!(samples.get_str("BUNIT"), Some("JY/PIXEL"));
    let mean = read_image(&tmp.path().join("c273-mean.fits")).unwrap();
    let std = read_image(&tmp.path().join("c273-std.fits")).unwrap();
    let (_, _, m) = mean.plane();
    let (_, _, s) = std.plane();
    // The mean is the mean of the samples, the std their spread (independent recomputation).
    let planes: Vec<&[f64]> = samples.data.chunks(64 * 64).collect();
    for p in [0usize, 64 * 32 + 32, 4000] {
        let v: Vec<f64> = planes.iter().map(|pl| pl[p]).collect();
        let mu = v.iter().sum::<f64>() / 3.0;
        let sd = (v.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / 3.0).sqrt();
        assert!((m[p] - mu).abs() <= 1e-4 * (1.0 + mu.abs()), "mean at {p}");
        assert!((s[p] - sd).abs() <= 1e-4 * (1.0 + sd), "std at {p}");
    }
    // 3C 273's core sits at the phase centre of the mean image, and the flux is positive.
    let argmax = m
        .iter()
        .enumerate()
        .fold((0, f64::MIN), |a, (i, &x)| if x > a.1 { (i, x) } else { a })
        .0;
    let (iy, ix) = (argmax / 64, argmax % 64);
    assert!(
        iy.abs_diff(32) <= 1 && ix.abs_diff(32) <= 1,
        "peak at ({iy}, {ix})"
    );
    for f in [
        "dirty",
        "psf",
        "report-mean",
        "report-std",
        "report-residual",
        "report-uvamp",
    ] {
        let ext = if f.starts_with("report") {
            "png"
        } else {
            "fits"
        };
        let p = tmp.path().join(format!("c273-{f}.{ext}"));
        assert!(p.exists(), "{} missing", p.display());
    }
    let html = std::fs::read_to_string(tmp.path().join("c273-report.html")).unwrap();
    assert!(html.contains("c273-report-mean.png"));
}

#[test]
fn ctrl_c_stops_without_writing() {
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("stop");
    let mut child = Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .args([
            "image",
            ms().to_str().unwrap(),
            "--samples",
            "2",
            "--steps",
            "100000",
        ])
        .args(["--name", name.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it read the data and start sampling, then interrupt it as a terminal would.
    std::thread::sleep(Duration::from_secs(4));
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let start = Instant::now();
    let out = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "did not stop after Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert_eq!(out.code(), Some(130), "{err}");
    assert!(err.contains("interrupted"), "{err}");
    let left: Vec<_> = std::fs::read_dir(tmp.path()).unwrap().collect();
    assert!(left.is_empty(), "an interrupted run wrote {left:?}");
}

/// Self-calibration against the posterior mean and a CLEAN window: the gains lower the misfit
/// of the mean (χ² after < χ² of the first round's mean), and the sky is exactly zero outside
/// the window.
#[test]
fn selfcal_and_window() {
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("sc");
    let out = Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .args([
            "image",
            ms().to_str().unwrap(),
            "--samples",
            "2",
            // The cheaper method: the self-calibration loop is what is tested (150 CLA steps,
            // about the fewest with which the visibility likelihood stays well behaved here).
            "--method",
            "cla",
            "--steps",
            "150",
        ])
        .args([
            "--batch",
            "2",
            "--seed",
            "3",
            "--selfcal",
            "1",
            "--window",
            "auto",
        ])
        .args(["--name", name.to_str().unwrap()])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("sc-summary.json")).unwrap())
            .unwrap();
    let round = &json["selfcal"][0];
    let before = round["reduced_chi2_mean_before"].as_f64().unwrap();
    let after = json["reduced_chi2_mean_image"].as_f64().unwrap();
    assert!(round["gains_solved"].as_u64().unwrap() > 20, "{round}");
    assert!(
        after < before,
        "χ² {after} after self-calibration, {before} before"
    );
    assert!(
        json["reduced_chi2_mean_image_uncalibrated_data"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let inside = json["window_pixels"].as_u64().unwrap() as usize;
    let mean = read_image(&tmp.path().join("sc-mean.fits")).unwrap().data;
    let zeros = mean.iter().filter(|&&v| v == 0.0).count();
    assert!(
        inside > 10 && inside < mean.len(),
        "window of {inside} pixels"
    );
    assert_eq!(
        zeros,
        mean.len() - inside,
        "zero exactly outside the window"
    );
    assert!(stdout.contains("window (CLEAN mask)"), "{stdout}");
    // The prior check: the samples' ELBO placed among the built-in prior's 64 draws.
    let check = &json["prior_check"];
    assert_eq!(check["reference_images"].as_u64(), Some(64), "{check}");
    let below = check["fraction_of_reference_below"].as_f64().unwrap();
    let verdict = check["verdict"].as_str().unwrap();
    let median = check["samples_median_nats"].as_f64().unwrap();
    let [lo, hi] = [0, 1].map(|k| check["samples_range_nats"][k].as_f64().unwrap());
    assert!(lo <= median && median <= hi, "{check}");
    assert!((0.0..=1.0).contains(&below), "{check}");
    let expected = if below == 0.0 {
        "outside"
    } else if below < 0.05 {
        "unusual"
    } else {
        "typical"
    };
    assert_eq!(verdict, expected, "{check}");
    assert!(
        stdout.contains("prior check: ELBO of 2 samples"),
        "{stdout}"
    );
}
