//! Samplers driven by the exact score of a 2-D Gaussian mixture reproduce its moments.
#![allow(clippy::needless_range_loop)]

use candle_core::{Device, Result, Tensor};
use interf_image::prior::sde::{Sde, VeSde, VpSde};
use interf_image::sample::{
    euler_maruyama, gaussian_like, predictor_corrector, probability_flow_heun,
};
use rand::rngs::StdRng;
use rand::SeedableRng;

struct Mixture {
    w: Vec<f64>,
    m: Vec<[f64; 2]>,
    s: Vec<f64>,
}

impl Mixture {
    fn new() -> Self {
        Self {
            w: vec![0.3, 0.7],
            m: vec![[-2.0, 0.5], [1.5, -1.0]],
            s: vec![0.5, 0.8],
        }
    }
    fn mean(&self) -> [f64; 2] {
        let mut r = [0.0; 2];
        for k in 0..self.w.len() {
            for d in 0..2 {
                r[d] += self.w[k] * self.m[k][d];
            }
        }
        r
    }
    fn cov(&self) -> [[f64; 2]; 2] {
        let mu = self.mean();
        let mut c = [[0.0; 2]; 2];
        for k in 0..self.w.len() {
            for i in 0..2 {
                for j in 0..2 {
                    let iso = if i == j { self.s[k] * self.s[k] } else { 0.0 };
                    c[i][j] += self.w[k] * (iso + self.m[k][i] * self.m[k][j]);
                }
            }
        }
        for i in 0..2 {
            for j in 0..2 {
                c[i][j] -= mu[i] * mu[j];
            }
        }
        c
    }
    /// ∇ log p_t for x_t = μ x₀ + σ z: each component becomes N(μ m_k, (μ² s_k² + σ²) I).
    fn score(&self, x: &Tensor, t: f64, sde: &dyn Sde) -> Result<Tensor> {
        let (mu, sig) = (sde.mu(t), sde.sigma(t));
        let xs: Vec<Vec<f32>> = x.to_vec2()?;
        let mut out = Vec::with_capacity(xs.len() * 2);
        for p in &xs {
            let (px, py) = (p[0] as f64, p[1] as f64);
            let mut logs = Vec::new();
            let mut grads = Vec::new();
            for k in 0..self.w.len() {
                let v = mu * mu * self.s[k] * self.s[k] + sig * sig;
                let dx = px - mu * self.m[k][0];
                let dy = py - mu * self.m[k][1];
                logs.push(self.w[k].ln() - (dx * dx + dy * dy) / (2.0 * v) - v.ln());
                grads.push([-dx / v, -dy / v]);
            }
            let mx = logs.iter().cloned().fold(f64::MIN, f64::max);
            let z: f64 = logs.iter().map(|l| (l - mx).exp()).sum();
            let mut g = [0.0; 2];
            for k in 0..logs.len() {
                let r = (logs[k] - mx).exp() / z;
                g[0] += r * grads[k][0];
                g[1] += r * grads[k][1];
            }
            out.push(g[0] as f32);
            out.push(g[1] as f32);
        }
        Tensor::from_vec(out, (xs.len(), 2), x.device())
    }
}

fn moments(x: &Tensor) -> ([f64; 2], [[f64; 2]; 2]) {
    let xs: Vec<Vec<f32>> = x.to_vec2().unwrap();
    let n = xs.len() as f64;
    let mut m = [0.0; 2];
    for p in &xs {
        m[0] += p[0] as f64 / n;
        m[1] += p[1] as f64 / n;
    }
    let mut c = [[0.0; 2]; 2];
    for p in &xs {
        for i in 0..2 {
            for j in 0..2 {
                c[i][j] += (p[i] as f64 - m[i]) * (p[j] as f64 - m[j]) / (n - 1.0);
            }
        }
    }
    (m, c)
}

fn check(name: &str, x: &Tensor, mix: &Mixture) {
    let (m, c) = moments(x);
    let (tm, tc) = (mix.mean(), mix.cov());
    let n = x.dim(0).unwrap() as f64;
    for i in 0..2 {
        // Sampling error of the mean is sqrt(C_ii / N); allow 4 of them plus discretisation.
        let tol = 4.0 * (tc[i][i] / n).sqrt() + 0.03;
        assert!(
            (m[i] - tm[i]).abs() < tol,
            "{name}: mean[{i}] {} vs {} (tol {tol})",
            m[i],
            tm[i]
        );
        for j in 0..2 {
            let tol = 4.0 * ((tc[i][i] * tc[j][j] + tc[i][j] * tc[i][j]) / n).sqrt() + 0.05;
            assert!(
                (c[i][j] - tc[i][j]).abs() < tol,
                "{name}: cov[{i}][{j}] {} vs {} (tol {tol})",
                c[i][j],
                tc[i][j]
            );
        }
    }
}

const N: usize = 3000;

fn init(sde: &dyn Sde, rng: &mut StdRng) -> Tensor {
    let z = Tensor::zeros((N, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
    gaussian_like(&z, rng)
        .unwrap()
        .affine(sde.prior_std(), 0.0)
        .unwrap()
}

#[test]
fn ve_euler_maruyama_matches_mixture() {
    let mix = Mixture::new();
    let sde = VeSde::new(1e-2, 10.0);
    let mut rng = StdRng::seed_from_u64(1);
    let x0 = init(&sde, &mut rng);
    let score = |x: &Tensor, t: f64| mix.score(x, t, &sde);
    let x = euler_maruyama(
        &score,
        &sde,
        &x0,
        400,
        1e-5,
        &mut rng,
        &interf_image::observe::Quiet,
    )
    .unwrap();
    check("VE EM", &x, &mix);
}

#[test]
fn vp_euler_maruyama_and_pc_match_mixture() {
    let mix = Mixture::new();
    let sde = VpSde::default();
    let mut rng = StdRng::seed_from_u64(2);
    let x0 = init(&sde, &mut rng);
    let score = |x: &Tensor, t: f64| mix.score(x, t, &sde);
    let x = euler_maruyama(
        &score,
        &sde,
        &x0,
        400,
        1e-3,
        &mut rng,
        &interf_image::observe::Quiet,
    )
    .unwrap();
    check("VP EM", &x, &mix);
    let x = predictor_corrector(
        &score,
        &sde,
        &x0,
        200,
        0.16,
        1,
        1e-3,
        &mut rng,
        &interf_image::observe::Quiet,
    )
    .unwrap();
    check("VP PC", &x, &mix);
}

#[test]
fn ve_pc_and_ode_match_mixture() {
    let mix = Mixture::new();
    let sde = VeSde::new(1e-2, 10.0);
    let mut rng = StdRng::seed_from_u64(3);
    let x0 = init(&sde, &mut rng);
    let score = |x: &Tensor, t: f64| mix.score(x, t, &sde);
    let x = predictor_corrector(
        &score,
        &sde,
        &x0,
        200,
        0.16,
        1,
        1e-5,
        &mut rng,
        &interf_image::observe::Quiet,
    )
    .unwrap();
    check("VE PC", &x, &mix);
    let x =
        probability_flow_heun(&score, &sde, &x0, 100, 1e-5, &interf_image::observe::Quiet).unwrap();
    check("VE ODE", &x, &mix);
}

#[test]
fn samplers_are_seeded() {
    let mix = Mixture::new();
    let sde = VpSde::default();
    let run = |seed| {
        let mut rng = StdRng::seed_from_u64(seed);
        let z = Tensor::zeros((16, 2), candle_core::DType::F32, &Device::Cpu).unwrap();
        let x0 = gaussian_like(&z, &mut rng).unwrap();
        let score = |x: &Tensor, t: f64| mix.score(x, t, &sde);
        let x = euler_maruyama(
            &score,
            &sde,
            &x0,
            20,
            1e-3,
            &mut rng,
            &interf_image::observe::Quiet,
        )
        .unwrap();
        x.to_vec2::<f32>().unwrap()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}
