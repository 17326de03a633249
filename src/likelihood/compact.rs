//! A sky in two parts: a **diffuse** image under the score prior, plus a few **compact**
//! pixels (a quasar's core, a blazar's knots: unresolved components far brighter than anything
//! the prior was trained on) whose fluxes have a flat prior — the point-source/diffuse split of
//! resolve (Arras et al. 2021), with the point sources on the pixel grid.
//!
//! The data are `y = A x_d + B f + n`, `B = A P` the data of a unit flux at each compact pixel.
//! With a flat prior on `f` the compact fluxes are integrated out analytically: the diffuse
//! image's likelihood is Gaussian with the precision projected off the compact directions,
//!
//! `Π = D⁻¹ − D⁻¹ B (Bᵀ D⁻¹ B)⁻¹ Bᵀ D⁻¹`,
//!
//! with `D` the convolved approximation's variances `μ_t² σ_y² + σ_t² Γ` at diffusion time t
//! (at t = 0 the exact likelihood). The reverse diffusion samples `x_d ~ p(x_d | y)` under this
//! marginal likelihood; [`CompactMarginal::draw_fluxes`] then draws `f ~ p(f | x_d, y)`, an
//! exact Gaussian. Together `(x_d, f)` is a draw from the joint posterior, and the sky is
//! `x_d + P f`. No flux of the bright core is left for the prior to explain, so its dynamic
//! range is that of the diffuse emission alone.

use std::sync::Mutex;

use rand::Rng;
use rand_distr::StandardNormal;

use super::{GaussianLikelihood, LikelihoodError, LikelihoodScore};
use crate::operator::ForwardOperator;

/// `(μ_t, σ_t)` as bits, and the Cholesky factor at them.
type CachedFactor = ((u32, u32), Vec<f64>);

/// The Gaussian likelihood of the diffuse image with the compact fluxes integrated out.
pub struct CompactMarginal<A: ForwardOperator> {
    base: GaussianLikelihood<A>,
    pixels: Vec<usize>,
    /// `K × data_len`, row k = `A e_k`.
    basis: Vec<f32>,
    /// Cholesky factor of `Bᵀ D⁻¹ B` at the last `(μ_t, σ_t)`: every chain of a step shares it.
    cache: Mutex<Option<CachedFactor>>,
}

impl<A: ForwardOperator> CompactMarginal<A> {
    /// `pixels`: flat indices of the compact pixels (distinct, inside the image).
    pub fn new(base: GaussianLikelihood<A>, pixels: Vec<usize>) -> Result<Self, LikelihoodError> {
        let op = base.operator();
        let (npix, n) = (op.image_len(), op.data_len());
        let mut seen = vec![false; npix];
        for &p in &pixels {
            if p >= npix || seen[p] {
                return Err(LikelihoodError::Compact(format!(
                    "compact pixel {p} is outside the {npix}-pixel image or listed twice"
                )));
            }
            seen[p] = true;
        }
        let mut basis = vec![0.0f32; pixels.len() * n];
        let mut e = vec![0.0f32; npix];
        for (row, &p) in basis.chunks_mut(n.max(1)).zip(&pixels) {
            e[p] = 1.0;
            op.forward(&e, row);
            e[p] = 0.0;
        }
        let lik = Self {
            base,
            pixels,
            basis,
            cache: Mutex::new(None),
        };
        // The exact likelihood must determine every compact flux: fails here, not mid-run.
        lik.factor(1.0, 0.0)?;
        Ok(lik)
    }

    pub fn pixels(&self) -> &[usize] {
        &self.pixels
    }

    pub fn base(&self) -> &GaussianLikelihood<A> {
        &self.base
    }

    fn n_data(&self) -> usize {
        self.base.operator().data_len()
    }

    /// `Bᵀ v` in f64.
    fn bt(&self, v: &[f32]) -> Vec<f64> {
        self.basis
            .chunks(self.n_data().max(1))
            .map(|b| b.iter().zip(v).map(|(&a, &c)| a as f64 * c as f64).sum())
            .collect()
    }

    /// Cholesky factor (lower, row-major K×K) of `Bᵀ D⁻¹ B` for the variances at `(μ_t, σ_t)`.
    fn factor(&self, mu_t: f32, sigma_t: f32) -> Result<Vec<f64>, LikelihoodError> {
        let key = (mu_t.to_bits(), sigma_t.to_bits());
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((k, l)) = cache.as_ref() {
            if *k == key {
                return Ok(l.clone());
            }
        }
        let d = self.base.variances(mu_t, sigma_t);
        let n = self.n_data();
        let k = self.pixels.len();
        let rows: Vec<&[f32]> = self.basis.chunks(n.max(1)).collect();
        let mut m = vec![0.0f64; k * k];
        for i in 0..k {
            for j in 0..=i {
                let s: f64 = rows[i]
                    .iter()
                    .zip(rows[j])
                    .zip(&d)
                    .map(|((&a, &b), &v)| a as f64 * b as f64 / v as f64)
                    .sum();
                m[i * k + j] = s;
                m[j * k + i] = s;
            }
        }
        let l = cholesky(&m, k).ok_or_else(|| {
            LikelihoodError::Compact(format!(
                "the data do not determine the fluxes of the {k} compact pixels separately \
                 (their Fourier rows are degenerate): use fewer compact components or a \
                 coarser pixel scale"
            ))
        })?;
        *cache = Some((key, l.clone()));
        Ok(l)
    }

    /// `Π (μ_t y − A x_t)` with `Π` the projected precision (module docs).
    fn projected_residual(
        &self,
        x_t: &[f32],
        mu_t: f32,
        sigma_t: f32,
    ) -> Result<Vec<f32>, LikelihoodError> {
        let mut r = self.base.weighted_residual(x_t, mu_t, sigma_t);
        if self.pixels.is_empty() {
            return Ok(r);
        }
        let l = self.factor(mu_t, sigma_t)?;
        let c = cholesky_solve(&l, self.pixels.len(), &self.bt(&r));
        let d = self.base.variances(mu_t, sigma_t);
        let n = self.n_data();
        for (i, (ri, di)) in r.iter_mut().zip(&d).enumerate() {
            let bc: f64 = c
                .iter()
                .enumerate()
                .map(|(k, ck)| ck * self.basis[k * n + i] as f64)
                .sum();
            *ri -= (bc / *di as f64) as f32;
        }
        Ok(r)
    }

    /// The compact fluxes that best fit `y − A x_d` (generalised least squares), and the
    /// Cholesky factor of their precision `Bᵀ Σ⁻¹ B`.
    fn conditional(&self, x_d: &[f32]) -> Result<(Vec<f64>, Vec<f64>), LikelihoodError> {
        let k = self.pixels.len();
        let l = self.factor(1.0, 0.0)?;
        // At t = 0 the weighted residual is Σ⁻¹ (y − A x_d): what Bᵀ needs.
        let r = self.base.weighted_residual(x_d, 1.0, 0.0);
        let fhat = cholesky_solve(&l, k, &self.bt(&r));
        Ok((fhat, l))
    }

    /// The compact fluxes (normalised units) most consistent with the data given `x_d`.
    pub fn best_fluxes(&self, x_d: &[f32]) -> Result<Vec<f64>, LikelihoodError> {
        Ok(self.conditional(x_d)?.0)
    }

    /// A draw of the compact fluxes from `p(f | x_d, y) = N(f̂, (Bᵀ Σ⁻¹ B)⁻¹)`.
    pub fn draw_fluxes<R: Rng>(
        &self,
        x_d: &[f32],
        rng: &mut R,
    ) -> Result<Vec<f64>, LikelihoodError> {
        let k = self.pixels.len();
        let (mut f, l) = self.conditional(x_d)?;
        // f̂ + L⁻ᵀ z has covariance (L Lᵀ)⁻¹.
        let z: Vec<f64> = (0..k).map(|_| rng.sample(StandardNormal)).collect();
        let w = back_substitute_t(&l, k, &z);
        f.iter_mut().zip(&w).for_each(|(a, b)| *a += b);
        Ok(f)
    }

    /// `x_d + P f`: the whole sky from its diffuse part and the compact fluxes.
    pub fn with_fluxes(&self, x_d: &[f32], f: &[f64]) -> Vec<f32> {
        let mut x = x_d.to_vec();
        for (&p, &v) in self.pixels.iter().zip(f) {
            x[p] += v as f32;
        }
        x
    }
}

impl<A: ForwardOperator> LikelihoodScore for CompactMarginal<A> {
    fn image_shape(&self) -> [usize; 2] {
        self.base.operator().image_shape()
    }

    fn score_t(
        &self,
        x_t: &[f32],
        mu_t: f32,
        sigma_t: f32,
        grad: &mut [f32],
    ) -> Result<(), LikelihoodError> {
        let mut r = self.projected_residual(x_t, mu_t, sigma_t)?;
        let alpha = self.base.alpha;
        r.iter_mut().for_each(|v| *v *= alpha);
        self.base.operator().adjoint(&r, grad);
        Ok(())
    }

    fn data_noise_scale(&self) -> f64 {
        self.base.data_noise_scale()
    }

    /// The fit of the diffuse image with the compact fluxes at their best values.
    fn reduced_chi2(&self, x: &[f32]) -> f64 {
        match self.best_fluxes(x) {
            Ok(f) => self.base.reduced_chi2(&self.with_fluxes(x, &f)),
            Err(_) => f64::NAN,
        }
    }
}

/// Lower Cholesky factor of a symmetric positive-definite K×K matrix; `None` if it is not
/// numerically positive definite (relative to its largest diagonal entry).
fn cholesky(m: &[f64], k: usize) -> Option<Vec<f64>> {
    let scale = (0..k).map(|i| m[i * k + i]).fold(0.0f64, f64::max);
    let mut l = vec![0.0f64; k * k];
    for i in 0..k {
        for j in 0..=i {
            let s: f64 = (0..j).map(|q| l[i * k + q] * l[j * k + q]).sum();
            if i == j {
                let d = m[i * k + i] - s;
                // Also refuses NaN.
                if d.is_nan() || d <= 1e-12 * scale {
                    return None;
                }
                l[i * k + i] = d.sqrt();
            } else {
                l[i * k + j] = (m[i * k + j] - s) / l[j * k + j];
            }
        }
    }
    Some(l)
}

/// Solves `L Lᵀ x = b`.
fn cholesky_solve(l: &[f64], k: usize, b: &[f64]) -> Vec<f64> {
    let mut y = vec![0.0f64; k];
    for i in 0..k {
        y[i] = (b[i] - (0..i).map(|q| l[i * k + q] * y[q]).sum::<f64>()) / l[i * k + i];
    }
    back_substitute_t(l, k, &y)
}

/// Solves `Lᵀ x = y`.
fn back_substitute_t(l: &[f64], k: usize, y: &[f64]) -> Vec<f64> {
    let mut x = vec![0.0f64; k];
    for i in (0..k).rev() {
        x[i] = (y[i] - (i + 1..k).map(|q| l[q * k + i] * x[q]).sum::<f64>()) / l[i * k + i];
    }
    x
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    /// A dense random operator: the simplest independent truth.
    struct Dense {
        a: Vec<f32>,
        n: usize,
        m: usize,
    }

    impl ForwardOperator for Dense {
        fn image_shape(&self) -> [usize; 2] {
            [1, self.n]
        }
        fn data_len(&self) -> usize {
            self.m
        }
        fn forward(&self, x: &[f32], y: &mut [f32]) {
            for (i, yi) in y.iter_mut().enumerate() {
                *yi = (0..self.n).map(|j| self.a[i * self.n + j] * x[j]).sum();
            }
        }
        fn adjoint(&self, r: &[f32], x: &mut [f32]) {
            for (j, xj) in x.iter_mut().enumerate() {
                *xj = (0..self.m).map(|i| self.a[i * self.n + j] * r[i]).sum();
            }
        }
        fn diag_aat(&self) -> Vec<f32> {
            (0..self.m)
                .map(|i| (0..self.n).map(|j| self.a[i * self.n + j].powi(2)).sum())
                .collect()
        }
    }

    fn setup() -> (CompactMarginal<Dense>, Vec<f32>) {
        let (n, m) = (6, 20);
        let mut rng = StdRng::seed_from_u64(4);
        let a: Vec<f32> = (0..n * m).map(|_| rng.sample(StandardNormal)).collect();
        let y: Vec<f32> = (0..m).map(|_| rng.sample(StandardNormal)).collect();
        let sigma: Vec<f32> = (0..m).map(|i| 0.2 + 0.03 * i as f32).collect();
        let x: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
        let base = GaussianLikelihood::new(Dense { a, n, m }, y, &sigma).unwrap();
        (CompactMarginal::new(base, vec![1, 4]).unwrap(), x)
    }

    /// The marginal log-likelihood of `x_d` is `−½ min_f χ²(x_d + P f)` up to a constant (a
    /// flat prior's Gaussian integral has a constant determinant): its gradient, by finite
    /// differences of the profile χ², must equal the projected score.
    #[test]
    fn projected_score_is_gradient_of_marginal_likelihood() {
        let (lik, x) = setup();
        let mut g = vec![0.0f32; x.len()];
        lik.score_t(&x, 1.0, 0.0, &mut g).unwrap();
        let chi2 = |x: &[f32]| {
            let f = lik.best_fluxes(x).unwrap();
            lik.base.chi2(&lik.with_fluxes(x, &f))
        };
        let h = 1e-2f32;
        for j in 0..x.len() {
            let (mut xp, mut xm) = (x.clone(), x.clone());
            xp[j] += h;
            xm[j] -= h;
            let fd = -(chi2(&xp) - chi2(&xm)) / (4.0 * h as f64);
            assert!(
                (fd - g[j] as f64).abs() <= 2e-3 * (1.0 + fd.abs()),
                "pixel {j}: finite difference {fd} vs score {}",
                g[j]
            );
        }
        // The compact pixels themselves carry no likelihood information on x_d.
        assert!(g[1].abs() < 1e-3 && g[4].abs() < 1e-3, "{g:?}");
    }

    /// Draws of the compact fluxes have the conditional mean and covariance: checked against
    /// the generalised least-squares solution and its precision, computed here independently.
    #[test]
    fn flux_draws_have_the_conditional_moments() {
        let (lik, x) = setup();
        let op = lik.base.operator();
        let (n, m) = (op.n, op.m);
        // Independent normal equations in f64 for the 2×2 case.
        let s2 = lik.base.sigma2();
        let col = |p: usize| (0..m).map(|i| op.a[i * n + p] as f64).collect::<Vec<_>>();
        let (b0, b1) = (col(1), col(4));
        let mut ax = vec![0.0f32; m];
        op.forward(&x, &mut ax);
        let r: Vec<f64> = (0..m)
            .map(|i| (lik.base.data()[i] - ax[i]) as f64)
            .collect();
        let dot = |u: &[f64], v: &[f64]| (0..m).map(|i| u[i] * v[i] / s2[i] as f64).sum::<f64>();
        let (p00, p01, p11) = (dot(&b0, &b0), dot(&b0, &b1), dot(&b1, &b1));
        let (q0, q1) = (dot(&b0, &r), dot(&b1, &r));
        let det = p00 * p11 - p01 * p01;
        let mean = [(p11 * q0 - p01 * q1) / det, (p00 * q1 - p01 * q0) / det];
        let cov = [p11 / det, -p01 / det, p00 / det];

        let mut rng = StdRng::seed_from_u64(9);
        let draws: Vec<Vec<f64>> = (0..20_000)
            .map(|_| lik.draw_fluxes(&x, &mut rng).unwrap())
            .collect();
        let k = draws.len() as f64;
        let mu = [0, 1].map(|j| draws.iter().map(|d| d[j]).sum::<f64>() / k);
        let c = |a: usize, b: usize| {
            draws
                .iter()
                .map(|d| (d[a] - mu[a]) * (d[b] - mu[b]))
                .sum::<f64>()
                / (k - 1.0)
        };
        for j in 0..2 {
            let se = (cov[2 * j] / k).sqrt();
            assert!(
                (mu[j] - mean[j]).abs() < 5.0 * se,
                "mean {j}: {} vs {}",
                mu[j],
                mean[j]
            );
        }
        for (got, want) in [(c(0, 0), cov[0]), (c(0, 1), cov[1]), (c(1, 1), cov[2])] {
            assert!(
                (got - want).abs() < 0.05 * (cov[0] * cov[2]).sqrt(),
                "covariance {got} vs {want}"
            );
        }
    }

    #[test]
    fn rejects_repeated_or_outside_pixels() {
        let (lik, _) = setup();
        let Dense { a, n, m } = Dense {
            a: lik.base.operator().a.clone(),
            n: 6,
            m: 20,
        };
        let base = || {
            GaussianLikelihood::new(Dense { a: a.clone(), n, m }, vec![0.0; m], &[1.0; 20]).unwrap()
        };
        assert!(CompactMarginal::new(base(), vec![2, 2]).is_err());
        assert!(CompactMarginal::new(base(), vec![6]).is_err());
    }
}
