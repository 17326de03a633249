//! Everything shared by the one-shot functions, the streaming [`super::Gridder`] and the planned
//! [`super::Nufft`]: kernel and grid choice, w-planes, and the plane loops.

use super::fft::Fft2;
use super::grid::{degrid_plane, grid_plane, Plan};
use super::kernel::EsKernel;
use super::wstack::{decide, PixelFactors, WPlanes};
use super::{NufftOptions, NufftPlanInfo};
use crate::operator::{ImageGeometry, OperatorError};
use num_complex::Complex;
use rayon::prelude::*;
use std::f64::consts::PI;

type C64 = Complex<f64>;

pub const SPEED_OF_LIGHT: f64 = 299_792_458.0;

pub struct Setup {
    pub geom: ImageGeometry,
    pub kernel: EsKernel,
    /// `[ny, nx]` of the uv grid.
    pub grid: [usize; 2],
    pub planes: Option<WPlanes>,
    pub fft: Fft2,
    pub info: NufftPlanInfo,
}

/// Smallest `n ≥ min` that is a multiple of 32 (two strips of tiles) with a 2,3,5,7-smooth
/// quotient, so rustfft stays on its fast paths.
fn good_size(min: usize) -> usize {
    let mut k = min.div_ceil(32).max(1);
    loop {
        let mut r = k;
        for p in [2, 3, 5, 7] {
            while r.is_multiple_of(p) {
                r /= p;
            }
        }
        if r == 1 {
            return 32 * k;
        }
        k += 1;
    }
}

impl Setup {
    pub fn new(
        geom: ImageGeometry,
        opts: &NufftOptions,
        max_abs_w: f64,
    ) -> Result<Self, OperatorError> {
        if !(max_abs_w.is_finite() && max_abs_w >= 0.0) {
            return Err(OperatorError::Invalid(format!(
                "maximum |w| must be finite and non-negative, got {max_abs_w}"
            )));
        }
        let kernel = EsKernel::from_epsilon(opts.epsilon)?;
        let (use_w, phase) = decide(&opts.w_mode, opts.epsilon, max_abs_w, &geom)?;
        let sigma = kernel.oversampling;
        let grid = [
            good_size(((geom.ny as f64 * sigma).ceil() as usize).max(2 * kernel.support)),
            good_size(((geom.nx as f64 * sigma).ceil() as usize).max(2 * kernel.support)),
        ];
        let planes = if use_w {
            Some(WPlanes::new(&geom, &kernel, max_abs_w)?)
        } else {
            None
        };
        let info = NufftPlanInfo {
            epsilon: opts.epsilon,
            w_stacking: use_w,
            w_planes: planes.as_ref().map_or(1, |p| p.n_planes),
            w_plane_spacing: planes.as_ref().map_or(0.0, |p| p.dw),
            max_abs_w,
            max_w_phase: phase,
            support: kernel.support,
            beta: kernel.beta,
            oversampling: sigma,
            poly_degree: kernel.degree,
            grid,
        };
        Ok(Self {
            fft: Fft2::new(grid, geom.nx),
            geom,
            kernel,
            grid,
            planes,
            info,
        })
    }

    pub fn use_w(&self) -> bool {
        self.planes.is_some()
    }

    pub fn n_planes(&self) -> usize {
        self.planes.as_ref().map_or(1, |p| p.n_planes)
    }

    pub fn grid_len(&self) -> usize {
        self.grid[0] * self.grid[1]
    }

    /// Plans samples given as `(u, v, w)` in wavelengths by `coord(i)`.
    pub fn plan(&self, n: usize, coord: impl Fn(usize) -> [f64; 3] + Sync) -> Plan {
        let (dx, dy) = (self.geom.dx, self.geom.dy);
        let use_w = self.use_w();
        Plan::new(self.grid, &self.kernel, self.planes.as_ref(), n, |i| {
            let [u, v, w] = coord(i);
            [u * dx, v * dy, if use_w { w } else { 0.0 }]
        })
    }

    /// Plans samples given directly as `(u·dx, v·dy, w)` by `coord(i)`.
    pub fn plan_cycles(&self, n: usize, coord: impl Fn(usize) -> [f64; 3] + Sync) -> Plan {
        Plan::new(self.grid, &self.kernel, self.planes.as_ref(), n, coord)
    }

    /// Phase factor `exp(−2πi w x_centre)` applied per sample on the gridding side (its
    /// conjugate on the degridding side); 1 without w.
    #[inline]
    pub fn centre_phase(&self, wc: f64) -> C64 {
        match &self.planes {
            Some(p) => {
                let ph = -2.0 * PI * p.w_of(wc) * p.x_centre;
                C64::new(ph.cos(), ph.sin())
            }
            None => C64::new(1.0, 0.0),
        }
    }

    /// Values in plan order, ready for [`grid_plane`]: `value(idx)` mirrored and phased.
    pub fn gather(&self, plan: &Plan, value: impl Fn(usize) -> C64 + Sync) -> Vec<C64> {
        plan.samples
            .par_iter()
            .map(|s| {
                let v = value(s.idx as usize);
                let v = if s.flip { v.conj() } else { v };
                v * self.centre_phase(s.w)
            })
            .collect()
    }

    /// Grids `vals` (from [`Self::gather`]) of plane `k` onto `grid`.
    pub fn grid_plane_into(&self, plan: &Plan, vals: &[C64], k: usize, grid: &mut [C64]) {
        grid_plane(plan, &self.kernel, self.use_w(), k, vals, grid);
    }

    /// Transforms each plane's grid to the image and sums: the dirty image (real part).
    /// `grids` are consumed plane by plane (`None` entries are planes nothing touched).
    pub fn grids_to_image(&self, grids: impl Iterator<Item = Option<Vec<C64>>>) -> Vec<f64> {
        let mut pf = PixelFactors::new(&self.geom, &self.kernel, self.grid, self.planes.as_ref());
        let mut acc = vec![0.0; self.geom.len()];
        for g in grids {
            if let Some(mut g) = g {
                self.fft.grid_to_image(&mut g);
                self.accumulate(&g, &pf.cur, &mut acc);
            }
            pf.advance();
        }
        acc
    }

    /// Adjoint over a plan with one working grid, plane after plane.
    pub fn adjoint(&self, plan: &Plan, vals: &[C64]) -> Vec<f64> {
        let mut grid = vec![C64::default(); self.grid_len()];
        let grids = (0..self.n_planes()).map(|k| {
            if !plan.touches_plane(k) {
                return None;
            }
            let mut g = std::mem::take(&mut grid);
            if g.is_empty() {
                g = vec![C64::default(); self.grid_len()];
            } else {
                g.par_iter_mut().for_each(|c| *c = C64::default());
            }
            grid_plane(plan, &self.kernel, self.use_w(), k, vals, &mut g);
            Some(g)
        });
        self.grids_to_image(grids)
    }

    /// Forward over a plan: values in plan order (before un-mirroring).
    fn forward_sorted(&self, plan: &Plan, image: &[f64]) -> Vec<C64> {
        let mut pf = PixelFactors::new(&self.geom, &self.kernel, self.grid, self.planes.as_ref());
        let mut grid = vec![C64::default(); self.grid_len()];
        let mut out = vec![C64::default(); plan.len()];
        for k in 0..self.n_planes() {
            if plan.touches_plane(k) {
                self.image_to_grid(image, &pf.cur, &mut grid);
                self.fft.image_to_grid(&mut grid);
                degrid_plane(plan, &self.kernel, self.use_w(), k, &grid, &mut out);
            }
            pf.advance();
        }
        out
    }

    /// Forward: `V` per plan index (`out[idx]`).
    pub fn forward(&self, plan: &Plan, image: &[f64]) -> Vec<C64> {
        let sorted = self.forward_sorted(plan, image);
        let mut out = vec![C64::default(); plan.len()];
        let ptr = OutPtr(out.as_mut_ptr());
        plan.samples
            .par_iter()
            .zip(sorted.par_iter())
            .for_each(|(s, v)| {
                let p = ptr;
                let v = v * self.centre_phase(s.w).conj();
                let v = if s.flip { v.conj() } else { v };
                // SAFETY: `idx` is a permutation of 0..len.
                unsafe { *p.0.add(s.idx as usize) = v };
            });
        out
    }

    fn image_to_grid(&self, image: &[f64], fac: &[C64], grid: &mut [C64]) {
        let (nx, ny) = (self.geom.nx, self.geom.ny);
        let [gny, gnx] = self.grid;
        grid.par_chunks_mut(gnx).enumerate().for_each(|(jy, row)| {
            row.iter_mut().for_each(|c| *c = C64::default());
            let iy = if jy < ny / 2 {
                jy + ny / 2
            } else if jy >= gny - ny / 2 {
                jy - (gny - ny / 2)
            } else {
                return;
            };
            let img = &image[iy * nx..(iy + 1) * nx];
            let f = &fac[iy * nx..(iy + 1) * nx];
            for ix in 0..nx {
                let jx = if ix <= nx / 2 {
                    nx / 2 - ix
                } else {
                    gnx + nx / 2 - ix
                };
                row[jx] = f[ix] * img[ix];
            }
        });
    }

    pub fn accumulate(&self, grid: &[C64], fac: &[C64], acc: &mut [f64]) {
        let (nx, ny) = (self.geom.nx, self.geom.ny);
        let [gny, gnx] = self.grid;
        acc.par_chunks_mut(nx).enumerate().for_each(|(iy, arow)| {
            let jy = (iy + gny - ny / 2) % gny;
            let grow = &grid[jy * gnx..(jy + 1) * gnx];
            let f = &fac[iy * nx..(iy + 1) * nx];
            for ix in 0..nx {
                let jx = if ix <= nx / 2 {
                    nx / 2 - ix
                } else {
                    gnx + nx / 2 - ix
                };
                // Re(G · conj(f))
                arow[ix] += grow[jx].re * f[ix].re + grow[jx].im * f[ix].im;
            }
        });
    }
}

#[derive(Clone, Copy)]
struct OutPtr(*mut C64);
unsafe impl Send for OutPtr {}
unsafe impl Sync for OutPtr {}
