//! Held-out truths for calibration runs: the 10 COSMOS HST galaxy stamps (one per HDU, each its
//! own size) read, cropped to a square, area-resized to 64² and scaled to the prior's peak of 1.

use std::path::PathBuf;

use interf_image::validate::truths::{from_file, read_fits_hdus, TruthScaling};

fn cosmos() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/cosmos_hst/real_galaxy_images_23.5_n1.fits")
}

#[test]
fn cosmos_stamps_one_per_hdu() {
    let raw = read_fits_hdus(&cosmos()).unwrap();
    assert_eq!(raw.len(), 10, "one stamp per HDU");
    for (h, w, d) in &raw {
        assert_eq!(d.len(), h * w);
        assert!(*h >= 32 && *w >= 32, "{h}×{w}");
    }
    let t = from_file(&cosmos(), 64, TruthScaling::Peak, 1.0).unwrap();
    assert_eq!(t.len(), 10);
    for (k, img) in t.iter().enumerate() {
        assert_eq!(img.len(), 64 * 64);
        let peak = img.iter().cloned().fold(f32::MIN, f32::max);
        assert!((peak - 1.0).abs() < 1e-6, "stamp {k}: peak {peak}");
        assert!(img.iter().all(|&v| v >= 0.0));
        // A galaxy, not a flat field: the brightest pixel stands well above the median.
        let mut s = img.clone();
        s.sort_by(f32::total_cmp);
        assert!(s[s.len() / 2] < 0.5, "stamp {k}: median {}", s[s.len() / 2]);
    }
    // Physical scaling (÷ flux scale, no clipping) is the same image before the peak scaling:
    // where it is positive, dividing it by its own peak gives the peak-scaled truth.
    let p = from_file(&cosmos(), 64, TruthScaling::Physical, 2.0).unwrap();
    for (a, b) in t.iter().zip(&p) {
        let pk = b.iter().cloned().fold(f32::MIN, f32::max);
        assert!(pk > 0.0);
        assert!(
            b.iter().any(|&v| v < 0.0),
            "physical keeps the noise's negatives"
        );
        for (x, y) in a.iter().zip(b) {
            let want = y.max(0.0) / pk;
            assert!((x - want).abs() < 1e-5, "{x} vs {want}");
        }
    }
}

#[test]
fn unreadable_truths_name_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.npy");
    std::fs::write(&bad, b"not numpy").unwrap();
    let e = from_file(&bad, 64, TruthScaling::Peak, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("bad.npy"), "{e}");
    let e = from_file(&dir.path().join("x.txt"), 64, TruthScaling::Peak, 1.0)
        .unwrap_err()
        .to_string();
    assert!(e.contains("x.txt"), "{e}");
}

/// MiraBest holds six empty images: a run that uses other images of the file (a split, or its
/// first N) must not fail on them, and one that uses an empty one with peak scaling must say
/// which.
#[test]
fn an_empty_image_fails_only_when_used() {
    use interf_image::prior::data::{write_npy_f32, ImageStack};
    use interf_image::validate::truths::{read_resized, to_prior_units};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("three.npy");
    let side = 16;
    let mut data = vec![0.0f32; 3 * side * side];
    for (k, v) in data.iter_mut().enumerate() {
        let (i, p) = (k / (side * side), k % (side * side));
        if i != 1 {
            *v = ((p % 7) as f32 - 2.0) * (i + 1) as f32;
        }
    }
    let stack = ImageStack {
        n: 3,
        h: side,
        w: side,
        data,
    };
    write_npy_f32(&path, &stack).unwrap();
    let e = from_file(&path, side, TruthScaling::Peak, 1.0)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("three.npy") && e.contains("image 1 has no positive pixel"),
        "{e}"
    );
    let mut raw = read_resized(&path, side).unwrap();
    assert_eq!(raw.len(), 3);
    for k in [0, 2] {
        to_prior_units(&mut raw[k], &path, k, TruthScaling::Peak, 1.0).unwrap();
        let peak = raw[k].iter().cloned().fold(f32::MIN, f32::max);
        assert_eq!(peak, 1.0);
        assert!(raw[k].iter().all(|&v| v >= 0.0));
    }
    // Physical scaling keeps an empty image (empty sky is a valid truth in Jy/pixel).
    to_prior_units(&mut raw[1], &path, 1, TruthScaling::Physical, 2.0).unwrap();
    assert!(raw[1].iter().all(|&v| v == 0.0));
}

/// Why `validate` adds the prior's resolution floor to file truths: a posterior that scatters
/// by σ around an exactly-zero truth covers it at every credibility (coverage ≈ 1, not the
/// nominal 0.68/0.95), while a truth drawn with that scatter is covered at the nominal rate.
/// The floor noise is seeded per truth: the same (seed, index) gives the same noise.
#[test]
fn the_floor_makes_zero_truths_comparable() {
    use interf_image::validate::stats::pixel_coverage;
    use interf_image::validate::truths::add_floor;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use rand_distr::StandardNormal;
    let (d, s, sigma) = (4096usize, 16usize, 1e-3f64);
    let mut rng = StdRng::seed_from_u64(11);
    // Posterior samples of an empty sky under a prior with floor σ: N(0, σ²) per pixel.
    let samples: Vec<f32> = (0..d * s)
        .map(|_| (sigma * rng.sample::<f64, _>(StandardNormal)) as f32)
        .collect();
    let exact = vec![0.0f32; d];
    let c0 = pixel_coverage(&samples, &exact, &mut rng);
    assert!(c0.fraction(0) > 0.95, "68 %: {}", c0.fraction(0));
    let mut floored = exact.clone();
    add_floor(&mut floored, sigma, 5, 3);
    let c1 = pixel_coverage(&samples, &floored, &mut rng);
    for (k, nominal) in [(0, 0.68), (1, 0.95)] {
        let f = c1.fraction(k);
        assert!((f - nominal).abs() < 0.03, "level {nominal}: {f}");
    }
    let std = (floored.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() / d as f64).sqrt();
    assert!((std / sigma - 1.0).abs() < 0.05, "floor noise std {std}");
    let mut again = exact.clone();
    add_floor(&mut again, sigma, 5, 3);
    assert_eq!(again, floored, "same seed and index, same noise");
    let mut other = exact;
    add_floor(&mut other, sigma, 5, 4);
    assert_ne!(other, floored, "another truth gets other noise");
}
