//! The prior's log-density (`prior::logp`): the probability-flow ODE and the ELBO against the
//! closed form of a Gaussian prior whose score is exact, and a smoke test on the built-in
//! network.

use std::f64::consts::PI;
use std::time::Instant;

use candle_core::{DType, Device, Tensor};
use interf_image::prior::logp::{
    elbo, ode_log_density, ElboOptions, LogDensityPrior, OdeOptions, Point,
};
use interf_image::prior::sde::{Sde, SdeConfig, VeSde};
use interf_image::sample::posterior::PriorScore;
use rand::rngs::StdRng;
use rand::SeedableRng;
use rand_distr::{Distribution, StandardNormal};

const SIDE: usize = 16;
const D: usize = SIDE * SIDE;
const T_EPS: f64 = 1e-5;

/// `x ~ N(μ, s² I + Σ_k a_k u_k u_kᵀ)` (orthonormal smooth modes u_k) on 16² images under the VE
/// SDE of `score_models`, `x_t = x + σ(t) z`: its score at time t is exact,
/// `−(Σ + σ(t)² I)⁻¹ (x − μ)`. With no modes it is `N(μ, s² I)` and its score
/// `−(x − μ)/(s² + σ(t)²)`. The modes make the divergence's Jacobian non-diagonal, so that the
/// Rademacher estimate has a spread to test the standard error against.
struct Gaussian {
    sde: SdeConfig,
    s2: f64,
    a: Vec<f64>,
    mu: Vec<f64>,
    modes: Vec<Vec<f64>>,
    mu_t: Tensor,
    u: Tensor,
    ut: Tensor,
    dev: Device,
}

impl Gaussian {
    fn new(s: f64, a: &[f64], sigma_max: f64) -> Self {
        let dev = Device::Cpu;
        // A non-trivial mean: two blobs of different widths on a faint slope.
        let mu: Vec<f64> = (0..D)
            .map(|i| {
                let (y, x) = ((i / SIDE) as f64, (i % SIDE) as f64);
                (-((y - 5.0).powi(2) + (x - 6.0).powi(2)) / 8.0).exp()
                    + 0.6 * (-((y - 11.0).powi(2) + (x - 10.0).powi(2)) / 4.0).exp()
                    + 0.02 * x
            })
            .collect();
        // Smooth modes (products of cosines), orthonormalised by Gram–Schmidt.
        let mut modes: Vec<Vec<f64>> = Vec::new();
        for k in 0..a.len() {
            let mut m: Vec<f64> = (0..D)
                .map(|i| {
                    let (y, x) = ((i / SIDE) as f64, (i % SIDE) as f64);
                    (PI * (x + 0.5) * (k + 1) as f64 / SIDE as f64).cos()
                        * (PI * (y + 0.5) * k as f64 / SIDE as f64).cos()
                })
                .collect();
            for q in &modes {
                let p: f64 = m.iter().zip(q).map(|(a, b)| a * b).sum();
                m.iter_mut().zip(q).for_each(|(a, b)| *a -= p * b);
            }
            let n = m.iter().map(|v| v * v).sum::<f64>().sqrt();
            m.iter_mut().for_each(|v| *v /= n);
            modes.push(m);
        }
        let k = a.len();
        let mut u = vec![0.0f32; D * k.max(1)];
        for (j, m) in modes.iter().enumerate() {
            for (i, &v) in m.iter().enumerate() {
                u[i * k + j] = v as f32;
            }
        }
        let u = Tensor::from_vec(u, (D, k.max(1)), &dev).unwrap();
        let ut = u.t().unwrap().contiguous().unwrap();
        let mu_t = Tensor::from_vec(
            mu.iter().map(|&v| v as f32).collect::<Vec<_>>(),
            (1, 1, SIDE, SIDE),
            &dev,
        )
        .unwrap();
        Self {
            sde: SdeConfig::Ve(VeSde::new(1e-3, sigma_max)),
            s2: s * s,
            a: a.to_vec(),
            mu,
            modes,
            mu_t,
            u,
            ut,
            dev,
        }
    }

    /// `log N(x; μ, Σ + var_extra I)` in closed form (eigenvalues s² + var_extra, and
    /// s² + a_k + var_extra along u_k).
    fn log_density(&self, x: &[f64], var_extra: f64) -> f64 {
        let v = self.s2 + var_extra;
        let r: Vec<f64> = x.iter().zip(&self.mu).map(|(a, b)| a - b).collect();
        let mut q = r.iter().map(|v| v * v).sum::<f64>() / v;
        let mut logdet = (D - self.a.len()) as f64 * v.ln();
        for (m, &a) in self.modes.iter().zip(&self.a) {
            let p: f64 = m.iter().zip(&r).map(|(a, b)| a * b).sum();
            q -= p * p * a / (v * (v + a));
            logdet += (v + a).ln();
        }
        -0.5 * (D as f64 * (2.0 * PI).ln() + logdet + q)
    }

    /// What the estimators target at `point`: `log p_{t_ε}(x)` with `p_{t_ε} = N(μ, Σ + σ(t_ε)²
    /// I)`, or its mean at `x + σ(t_ε) z`, which is lower by `½ σ(t_ε)² tr((Σ + σ(t_ε)² I)⁻¹)`.
    fn target(&self, x: &[f64], point: Point) -> f64 {
        let s0 = self.sde.sigma(T_EPS).powi(2);
        let at_x = self.log_density(x, s0);
        match point {
            Point::Image => at_x,
            Point::Noisy => {
                let v = self.s2 + s0;
                let trace = (D - self.a.len()) as f64 / v
                    + self.a.iter().map(|a| 1.0 / (v + a)).sum::<f64>();
                at_x - 0.5 * s0 * trace
            }
        }
    }

    /// Where the exact probability-flow ODE carries `x` from t_ε to 1: each eigen-direction
    /// of `x − μ` scales by `√((λ + σ(1)²)/(λ + σ(t_ε)²))`.
    fn flow_to_one(&self, x: &[f64]) -> Vec<f64> {
        let (s0, s1) = (self.sde.sigma(T_EPS).powi(2), self.sde.sigma(1.0).powi(2));
        let scale = |lam: f64| ((lam + s1) / (lam + s0)).sqrt();
        let r: Vec<f64> = x.iter().zip(&self.mu).map(|(a, b)| a - b).collect();
        let base = scale(self.s2);
        let mut out: Vec<f64> = r.iter().map(|v| v * base).collect();
        for (m, &a) in self.modes.iter().zip(&self.a) {
            let p: f64 = m.iter().zip(&r).map(|(a, b)| a * b).sum();
            let extra = (scale(self.s2 + a) - base) * p;
            out.iter_mut().zip(m).for_each(|(o, u)| *o += extra * u);
        }
        out.iter_mut().zip(&self.mu).for_each(|(o, m)| *o += m);
        out
    }

    /// The bias of both estimators from `π = N(0, σ_max² I)` in place of the true `p_1`:
    /// `log π(x_1) − log p_1(x_1)` at the exact ODE's end point.
    fn prior_bias(&self, x: &[f64]) -> f64 {
        let x1 = self.flow_to_one(x);
        let smax2 = self.sde.prior_std().powi(2);
        let n2: f64 = x1.iter().map(|v| v * v).sum();
        let log_pi = -0.5 * D as f64 * (2.0 * PI * smax2).ln() - n2 / (2.0 * smax2);
        log_pi - self.log_density(&x1, self.sde.sigma(1.0).powi(2))
    }

    /// Draws from the prior, and the batch tensor of them.
    fn draws(&self, n: usize, seed: u64) -> (Vec<Vec<f64>>, Tensor) {
        let mut rng = StdRng::seed_from_u64(seed);
        let s = self.s2.sqrt();
        let mut xs = Vec::new();
        for _ in 0..n {
            let mut x: Vec<f64> = self
                .mu
                .iter()
                .map(|m| {
                    let z: f64 = StandardNormal.sample(&mut rng);
                    m + s * z
                })
                .collect::<Vec<_>>();
            for (m, &a) in self.modes.iter().zip(&self.a) {
                let w: f64 = StandardNormal.sample(&mut rng);
                x.iter_mut()
                    .zip(m)
                    .for_each(|(v, u)| *v += a.sqrt() * w * u);
            }
            // The values the estimators see are f32.
            x.iter_mut().for_each(|v| *v = *v as f32 as f64);
            xs.push(x);
        }
        let flat: Vec<f32> = xs.iter().flatten().map(|&v| v as f32).collect();
        let t = Tensor::from_vec(flat, (n, 1, SIDE, SIDE), &self.dev).unwrap();
        (xs, t)
    }
}

impl PriorScore for Gaussian {
    fn score(&self, x: &Tensor, t: f64) -> candle_core::Result<Tensor> {
        let b = x.dim(0)?;
        let v = self.s2 + self.sde.sigma(t).powi(2);
        let r = x.broadcast_sub(&self.mu_t)?.reshape((b, D))?;
        let mut s = r.affine(-1.0 / v, 0.0)?;
        if !self.a.is_empty() {
            let c: Vec<f32> = self.a.iter().map(|&a| (a / (v * (v + a))) as f32).collect();
            let c = Tensor::from_vec(c, (1, self.a.len()), x.device())?;
            let back = r.matmul(&self.u)?.broadcast_mul(&c)?.matmul(&self.ut)?;
            s = (s + back)?;
        }
        s.reshape(x.shape())
    }
    fn sde(&self) -> &SdeConfig {
        &self.sde
    }
    fn image_size(&self) -> usize {
        SIDE
    }
    fn t_eps(&self) -> f64 {
        T_EPS
    }
    fn device(&self) -> &Device {
        &self.dev
    }
}

impl LogDensityPrior for Gaussian {}

/// The correlated Gaussian: s = 0.3 and three smooth modes, σ_max = 100 (so that `π` is close
/// to the true `p_1`: the bias is computed and printed, a few hundredths of a nat).
fn correlated() -> Gaussian {
    Gaussian::new(0.3, &[2.0, 1.0, 0.5], 100.0)
}

/// The Gaussians of the tests: `N(μ, 0.3² I)`; the correlated one; and a sharp `N(μ, (2e-3)² I)`,
/// only twice σ(t_ε) wide, where the two evaluation points differ by 26 nats.
fn gaussians() -> Vec<(&'static str, Gaussian)> {
    vec![
        ("isotropic N(μ, 0.3² I)", Gaussian::new(0.3, &[], 100.0)),
        ("correlated", correlated()),
        ("sharp N(μ, 0.002² I)", Gaussian::new(2e-3, &[], 100.0)),
    ]
}

/// The ODE's log-density of three draws equals the closed form within 3 standard errors plus
/// the integrator's allowance (RK4, 50 steps: 0.05 nats) and the computed bias of `π`, at the
/// image and at the image plus σ(t_ε) noise. The exact value is the density at t_ε,
/// `N(μ, Σ + σ(t_ε)² I)`; its difference from `N(μ, Σ)` is printed too.
#[test]
fn ode_matches_the_closed_form_of_a_gaussian() {
    for (name, g) in gaussians() {
        let (xs, x) = g.draws(3, 11);
        for point in [Point::Image, Point::Noisy] {
            let opts = OdeOptions {
                steps: 50,
                probes: 8,
                seed: 3,
                batch: 24,
                point,
            };
            let t0 = Instant::now();
            let r = ode_log_density(&g, &x, &opts, &interf_image::observe::Quiet).unwrap();
            let secs = t0.elapsed().as_secs_f64();
            for (xi, ri) in xs.iter().zip(&r) {
                let exact = g.target(xi, point);
                let at_zero = g.log_density(xi, 0.0);
                let bias = g.prior_bias(xi);
                eprintln!(
                    "{name}, {point:?}: exact {exact:.3} (σ = 0: {at_zero:.3}), ODE {:.3} ± {:.3} \
                     ({:.4} ± {:.4} bits/dim), ODE − exact {:+.3}, bias of π {bias:+.4}; \
                     {secs:.2} s",
                    ri.nats,
                    ri.std_err,
                    ri.bits_per_dim(),
                    ri.bits_per_dim_err(),
                    ri.nats - exact
                );
                assert!(
                    (ri.nats - exact).abs() <= 3.0 * ri.std_err + bias.abs() + 0.05,
                    "{name}, {point:?}: ODE {ri:?} vs exact {exact} (bias of π {bias})"
                );
                assert!(
                    bias.abs() < 0.2,
                    "σ_max too small for the test: bias {bias}"
                );
            }
            if g.a.is_empty() && point == Point::Image {
                // Rademacher probes are exact on a diagonal Jacobian.
                assert!(r.iter().all(|ri| ri.std_err < 1e-3), "{r:?}");
            }
            if !g.a.is_empty() {
                // The test must be able to fail: a real spread over the probes, not a huge one.
                assert!(
                    r.iter().all(|ri| ri.std_err > 0.05 && ri.std_err < 3.0),
                    "{r:?}"
                );
            }
        }
    }
}

/// The ELBO with the exact score is a bound (≤ the exact value within 3 standard errors) and a
/// tight one (within 3 standard errors + 0.5 nats: the only gap is `π ≠ p_1`), at both points.
#[test]
fn elbo_bounds_a_gaussian_from_below_and_tightly() {
    for (name, g) in gaussians() {
        let (xs, x) = g.draws(3, 12);
        for point in [Point::Image, Point::Noisy] {
            let opts = ElboOptions {
                samples: 512,
                seed: 5,
                batch: 64,
                point,
            };
            let t0 = Instant::now();
            let r = elbo(&g, &x, &opts, &interf_image::observe::Quiet).unwrap();
            let secs = t0.elapsed().as_secs_f64();
            for (xi, ri) in xs.iter().zip(&r) {
                let exact = g.target(xi, point);
                eprintln!(
                    "{name}, {point:?}: exact {exact:.3}, ELBO {:.3} ± {:.3} ({:.4} ± {:.4} \
                     bits/dim), ELBO − exact {:+.3} = {:+.2} SE; {secs:.2} s",
                    ri.nats,
                    ri.std_err,
                    ri.bits_per_dim(),
                    ri.bits_per_dim_err(),
                    ri.nats - exact,
                    (ri.nats - exact) / ri.std_err
                );
                assert!(
                    ri.nats <= exact + 3.0 * ri.std_err,
                    "{name}: {ri:?} > {exact}"
                );
                assert!(
                    ri.nats >= exact - 3.0 * ri.std_err - 0.5,
                    "{name}: {ri:?} far below {exact}"
                );
                // A standard error that means something: neither zero nor swamping the value.
                assert!(ri.std_err > 0.1 && ri.std_err < 30.0, "{ri:?}");
            }
        }
    }
}

/// The same seed gives the same numbers, another seed others; how images are batched does
/// not change an image's number (common random numbers).
#[test]
fn seeds_reproduce_and_batching_does_not_matter() {
    let g = correlated();
    let (_, x) = g.draws(3, 13);
    let ode = |seed: u64, batch: usize| {
        let o = OdeOptions {
            steps: 10,
            probes: 4,
            seed,
            batch,
            point: Point::Noisy,
        };
        ode_log_density(&g, &x, &o, &interf_image::observe::Quiet).unwrap()
    };
    let el = |seed: u64, batch: usize| {
        let o = ElboOptions {
            samples: 64,
            seed,
            batch,
            point: Point::Noisy,
        };
        elbo(&g, &x, &o, &interf_image::observe::Quiet).unwrap()
    };
    assert_eq!(ode(1, 12), ode(1, 12));
    assert_eq!(el(1, 16), el(1, 16));
    assert_ne!(ode(1, 12)[0].nats, ode(2, 12)[0].nats);
    assert_ne!(el(1, 16)[0].nats, el(2, 16)[0].nats);
    for (a, b) in ode(1, 12).iter().zip(ode(1, 4)) {
        assert!((a.nats - b.nats).abs() < 1e-3, "{a:?} vs {b:?}");
    }
    for (a, b) in el(1, 16).iter().zip(el(1, 7)) {
        assert!((a.nats - b.nats).abs() < 1e-3, "{a:?} vs {b:?}");
    }
    // An image's number does not depend on the others in its batch.
    let alone = ode_log_density(
        &g,
        &x.narrow(0, 1, 1).unwrap(),
        &OdeOptions {
            steps: 10,
            probes: 4,
            seed: 1,
            batch: 12,
            point: Point::Noisy,
        },
        &interf_image::observe::Quiet,
    )
    .unwrap();
    assert!((alone[0].nats - ode(1, 12)[1].nats).abs() < 1e-3);
}

/// A MiraBest-like image (two lobes and a core, peak 1, on a zero background) at 64².
fn radio_galaxy(side: usize) -> Vec<f32> {
    let c = side as f64 / 2.0;
    let blob = |y: f64, x: f64, cy: f64, cx: f64, sy: f64, sx: f64, amp: f64| {
        amp * (-0.5 * ((y - cy) / sy).powi(2) - 0.5 * ((x - cx) / sx).powi(2)).exp()
    };
    let mut v: Vec<f64> = (0..side * side)
        .map(|i| {
            let (y, x) = ((i / side) as f64, (i % side) as f64);
            blob(y, x, c, c, 1.2, 1.2, 1.0)
                + blob(y, x, c - 2.0, c - 12.0, 2.5, 4.0, 0.7)
                + blob(y, x, c + 2.0, c + 13.0, 2.5, 4.5, 0.6)
        })
        .collect();
    let peak = v.iter().cloned().fold(0.0, f64::max);
    v.iter_mut().for_each(|x| *x /= peak);
    v.into_iter().map(|x| x as f32).collect()
}

/// The built-in network: finite numbers, reproducible under a seed, and a radio galaxy is more
/// probable than white noise of the same total power (few steps and draws: debug builds are
/// slow; the gap is thousands of nats).
#[test]
fn built_in_prior_prefers_a_galaxy_to_noise() {
    let dev = Device::Cpu;
    let model = interf_image::prior::default_prior(&dev).unwrap();
    let side = model.image_size();
    let galaxy = radio_galaxy(side);
    let power: f64 = galaxy.iter().map(|&v| v as f64 * v as f64).sum();
    let mut rng = StdRng::seed_from_u64(7);
    let mut noise: Vec<f64> = (0..side * side)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let np: f64 = noise.iter().map(|v| v * v).sum();
    noise.iter_mut().for_each(|v| *v *= (power / np).sqrt());
    let mut both = galaxy.clone();
    both.extend(noise.iter().map(|&v| v as f32));
    let x = Tensor::from_vec(both, (2, 1, side, side), &dev).unwrap();

    // The per-row-time network call agrees with the one-time score.
    let s1: Vec<f32> = model
        .score(&x, 0.3)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let s2: Vec<f32> = model
        .score_rows(&x, &[0.3, 0.3])
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let worst = s1
        .iter()
        .zip(&s2)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    let scale = s1.iter().map(|a| a.abs()).fold(0.0f32, f32::max);
    assert!(
        worst <= 1e-4 * scale,
        "score_rows differs by {worst} (scale {scale})"
    );

    let t0 = Instant::now();
    let ode_opts = OdeOptions {
        steps: 4,
        probes: 2,
        seed: 9,
        batch: 4,
        point: Point::Noisy,
    };
    let ode = ode_log_density(&model, &x, &ode_opts, &interf_image::observe::Quiet).unwrap();
    let t_ode = t0.elapsed().as_secs_f64();
    let t0 = Instant::now();
    let el_opts = ElboOptions {
        samples: 16,
        seed: 9,
        batch: 16,
        point: Point::Noisy,
    };
    let el = elbo(&model, &x, &el_opts, &interf_image::observe::Quiet).unwrap();
    let t_elbo = t0.elapsed().as_secs_f64();
    for (what, r) in [("ODE", &ode), ("ELBO", &el)] {
        eprintln!(
            "{what}: galaxy {:.0} ± {:.0} nats ({:.3} bits/dim), noise {:.0} ± {:.0} nats \
             ({:.3} bits/dim)",
            r[0].nats,
            r[0].std_err,
            r[0].bits_per_dim(),
            r[1].nats,
            r[1].std_err,
            r[1].bits_per_dim()
        );
        assert!(r
            .iter()
            .all(|v| v.nats.is_finite() && v.std_err.is_finite()));
        assert!(
            r[0].nats - r[1].nats > 3.0 * (r[0].std_err + r[1].std_err),
            "{what}: galaxy {:?} not above noise {:?}",
            r[0],
            r[1]
        );
    }
    eprintln!("ODE (4 RK4 steps, 2 probes) {t_ode:.1} s, ELBO (16 draws) {t_elbo:.1} s");
    assert_eq!(
        ode_log_density(&model, &x, &ode_opts, &interf_image::observe::Quiet).unwrap(),
        ode
    );
    assert_eq!(
        elbo(&model, &x, &el_opts, &interf_image::observe::Quiet).unwrap(),
        el
    );
    let wrong = Tensor::zeros((1, 1, 32, 32), DType::F32, &dev).unwrap();
    let e = elbo(&model, &wrong, &el_opts, &interf_image::observe::Quiet).unwrap_err();
    assert!(e.to_string().contains("64×64"), "{e}");
}

/// Writes an N×H×W float cube as a plain FITS primary array.
fn write_fits(path: &std::path::Path, data: &[f32], dims: &[usize]) {
    use fitsio::images::{ImageDescription, ImageType};
    let desc = ImageDescription {
        data_type: ImageType::Float,
        dimensions: dims,
    };
    let mut f = fitsio::FitsFile::create(path)
        .with_custom_primary(&desc)
        .open()
        .unwrap();
    let hdu = f.primary_hdu().unwrap();
    hdu.write_image(&mut f, data).unwrap();
}

/// `prior logp` on a two-plane cube in arbitrary units: one line per plane, each normalised by
/// its own peak (said in the output); an image of the wrong size is refused with the sizes,
/// not a panic.
#[test]
fn cli_prints_both_estimates_per_plane_and_refuses_the_wrong_size() {
    use std::process::Command;
    let tmp = tempfile::tempdir().unwrap();
    let mut cube: Vec<f32> = radio_galaxy(64).iter().map(|v| v * 3.7).collect();
    let mut rng = StdRng::seed_from_u64(3);
    cube.extend((0..64 * 64).map(|_| {
        let z: f32 = StandardNormal.sample(&mut rng);
        0.5 * z
    }));
    let path = tmp.path().join("cube.fits");
    write_fits(&path, &cube, &[2, 64, 64]);
    let out = Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .args(["prior", "logp", "--image"])
        .arg(&path)
        .args([
            "--steps",
            "1",
            "--probes",
            "2",
            "--elbo-samples",
            "4",
            "--quiet",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    eprintln!("{stdout}");
    assert!(stdout.contains("divided by its own peak"), "{stdout}");
    assert!(stdout.contains("E_z log p(x + "), "{stdout}");
    let rows: Vec<&str> = stdout
        .lines()
        .filter(|l| l.trim_start().starts_with(|c: char| c.is_ascii_digit()))
        .collect();
    assert_eq!(rows.len(), 2, "{stdout}");
    assert!(rows[0].contains("3.7000e0"), "{}", rows[0]);
    for r in &rows {
        // plane, scale, then value ± error and bits/dim ± error for the ODE and the ELBO.
        assert_eq!(r.matches('±').count(), 4, "{r}");
        assert!(!r.contains("NaN") && !r.contains("inf"), "{r}");
    }

    let small = tmp.path().join("small.fits");
    write_fits(&small, &vec![1.0f32; 32 * 32], &[32, 32]);
    let out = Command::new(env!("CARGO_BIN_EXE_interf-image"))
        .args(["prior", "logp", "--image"])
        .arg(&small)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("32×32") && stderr.contains("64×64") && !stderr.contains("panicked"),
        "{stderr}"
    );
}
