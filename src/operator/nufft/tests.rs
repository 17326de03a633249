use super::kernel::{gauss_legendre_unit, EsKernel};
use super::*;
use crate::operator::testing::{assert_adjoint, dot_test_with};
use rand::{rngs::StdRng, Rng, SeedableRng};
use std::f64::consts::PI;

const C: f64 = SPEED_OF_LIGHT;

struct Case {
    geom: ImageGeometry,
    uvw: Vec<[f64; 3]>,
    freq: Vec<f64>,
}

/// Random samples: `u, v` up to `uv_cells` times the band limit `1/(2 dx)` (beyond 1 checks
/// the periodic wrap), `|w|` up to `w_max` wavelengths.
fn case(seed: u64, nx: usize, ny: usize, dx: f64, nrow: usize, uv_cells: f64, w_max: f64) -> Case {
    let mut rng = StdRng::seed_from_u64(seed);
    let freq = vec![1.0e8, 1.5e8];
    let lam_max = C / freq[0];
    let ulim = uv_cells / (2.0 * dx);
    let uvw = (0..nrow)
        .map(|_| {
            [
                rng.random_range(-ulim..ulim) * lam_max / 1.5,
                rng.random_range(-ulim..ulim) * lam_max / 1.5,
                if w_max > 0.0 {
                    rng.random_range(-w_max..w_max) * lam_max / 1.5
                } else {
                    0.0
                },
            ]
        })
        .collect();
    Case {
        geom: ImageGeometry::new(nx, ny, dx, dx * 1.1).unwrap(),
        uvw,
        freq,
    }
}

fn phase(geom: &ImageGeometry, uvw: [f64; 3], iy: usize, ix: usize, use_w: bool) -> f64 {
    let (l, m) = geom.lm(iy, ix);
    let nm1 = if use_w {
        -(l * l + m * m) / (1.0 + (1.0 - l * l - m * m).sqrt())
    } else {
        0.0
    };
    2.0 * PI * (uvw[0] * l + uvw[1] * m + uvw[2] * nm1)
}

fn lambdas(c: &Case) -> Vec<[f64; 3]> {
    let mut out = Vec::new();
    for r in &c.uvw {
        for f in &c.freq {
            out.push([r[0] * f / C, r[1] * f / C, r[2] * f / C]);
        }
    }
    out
}

fn dft_forward(c: &Case, image: &[f64], use_w: bool) -> Vec<C64> {
    let g = &c.geom;
    lambdas(c)
        .par_iter()
        .map(|&k| {
            let mut acc = C64::default();
            for iy in 0..g.ny {
                for ix in 0..g.nx {
                    acc += C64::from_polar(image[iy * g.nx + ix], phase(g, k, iy, ix, use_w));
                }
            }
            acc
        })
        .collect()
}

fn dft_adjoint(c: &Case, vis: &[C64], wt: &[f32], use_w: bool) -> Vec<f64> {
    let g = &c.geom;
    let ks = lambdas(c);
    (0..g.len())
        .into_par_iter()
        .map(|p| {
            let (iy, ix) = (p / g.nx, p % g.nx);
            ks.iter()
                .zip(vis)
                .zip(wt)
                .map(|((&k, v), &w)| {
                    w as f64 * (v * C64::from_polar(1.0, -phase(g, k, iy, ix, use_w))).re
                })
                .sum()
        })
        .collect()
}

fn rel_l2<T: Copy>(a: &[T], b: &[T], d: impl Fn(T, T) -> (f64, f64)) -> f64 {
    let (mut num, mut den) = (0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (e, r) = d(x, y);
        num += e;
        den += r;
    }
    (num / den).sqrt()
}

fn rel_c(a: &[C64], b: &[C64]) -> f64 {
    rel_l2(a, b, |x, y| ((x - y).norm_sqr(), y.norm_sqr()))
}

fn rel_r(a: &[f64], b: &[f64]) -> f64 {
    rel_l2(a, b, |x, y| ((x - y).powi(2), y * y))
}

fn random_image(seed: u64, n: usize) -> Vec<f64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0..1.0)).collect()
}

fn random_vis(seed: u64, n: usize) -> (Vec<Complex<f32>>, Vec<f32>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let vis = (0..n)
        .map(|_| Complex::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
        .collect();
    // Some zero weights: they must be skipped.
    let wt = (0..n)
        .map(|i| {
            if i % 7 == 3 {
                0.0
            } else {
                rng.random_range(0.5..2.0)
            }
        })
        .collect();
    (vis, wt)
}

/// Both directions against the direct sum; returns (forward error, adjoint error).
fn check_vs_dft(c: &Case, eps: f64, mode: WMode, use_w_in_dft: bool) -> (f64, f64, NufftPlanInfo) {
    let opts = NufftOptions {
        epsilon: eps,
        w_mode: mode,
    };
    let image = random_image(11, c.geom.len());
    let ours = dirty2ms(&c.geom, &c.uvw, &c.freq, &image, &opts).unwrap();
    let fwd = rel_c(&ours, &dft_forward(c, &image, use_w_in_dft));
    let n = c.uvw.len() * c.freq.len();
    let (vis, wt) = random_vis(12, n);
    let dirty = ms2dirty(&c.geom, &c.uvw, &c.freq, &vis, &wt, &opts).unwrap();
    let v64: Vec<C64> = vis
        .iter()
        .map(|v| C64::new(v.re as f64, v.im as f64))
        .collect();
    let adj = rel_r(&dirty, &dft_adjoint(c, &v64, &wt, use_w_in_dft));
    let info = Nufft::new(c.geom, &c.uvw, &c.freq, None, &opts)
        .unwrap()
        .info()
        .clone();
    (fwd, adj, info)
}

#[test]
fn kernel_polynomials_and_fourier_transform() {
    for eps in [1e-4, 1e-6, 1e-7] {
        let k = EsKernel::from_epsilon(eps).unwrap();
        eprintln!(
            "eps {eps:e}: W {} beta {} degree {} fit error {:.2e}",
            k.support,
            k.beta,
            k.degree,
            k.fit_max_error()
        );
        for j in 0..k.support {
            for i in 0..=50 {
                let t = i as f64 / 50.0;
                let exact = k.psi(t + j as f64 - k.support as f64 / 2.0);
                assert!(
                    (k.tap(j, t) - exact).abs() < eps * 0.2,
                    "eps {eps} tap {j} t {t}"
                );
            }
        }
        // The exact kernel's transform by quadrature against a much finer rule; the polynomial
        // kernel's transform close to it.
        let (x, w) = gauss_legendre_unit(400);
        let h = k.support as f64 / 2.0;
        for kappa in [0.0, 0.1, 0.25, 0.4] {
            let fine: f64 = x
                .iter()
                .zip(&w)
                .map(|(&z, &wt)| wt * k.phi(z) * (2.0 * PI * kappa * h * z).cos())
                .sum::<f64>()
                * 2.0
                * h;
            assert!(
                (k.ft(kappa) - fine).abs() < eps * fine,
                "poly ft at {kappa}"
            );
        }
        let interp = k.ft_interpolant(0.3);
        for i in 0..=30 {
            let kappa = 0.01 * i as f64;
            assert!((interp.eval(kappa) - k.ft(kappa)).abs() < 1e-12 * k.ft(0.0));
        }
    }
    assert!(EsKernel::from_epsilon(1e-9).is_err());
    assert!(EsKernel::from_epsilon(f64::NAN).is_err());
}

#[test]
fn matches_dft_without_w() {
    for eps in [1e-4, 1e-6] {
        // w = 0: Auto must choose no w-stacking.
        let mut c = case(1, 48, 40, 2e-3, 150, 1.3, 0.0);
        c.uvw.iter_mut().for_each(|r| r[2] = 0.0);
        let (f, a, info) = check_vs_dft(&c, eps, WMode::Auto, false);
        eprintln!("no w, eps {eps:e}: forward {f:.2e}, adjoint {a:.2e}; {info}");
        assert!(!info.w_stacking);
        assert!(f < 10.0 * eps && a < 10.0 * eps, "eps {eps}: {f:e} {a:e}");
    }
}

#[test]
fn matches_dft_with_large_w() {
    for eps in [1e-4, 1e-6] {
        let c = case(2, 40, 48, 4e-3, 150, 1.0, 1500.0);
        let (f, a, info) = check_vs_dft(&c, eps, WMode::Auto, true);
        eprintln!("large w, eps {eps:e}: forward {f:.2e}, adjoint {a:.2e}; {info}");
        assert!(info.w_stacking && info.w_planes > info.support);
        assert!(f < 10.0 * eps && a < 10.0 * eps, "eps {eps}: {f:e} {a:e}");
    }
}

#[test]
fn w_off_ignores_w_and_on_models_it() {
    let c = case(3, 32, 32, 3e-3, 80, 0.8, 50.0);
    let (f, a, info) = check_vs_dft(&c, 1e-6, WMode::Off, false);
    assert!(!info.w_stacking);
    assert!(f < 1e-5 && a < 1e-5, "{f:e} {a:e}");
    let (f, a, info) = check_vs_dft(&c, 1e-6, WMode::On, true);
    assert!(info.w_stacking);
    assert!(f < 1e-5 && a < 1e-5, "{f:e} {a:e}");
}

#[test]
fn tiny_w_is_left_out_by_auto() {
    // 2π·|w|·|n−1| ≈ 1e-9 rad: far below epsilon.
    let c = case(4, 16, 16, 1e-5, 20, 1.0, 0.01);
    let opts = NufftOptions::default();
    let nu = Nufft::new(c.geom, &c.uvw, &c.freq, None, &opts).unwrap();
    assert!(!nu.info().w_stacking);
}

#[test]
fn gridder_streams_chunks() {
    let c = case(5, 32, 32, 4e-3, 120, 1.0, 800.0);
    let n = c.uvw.len() * c.freq.len();
    let (vis, wt) = random_vis(6, n);
    let opts = NufftOptions::default();
    let whole = ms2dirty(&c.geom, &c.uvw, &c.freq, &vis, &wt, &opts).unwrap();
    let wmax = 800.0 * 1.5e8 / 1.0e8 * 1.000001;
    let mut g = Gridder::new(c.geom, &opts, wmax).unwrap();
    for r0 in (0..120).step_by(50) {
        let r1 = (r0 + 50).min(120);
        g.add(
            &c.uvw[r0..r1],
            &c.freq,
            &vis[2 * r0..2 * r1],
            &wt[2 * r0..2 * r1],
        )
        .unwrap();
    }
    let streamed = g.finish();
    // Different w-plane layouts (bound vs measured max|w|): equal to the accuracy.
    assert!(rel_r(&streamed, &whole) < 1e-5);
    // A sample beyond the bound is refused.
    let mut g = Gridder::new(c.geom, &opts, 10.0).unwrap();
    assert!(g.add(&c.uvw, &c.freq, &vis, &wt).is_err());
}

#[test]
fn chunks_one_plane_at_a_time_match_the_gridder_with_psf() {
    // Chunks with different channel counts, several id blocks, w on and off, and a sample
    // of weight 0: the same images as the Gridder, which holds every plane.
    let c = case(11, 40, 32, 4e-3, 90, 1.3, 900.0);
    let freq3 = vec![0.9e8, 1.2e8, 1.45e8];
    let (vis_a, mut wt_a) = random_vis(12, 50 * 2);
    wt_a[7] = 0.0;
    let (vis_b, wt_b) = random_vis(13, 40 * 3);
    let ones_a = vec![Complex::new(1.0f32, 0.0); vis_a.len()];
    let ones_b = vec![Complex::new(1.0f32, 0.0); vis_b.len()];
    for (mode, eps) in [(WMode::On, 1e-6), (WMode::Off, 1e-4), (WMode::On, 1e-3)] {
        let opts = NufftOptions {
            epsilon: eps,
            w_mode: mode,
        };
        let wmax = 900.0 * 1.5e8 / 1.0e8 * 1.000001;
        let mut g = Gridder::new(c.geom, &opts, wmax).unwrap();
        let mut p = Gridder::new(c.geom, &opts, wmax).unwrap();
        g.add(&c.uvw[..50], &c.freq, &vis_a, &wt_a).unwrap();
        g.add(&c.uvw[50..], &freq3, &vis_b, &wt_b).unwrap();
        p.add(&c.uvw[..50], &c.freq, &ones_a, &wt_a).unwrap();
        p.add(&c.uvw[50..], &freq3, &ones_b, &wt_b).unwrap();
        let (want_d, want_p) = (g.finish(), p.finish());
        let src = [
            VisSource {
                uvw: &c.uvw[..50],
                freq: &c.freq,
                vis: &vis_a,
                weight: &wt_a,
            },
            VisSource {
                uvw: &c.uvw[50..],
                freq: &freq3,
                vis: &vis_b,
                weight: &wt_b,
            },
        ];
        for max_rows in [usize::MAX, 7] {
            let (d, p) =
                ms2dirty_chunks_blocked(&c.geom, &opts, wmax, &src, true, max_rows).unwrap();
            assert!(
                rel_r(&d, &want_d) < 1e-12,
                "{mode:?} {max_rows}: {}",
                rel_r(&d, &want_d)
            );
            let p = p.unwrap();
            assert!(
                rel_r(&p, &want_p) < 1e-12,
                "{mode:?} {max_rows}: {}",
                rel_r(&p, &want_p)
            );
        }
        let (d, p) = ms2dirty_chunks(&c.geom, &opts, wmax, &src[..1], false).unwrap();
        assert!(p.is_none());
        let one = ms2dirty(&c.geom, &c.uvw[..50], &c.freq, &vis_a, &wt_a, &opts).unwrap();
        assert!(rel_r(&d, &one) < 1e-5);
    }
    let opts = NufftOptions::default();
    let src = [VisSource {
        uvw: &c.uvw,
        freq: &c.freq,
        vis: &vis_a,
        weight: &wt_a,
    }];
    assert!(ms2dirty_chunks(&c.geom, &opts, 10.0, &src, false).is_err());
}

#[test]
fn nufft_operator_adjoint_and_mask() {
    let c = case(7, 32, 24, 4e-3, 60, 1.0, 600.0);
    let n = c.uvw.len() * c.freq.len();
    let mask: Vec<bool> = (0..n).map(|i| i % 5 != 0).collect();
    for mode in [WMode::Auto, WMode::Off] {
        let opts = NufftOptions {
            epsilon: 1e-6,
            w_mode: mode,
        };
        let op = Nufft::new(c.geom, &c.uvw, &c.freq, Some(&mask), &opts).unwrap();
        assert_eq!(op.n_vis(), mask.iter().filter(|&&m| m).count());
        let t = dot_test_with(
            op.image_len(),
            op.data_len(),
            |x| {
                op.forward_f64(x)
                    .unwrap()
                    .iter()
                    .flat_map(|c| [c.re, c.im])
                    .collect()
            },
            |y| {
                let v: Vec<C64> = y.chunks(2).map(|p| C64::new(p[0], p[1])).collect();
                op.adjoint_f64(&v).unwrap()
            },
            9,
        );
        assert!(t.rel_err < 1e-12, "f64 dot test {t:?}");
        assert_adjoint(&op, 1e-5);
        // The masked operator equals the DFT on the kept samples.
        let image = random_image(8, c.geom.len());
        let all = dft_forward(&c, &image, op.info().w_stacking);
        let kept: Vec<C64> = all
            .iter()
            .zip(&mask)
            .filter(|(_, &m)| m)
            .map(|(v, _)| *v)
            .collect();
        assert!(rel_c(&op.forward_f64(&image).unwrap(), &kept) < 1e-5);
    }
}

#[test]
fn diag_aat_matches_brute_force() {
    for w_max in [0.0, 400.0] {
        let c = case(10, 16, 16, 5e-3, 12, 1.0, w_max);
        let op = Nufft::new(c.geom, &c.uvw, &c.freq, None, &NufftOptions::default()).unwrap();
        let d = op.diag_aat_f64().unwrap();
        let g = &c.geom;
        for (k, &lam) in lambdas(&c).iter().enumerate() {
            let (mut cc, mut ss) = (0.0, 0.0);
            for iy in 0..g.ny {
                for ix in 0..g.nx {
                    let th = phase(g, lam, iy, ix, op.info().w_stacking);
                    cc += th.cos().powi(2);
                    ss += th.sin().powi(2);
                }
            }
            assert!((d[2 * k] - cc).abs() < 1e-4, "re {k}: {} vs {cc}", d[2 * k]);
            assert!(
                (d[2 * k + 1] - ss).abs() < 1e-4,
                "im {k}: {} vs {ss}",
                d[2 * k + 1]
            );
        }
    }
}

#[test]
fn odd_inputs_are_errors() {
    let c = case(12, 16, 16, 1e-3, 10, 1.0, 10.0);
    let opts = NufftOptions::default();
    let img = vec![0.0; 256];
    let (vis, wt) = random_vis(1, 20);
    assert!(dirty2ms(&c.geom, &[], &c.freq, &img, &opts).is_err());
    assert!(dirty2ms(&c.geom, &c.uvw, &[], &img, &opts).is_err());
    assert!(dirty2ms(&c.geom, &c.uvw, &c.freq, &img[..100], &opts).is_err());
    assert!(ms2dirty(&c.geom, &c.uvw, &c.freq, &vis[..19], &wt, &opts).is_err());
    assert!(ms2dirty(&c.geom, &c.uvw, &c.freq, &vis, &wt[..3], &opts).is_err());
    let mut bad = c.uvw.clone();
    bad[3][1] = f64::NAN;
    assert!(ms2dirty(&c.geom, &bad, &c.freq, &vis, &wt, &opts).is_err());
    assert!(Nufft::new(c.geom, &bad, &c.freq, None, &opts).is_err());
    assert!(dirty2ms(&c.geom, &c.uvw, &[f64::INFINITY, 1e8], &img, &opts).is_err());
    assert!(Nufft::new(c.geom, &c.uvw, &c.freq, Some(&[true; 3]), &opts).is_err());
    let eps_bad = NufftOptions {
        epsilon: 1e-12,
        w_mode: WMode::Auto,
    };
    assert!(ms2dirty(&c.geom, &c.uvw, &c.freq, &vis, &wt, &eps_bad).is_err());
    // A field beyond the horizon.
    let huge = ImageGeometry::new(16, 16, 0.2, 0.2).unwrap();
    assert!(dirty2ms(&huge, &c.uvw, &c.freq, &img, &opts).is_err());
    assert!(Gridder::new(c.geom, &opts, f64::NAN).is_err());
    // All weights zero is fine: an empty image.
    let zero = vec![0f32; 20];
    let d = ms2dirty(&c.geom, &c.uvw, &c.freq, &vis, &zero, &opts).unwrap();
    assert!(d.iter().all(|&x| x == 0.0));
}
