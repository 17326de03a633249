//! `interf-image validate` end to end on the shipped 3C 273 uv coverage (two truths drawn from
//! the built-in prior, four samples each, few steps: the files and their bookkeeping, not the
//! calibration itself), and its refusals of bad input.

use std::path::{Path, PathBuf};
use std::process::Command;

use interf_image::io::read_image;

fn ms() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/vla_3c273_xband.ms")
}

fn run(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .arg("validate")
        .args(args)
        .output()
        .unwrap()
}

fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn tiny_run_writes_consistent_products() {
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("v");
    let out = run(&[
        "--like",
        ms().to_str().unwrap(),
        "--from-prior",
        "--n",
        "2",
        "--samples",
        "4",
        "--steps",
        "30",
        "--noise",
        "5",
        "--bootstrap",
        "100",
        "--seed",
        "3",
        "--name",
        name.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = |s: &str| tmp.path().join(format!("v-validate{s}"));
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(p(".json")).unwrap()).unwrap();

    // TARP: one rank per truth in [0, 1), a curve from 0 to 1 on the grid, the band around it.
    let tarp = &json["tarp"];
    assert_eq!(tarp["n_truths"], 2);
    let ecp: Vec<f64> = serde_json::from_value(tarp["ecp"].clone()).unwrap();
    let alpha: Vec<f64> = serde_json::from_value(tarp["alpha"].clone()).unwrap();
    assert_eq!(ecp.len(), alpha.len());
    assert_eq!((ecp[0], *ecp.last().unwrap()), (0.0, 1.0));
    assert!(ecp.windows(2).all(|w| w[1] >= w[0]));
    let per: Vec<serde_json::Value> = serde_json::from_value(json["per_truth"].clone()).unwrap();
    assert_eq!(per.len(), 2);
    let ranks: Vec<f64> = per
        .iter()
        .map(|t| t["tarp_rank"].as_f64().unwrap())
        .collect();
    assert!(ranks.iter().all(|r| (0.0..1.0).contains(r)));
    // With two truths the ECP is a two-step function: 0 below the smaller rank, ½ between.
    let mut sorted = ranks.clone();
    sorted.sort_by(f64::total_cmp);
    for (a, e) in alpha.iter().zip(&ecp) {
        let want = sorted.iter().filter(|&&r| r <= *a).count() as f64 / 2.0;
        assert_eq!(*e, want, "ECP at {a}");
    }

    // Coverage bookkeeping: every pixel of every truth counted once, the pooled fraction is
    // the ratio of the pooled counts, and the 95 % interval holds at least the 68 % one.
    let s = &json["summary"];
    let npix = 64 * 64;
    assert_eq!(s["coverage"]["pixels"], 2 * npix);
    let hist: Vec<usize> = serde_json::from_value(s["coverage"]["rank_hist"].clone()).unwrap();
    assert_eq!(hist.iter().sum::<usize>(), 2 * npix);
    let inside: Vec<usize> = serde_json::from_value(s["coverage"]["inside"].clone()).unwrap();
    assert!(inside[1] >= inside[0]);
    assert!(
        (s["coverage_68"].as_f64().unwrap() - inside[0] as f64 / (2 * npix) as f64).abs() < 1e-12
    );
    // χ²: four per truth; the truths fit their own data to the noise (6040 visibilities:
    // reduced χ² of pure noise is 1 ± 0.02).
    for t in &per {
        assert_eq!(t["chi2_samples"].as_array().unwrap().len(), 4);
        let c = t["chi2_truth"].as_f64().unwrap();
        assert!((c - 1.0).abs() < 0.06, "χ² of a truth {c}");
    }

    // FITS cubes: the truths, means and stds, consistent with the JSON.
    let truth = read_image(&p("-truth.fits")).unwrap();
    let mean = read_image(&p("-mean.fits")).unwrap();
    let std = read_image(&p("-std.fits")).unwrap();
    for img in [&truth, &mean, &std] {
        let dims: Vec<usize> = img.shape.iter().copied().filter(|&d| d != 1).collect();
        assert_eq!(dims, vec![2, 64, 64]);
        assert_eq!(img.get_str("BUNIT"), Some("JY/PIXEL"));
    }
    assert!(std.data.iter().all(|&v| v >= 0.0));
    for (k, t) in per.iter().enumerate() {
        let tp = &truth.data[k * npix..(k + 1) * npix];
        let peak = tp.iter().cloned().fold(f64::MIN, f64::max);
        assert!((peak - t["truth_peak"].as_f64().unwrap()).abs() < 1e-5 * (1.0 + peak.abs()));
        let mp = &mean.data[k * npix..(k + 1) * npix];
        let rmse =
            (tp.iter().zip(mp).map(|(a, b)| (a - b).powi(2)).sum::<f64>() / npix as f64).sqrt();
        let want = t["rmse_mean"].as_f64().unwrap();
        assert!(
            (rmse - want).abs() < 1e-5 * want.max(1e-6),
            "{rmse} vs {want}"
        );
    }

    // Report: the page links its PNGs, which exist.
    let html = std::fs::read_to_string(p(".html")).unwrap();
    for png in ["tarp", "chi2", "ranks", "truth0", "truth1"] {
        let f = format!("v-validate-{png}.png");
        assert!(html.contains(&f), "{f} not linked");
        let m = std::fs::metadata(tmp.path().join(&f)).unwrap();
        assert!(m.len() > 1000, "{f} is {} bytes", m.len());
    }
    assert!(stdout.contains("TARP"));
    // No temporary files left behind.
    assert!(listing(tmp.path()).iter().all(|f| !f.contains(".tmp")));
}

#[test]
fn bad_input_is_refused_and_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("v");
    let missing = tmp.path().join("nowhere.ms");
    let base = |like: &str, n: &str| -> Vec<String> {
        [
            "--like",
            like,
            "--from-prior",
            "--n",
            n,
            "--samples",
            "4",
            "--steps",
            "10",
            "--noise",
            "1",
            "--name",
            name.to_str().unwrap(),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let args = base(missing.to_str().unwrap(), "2");
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("nowhere.ms"), "{err}");

    let args = base(ms().to_str().unwrap(), "0");
    let out = run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("--n"), "{err}");

    // Neither truths nor --from-prior.
    let out = run(&[
        "--like",
        ms().to_str().unwrap(),
        "--noise",
        "1",
        "--name",
        name.to_str().unwrap(),
    ]);
    assert!(!out.status.success());

    // A truth file that is not there.
    let out = run(&[
        "--like",
        ms().to_str().unwrap(),
        "--truths",
        tmp.path().join("none.npy").to_str().unwrap(),
        "--noise",
        "1",
        "--name",
        name.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("none.npy"), "{err}");

    assert!(listing(tmp.path()).is_empty(), "{:?}", listing(tmp.path()));
}
