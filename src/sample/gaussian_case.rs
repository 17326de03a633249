//! A closed-form test case for the samplers and the evidence: a Gaussian prior with an exact
//! score and a linear Gaussian likelihood through a gridded uv coverage, whose posterior and
//! evidence are Gaussian integrals.

use candle_core::{Device, Result, Tensor};
use num_complex::Complex;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use crate::likelihood::GaussianLikelihood;
use crate::operator::{
    CellNoise, ForwardOperator, Gridded, GriddedVisibilities, ImageGeometry, Scaled,
};
use crate::prior::logp::LogDensityPrior;
use crate::prior::sde::{Sde, SdeConfig, VeSde};
use crate::sample::posterior::PriorScore;

/// x ~ N(m0, diag(s0²)): under the VE SDE, p_t = N(m0, diag(s0² + σ_t²)). A per-pixel
/// spread lets a test mimic a source on empty sky (wide prior on a few pixels, narrow
/// elsewhere), where the convolved approximation is furthest from exact.
pub(crate) struct GaussianPrior {
    m0: f64,
    s0: Vec<f64>,
    sde: SdeConfig,
    side: usize,
}

impl PriorScore for GaussianPrior {
    fn score(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        let s2 = self.sde.sigma(t).powi(2);
        let inv: Vec<f32> = self
            .s0
            .iter()
            .map(|s| (1.0 / (s * s + s2)) as f32)
            .collect();
        let inv = Tensor::from_vec(inv, (1, 1, self.side, self.side), x.device())?;
        x.affine(-1.0, self.m0)?.broadcast_mul(&inv)
    }
    fn sde(&self) -> &SdeConfig {
        &self.sde
    }
    fn image_size(&self) -> usize {
        self.side
    }
    fn t_eps(&self) -> f64 {
        1e-5
    }
    fn device(&self) -> &Device {
        &Device::Cpu
    }
}

/// Dense Cholesky solve of (P) z = b for a symmetric positive-definite P (n ≤ a few hundred).
pub(crate) fn cholesky(p: &[f64], n: usize) -> Vec<f64> {
    let mut l = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            let s: f64 = (0..j).map(|k| l[i * n + k] * l[j * n + k]).sum();
            l[i * n + j] = if i == j {
                (p[i * n + i] - s).sqrt()
            } else {
                (p[i * n + j] - s) / l[j * n + j]
            };
        }
    }
    l
}

pub(crate) fn solve(l: &[f64], n: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0; n];
    for i in 0..n {
        y[i] = (b[i] - (0..i).map(|k| l[i * n + k] * y[k]).sum::<f64>()) / l[i * n + i];
    }
    let mut x = vec![0.0; n];
    for i in (0..n).rev() {
        x[i] = (y[i] - (i + 1..n).map(|k| l[k * n + i] * x[k]).sum::<f64>()) / l[i * n + i];
    }
    x
}

impl LogDensityPrior for GaussianPrior {}

/// The case: prior, likelihood, data and the exact posterior (`P = L Lᵀ`, its mean and
/// per-pixel variance).
pub(crate) struct GaussianCase {
    pub prior: GaussianPrior,
    pub lik: GaussianLikelihood<Scaled<Gridded>>,
    pub y: Vec<f32>,
    pub sigma_y: f32,
    pub m0: f64,
    pub s0: Vec<f64>,
    /// Cholesky factor of the posterior precision `P = diag(1/s0²) + AᵀA/σ²`.
    pub l: Vec<f64>,
    pub mean: Vec<f64>,
    pub var: Vec<f64>,
    /// Pixels.
    pub n: usize,
}

impl GaussianCase {
    /// 12² pixels, 400 random uv points, flux scale `flux_scale` folded into the operator,
    /// noise `sigma_y`. With `source`, the prior is wide (s0 = 0.5) on a 4×4 patch and narrow
    /// (0.02) elsewhere; without, 0.2 everywhere.
    pub fn new(flux_scale: f32, sigma_y: f32, source: bool) -> Self {
        Self::with_model(flux_scale, sigma_y, source, None)
    }

    /// The same data (the truth drawn from the prior of [`Self::new`]), modelled with another
    /// prior: `model = Some((m0, s0))`, the same mean and spread on every pixel.
    pub fn with_model(
        flux_scale: f32,
        sigma_y: f32,
        source: bool,
        model: Option<(f64, f64)>,
    ) -> Self {
        let side = 12;
        let geom = ImageGeometry::new(side, side, 1e-4, 1e-4).unwrap();
        let mut rng = StdRng::seed_from_u64(3);
        // Random uv coverage (c Hz: metres are wavelengths) within the image's uv extent.
        let cell = 1.0 / (2.0 * side as f64 * 1e-4);
        let uvw: Vec<[f64; 3]> = (0..400)
            .map(|_| {
                let r: f64 = rng.random_range(0.0..side as f64 * 0.9);
                let a: f64 = rng.random_range(0.0..std::f64::consts::TAU);
                [r * cell * a.cos(), r * cell * a.sin(), 0.0]
            })
            .collect();
        let n = side * side;
        let s0: Vec<f64> = (0..n)
            .map(|i| {
                let (r, c) = (i / side, i % side);
                match source && !((4..8).contains(&r) && (4..8).contains(&c)) {
                    true => 0.02,
                    false if source => 0.5,
                    false => 0.2,
                }
            })
            .collect();
        let m0 = 0.3;
        let truth: Vec<f32> = s0
            .iter()
            .map(|s| (m0 + s * rng.sample::<f64, _>(StandardNormal)) as f32)
            .collect();
        let (m0, s0) = match model {
            Some((m, s)) => (m, vec![s; n]),
            None => (m0, s0),
        };
        let prior = GaussianPrior {
            m0,
            s0: s0.clone(),
            sde: SdeConfig::Ve(VeSde::new(1e-3, 5.0)),
            side,
        };
        // Simulate gridded data directly through the operator.
        let zero = vec![Complex::new(0.0f32, 0.0); uvw.len()];
        let mut b = GriddedVisibilities::builder(geom, 1).unwrap();
        b.add(&uvw, &[299_792_458.0], &zero, &vec![1.0; uvw.len()])
            .unwrap();
        let mut grid = b.finish(1.0, CellNoise::Weights);
        grid.sigma.iter_mut().for_each(|s| *s = sigma_y);
        let op = Scaled {
            inner: Gridded::new(&grid).unwrap(),
            scale: flux_scale,
        };
        let mut y = vec![0.0f32; op.data_len()];
        op.forward(&truth, &mut y);
        y.iter_mut()
            .for_each(|v| *v += sigma_y * rng.sample::<f32, _>(StandardNormal));
        let sig = vec![sigma_y; y.len()];
        let lik = GaussianLikelihood::new(op, y.clone(), &sig).unwrap();

        // Exact posterior: P = diag(1/s0²) + AᵀA/σ², mean = P⁻¹ (m0/s0² + Aᵀy/σ²).
        let mut p = vec![0.0f64; n * n];
        let mut col = vec![0.0f32; lik.operator().data_len()];
        let mut row = vec![0.0f32; n];
        for j in 0..n {
            let mut e = vec![0.0f32; n];
            e[j] = 1.0;
            lik.operator().forward(&e, &mut col);
            lik.operator().adjoint(&col, &mut row);
            for i in 0..n {
                p[i * n + j] = row[i] as f64 / (sigma_y as f64).powi(2);
            }
            p[j * n + j] += 1.0 / (s0[j] * s0[j]);
        }
        let mut aty = vec![0.0f32; n];
        lik.operator().adjoint(&y, &mut aty);
        let rhs: Vec<f64> = aty
            .iter()
            .zip(&s0)
            .map(|(&v, s)| v as f64 / (sigma_y as f64).powi(2) + m0 / (s * s))
            .collect();
        let l = cholesky(&p, n);
        let mean = solve(&l, n, &rhs);
        let var: Vec<f64> = (0..n)
            .map(|i| {
                let mut e = vec![0.0; n];
                e[i] = 1.0;
                solve(&l, n, &e)[i]
            })
            .collect();

        GaussianCase {
            prior,
            lik,
            y,
            sigma_y,
            m0,
            s0,
            l,
            mean,
            var,
            n,
        }
    }

    /// The exact `log p(y)`: `y ~ N(A m0, A S0 Aᵀ + σ² I)` over the m real data, by the
    /// determinant lemma and Woodbury in image space: `log|A S0 Aᵀ + σ² I| = m ln σ² +
    /// ln|S0| + ln|P|`, and the quadratic form is `‖r‖²/σ² − bᵀ P⁻¹ b` with `r = y − A m0`,
    /// `b = Aᵀ r / σ²`.
    pub fn log_evidence(&self) -> f64 {
        let n = self.n;
        let op = self.lik.operator();
        let m = op.data_len();
        let s2 = (self.sigma_y as f64).powi(2);
        let mut am = vec![0.0f32; m];
        op.forward(&vec![self.m0 as f32; n], &mut am);
        let r: Vec<f32> = self.y.iter().zip(&am).map(|(a, b)| a - b).collect();
        let r2: f64 = r.iter().map(|&v| v as f64 * v as f64).sum();
        let mut atr = vec![0.0f32; n];
        op.adjoint(&r, &mut atr);
        let b: Vec<f64> = atr.iter().map(|&v| v as f64 / s2).collect();
        let pinv_b = solve(&self.l, n, &b);
        let quad = r2 / s2 - b.iter().zip(&pinv_b).map(|(x, y)| x * y).sum::<f64>();
        let ln_det_p: f64 = (0..n).map(|i| 2.0 * self.l[i * n + i].ln()).sum();
        let ln_det_s0: f64 = self.s0.iter().map(|s| 2.0 * s.ln()).sum();
        let ln_det = m as f64 * s2.ln() + ln_det_s0 + ln_det_p;
        -0.5 * (m as f64 * (2.0 * std::f64::consts::PI).ln() + ln_det + quad)
    }
}
