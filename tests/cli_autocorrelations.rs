//! Autocorrelations (ANTENNA1 = ANTENNA2) are never imaged, as in WSClean and CASA: an MS
//! with them gives WSClean's image of the same MS without them.

use std::path::PathBuf;
use std::process::{Command, Output};

use interf_image::io::read_image;
use ms_io::{MeasurementSet, MsWriter, Selection};
use num_complex::Complex;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .args(args)
        .output()
        .expect("the binary runs")
}

fn rel_l2(a: &[f64], b: &[f64]) -> f64 {
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

/// The 1629 fully flagged rows of the 3C 273 fixture (WSClean never used them) become
/// unflagged autocorrelations of 10⁶ Jy total power: the dirty image must still be
/// WSClean's, to the accuracy the dirty-image reference test asks of the original.
#[test]
fn dirty_with_autocorrelations_matches_wsclean() {
    let src = root().join("tests/data/vla_3c273_xband.ms");
    let ms = MeasurementSet::open(&src).unwrap();
    let vis = ms.read(&Selection::default()).unwrap();
    // No autocorrelation in the original, one channel: chunk rows are table rows.
    assert_eq!(vis.stats.rows, ms.info().n_rows);
    assert_eq!(vis.stats.autocorrelations, 0);
    let mut flagged = Vec::new();
    let mut row = 0u64;
    for c in &vis.chunks {
        for r in 0..c.n_rows() {
            let w = &c.weight[r * c.n_chan()..(r + 1) * c.n_chan()];
            if w.iter().all(|&x| x <= 0.0) {
                flagged.push(row);
            }
            row += 1;
        }
    }
    assert_eq!(flagged.len(), 1629);

    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("autos.ms");
    ms_io::create_like(&src, &copy).unwrap();
    let mut w = MsWriter::open(&copy).unwrap();
    w.make_autocorrelations(&flagged, Complex::new(1e6, 0.0))
        .unwrap();
    w.finish().unwrap();
    // The copy really holds usable autocorrelations for a reader that kept them.
    let name = tmp.path().join("a");
    let out = run(&[
        "dirty",
        copy.to_str().unwrap(),
        "--size",
        "512",
        "--scale",
        "0.5asec",
        "--weight",
        "natural",
        "--epsilon",
        "1e-6",
        "--name",
        name.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("left out 1629 autocorrelation rows"),
        "{stderr}"
    );
    let ours = read_image(&tmp.path().join("a-dirty.fits")).unwrap();
    let theirs = read_image(&root().join("tests/data/reference/3c273_natural-dirty.fits")).unwrap();
    let (_, _, a) = ours.plane();
    let (_, _, b) = theirs.plane();
    let rel = rel_l2(&a, &b);
    assert!(rel <= 1e-3, "relative L2 to WSClean {rel:.3e}");
}

/// The MWA MS has 121 autocorrelation rows among its 7381: all left out, and said so.
#[test]
fn mwa_autocorrelations_are_counted_and_left_out() {
    // BSD-2, from the pyuvdata 3.1.3 wheel (`pyuvdata/data/1102865728_small.ms`).
    let mwa = root().join("tests/data/mwa_1102865728_small.ms");
    let ms = MeasurementSet::open(&mwa).unwrap();
    let vis = ms.read(&Selection::default()).unwrap();
    assert_eq!(vis.stats.autocorrelations, 121);
    assert_eq!(vis.stats.rows + 121, ms.info().n_rows);
    for c in &vis.chunks {
        assert!(c.antenna1.iter().zip(&c.antenna2).all(|(a, b)| a != b));
    }
}
