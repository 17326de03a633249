//! Preparing an optical image and its PSF for the [`Hst`] operator: binning both, a robust
//! noise σ from the image's border, a PSF resampled onto a finer model grid, and a flux scale
//! from a quick non-negative deconvolution.

use super::Hst;
use crate::operator::ForwardOperator;

/// How a PSF file is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PsfSampling {
    /// On the observed pixels (the usual effective PSF). With a model grid `f > 1` times finer
    /// it is interpolated bilinearly onto it ([`refine_psf`]); the block sum then integrates
    /// over the pixel a second time (an effective PSF already includes the pixel), a mild extra
    /// blur of one observed pixel.
    Observed,
    /// On the model grid (1/f of an observed pixel, e.g. an oversampled TinyTim PSF): used as
    /// it is.
    Model,
}

/// Median and 1.4826 × MAD of the finite values.
pub fn median_mad(v: &mut [f64]) -> (f64, f64) {
    v.sort_by(f64::total_cmp);
    let med = v[v.len() / 2];
    let mut dev: Vec<f64> = v.iter().map(|x| (x - med).abs()).collect();
    dev.sort_by(f64::total_cmp);
    (med, 1.4826 * dev[dev.len() / 2])
}

/// A robust σ from the outer border of an image.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BorderNoise {
    pub median: f64,
    /// 1.4826 × MAD.
    pub sigma: f64,
    /// Finite pixels used.
    pub pixels: usize,
    /// Width of the border strip, pixels.
    pub width: usize,
}

/// Robust σ from the outer border of the image (a strip of max(4, min(ny, nx)/10) pixels);
/// `None` with fewer than 16 finite pixels there.
pub fn border_noise(img: &[f64], ny: usize, nx: usize) -> Option<BorderNoise> {
    let w = (ny.min(nx) / 10).max(4).min(ny.min(nx) / 2).max(1);
    let mut v: Vec<f64> = (0..ny * nx)
        .filter(|&k| {
            let (y, x) = (k / nx, k % nx);
            y < w || x < w || y + w >= ny || x + w >= nx
        })
        .map(|k| img[k])
        .filter(|v| v.is_finite())
        .collect();
    if v.len() < 16 {
        return None;
    }
    let pixels = v.len();
    let (median, sigma) = median_mad(&mut v);
    Some(BorderNoise {
        median,
        sigma,
        pixels,
        width: w,
    })
}

/// Sums of `b×b` blocks (the last partial row/column of blocks dropped); NaN propagates.
pub fn bin_image(v: &[f64], ny: usize, nx: usize, b: usize) -> (usize, usize, Vec<f64>) {
    if b == 1 {
        return (ny, nx, v.to_vec());
    }
    let (my, mx) = (ny / b, nx / b);
    let mut out = vec![0.0; my * mx];
    for y in 0..my * b {
        for x in 0..mx * b {
            out[(y / b) * mx + x / b] += v[y * nx + x];
        }
    }
    (my, mx, out)
}

/// The PSF of `b×b`-binned data: block sums with the PSF's centre pixel `(k − 1)/2` in the
/// middle of its block (exactly for odd `b`; half a pixel off for even `b`), zero-padded so
/// that the centre block is the binned PSF's own centre `(k' − 1)/2`.
pub fn bin_psf(psf: &[f64], [ky, kx]: [usize; 2], b: usize) -> (Vec<f64>, [usize; 2]) {
    if b == 1 {
        return (psf.to_vec(), [ky, kx]);
    }
    // Per axis: block J covers [s0 + J·b, s0 + (J+1)·b); the centre block is jc; the output
    // index of block J is J + half − jc.
    let layout = |k: usize| {
        let s = (k as isize - 1) / 2 - (b as isize - 1) / 2;
        let mut s0 = s.rem_euclid(b as isize);
        if s0 > 0 {
            s0 -= b as isize;
        }
        let jc = ((s - s0) / b as isize) as usize;
        let nb = (k as isize - s0 + b as isize - 1) as usize / b;
        let half = jc.max(nb - 1 - jc);
        (s0, jc, half)
    };
    let (sy, jcy, hy) = layout(ky);
    let (sx, jcx, hx) = layout(kx);
    let (oy, ox) = (2 * hy + 1, 2 * hx + 1);
    let mut out = vec![0.0; oy * ox];
    for y in 0..ky {
        let jy = (y as isize - sy) as usize / b + hy - jcy;
        for x in 0..kx {
            let jx = (x as isize - sx) as usize / b + hx - jcx;
            out[jy * ox + jx] += psf[y * kx + x];
        }
    }
    (out, [oy, ox])
}

/// Bilinear resampling of a PSF onto a grid `f` times finer: fine index `i` samples the
/// coarse coordinate `i/f`, so the middle of an odd PSF stays on a pixel.
pub fn refine_psf(psf: &[f64], [ky, kx]: [usize; 2], f: usize) -> (Vec<f64>, [usize; 2]) {
    let (fy, fx) = (f * (ky - 1) + 1, f * (kx - 1) + 1);
    let mut out = vec![0.0; fy * fx];
    for iy in 0..fy {
        let (y0, ty) = (iy / f, (iy % f) as f64 / f as f64);
        for ix in 0..fx {
            let (x0, tx) = (ix / f, (ix % f) as f64 / f as f64);
            let at = |y: usize, x: usize| {
                if y < ky && x < kx {
                    psf[y * kx + x]
                } else {
                    0.0
                }
            };
            out[iy * fx + ix] = (1.0 - ty) * (1.0 - tx) * at(y0, x0)
                + ty * (1.0 - tx) * at(y0 + 1, x0)
                + (1.0 - ty) * tx * at(y0, x0 + 1)
                + ty * tx * at(y0 + 1, x0 + 1);
        }
    }
    (out, [fy, fx])
}

/// Peak of a quick non-negative deconvolution: projected Landweber from zero, stopped early
/// (the iteration count is the regularisation). Masked data have weight 0.
pub fn nnls_peak(op: &Hst, y: &[f32], weight: &[f32], iters: usize) -> f32 {
    let (k, _, _) = op.kernel();
    let l1: f64 = k.iter().map(|v| v.abs()).sum();
    // ‖A‖² ≤ (Σ|K|)² f²: a step below 2/‖A‖² converges.
    let tau = (1.0 / (l1 * l1 * (op.factor() * op.factor()) as f64)) as f32;
    let mut x = vec![0.0f32; op.image_len()];
    let mut r = vec![0.0f32; op.data_len()];
    let mut g = vec![0.0f32; op.image_len()];
    for _ in 0..iters {
        op.forward(&x, &mut r);
        r.iter_mut()
            .zip(y)
            .zip(weight)
            .for_each(|((r, y), w)| *r = (y - *r) * w);
        op.adjoint(&r, &mut g);
        x.iter_mut()
            .zip(&g)
            .for_each(|(x, g)| *x = (*x + tau * g).max(0.0));
    }
    x.into_iter().fold(0.0, f32::max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refined_psf_keeps_odd_centre_and_values() {
        let k: Vec<f64> = (0..9).map(|i| i as f64).collect();
        let (r, [fy, fx]) = refine_psf(&k, [3, 3], 2);
        assert_eq!([fy, fx], [5, 5]);
        // Every coarse sample lands on a fine pixel; midpoints are averages.
        assert_eq!(r[2 * 5 + 2], 4.0);
        assert_eq!(r[4 * 5 + 4], 8.0);
        assert_eq!(r[1], 0.5); // row 0, column 1
        assert_eq!(r[5 + 1], 2.0); // row 1, column 1
    }

    #[test]
    fn binned_psf_keeps_its_centre_and_flux() {
        // 7×5 PSF with a marked centre (3, 2); bin 3: centre block covers rows 2..5, cols 1..4.
        let mut k = vec![0.01; 35];
        k[3 * 5 + 2] = 1.0;
        k[0] = 0.5; // corner (0, 0) lands in the block above-left of the centre
        let (bk, [by, bx]) = bin_psf(&k, [7, 5], 3);
        assert_eq!((by % 2, bx % 2), (1, 1));
        let (cy, cx) = ((by - 1) / 2, (bx - 1) / 2);
        let total: f64 = k.iter().sum();
        assert!((bk.iter().sum::<f64>() - total).abs() < 1e-12);
        assert!((bk[cy * bx + cx] - (1.0 + 8.0 * 0.01)).abs() < 1e-12);
        // Rows 0..2 and col 0 form the block at (cy − 1, cx − 1).
        assert!((bk[(cy - 1) * bx + cx - 1] - (0.5 + 0.01)).abs() < 1e-12);
        let (ny, nx, v) = bin_image(&(0..20).map(f64::from).collect::<Vec<_>>(), 4, 5, 2);
        assert_eq!((ny, nx), (2, 2));
        assert_eq!(v, vec![12.0, 20.0, 52.0, 60.0]);
    }

    #[test]
    fn border_noise_of_gaussian_noise() {
        use rand::{rngs::StdRng, SeedableRng};
        use rand_distr::{Distribution, Normal};
        let mut rng = StdRng::seed_from_u64(3);
        let n = Normal::new(2.0, 0.5).unwrap();
        let mut img: Vec<f64> = (0..100 * 100).map(|_| n.sample(&mut rng)).collect();
        // A bright source in the middle does not touch the border estimate.
        for y in 30..70 {
            for x in 30..70 {
                img[y * 100 + x] += 100.0;
            }
        }
        let BorderNoise {
            median: med,
            sigma: s,
            pixels: count,
            width: w,
        } = border_noise(&img, 100, 100).unwrap();
        assert_eq!(w, 10);
        assert_eq!(count, 100 * 100 - 80 * 80);
        assert!((med - 2.0).abs() < 0.03, "{med}");
        assert!((s - 0.5).abs() < 0.03, "{s}");
    }
}
