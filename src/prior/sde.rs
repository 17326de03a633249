//! Forward SDEs with the conventions of `score_models`: x_t = μ(t) x₀ + σ(t) z, t ∈ [0, 1].

use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

/// A forward diffusion dx = f(t) x dt + g(t) dw whose marginal given x₀ is N(μ(t) x₀, σ(t)²).
///
/// Both supported SDEs have a drift linear in x, which lets samplers stay generic while the
/// posterior code can still reason about μ and σ in closed form.
pub trait Sde: Send + Sync {
    /// Mean scale μ(t) of the marginal p(x_t | x₀).
    fn mu(&self, t: f64) -> f64;
    /// Standard deviation σ(t) of the marginal p(x_t | x₀).
    fn sigma(&self, t: f64) -> f64;
    /// Coefficient a(t) of the drift f(x, t) = a(t) x.
    fn drift_coef(&self, t: f64) -> f64;
    /// Diffusion coefficient g(t).
    fn diffusion(&self, t: f64) -> f64;
    /// Standard deviation of the prior at t = 1 (the distribution sampling starts from).
    fn prior_std(&self) -> f64;

    /// Drift f(x, t).
    fn drift(&self, x: &Tensor, t: f64) -> Result<Tensor> {
        x.affine(self.drift_coef(t), 0.0)
    }
}

/// Variance-exploding SDE: σ(t) = σ_min (σ_max/σ_min)^t, no drift.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VeSde {
    pub sigma_min: f64,
    pub sigma_max: f64,
}

impl VeSde {
    /// Panics on invalid parameters; [`VeSde::try_new`] for values from a user or a file.
    pub fn new(sigma_min: f64, sigma_max: f64) -> Self {
        Self::try_new(sigma_min, sigma_max).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The SDE, or why its parameters cannot define one (σ would be 0, NaN or shrink).
    pub fn try_new(sigma_min: f64, sigma_max: f64) -> std::result::Result<Self, String> {
        let s = Self {
            sigma_min,
            sigma_max,
        };
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let (lo, hi) = (self.sigma_min, self.sigma_max);
        if !(lo.is_finite() && hi.is_finite() && lo > 0.0 && hi > lo) {
            return Err(format!(
                "VE SDE needs 0 < sigma_min < sigma_max (finite), got sigma_min {lo}, sigma_max {hi}"
            ));
        }
        Ok(())
    }
}

impl Sde for VeSde {
    fn mu(&self, _t: f64) -> f64 {
        1.0
    }
    fn sigma(&self, t: f64) -> f64 {
        self.sigma_min * (self.sigma_max / self.sigma_min).powf(t)
    }
    fn drift_coef(&self, _t: f64) -> f64 {
        0.0
    }
    fn diffusion(&self, t: f64) -> f64 {
        self.sigma(t) * (2.0 * (self.sigma_max / self.sigma_min).ln()).sqrt()
    }
    fn prior_std(&self) -> f64 {
        self.sigma_max
    }
}

/// Variance-preserving SDE: β(t) = β_min + t (β_max − β_min), drift −½ β x, g = √β.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct VpSde {
    pub beta_min: f64,
    pub beta_max: f64,
}

impl VpSde {
    /// Panics on invalid parameters; [`VpSde::try_new`] for values from a user or a file.
    pub fn new(beta_min: f64, beta_max: f64) -> Self {
        Self::try_new(beta_min, beta_max).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The SDE, or why its parameters cannot define one.
    pub fn try_new(beta_min: f64, beta_max: f64) -> std::result::Result<Self, String> {
        let s = Self { beta_min, beta_max };
        s.check()?;
        Ok(s)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let (lo, hi) = (self.beta_min, self.beta_max);
        if !(lo.is_finite() && hi.is_finite() && lo >= 0.0 && hi > lo) {
            return Err(format!(
                "VP SDE needs 0 <= beta_min < beta_max (finite), got beta_min {lo}, beta_max {hi}"
            ));
        }
        Ok(())
    }
    pub fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }
    /// ∫₀ᵗ β(s) ds.
    fn beta_integral(&self, t: f64) -> f64 {
        self.beta_min * t + 0.5 * t * t * (self.beta_max - self.beta_min)
    }
}

impl Default for VpSde {
    fn default() -> Self {
        Self::new(0.1, 20.0)
    }
}

impl Sde for VpSde {
    fn mu(&self, t: f64) -> f64 {
        (-0.5 * self.beta_integral(t)).exp()
    }
    fn sigma(&self, t: f64) -> f64 {
        // -expm1 keeps precision at small t, where 1 - μ² cancels catastrophically.
        (-(-self.beta_integral(t)).exp_m1()).sqrt()
    }
    fn drift_coef(&self, t: f64) -> f64 {
        -0.5 * self.beta(t)
    }
    fn diffusion(&self, t: f64) -> f64 {
        self.beta(t).sqrt()
    }
    fn prior_std(&self) -> f64 {
        1.0
    }
}

/// Serialisable choice of SDE, as stored in checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SdeConfig {
    Ve(VeSde),
    Vp(VpSde),
}

impl SdeConfig {
    fn inner(&self) -> &dyn Sde {
        match self {
            SdeConfig::Ve(s) => s,
            SdeConfig::Vp(s) => s,
        }
    }
    pub fn name(&self) -> &'static str {
        match self {
            SdeConfig::Ve(_) => "ve",
            SdeConfig::Vp(_) => "vp",
        }
    }

    /// Whether the parameters define an SDE: a deserialised config skips the constructors'
    /// checks, and e.g. sigma_max −1 would sample NaN everywhere.
    pub fn check(&self) -> std::result::Result<(), String> {
        match self {
            SdeConfig::Ve(s) => s.check(),
            SdeConfig::Vp(s) => s.check(),
        }
    }
}

impl Sde for SdeConfig {
    fn mu(&self, t: f64) -> f64 {
        self.inner().mu(t)
    }
    fn sigma(&self, t: f64) -> f64 {
        self.inner().sigma(t)
    }
    fn drift_coef(&self, t: f64) -> f64 {
        self.inner().drift_coef(t)
    }
    fn diffusion(&self, t: f64) -> f64 {
        self.inner().diffusion(t)
    }
    fn prior_std(&self) -> f64 {
        self.inner().prior_std()
    }
}

/// Song & Ermon (2020) technique 1: σ_max ≈ the largest Euclidean distance between two
/// training images, so that the t = 1 prior covers every pair of data points.
///
/// `images` are flattened, equally sized images; at most `max_images` of them are compared
/// (the first ones) to bound the O(N²) cost.
pub fn sigma_max_from_data(images: &[&[f32]], max_images: usize) -> f64 {
    let n = images.len().min(max_images);
    let mut best = 0.0f64;
    for i in 0..n {
        for j in (i + 1)..n {
            let d2: f64 = images[i]
                .iter()
                .zip(images[j])
                .map(|(a, b)| {
                    let d = (*a - *b) as f64;
                    d * d
                })
                .sum();
            best = best.max(d2);
        }
    }
    best.sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn num_deriv(f: impl Fn(f64) -> f64, t: f64) -> f64 {
        let h = 1e-5;
        (f(t + h) - f(t - h)) / (2.0 * h)
    }

    #[test]
    fn ve_closed_forms() {
        let sde = VeSde::new(1e-3, 50.0);
        assert!((sde.sigma(0.0) - 1e-3).abs() < 1e-12);
        assert!((sde.sigma(1.0) - 50.0).abs() < 1e-9);
        for &t in &[0.1, 0.5, 0.9] {
            // Variance of the marginal must grow at rate g²: d σ²/dt = g(t)².
            let dvar = num_deriv(|s| sde.sigma(s).powi(2), t);
            let g2 = sde.diffusion(t).powi(2);
            assert!((dvar - g2).abs() / g2 < 1e-6, "t={t}: {dvar} vs {g2}");
            assert_eq!(sde.mu(t), 1.0);
        }
    }

    #[test]
    fn vp_closed_forms() {
        let sde = VpSde::default();
        assert!((sde.mu(0.0) - 1.0).abs() < 1e-15);
        assert!(sde.sigma(0.0).abs() < 1e-15);
        let expected_mu1 = (-0.5f64 * (0.1 + 0.5 * 19.9)).exp();
        assert!((sde.mu(1.0) - expected_mu1).abs() < 1e-12);
        for &t in &[0.05, 0.3, 0.7, 1.0] {
            assert!((sde.mu(t).powi(2) + sde.sigma(t).powi(2) - 1.0).abs() < 1e-12);
            // dμ/dt = a(t) μ and dσ²/dt = 2 a σ² + g².
            let dmu = num_deriv(|s| sde.mu(s), t.min(0.99));
            let tt = t.min(0.99);
            assert!((dmu - sde.drift_coef(tt) * sde.mu(tt)).abs() < 1e-6);
            let dvar = num_deriv(|s| sde.sigma(s).powi(2), tt);
            let rhs = 2.0 * sde.drift_coef(tt) * sde.sigma(tt).powi(2) + sde.diffusion(tt).powi(2);
            assert!((dvar - rhs).abs() < 1e-6, "t={tt}: {dvar} vs {rhs}");
        }
        assert!((sde.diffusion(0.5) - (0.1f64 + 0.5 * 19.9).sqrt()).abs() < 1e-12);
    }

    #[test]
    fn config_serde_round_trip() {
        let c = SdeConfig::Ve(VeSde::new(1e-3, 30.0));
        let s = serde_json::to_string(&c).unwrap();
        assert!(s.contains("\"type\":\"ve\""));
        let back: SdeConfig = serde_json::from_str(&s).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.sigma(1.0), 30.0);
    }

    #[test]
    fn sigma_max_rule() {
        let a = [0.0f32, 0.0];
        let b = [3.0f32, 4.0];
        let c = [1.0f32, 1.0];
        let s = sigma_max_from_data(&[&a, &b, &c], 10);
        assert!((s - 5.0).abs() < 1e-12);
    }
}
