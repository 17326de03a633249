//! Mass model: a singular isothermal ellipsoid (SIE) plus external shear, closed-form deflections.
//!
//! Coordinates are angles on the sky in arcsec, `x` to the right (west on a north-up, east-left
//! image) and `y` up (north), as autolens uses them. Angles are counter-clockwise from `+x`.
//!
//! The SIE follows Kormann et al. (1994) / Keeton (2001) with the convergence
//! `κ = b / (2 ξ)`, `ξ² = x'² + y'²/q²` in the profile frame (major axis along `x'`), whose
//! deflection is `α_x' = b q/√(1−q²) · atan(√(1−q²) x'/ψ)`, `α_y' = b q/√(1−q²) · atanh(√(1−q²) y'/ψ)`,
//! `ψ = √(q² x'² + y'²)`. The Einstein radius is normalised as autolens' `Isothermal` does it:
//! `b = 2 θ_E/(1+q)`, so that `θ_E` is the radius of the circle with mean convergence one in the
//! "intermediate axis" sense (for `q → 1` it is the SIS Einstein radius `α = θ_E`).

/// Singular isothermal ellipsoid.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Sie {
    /// autolens-normalised Einstein radius, arcsec.
    pub einstein_radius: f64,
    /// Minor over major axis, `0 < q ≤ 1`.
    pub axis_ratio: f64,
    /// Major-axis angle, degrees counter-clockwise from `+x`.
    pub angle_deg: f64,
    /// Centre `(x, y)`, arcsec.
    pub centre: [f64; 2],
}

/// External shear `(γ₁, γ₂)`: `α = (γ₁ x + γ₂ y, γ₂ x − γ₁ y)` (autolens' `ExternalShear`,
/// stretching along `½ atan2(γ₂, γ₁)`).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ExternalShear {
    pub gamma_1: f64,
    pub gamma_2: f64,
}

/// The full lens: SIE + external shear (centred on the origin, as autolens has it).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MassModel {
    pub sie: Sie,
    pub shear: ExternalShear,
}

impl Sie {
    /// Below this `1 − q` the closed form loses precision (`√(1−q²)` in a denominator) and the
    /// SIS limit is used; the difference is `O(1−q)` of a deflection that is itself `O(1−q)`
    /// away from the SIS, i.e. far below f32 precision.
    const ROUND: f64 = 1e-6;

    fn frame(&self, x: f64, y: f64) -> (f64, f64, f64, f64) {
        let (s, c) = self.angle_deg.to_radians().sin_cos();
        let (dx, dy) = (x - self.centre[0], y - self.centre[1]);
        (c * dx + s * dy, -s * dx + c * dy, c, s)
    }

    /// Convergence `κ(x, y)`.
    pub fn convergence(&self, x: f64, y: f64) -> f64 {
        let q = self.axis_ratio;
        let (xp, yp, _, _) = self.frame(x, y);
        let xi = (xp * xp + yp * yp / (q * q)).sqrt();
        let b = 2.0 * self.einstein_radius / (1.0 + q);
        0.5 * b / xi
    }

    /// Deflection `(α_x, α_y)`, arcsec.
    pub fn deflection(&self, x: f64, y: f64) -> (f64, f64) {
        let q = self.axis_ratio.min(1.0);
        let (xp, yp, c, s) = self.frame(x, y);
        let psi = (q * q * xp * xp + yp * yp).sqrt();
        if psi == 0.0 {
            return (0.0, 0.0);
        }
        let (ax, ay) = if 1.0 - q < Self::ROUND {
            let r = (xp * xp + yp * yp).sqrt();
            (self.einstein_radius * xp / r, self.einstein_radius * yp / r)
        } else {
            let e = (1.0 - q * q).sqrt();
            let f = 2.0 * self.einstein_radius * q / ((1.0 + q) * e);
            (f * (e * xp / psi).atan(), f * (e * yp / psi).atanh())
        };
        (c * ax - s * ay, s * ax + c * ay)
    }
}

impl ExternalShear {
    pub fn deflection(&self, x: f64, y: f64) -> (f64, f64) {
        (
            self.gamma_1 * x + self.gamma_2 * y,
            self.gamma_2 * x - self.gamma_1 * y,
        )
    }
}

impl MassModel {
    pub fn deflection(&self, x: f64, y: f64) -> (f64, f64) {
        let (a, b) = self.sie.deflection(x, y);
        let (c, d) = self.shear.deflection(x, y);
        (a + c, b + d)
    }

    /// The lens equation `β = θ − α(θ)`.
    pub fn trace(&self, x: f64, y: f64) -> (f64, f64) {
        let (ax, ay) = self.deflection(x, y);
        (x - ax, y - ay)
    }

    /// Checks the parameters, naming the bad one.
    pub fn validate(&self) -> Result<(), String> {
        let s = &self.sie;
        let finite = [
            s.einstein_radius,
            s.axis_ratio,
            s.angle_deg,
            s.centre[0],
            s.centre[1],
            self.shear.gamma_1,
            self.shear.gamma_2,
        ]
        .iter()
        .all(|v| v.is_finite());
        if !finite {
            return Err("lens parameters must be finite numbers".into());
        }
        if s.einstein_radius <= 0.0 {
            return Err(format!(
                "Einstein radius must be positive, got {} arcsec",
                s.einstein_radius
            ));
        }
        if !(s.axis_ratio > 0.0 && s.axis_ratio <= 1.0) {
            return Err(format!(
                "axis ratio must be in (0, 1], got {}",
                s.axis_ratio
            ));
        }
        Ok(())
    }
}

/// autolens' elliptical components `(ε_y, ε_x) = f (sin 2φ, cos 2φ)`, `f = (1−q)/(1+q)`, to
/// `(q, φ in degrees)`.
pub fn axis_ratio_and_angle(ell_comps: [f64; 2]) -> (f64, f64) {
    let angle = 0.5 * ell_comps[0].atan2(ell_comps[1]).to_degrees();
    let f = ell_comps[0].hypot(ell_comps[1]).min(0.999);
    ((1.0 - f) / (1.0 + f), angle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Gauss–Legendre nodes/weights on [0, 1] by Newton iteration on P_n.
    fn gauss_legendre(n: usize) -> Vec<(f64, f64)> {
        (0..n)
            .map(|i| {
                let mut x = (std::f64::consts::PI * (i as f64 + 0.75) / (n as f64 + 0.5)).cos();
                let mut dp = 0.0;
                for _ in 0..100 {
                    let (mut p0, mut p1) = (1.0, x);
                    for k in 2..=n {
                        let p2 = ((2 * k - 1) as f64 * x * p1 - (k - 1) as f64 * p0) / k as f64;
                        p0 = p1;
                        p1 = p2;
                    }
                    dp = n as f64 * (x * p1 - p0) / (x * x - 1.0);
                    let dx = p1 / dp;
                    x -= dx;
                    if dx.abs() < 1e-15 {
                        break;
                    }
                }
                let w = 2.0 / ((1.0 - x * x) * dp * dp);
                (0.5 * (x + 1.0), 0.5 * w)
            })
            .collect()
    }

    /// The deflection of any homoeoidal mass from its convergence by the one-dimensional
    /// integrals of Schramm (1990) / Keeton (2001, eqs. 27–28):
    /// `α_x = q x J₀`, `α_y = q y J₁`, `J_n = ∫₀¹ κ(ξ(u)) / (1 − (1−q²)u)^{n+½} du`,
    /// `ξ(u)² = u (x² + y²/(1 − (1−q²)u))`; evaluated with `u = t²` to remove the `u^{-½}`
    /// singularity of the isothermal `κ`. Independent of the closed form under test.
    fn deflection_by_integral(sie: &Sie, x: f64, y: f64) -> (f64, f64) {
        let q = sie.axis_ratio;
        let (s, c) = sie.angle_deg.to_radians().sin_cos();
        let (dx, dy) = (x - sie.centre[0], y - sie.centre[1]);
        let (xp, yp) = (c * dx + s * dy, -s * dx + c * dy);
        let kappa_of_xi = |xi: f64| {
            // κ on the major axis at distance ξ: the profile frame's (ξ, 0).
            let (px, py) = (sie.centre[0] + c * xi, sie.centre[1] + s * xi);
            sie.convergence(px, py)
        };
        let (mut j0, mut j1) = (0.0, 0.0);
        for (t, w) in gauss_legendre(200) {
            let u = t * t;
            let d = 1.0 - (1.0 - q * q) * u;
            let xi = (u * (xp * xp + yp * yp / d)).sqrt();
            let k = kappa_of_xi(xi) * 2.0 * t;
            j0 += w * k / d.sqrt();
            j1 += w * k / d.powf(1.5);
        }
        let (axp, ayp) = (q * xp * j0, q * yp * j1);
        (c * axp - s * ayp, s * axp + c * ayp)
    }

    #[test]
    fn sie_deflection_matches_integral_of_convergence() {
        let sie = Sie {
            einstein_radius: 1.3,
            axis_ratio: 0.62,
            angle_deg: 37.0,
            centre: [0.1, -0.2],
        };
        for &(x, y) in &[
            (1.0, 0.3),
            (-0.4, 1.7),
            (0.05, -0.02),
            (2.5, -2.0),
            (-1.1, -0.9),
        ] {
            let (ax, ay) = sie.deflection(x, y);
            let (bx, by) = deflection_by_integral(&sie, x, y);
            let err = ((ax - bx).powi(2) + (ay - by).powi(2)).sqrt();
            assert!(
                err < 1e-8 * (1.0 + bx.hypot(by)),
                "at ({x}, {y}): closed form ({ax}, {ay}), integral ({bx}, {by})"
            );
        }
    }

    #[test]
    fn divergence_is_twice_convergence_and_curl_vanishes() {
        let sie = Sie {
            einstein_radius: 1.6,
            axis_ratio: 0.75,
            angle_deg: -20.0,
            centre: [0.0, 0.0],
        };
        let h = 1e-5;
        for &(x, y) in &[(0.7, 0.4), (-1.2, 0.9), (0.3, -2.0)] {
            let dxx = (sie.deflection(x + h, y).0 - sie.deflection(x - h, y).0) / (2.0 * h);
            let dyy = (sie.deflection(x, y + h).1 - sie.deflection(x, y - h).1) / (2.0 * h);
            let dxy = (sie.deflection(x, y + h).0 - sie.deflection(x, y - h).0) / (2.0 * h);
            let dyx = (sie.deflection(x + h, y).1 - sie.deflection(x - h, y).1) / (2.0 * h);
            let k = sie.convergence(x, y);
            assert!(
                (dxx + dyy - 2.0 * k).abs() < 1e-6,
                "div α ≠ 2κ at ({x},{y})"
            );
            assert!((dxy - dyx).abs() < 1e-6, "curl α ≠ 0 at ({x},{y})");
        }
    }

    #[test]
    fn sis_limit_and_ring() {
        // q → 1: |α| = θ_E everywhere, so the origin's image is the ring r = θ_E.
        for q in [1.0, 1.0 - 1e-9, 0.999_999] {
            let m = MassModel {
                sie: Sie {
                    einstein_radius: 1.6,
                    axis_ratio: q,
                    angle_deg: 10.0,
                    centre: [0.0, 0.0],
                },
                shear: ExternalShear::default(),
            };
            for a in [0.0f64, 1.0, 2.5] {
                let (x, y) = (1.6 * a.cos(), 1.6 * a.sin());
                let (bx, by) = m.trace(x, y);
                assert!(
                    bx.hypot(by) < 1e-5,
                    "q {q}: ring point traces to ({bx}, {by})"
                );
            }
        }
    }

    #[test]
    fn shear_matches_potential_gradient() {
        // ψ = ½γ₁(x² − y²) + γ₂ x y.
        let s = ExternalShear {
            gamma_1: 0.05,
            gamma_2: -0.03,
        };
        let (x, y) = (0.8, -1.3);
        let (ax, ay) = s.deflection(x, y);
        assert!((ax - (0.05 * x - 0.03 * y)).abs() < 1e-15);
        assert!((ay - (-0.03 * x - 0.05 * y)).abs() < 1e-15);
    }

    #[test]
    fn ell_comps_conversion() {
        // autolens: ε = f (sin 2φ, cos 2φ).
        let (q, phi) = axis_ratio_and_angle([0.052_631_578_947_368_41, 3.2e-18]);
        assert!(
            (q - 0.9).abs() < 1e-12 && (phi - 45.0).abs() < 1e-9,
            "{q} {phi}"
        );
        let f = (1.0 - 0.7) / 1.7;
        let a = 30f64.to_radians();
        let (q, phi) = axis_ratio_and_angle([f * (2.0 * a).sin(), f * (2.0 * a).cos()]);
        assert!((q - 0.7).abs() < 1e-12 && (phi - 30.0).abs() < 1e-9);
    }
}
