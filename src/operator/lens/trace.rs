//! Ray tracing of image-plane pixels to the source plane and the sparse bilinear interpolation
//! matrix it defines, stored both ways (rows for the forward gather, columns for the adjoint),
//! so that both directions are parallel gathers with no write conflicts.

use rayon::prelude::*;

use super::sie::MassModel;

/// Image-plane pixel grid: pixel `[iy][ix]` is centred at `x = (ix − nx/2)·Δ`, `y = (iy − ny/2)·Δ`
/// (integer division: for odd sizes the centre pixel sits on the origin, as in autolens; for even
/// sizes it is the phase-centre pixel of [`crate::operator::ImageGeometry`], whose `l = −x`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ImageGrid {
    pub ny: usize,
    pub nx: usize,
    /// Arcsec per pixel.
    pub pixel_scale: f64,
}

impl ImageGrid {
    pub fn xy(&self, iy: f64, ix: f64) -> (f64, f64) {
        (
            (ix - (self.nx / 2) as f64) * self.pixel_scale,
            (iy - (self.ny / 2) as f64) * self.pixel_scale,
        )
    }
    pub fn len(&self) -> usize {
        self.ny * self.nx
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Source-plane pixel grid, centred on `centre`: pixel `[jy][jx]` at
/// `centre + ((jx − (nx−1)/2)·Δ, (jy − (ny−1)/2)·Δ)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SourceGrid {
    pub ny: usize,
    pub nx: usize,
    /// Arcsec per pixel.
    pub scale: f64,
    /// `(x, y)` arcsec.
    pub centre: [f64; 2],
}

impl SourceGrid {
    pub fn xy(&self, jy: usize, jx: usize) -> (f64, f64) {
        (
            self.centre[0] + (jx as f64 - (self.nx as f64 - 1.0) / 2.0) * self.scale,
            self.centre[1] + (jy as f64 - (self.ny as f64 - 1.0) / 2.0) * self.scale,
        )
    }
    pub fn len(&self) -> usize {
        self.ny * self.nx
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Bilinear weights of the point `(x, y)`: up to four `(pixel, weight)`; neighbours
    /// outside the grid count as zero-valued pixels (dropped).
    pub fn bilinear(&self, x: f64, y: f64, out: &mut Vec<(u32, f32)>) {
        let fx = (x - self.centre[0]) / self.scale + (self.nx as f64 - 1.0) / 2.0;
        let fy = (y - self.centre[1]) / self.scale + (self.ny as f64 - 1.0) / 2.0;
        if !(fx > -1.0 && fy > -1.0 && fx < self.nx as f64 && fy < self.ny as f64) {
            return;
        }
        let (x0, y0) = (fx.floor(), fy.floor());
        let (tx, ty) = (fx - x0, fy - y0);
        let (x0, y0) = (x0 as i64, y0 as i64);
        for (dy, wy) in [(0, 1.0 - ty), (1, ty)] {
            for (dx, wx) in [(0, 1.0 - tx), (1, tx)] {
                let (jx, jy) = (x0 + dx, y0 + dy);
                let w = wx * wy;
                if w > 0.0
                    && jx >= 0
                    && jy >= 0
                    && (jx as usize) < self.nx
                    && (jy as usize) < self.ny
                {
                    out.push(((jy as usize * self.nx + jx as usize) as u32, w as f32));
                }
            }
        }
    }
}

/// Compressed sparse rows.
#[derive(Clone, Debug, Default)]
pub struct Csr {
    pub ptr: Vec<usize>,
    pub idx: Vec<u32>,
    pub val: Vec<f32>,
}

impl Csr {
    pub fn rows(&self) -> usize {
        self.ptr.len() - 1
    }

    pub fn row(&self, r: usize) -> (&[u32], &[f32]) {
        let (a, b) = (self.ptr[r], self.ptr[r + 1]);
        (&self.idx[a..b], &self.val[a..b])
    }

    /// `y = M x`.
    pub fn matvec(&self, x: &[f32], y: &mut [f32]) {
        y.par_iter_mut().enumerate().for_each(|(r, o)| {
            let (i, v) = self.row(r);
            *o = i.iter().zip(v).map(|(&j, &w)| w * x[j as usize]).sum();
        });
    }

    pub fn transpose(&self, ncols: usize) -> Csr {
        let mut count = vec![0usize; ncols + 1];
        for &j in &self.idx {
            count[j as usize + 1] += 1;
        }
        for c in 0..ncols {
            count[c + 1] += count[c];
        }
        let mut next = count.clone();
        let mut idx = vec![0u32; self.idx.len()];
        let mut val = vec![0f32; self.val.len()];
        for r in 0..self.rows() {
            let (i, v) = self.row(r);
            for (&j, &w) in i.iter().zip(v) {
                let p = next[j as usize];
                idx[p] = r as u32;
                val[p] = w;
                next[j as usize] += 1;
            }
        }
        Csr {
            ptr: count,
            idx,
            val,
        }
    }
}

/// The interpolation matrix (image pixels × source pixels): each image pixel is the mean over
/// its `s × s` sub-pixel rays of the bilinearly interpolated source at the traced positions.
pub fn trace_matrix(
    mass: &MassModel,
    image: &ImageGrid,
    source: &SourceGrid,
    supersample: usize,
) -> Csr {
    let s = supersample.max(1);
    let inv = 1.0 / (s * s) as f32;
    let rows: Vec<Vec<(u32, f32)>> = (0..image.len())
        .into_par_iter()
        .map(|p| {
            let (iy, ix) = ((p / image.nx) as f64, (p % image.nx) as f64);
            let mut entries = Vec::with_capacity(4 * s * s);
            for a in 0..s {
                for b in 0..s {
                    let oy = (a as f64 + 0.5) / s as f64 - 0.5;
                    let ox = (b as f64 + 0.5) / s as f64 - 0.5;
                    let (x, y) = image.xy(iy + oy, ix + ox);
                    let (bx, by) = mass.trace(x, y);
                    source.bilinear(bx, by, &mut entries);
                }
            }
            entries.sort_unstable_by_key(|e| e.0);
            let mut merged: Vec<(u32, f32)> = Vec::with_capacity(entries.len());
            for (j, w) in entries {
                match merged.last_mut() {
                    Some(last) if last.0 == j => last.1 += w * inv,
                    _ => merged.push((j, w * inv)),
                }
            }
            merged
        })
        .collect();
    let mut ptr = Vec::with_capacity(rows.len() + 1);
    ptr.push(0);
    let (mut idx, mut val) = (Vec::new(), Vec::new());
    for r in rows {
        for (j, w) in r {
            idx.push(j);
            val.push(w);
        }
        ptr.push(idx.len());
    }
    Csr { ptr, idx, val }
}
