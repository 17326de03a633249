//! Calibration of the posterior on a simulated observation with a known sky: a COSMOS HST
//! galaxy (not in the prior's training set, not even a radio galaxy) observed with the real uv
//! coverage of `vla_3c273_xband.ms` and known Gaussian noise, through the CLI (`simulate`, then
//! `image`). The posterior samples must fit the data as well as the noise allows (reduced χ²
//! in [0.8, 1.2]), the truth must lie within ±2σ of the posterior at ≥ 90 % of the pixels where
//! it is significant, and the posterior mean must beat the flux-scaled dirty image in RMSE.

use std::path::{Path, PathBuf};
use std::process::Command;

use interf_image::io::{read_hdu, read_image, write_image, SkyHeader};
use interf_image::prior::data::{center_crop, resize, Resample};

const SIDE: usize = 64;
/// A third of the theoretical beam of 3C 273's uv coverage, as the image job's default.
const PIXEL_ARCSEC: f64 = 0.684;
const PEAK_JY_PER_PIXEL: f64 = 2.0;
/// Per real part of each Stokes I visibility: peak S/N of the dirty image ≈ 1000, long
/// baselines near S/N 1 — a good VLA snapshot, not a simulation without noise.
const NOISE_JY: f64 = 2.0;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The first COSMOS stamp at least 64 pixels on a side: central square, area-averaged to
/// 64², sky level (median) removed, scaled to a 2 Jy/pixel peak.
fn truth_image() -> Vec<f32> {
    let path = repo().join("tests/data/cosmos_hst/real_galaxy_images_23.5_n1.fits");
    for hdu in 0..20 {
        let Ok(img) = read_hdu(&path, hdu) else {
            continue;
        };
        if img.shape.len() < 2 {
            continue;
        }
        let (h, w, data) = img.plane();
        if h.min(w) < SIDE {
            continue;
        }
        let n = h.min(w);
        let d32: Vec<f32> = data.iter().map(|&v| v as f32).collect();
        let c = center_crop(&d32, h, w, n, n);
        let mut r = resize(&c, n, n, SIDE, SIDE, Resample::Area);
        let mut sorted = r.clone();
        sorted.sort_by(f32::total_cmp);
        let median = sorted[sorted.len() / 2];
        for v in r.iter_mut() {
            *v = (*v - median).max(0.0);
        }
        let peak = r.iter().cloned().fold(0.0f32, f32::max);
        return r
            .iter()
            .map(|v| v / peak * PEAK_JY_PER_PIXEL as f32)
            .collect();
    }
    panic!("no COSMOS stamp of at least {SIDE}² in {}", path.display());
}

fn run(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "interf-image {args:?}\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

struct Calibration {
    chi2_median: f64,
    coverage: f64,
    n_significant: usize,
    rmse_mean: f64,
    rmse_dirty: f64,
}

fn plane(path: &Path) -> Vec<f64> {
    read_image(path).unwrap().plane().2
}

fn simulated(dir: &Path) -> (PathBuf, Vec<f32>) {
    let truth = truth_image();
    let ms = simulate_truth(dir, &truth, NOISE_JY, "sim");
    (ms, truth)
}

/// `truth` (Jy/pixel, 64² of 0.684″) observed through 3C 273's uv coverage with Gaussian noise
/// of `noise_jy` per real part.
fn simulate_truth(dir: &Path, truth: &[f32], noise_jy: f64, name: &str) -> PathBuf {
    let cell = PIXEL_ARCSEC / 3600.0;
    let header = SkyHeader {
        cell_x_deg: cell,
        cell_y_deg: cell,
        freq_hz: 8.085e9,
        bandwidth_hz: 50e6,
        bunit: "JY/PIXEL".into(),
        ..Default::default()
    };
    let truth_path = dir.join(format!("{name}-truth.fits"));
    write_image(&truth_path, truth, SIDE, SIDE, &header).unwrap();
    let ms = dir.join(format!("{name}.ms"));
    run(&[
        "simulate",
        "--image",
        truth_path.to_str().unwrap(),
        "--like",
        repo()
            .join("tests/data/vla_3c273_xband.ms")
            .to_str()
            .unwrap(),
        "--noise",
        &noise_jy.to_string(),
        "--out",
        ms.to_str().unwrap(),
        "--seed",
        "3",
    ]);
    ms
}

fn posterior(dir: &Path, ms: &Path, truth: &[f32], likelihood: &str, method: &str) -> Calibration {
    posterior_with(dir, ms, truth, likelihood, method, NOISE_JY, None).0
}

/// One `image` run and its calibration numbers; with `faint_below` (Jy/pixel) also the
/// coverage over the significant pixels fainter than that.
fn posterior_with(
    dir: &Path,
    ms: &Path,
    truth: &[f32],
    likelihood: &str,
    method: &str,
    noise_jy: f64,
    faint_below: Option<f64>,
) -> (Calibration, Option<(f64, usize)>, serde_json::Value) {
    let name = dir.join(format!(
        "{}-{likelihood}-{method}",
        ms.file_stem().unwrap().to_string_lossy()
    ));
    let stdout = run(&[
        "image",
        ms.to_str().unwrap(),
        "--samples",
        "16",
        "--batch",
        "16",
        "--steps",
        "150",
        "--scale",
        &format!("{PIXEL_ARCSEC}asec"),
        "--noise",
        "weights",
        "--likelihood",
        likelihood,
        "--method",
        method,
        "--seed",
        "1",
        "--name",
        name.to_str().unwrap(),
    ]);
    let file = |s: &str| PathBuf::from(format!("{}-{s}", name.display()));
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(file("summary.json")).unwrap()).unwrap();
    let mut chi2: Vec<f64> = summary["reduced_chi2_samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    chi2.sort_by(f64::total_cmp);
    let mean = plane(&file("mean.fits"));
    let std = plane(&file("std.fits"));
    let dirty = plane(&file("dirty.fits"));
    let t: Vec<f64> = truth.iter().map(|&v| v as f64).collect();

    // "Significant": above 3σ of the image noise in Jy/pixel — the natural-weighting dirty
    // noise σ/√N_re (Jy/beam) spread over the beam's area in pixels: a Gaussian beam's
    // integral is 1/ln 2 times its area above half maximum.
    let psf = plane(&file("psf.fits"));
    let beam_pixels = psf.iter().filter(|&&v| v > 0.5).count() as f64 / 2f64.ln();
    let n_vis = summary["n_visibilities"].as_f64().unwrap();
    let sigma_img = noise_jy / (2.0 * n_vis).sqrt() / beam_pixels.max(1.0);
    let significant: Vec<usize> = (0..t.len()).filter(|&k| t[k] > 3.0 * sigma_img).collect();
    let inside = significant
        .iter()
        .filter(|&&k| (mean[k] - t[k]).abs() <= 2.0 * std[k])
        .count();
    let rmse = |a: &[f64]| {
        (a.iter().zip(&t).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / t.len() as f64).sqrt()
    };
    let scale = t.iter().sum::<f64>() / dirty.iter().sum::<f64>();
    let dirty_scaled: Vec<f64> = dirty.iter().map(|v| v * scale).collect();
    let faint = faint_below.map(|f| {
        let px: Vec<&usize> = significant.iter().filter(|&&k| t[k] < f).collect();
        let inside = px
            .iter()
            .filter(|&&&k| (mean[k] - t[k]).abs() <= 2.0 * std[k])
            .count();
        (inside as f64 / px.len().max(1) as f64, px.len())
    });
    let c = Calibration {
        chi2_median: chi2[chi2.len() / 2],
        coverage: inside as f64 / significant.len() as f64,
        n_significant: significant.len(),
        rmse_mean: rmse(&mean),
        rmse_dirty: rmse(&dirty_scaled),
    };
    eprintln!(
        "{likelihood}, {method}: reduced χ² of samples median {:.3} (range {:.3}–{:.3}); truth within ±2σ at \
         {:.1} % of {} significant pixels (> {:.4} Jy/pixel); RMSE mean {:.4} vs flux-scaled dirty \
         {:.4} Jy/pixel\n{stdout}",
        c.chi2_median,
        chi2[0],
        chi2[chi2.len() - 1],
        100.0 * c.coverage,
        c.n_significant,
        3.0 * sigma_img,
        c.rmse_mean,
        c.rmse_dirty
    );
    if let Some((cov, n)) = faint {
        eprintln!(
            "faint pixels: truth within ±2σ at {:.1} % of {n}",
            100.0 * cov
        );
    }
    (c, faint, summary)
}

fn check(c: &Calibration) {
    assert!(
        (0.8..=1.2).contains(&c.chi2_median),
        "reduced χ² {} (all visibilities) outside [0.8, 1.2]",
        c.chi2_median
    );
    assert!(c.n_significant > 100, "too few significant pixels");
    assert!(c.coverage >= 0.9, "coverage {:.3} < 0.9", c.coverage);
    assert!(
        c.rmse_mean < c.rmse_dirty,
        "posterior mean RMSE {} not below the dirty image's {}",
        c.rmse_mean,
        c.rmse_dirty
    );
}

/// Both ways of meeting the data — every visibility through the NUFFT, and the gridded cells
/// (default oversampling 4, exact cell rows) — with the convolved approximation, and DPS on
/// every visibility. (DPS on the gridded cells is left out for CI's time: DPS uses the
/// likelihood only through the same gradient the CLA run already checks; measured at 1.004 /
/// 97.4 %, the README's table.)
#[test]
fn calibrated_on_a_simulated_galaxy() {
    let tmp = tempfile::tempdir().unwrap();
    let (ms, truth) = simulated(tmp.path());
    // Every run before any assertion, so a failure shows the numbers of each.
    let mut results = Vec::new();
    for (likelihood, method) in [
        ("visibilities", "cla"),
        ("gridded", "cla"),
        ("visibilities", "dps"),
    ] {
        let c = posterior(tmp.path(), &ms, &truth, likelihood, method);
        results.push((likelihood, method, c));
    }
    for (l, m, c) in &results {
        eprintln!("checking {l}, {m}");
        check(c);
    }
}

/// High dynamic range: a 300 Jy unresolved core in a galaxy whose brightest pixel is 1/1000 of
/// it (the COSMOS stamp at 0.3 Jy/pixel), peak S/N ≈ 1.1·10⁵ in the dirty image — a quasar and
/// its host. The galaxy's peak is at the noise σ per visibility, as in the galaxy-only case
/// above: what is new is a core 1000 times brighter beside it. The core must be found as a
/// compact component, the samples must fit every visibility, and the truth must lie within ±2σ
/// on ≥ 90 % of the significant pixels, the faint ones (all but the core, below 1/1000 of the
/// peak) included. (At σ = 2 Jy, galaxy peak/σ = 0.15, coverage is 87.7 % — and 89.8 % for the
/// galaxy alone without a core: the prior's calibration at low S/N, not the core's treatment.)
#[test]
fn calibrated_at_high_dynamic_range() {
    let tmp = tempfile::tempdir().unwrap();
    const CORE_JY: f32 = 300.0;
    const HDR_NOISE_JY: f64 = 0.3;
    let mut truth: Vec<f32> = truth_image()
        .iter()
        .map(|v| v * (CORE_JY / 1000.0) / PEAK_JY_PER_PIXEL as f32)
        .collect();
    let peak = (0..truth.len())
        .max_by(|&a, &b| truth[a].total_cmp(&truth[b]))
        .unwrap();
    truth[peak] += CORE_JY;
    let ms = simulate_truth(tmp.path(), &truth, HDR_NOISE_JY, "hdr");
    let (c, faint, summary) = posterior_with(
        tmp.path(),
        &ms,
        &truth,
        "visibilities",
        "cla",
        HDR_NOISE_JY,
        Some(CORE_JY as f64 / 1000.0 * 1.0001),
    );
    // Peak S/N of the dirty image: the core (Jy/beam) over the natural-weighting image noise.
    let n_vis = summary["n_visibilities"].as_f64().unwrap();
    let snr = CORE_JY as f64 / (HDR_NOISE_JY / (2.0 * n_vis).sqrt());
    assert!(snr >= 1e4, "peak S/N {snr:.0} < 10⁴");
    let compact = summary["compact_components"].as_array().unwrap();
    assert!(
        compact.iter().any(|k| {
            let yx = &k["pixel_yx"];
            yx[0].as_u64() == Some((peak / SIDE) as u64)
                && yx[1].as_u64() == Some((peak % SIDE) as u64)
        }),
        "the core at pixel {} is not among the compact components {compact:?}",
        peak
    );
    check(&c);
    let (faint_cov, n_faint) = faint.unwrap();
    assert!(n_faint > 100, "only {n_faint} faint significant pixels");
    assert!(
        faint_cov >= 0.9,
        "faint pixels: coverage {faint_cov:.3} < 0.9"
    );
}
