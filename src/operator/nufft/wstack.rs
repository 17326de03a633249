//! The `w (n − 1)` term by w-gridding (Ye et al. 2022, as ducc0's wgridder): `n − 1` is
//! treated as a third, image-side coordinate, the samples are spread over `W` w-planes with the
//! same ES kernel, and each plane is an ordinary 2-D NUFFT of the image times a per-plane phase.
//! The image is real, so samples with `w < 0` are mirrored (`(u,v,w) → −(u,v,w)`, conjugated
//! value), which halves the w range.

use super::super::{ImageGeometry, OperatorError};
use super::kernel::EsKernel;
use super::WMode;
use num_complex::Complex;
use rayon::prelude::*;
use std::f64::consts::PI;

/// `n − 1` without cancellation for small `l² + m²`.
pub fn n_minus_1(l: f64, m: f64) -> f64 {
    let r2 = l * l + m * m;
    -r2 / (1.0 + (1.0 - r2).sqrt())
}

/// Range `[min, max]` of `n − 1` over the image; errors if a pixel lies beyond the horizon.
pub fn nm1_range(geom: &ImageGeometry) -> Result<(f64, f64), OperatorError> {
    let (l0, m0) = geom.lm(0, 0);
    let lmax = l0.abs().max((geom.nx as f64 / 2.0 - 1.0) * geom.dx);
    let mmax = m0.abs();
    if lmax * lmax + mmax * mmax >= 1.0 {
        return Err(OperatorError::Invalid(format!(
            "the image reaches beyond the horizon (l² + m² = {:.3} ≥ 1 at a corner): \
             reduce the pixel scale or the image size",
            lmax * lmax + mmax * mmax
        )));
    }
    // The phase centre pixel (ny/2, nx/2) has n − 1 = 0; corners are the extreme.
    Ok((n_minus_1(lmax, mmax), 0.0))
}

/// Whether the w term must be modelled: the phase `2π |w| |n − 1|` it contributes at the
/// field edge, compared with epsilon. Returns (use_w, max phase in radians).
pub fn decide(
    mode: &WMode,
    eps: f64,
    max_abs_w: f64,
    geom: &ImageGeometry,
) -> Result<(bool, f64), OperatorError> {
    let (xmin, _) = nm1_range(geom)?;
    let phase = 2.0 * PI * max_abs_w * xmin.abs();
    let use_w = match mode {
        WMode::On => max_abs_w > 0.0,
        WMode::Off => false,
        WMode::Auto => phase > eps,
    };
    Ok((use_w, phase))
}

/// Layout of the w-planes for samples with `0 ≤ w ≤ w_max` (after mirroring).
#[derive(Clone, Debug)]
pub struct WPlanes {
    /// w of plane 0, wavelengths.
    pub w0: f64,
    /// Plane spacing, wavelengths.
    pub dw: f64,
    pub n_planes: usize,
    /// Centre of the `n − 1` range; its phase is applied per sample instead of per plane.
    pub x_centre: f64,
    pub support: usize,
}

impl WPlanes {
    pub fn new(geom: &ImageGeometry, kernel: &EsKernel, w_max: f64) -> Result<Self, OperatorError> {
        let (xmin, xmax) = nm1_range(geom)?;
        // Oversampled like the uv grid: |(n − 1 − x_centre) · dw| ≤ 1 / (2σ).
        let dw = 1.0 / (kernel.oversampling * (xmax - xmin));
        let w = kernel.support;
        // One spare plane absorbs rounding of the plane coordinate at w_max.
        let n_planes = (w_max / dw).ceil() as usize + w + 1;
        Ok(Self {
            w0: -(w as f64 / 2.0) * dw,
            dw,
            n_planes,
            x_centre: 0.5 * (xmin + xmax),
            support: w,
        })
    }

    /// Number of distinct first planes a sample can start at.
    pub fn n_groups(&self) -> usize {
        self.n_planes + 1 - self.support
    }

    /// Plane coordinate of a (non-negative) w.
    #[inline]
    pub fn coord(&self, w: f64) -> f64 {
        (w - self.w0) / self.dw
    }

    /// w back from the plane coordinate.
    #[inline]
    pub fn w_of(&self, g: f64) -> f64 {
        self.w0 + g * self.dw
    }
}

/// Per-pixel factors over the image (`ny × nx`, row-major): the grid correction (including the
/// w kernel's) times the phase of the current plane, and the per-plane phase step.
pub struct PixelFactors {
    /// Correction × `exp(2πi w_k (n − 1 − x_centre))` for the current plane `k`.
    pub cur: Vec<Complex<f64>>,
    /// `exp(2πi dw (n − 1 − x_centre))`; empty without w.
    step: Vec<Complex<f64>>,
}

impl PixelFactors {
    pub fn new(
        geom: &ImageGeometry,
        kernel: &EsKernel,
        grid: [usize; 2],
        planes: Option<&WPlanes>,
    ) -> Self {
        let [gny, gnx] = grid;
        let (nx, ny) = (geom.nx, geom.ny);
        let cx: Vec<f64> = (0..nx)
            .map(|ix| 1.0 / kernel.ft((nx as f64 / 2.0 - ix as f64) / gnx as f64))
            .collect();
        let cy: Vec<f64> = (0..ny)
            .map(|iy| 1.0 / kernel.ft((iy as f64 - ny as f64 / 2.0) / gny as f64))
            .collect();
        match planes {
            None => {
                let cur = (0..ny * nx)
                    .into_par_iter()
                    .map(|p| Complex::new(cy[p / nx] * cx[p % nx], 0.0))
                    .collect();
                Self {
                    cur,
                    step: Vec::new(),
                }
            }
            Some(wp) => {
                let (xmin, xmax) = nm1_range(geom).expect("checked when the planes were made");
                let half = 0.5 * (xmax - xmin) * wp.dw;
                let ftw = kernel.ft_interpolant(half * 1.000001);
                let (cur, step): (Vec<_>, Vec<_>) = (0..ny * nx)
                    .into_par_iter()
                    .map(|p| {
                        let (iy, ix) = (p / nx, p % nx);
                        let (l, m) = geom.lm(iy, ix);
                        let y = n_minus_1(l, m) - wp.x_centre;
                        let c = cy[iy] * cx[ix] / ftw.eval((wp.dw * y).abs());
                        let ph0 = 2.0 * PI * wp.w0 * y;
                        let phs = 2.0 * PI * wp.dw * y;
                        (
                            Complex::from_polar(c, ph0),
                            Complex::new(phs.cos(), phs.sin()),
                        )
                    })
                    .unzip();
                Self { cur, step }
            }
        }
    }

    /// Moves `cur` on to the next plane.
    pub fn advance(&mut self) {
        if self.step.is_empty() {
            return;
        }
        self.cur
            .par_iter_mut()
            .zip(self.step.par_iter())
            .for_each(|(c, s)| *c *= s);
    }
}
