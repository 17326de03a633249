//! Every `ForwardOperator` through the same suite (`operator::testing::check_operator`):
//! dot-product adjoint test, shapes, linearity, and `diag_aat` against the exact `diag(A Aᵀ)`.

use interf_image::operator::lens::{ExternalShear, ImageGrid, MassModel, Psf, Sie, SourceGrid};
use interf_image::operator::testing::{check_operator, check_operator_with, CheckTolerances};
use interf_image::operator::{
    CellNoise, Compose, ForwardOperator, Gridded, GriddedVisibilities, Hst, HstOptions,
    ImageGeometry, Lens, LensOptions, Nufft, NufftOptions, Scaled,
};
use num_complex::Complex;
use rand::{rngs::StdRng, Rng, SeedableRng};

const C: f64 = 299_792_458.0;

fn uvw(n: usize, side: usize, cell: f64, seed: u64) -> Vec<[f64; 3]> {
    let mut rng = StdRng::seed_from_u64(seed);
    let umax = 0.45 / cell;
    let _ = side;
    (0..n)
        .map(|_| {
            [
                rng.random_range(-umax..umax),
                rng.random_range(-umax..umax),
                rng.random_range(-20.0..20.0),
            ]
        })
        .collect()
}

fn make_nufft(side: usize, cell: f64, n: usize) -> Nufft {
    let geom = ImageGeometry::new(side, side, cell, cell).unwrap();
    Nufft::new(
        geom,
        &uvw(n, side, cell, 5),
        &[C],
        None,
        &NufftOptions::default(),
    )
    .unwrap()
}

fn lens(image: usize, mask: bool, psf: bool) -> Lens {
    let mass = MassModel {
        sie: Sie {
            einstein_radius: 0.5,
            axis_ratio: 0.7,
            angle_deg: 25.0,
            centre: [0.01, 0.02],
        },
        shear: ExternalShear {
            gamma_1: 0.03,
            gamma_2: 0.01,
        },
    };
    let grid = ImageGrid {
        ny: image,
        nx: image,
        pixel_scale: 1.6 / image as f64,
    };
    let source = SourceGrid {
        ny: 12,
        nx: 12,
        scale: 0.05,
        centre: [0.0, 0.0],
    };
    let psf = psf.then(|| {
        let k: Vec<f32> = (0..25)
            .map(|i| {
                let (a, b) = ((i / 5) as f32 - 2.0, (i % 5) as f32 - 2.0);
                (-(a * a + b * b) / 2.0).exp()
            })
            .collect();
        Psf::new(5, 5, k).unwrap()
    });
    let mask = mask.then(|| (0..image * image).map(|p| p % 3 != 0).collect());
    Lens::new(
        &mass,
        grid,
        source,
        LensOptions {
            supersample: 2,
            psf,
            mask,
        },
    )
    .unwrap()
}

#[test]
fn nufft() {
    check_operator(&make_nufft(16, 1e-4, 60), 1);
}

#[test]
fn gridded() {
    let geom = ImageGeometry::new(16, 16, 1e-4, 1e-4).unwrap();
    let u = uvw(300, 16, 1e-4, 7);
    let mut rng = StdRng::seed_from_u64(8);
    let vis: Vec<Complex<f32>> = (0..u.len())
        .map(|_| Complex::new(rng.random::<f32>(), rng.random::<f32>()))
        .collect();
    let mut b = GriddedVisibilities::builder(geom, 2).unwrap();
    b.add(&u, &[C], &vis, &vec![1.0; u.len()]).unwrap();
    let grid = b.finish(1.0, CellNoise::Weights);
    check_operator(&Gridded::new(&grid).unwrap(), 2);
}

#[test]
fn scaled() {
    check_operator(
        &Scaled {
            inner: make_nufft(16, 1e-4, 40),
            scale: 2.5,
        },
        3,
    );
}

#[test]
fn lens_variants() {
    for (mask, psf) in [(false, false), (true, false), (false, true), (true, true)] {
        check_operator(&lens(24, mask, psf), 4);
    }
}

#[test]
fn hst() {
    let psf: Vec<f64> = (0..49)
        .map(|i| {
            let (a, b) = ((i / 7) as f64 - 3.0, (i % 7) as f64 - 3.0);
            (-(a * a + 0.5 * b * b) / 3.0).exp()
        })
        .collect();
    for opts in [
        HstOptions::default(),
        HstOptions {
            factor: 2,
            shift: [0.3, -0.2],
            window: None,
        },
    ] {
        let op = Hst::new(&psf, [7, 7], [20, 24], &opts).unwrap();
        check_operator(&op, 5);
    }
}

#[test]
fn compose_nufft_after_lens() {
    // Small enough for the exact diag (columns).
    let op = Compose::new(
        make_nufft(24, 1.6 / 24.0 * 4.85e-6, 50),
        lens(24, false, false),
    )
    .unwrap();
    check_operator(&op, 6);
    // The probing estimate, against the exact diagonal: unbiased, √(2/K) noise per datum.
    let exact = op.diag_by_columns();
    let probed = op.diag_by_probing(256, 9);
    let mean_ratio: f64 = probed
        .iter()
        .zip(&exact)
        .map(|(p, e)| *p as f64 / *e as f64)
        .sum::<f64>()
        / exact.len() as f64;
    assert!(
        (mean_ratio - 1.0).abs() < 0.05,
        "probing mean ratio {mean_ratio}"
    );
    // Lens after a lens-shaped identity-ish composition: Scaled ∘ Lens, loose diag tolerance
    // not needed (exact), but exercise the trait object too.
    let boxed: Box<dyn ForwardOperator> = Box::new(lens(16, true, true));
    check_operator_with(&boxed, 7, CheckTolerances::default());
}
