//! `image --data cphase|cphase-lcamp` on the EHT M87 UVFITS: the closure likelihood is built
//! from the non-redundant closures of every time stamp (counted here independently from the
//! file's baselines), sampled with DPS, its samples recentred (closures carry no absolute
//! position), and the options it cannot combine with are refused.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;

use ms_io::{Selection, VisFile};

fn eht() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/eht_m87_2017/SR1_M87_2017_096_lo_hops_netcal_StokesI.uvfits")
}

/// Per time stamp: (stations, baselines) with usable data.
fn snapshots() -> Vec<(usize, usize)> {
    let f = VisFile::open(eht()).unwrap();
    let mut by_t: BTreeMap<u64, BTreeSet<(i32, i32)>> = BTreeMap::new();
    for c in f.read(&Selection::default()).unwrap().chunks {
        for r in 0..c.n_rows() {
            if c.weight[r * c.n_chan()] > 0.0 && c.antenna1[r] != c.antenna2[r] {
                let (a, b) = (c.antenna1[r], c.antenna2[r]);
                by_t.entry(c.time[r].to_bits())
                    .or_default()
                    .insert((a.min(b), a.max(b)));
            }
        }
    }
    by_t.values()
        .map(|bl| {
            let st: BTreeSet<i32> = bl.iter().flat_map(|&(a, b)| [a, b]).collect();
            (st.len(), bl.len())
        })
        .collect()
}

#[test]
fn eht_closure_phases_image_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let name = dir.path().join("m87");
    let out = Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .args([
            "image",
            eht().to_str().unwrap(),
            "--scale",
            "2uas",
            "--data",
            "cphase",
            "--total-flux",
            "0.6",
            "--samples",
            "2",
            "--steps",
            "30",
            "--allow-poor-fit",
            "--name",
            name.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let json: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("m87-summary.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(json["data"], "cphase");
    assert_eq!(json["method"], "dps");
    // Non-redundant closure phases: (N−1)(N−2)/2 on a snapshot with every baseline, at most
    // the baseline graph's cycle rank B − N + 1 on any (connected) snapshot.
    let snaps = snapshots();
    let complete: usize = snaps
        .iter()
        .filter(|&&(n, b)| b == n * (n - 1) / 2)
        .map(|&(n, _)| (n - 1) * (n - 2) / 2)
        .sum();
    let bound: usize = snaps.iter().map(|&(n, b)| (b + 1).saturating_sub(n)).sum();
    let n = json["n_likelihood_data"].as_u64().unwrap() as usize;
    assert!(complete > 1000, "{complete} closures on complete snapshots");
    assert!(
        n >= complete && n <= bound,
        "{n} closure phases, expected {complete}..={bound}"
    );
    let chi2 = json["reduced_chi2_samples_likelihood_data"]
        .as_array()
        .unwrap();
    assert_eq!(chi2.len(), 2);
    assert!(chi2.iter().all(|c| c.as_f64().unwrap().is_finite()));
    assert!(json["reduced_chi2_mean_closures"]
        .as_f64()
        .unwrap()
        .is_finite());
    // The pixel scale in µas reached the header: 2 µas.
    let pix = json["pixel_arcsec"].as_f64().unwrap();
    assert!((pix - 2e-6).abs() < 1e-12, "{pix}");
}

#[test]
fn closures_refuse_selfcal_and_bad_total_flux() {
    let dir = tempfile::tempdir().unwrap();
    for (extra, says) in [
        (vec!["--selfcal", "1"], "--selfcal"),
        (vec!["--total-flux=-1"], "--total-flux must be positive"),
    ] {
        let mut args = vec![
            "image".to_string(),
            eht().to_string_lossy().into_owned(),
            "--data".into(),
            "cphase-lcamp".into(),
            "--samples".into(),
            "1".into(),
            "--steps".into(),
            "2".into(),
            "--name".into(),
            dir.path().join("x").to_string_lossy().into_owned(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        let out = Command::new(env!("CARGO_BIN_EXE_interf-image"))
            .args(&args)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(says), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
