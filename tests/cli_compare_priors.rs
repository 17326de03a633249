//! `compare-priors`: the command runs every prior on the same observation, writes one JSON
//! with each prior's evidence bound and its terms, prints the ranking, leaves the input as it
//! was, and refuses what it cannot compare. (The bound itself is checked against the closed-form
//! Gaussian evidence in `sample::evidence`.)

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_interf-image"))
}

fn tree_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(tree_bytes(&p));
        } else {
            out.push((p.clone(), std::fs::read(&p).unwrap()));
        }
    }
    out.sort();
    out
}

#[test]
fn compare_priors_ranks_two_priors_on_one_observation() {
    let ms = root().join("tests/data/vla_3c273_xband.ms");
    let before = tree_bytes(&ms);
    let tmp = tempfile::tempdir().unwrap();
    let name = tmp.path().join("cmp");
    let out = bin()
        .args(["compare-priors"])
        .arg(&ms)
        .args(["--prior", "default", "--prior"])
        .arg(root().join("priors/galaxy-sim"))
        .args([
            "--chains",
            "2",
            "--steps",
            "2",
            "--elbo-samples",
            "2",
            "--name",
        ])
        .arg(&name)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stdout.contains("rank") && stdout.contains("default"),
        "{stdout}"
    );
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(tmp.path().join("cmp-evidence.json")).unwrap(),
    )
    .unwrap();
    let priors = j["priors"].as_array().unwrap();
    assert_eq!(priors.len(), 2);
    for p in priors {
        let b = p["evidence_lower_bound_nats"].as_f64().unwrap();
        let terms = p["mean_log_likelihood"].as_f64().unwrap()
            + p["mean_log_prior_elbo"].as_f64().unwrap()
            - p["mean_log_q"].as_f64().unwrap();
        assert!(b.is_finite(), "{p}");
        // The bound is the mean of the draws' weights: the sum of the mean terms.
        assert!(
            (b - terms).abs() <= 1e-6 * b.abs().max(1.0),
            "{b} against {terms}"
        );
        assert_eq!(p["draws_reduced_chi2"].as_array().unwrap().len(), 2);
    }
    assert_eq!(before, tree_bytes(&ms), "the Measurement Set was modified");

    // One draw gives no standard error; a prior of another size cannot be compared.
    let o = bin()
        .args(["compare-priors"])
        .arg(&ms)
        .args(["--prior", "default", "--chains", "1", "--name"])
        .arg(tmp.path().join("one"))
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("--chains"));
    let o = bin()
        .args(["compare-priors"])
        .arg(&ms)
        .args(["--prior", "default", "--prior"])
        .arg(root().join("tests/data/learned_noise_corr16"))
        .args(["--chains", "2", "--steps", "1", "--name"])
        .arg(tmp.path().join("sizes"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("compare priors of one size"), "{err}");
    assert!(!tmp.path().join("sizes-evidence.json").exists());
}
