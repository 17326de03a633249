//! The celestial WCS of an input image, enough to place a cutout of it on the sky.

use crate::io::FitsImage;

/// Celestial WCS of the input (TAN or SIN, CD or PC·CDELT), enough to place the cutout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InputWcs {
    pub crpix: [f64; 2],
    pub crval: [f64; 2],
    /// Degrees per pixel: `[[m11, m12], [m21, m22]]`.
    pub m: [[f64; 2]; 2],
    /// TAN (gnomonic); SIN otherwise.
    pub tan: bool,
}

impl InputWcs {
    pub fn from_fits(img: &FitsImage) -> Option<InputWcs> {
        let c1 = img.get_str("CTYPE1")?.trim().to_ascii_uppercase();
        let c2 = img.get_str("CTYPE2")?.trim().to_ascii_uppercase();
        if !(c1.starts_with("RA--") && c2.starts_with("DEC-")) {
            return None;
        }
        let tan = c1.ends_with("TAN");
        if !tan && !c1.ends_with("SIN") {
            return None;
        }
        let g = |k: &str| img.get_f64(k);
        let m = if g("CD1_1").is_some() || g("CD2_2").is_some() {
            let cd = |k: &str| g(k).unwrap_or(0.0);
            [[cd("CD1_1"), cd("CD1_2")], [cd("CD2_1"), cd("CD2_2")]]
        } else {
            let (d1, d2) = (g("CDELT1")?, g("CDELT2")?);
            let pc = |k: &str, d: f64| g(k).unwrap_or(d);
            [
                [pc("PC1_1", 1.0) * d1, pc("PC1_2", 0.0) * d1],
                [pc("PC2_1", 0.0) * d2, pc("PC2_2", 1.0) * d2],
            ]
        };
        let w = InputWcs {
            crpix: [g("CRPIX1")?, g("CRPIX2")?],
            crval: [g("CRVAL1")?, g("CRVAL2")?],
            m,
            tan,
        };
        (w.scale_deg() > 0.0 && w.scale_deg().is_finite()).then_some(w)
    }

    /// Pixel size, degrees (square root of the pixel area).
    pub fn scale_deg(&self) -> f64 {
        (self.m[0][0] * self.m[1][1] - self.m[0][1] * self.m[1][0])
            .abs()
            .sqrt()
    }

    /// Rotation of the pixel axes against (−RA, Dec), degrees.
    pub fn rotation_deg(&self) -> f64 {
        self.m[1][0].atan2(self.m[1][1]).to_degrees()
    }

    /// (RA, Dec) in degrees of a 0-based pixel position (x along FITS axis 1).
    pub fn world(&self, x: f64, y: f64) -> (f64, f64) {
        let (p1, p2) = (x + 1.0 - self.crpix[0], y + 1.0 - self.crpix[1]);
        let xi = (self.m[0][0] * p1 + self.m[0][1] * p2).to_radians();
        let eta = (self.m[1][0] * p1 + self.m[1][1] * p2).to_radians();
        let (sd0, cd0) = self.crval[1].to_radians().sin_cos();
        let (dra, dec) = if self.tan {
            let den = cd0 - eta * sd0;
            (xi.atan2(den), (eta * cd0 + sd0).atan2(xi.hypot(den)))
        } else {
            let n = (1.0 - xi * xi - eta * eta).max(0.0).sqrt();
            (
                xi.atan2(n * cd0 - eta * sd0),
                (eta * cd0 + n * sd0).clamp(-1.0, 1.0).asin(),
            )
        };
        (
            (self.crval[0] + dra.to_degrees()).rem_euclid(360.0),
            dec.to_degrees(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tan_wcs_matches_the_reference_point_and_scale() {
        let w = InputWcs {
            crpix: [100.0, 50.0],
            crval: [150.0, 2.2],
            m: [[-1e-5, 0.0], [0.0, 1e-5]],
            tan: true,
        };
        let (ra, dec) = w.world(99.0, 49.0);
        assert!((ra - 150.0).abs() < 1e-12 && (dec - 2.2).abs() < 1e-12);
        // One pixel up is 1e-5 deg north; one pixel right is 1e-5 deg west (RA smaller).
        let (_, d2) = w.world(99.0, 50.0);
        assert!((d2 - 2.2 - 1e-5).abs() < 1e-11);
        let (r2, _) = w.world(100.0, 49.0);
        assert!(((150.0 - r2) * 2.2f64.to_radians().cos() - 1e-5).abs() < 1e-11);
        assert!((w.scale_deg() - 1e-5).abs() < 1e-18);
    }
}
