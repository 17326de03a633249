//! A window (CLEAN mask) from a CLEAN image: where the emission may be. Difmap users draw
//! windows by hand and WSClean's `-auto-mask` builds one from its components; a window matters
//! most for sparse (VLBI) coverage, where the data leave large patterns across the field
//! unconstrained.

/// Pixels where `restored` exceeds `nsigma · sigma`, grown by a disc of `radius_px` pixels
/// (room for emission just below the threshold around what CLEAN found), plus `always`.
/// Row-major, `ny × nx`.
pub fn clean_window(
    restored: &[f32],
    ny: usize,
    nx: usize,
    sigma: f64,
    nsigma: f64,
    radius_px: f64,
    always: &[usize],
) -> Vec<bool> {
    let seed: Vec<usize> = restored
        .iter()
        .enumerate()
        .filter(|(_, &v)| v as f64 > nsigma * sigma)
        .map(|(k, _)| k)
        .chain(always.iter().copied())
        .collect();
    let mut mask = vec![false; ny * nx];
    let r = radius_px.max(0.0);
    let ri = r.ceil() as isize;
    for k in seed {
        let (y, x) = ((k / nx) as isize, (k % nx) as isize);
        for dy in -ri..=ri {
            for dx in -ri..=ri {
                let (yy, xx) = (y + dy, x + dx);
                if ((dy * dy + dx * dx) as f64) <= r * r
                    && (0..ny as isize).contains(&yy)
                    && (0..nx as isize).contains(&xx)
                {
                    mask[yy as usize * nx + xx as usize] = true;
                }
            }
        }
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_the_significant_emission_by_the_radius() {
        let (ny, nx) = (32, 32);
        let mut img = vec![0.0f32; ny * nx];
        // Two pixels above 5σ (σ = 1), one just below.
        img[10 * nx + 10] = 6.0;
        img[10 * nx + 11] = 5.5;
        img[20 * nx + 20] = 4.9;
        let m = clean_window(&img, ny, nx, 1.0, 5.0, 2.0, &[31 * nx + 31]);
        let inside: Vec<(usize, usize)> = (0..ny * nx)
            .filter(|&k| m[k])
            .map(|k| (k / nx, k % nx))
            .collect();
        // Discs of radius 2 (13 pixels each) around (10,10) and (10,11) share 8 pixels.
        assert!(m[10 * nx + 8] && m[10 * nx + 13] && m[8 * nx + 10] && m[12 * nx + 11]);
        assert!(!m[10 * nx + 7] && !m[10 * nx + 14] && !m[7 * nx + 10]);
        assert!(!m[20 * nx + 20], "below the threshold");
        // The forced pixel at the corner, with its disc clipped to the image.
        assert!(m[31 * nx + 31] && m[29 * nx + 31] && !m[28 * nx + 31]);
        assert_eq!(inside.len(), 13 + 13 - 8 + 6, "{inside:?}");
    }
}
