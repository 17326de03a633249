//! Which pixels of a CLEAN model are **compact**: unresolved components (a quasar's core, a
//! blazar's knots) that hold the flux at their position alone. The posterior gives those pixels
//! a flat prior on their flux ([`crate::likelihood::CompactMarginal`]) and leaves the rest of
//! the sky to the score prior, whose training images never held a single pixel thousands of
//! times brighter than the emission around it.
//!
//! The test is CLEAN's own: at a pixel of the restored image (Jy/beam), an unresolved
//! component on the grid contributes its whole flux from that one model pixel, so the model
//! pixel (Jy/pixel) equals the restored brightness; smooth emission contributes from every model
//! pixel under the beam, so the ratio is about one over the beam's area in pixels.

/// How compact pixels are chosen from a CLEAN model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompactOptions {
    /// Least ratio of the model pixel (Jy/pixel) to the restored brightness there (Jy/beam):
    /// 1 for an unresolved component centred on a pixel, about a half for one between two
    /// pixels, `1/(beam area in pixels)` for smooth emission.
    pub min_concentration: f64,
    /// Least restored brightness, in σ of the CLEAN residual: faint components are the
    /// prior's to explain (CLEAN puts isolated components on noise too).
    pub min_snr: f64,
    /// Least model flux as a fraction of the brightest model pixel: only components beyond the
    /// prior's dynamic range need the flat prior.
    pub min_fraction: f64,
    /// At most this many pixels, the brightest first.
    pub max_pixels: usize,
}

impl Default for CompactOptions {
    fn default() -> Self {
        Self {
            min_concentration: 0.3,
            min_snr: 20.0,
            min_fraction: 0.01,
            max_pixels: 32,
        }
    }
}

/// Flat indices of the compact pixels of a CLEAN `model` (Jy/pixel) given its `restored`
/// image (Jy/beam) and the residual's σ (Jy/beam), brightest first.
pub fn compact_pixels(
    model: &[f32],
    restored: &[f32],
    residual_sigma: f64,
    opts: &CompactOptions,
) -> Vec<usize> {
    let peak = model.iter().cloned().fold(0.0f32, f32::max) as f64;
    // NaN or no positive component: nothing is compact.
    if peak.is_nan() || peak <= 0.0 || model.len() != restored.len() {
        return Vec::new();
    }
    let mut px: Vec<usize> = (0..model.len())
        .filter(|&k| {
            let (m, r) = (model[k] as f64, restored[k] as f64);
            m > 0.0
                && m >= opts.min_fraction * peak
                && r >= opts.min_snr * residual_sigma
                && r > 0.0
                && m >= opts.min_concentration * r
        })
        .collect();
    px.sort_by(|&a, &b| model[b].total_cmp(&model[a]));
    px.truncate(opts.max_pixels);
    px
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Restores a model with a Gaussian beam of FWHM `fwhm` pixels (peak 1), as CLEAN does.
    fn restore(model: &[f32], n: usize, fwhm: f64) -> Vec<f32> {
        let s2 = (fwhm / 2.3548).powi(2);
        let mut out = vec![0.0f32; n * n];
        for (k, &m) in model.iter().enumerate().filter(|(_, &m)| m != 0.0) {
            let (ky, kx) = ((k / n) as f64, (k % n) as f64);
            for (j, o) in out.iter_mut().enumerate() {
                let (y, x) = ((j / n) as f64, (j % n) as f64);
                let d2 = (y - ky).powi(2) + (x - kx).powi(2);
                *o += m * (-d2 / (2.0 * s2)).exp() as f32;
            }
        }
        out
    }

    /// A 30 Jy point on a pixel and a smooth 20 Jy/beam disc: only the point is compact, at
    /// any beam of at least a few pixels; a point between two pixels is found too.
    #[test]
    fn finds_points_and_leaves_smooth_emission() {
        let n = 48;
        for fwhm in [4.0, 6.0, 9.0] {
            let mut model = vec![0.0f32; n * n];
            model[24 * n + 24] = 30.0;
            // A point between two pixels, as CLEAN splits it.
            model[10 * n + 30] = 0.5;
            model[10 * n + 31] = 0.5;
            // Smooth emission of 20 Jy/beam, a component in every pixel of a disc: bright enough
            // for the flux and significance cuts, so only its spread keeps it out.
            let omega = 1.1331 * fwhm * fwhm;
            for y in 30..44 {
                for x in 5..19 {
                    if (y as f64 - 37.0).powi(2) + (x as f64 - 12.0).powi(2) < 36.0 {
                        model[y * n + x] = (20.0 / omega) as f32;
                    }
                }
            }
            let restored = restore(&model, n, fwhm);
            let px = compact_pixels(&model, &restored, 1e-3, &CompactOptions::default());
            assert_eq!(px[0], 24 * n + 24, "beam {fwhm}: {px:?}");
            let mut rest = px[1..].to_vec();
            rest.sort();
            assert_eq!(rest, vec![10 * n + 30, 10 * n + 31], "beam {fwhm}: {px:?}");
        }
    }

    #[test]
    fn faint_or_insignificant_components_stay_with_the_prior() {
        let n = 16;
        let mut model = vec![0.0f32; n * n];
        model[3 * n + 3] = 10.0;
        model[12 * n + 12] = 0.05; // 0.5 % of the peak
        let restored = restore(&model, n, 3.0);
        let px = compact_pixels(&model, &restored, 1e-3, &CompactOptions::default());
        assert_eq!(px, vec![3 * n + 3]);
        // Below 20 σ nothing is compact.
        assert!(compact_pixels(&model, &restored, 1.0, &CompactOptions::default()).is_empty());
        assert!(compact_pixels(&[0.0; 4], &[0.0; 4], 1.0, &CompactOptions::default()).is_empty());
    }
}
