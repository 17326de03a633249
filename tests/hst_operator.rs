//! The HST operator with the real COSMOS PSF (179², scarlet): the shared operator suite, the
//! PSF returned by a delta, flux conservation through the downsampling, and the convolution
//! against direct sums.

use std::path::PathBuf;

use interf_image::io::read_image;
use interf_image::operator::testing::check_operator;
use interf_image::operator::{DataWindow, ForwardOperator, Hst, HstOptions};

fn psf() -> (Vec<f64>, [usize; 2]) {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/hst/cosmos_psf_hst.fits");
    let img = read_image(&p).unwrap();
    let (ky, kx, d) = img.plane();
    (d, [ky, kx])
}

#[test]
fn passes_the_operator_suite() {
    let (k, shape) = psf();
    for opts in [
        HstOptions::default(),
        HstOptions {
            factor: 2,
            shift: [0.3, -0.45],
            window: Some(DataWindow {
                origin: [3, 2],
                shape: [24, 26],
            }),
        },
    ] {
        let op = Hst::new(&k, shape, [64, 64], &opts).unwrap();
        check_operator(&op, 11);
    }
}

#[test]
fn a_delta_returns_the_normalised_psf_at_its_place() {
    let (k, [ky, kx]) = psf();
    let s: f64 = k.iter().sum();
    let op = Hst::new(&k, [ky, kx], [64, 64], &HstOptions::default()).unwrap();
    let (py, px) = (20usize, 41usize);
    let mut x = vec![0.0f32; 64 * 64];
    x[py * 64 + px] = 1.0;
    let mut y = vec![0.0f32; 64 * 64];
    op.forward(&x, &mut y);
    // PSF element (89, 89), the middle of the 179² array, lands on the delta.
    let (cy, cx) = ((ky - 1) / 2, (kx - 1) / 2);
    assert_eq!((cy, cx), (89, 89));
    let mut worst = 0.0f64;
    for my in 0..64 {
        for mx in 0..64 {
            let want = k[(my + cy - py) * kx + (mx + cx - px)] / s;
            worst = worst.max((y[my * 64 + mx] as f64 - want).abs());
        }
    }
    let peak = k.iter().cloned().fold(0.0, f64::max) / s;
    assert!(worst < 1e-6 * peak.max(1e-3) + 2e-8, "worst {worst:e}");
}

#[test]
fn downsampling_conserves_flux() {
    let (k, shape) = psf();
    let op = Hst::new(
        &k,
        shape,
        [64, 64],
        &HstOptions {
            factor: 4,
            ..Default::default()
        },
    )
    .unwrap();
    // A point source in the middle: the data hold the PSF's flux within ±32 fine pixels.
    let mut x = vec![0.0f32; 64 * 64];
    x[32 * 64 + 32] = 10.0;
    let mut y = vec![0.0f32; op.data_len()];
    op.forward(&x, &mut y);
    let s: f64 = k.iter().sum();
    let mut within = 0.0;
    for jy in 0..64 {
        for jx in 0..64 {
            within += k[(jy + 89 - 32) * shape[1] + jx + 89 - 32] / s;
        }
    }
    let got: f64 = y.iter().map(|&v| v as f64).sum();
    assert!(
        (got - 10.0 * within).abs() < 1e-4 * got,
        "data flux {got} vs model flux × PSF fraction {}",
        10.0 * within
    );
    // Direct sums of one block: data pixel (8, 8) is the sum of fine pixels 32..36 of the
    // convolved image.
    let full = Hst::new(&k, shape, [64, 64], &HstOptions::default()).unwrap();
    let mut c = vec![0.0f32; 64 * 64];
    full.forward(&x, &mut c);
    let block: f32 = (32..36)
        .flat_map(|iy| (32..36).map(move |ix| (iy, ix)))
        .map(|(iy, ix)| c[iy * 64 + ix])
        .sum();
    assert!((y[8 * 16 + 8] - block).abs() < 1e-5 * block.abs());
}
