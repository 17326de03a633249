//! The gridded-visibility operator of Dia et al. (2023): visibilities averaged into the cells
//! of a uv grid matched to the image, and the operator a masked Fourier transform.
//!
//! Cost is independent of the number of visibilities (it grows with the number of occupied
//! cells, at most `(P·N)²/2`). What the approximation costs:
//! - each visibility moves to the centre of its cell, of size `1/(P·N·Δ)` (`P` the padding);
//!   a source at direction cosine `l` then sees a phase error of up to `π·l/(P·N·Δ)`, i.e.
//!   `π/(2P)` at the image edge and nothing at the phase centre (averaging inside a cell
//!   attenuates emission at the edge of the field by up to `sinc(π/2P)`: 0.64 for `P = 1`,
//!   0.90 at half the radius); a larger `P` shrinks it, but only `P = 1` keeps the rows of
//!   `A` orthogonal (`A Aᵀ = diag`), which the convolved likelihood approximation assumes: with
//!   `P = 2` the posterior of weakly measured directions came out an order of magnitude too
//!   wide in the Gaussian test of `sample::posterior` — so `P = 1` is the default;
//! - the w-term is neglected;
//! - visibilities beyond the image's uv extent (`|u| ≥ 1/(2Δ)`) are dropped (counted).
//!
//! Hermitian symmetry of a real sky: each visibility is stored in the canonical half plane
//! (`v > 0`, or `v = 0, u ≥ 0`), conjugated if it had to be mirrored.
//!
//! The forward model is separable, `V(iu, iv) = Σ_iy e^{2πi iv (iy − ny/2)/(P ny)}
//! Σ_ix e^{2πi iu (nx/2 − ix)/(P nx)} I[iy][ix]` (the NUFFT's convention at the cell centres),
//! evaluated with two small dense stages: exact, with an exact adjoint.

use num_complex::Complex;
use rayon::prelude::*;

use super::{ForwardOperator, ImageGeometry, OperatorError};

type C64 = Complex<f64>;
const SPEED_OF_LIGHT: f64 = 299_792_458.0;

/// How the σ of a cell's mean is set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CellNoise {
    /// From the visibility weights: `σ² = factor / Σ w`.
    Weights,
    /// From the scatter of the visibilities inside the cell when it holds at least `min_count`
    /// of them (real weights are often miscalibrated, and the scatter also measures the
    /// gridding error of a bright source), never below the weights' value; from the weights
    /// otherwise.
    Scatter { min_count: usize },
}

/// Visibilities averaged onto the cells of a uv grid.
#[derive(Debug, Clone)]
pub struct GriddedVisibilities {
    pub geometry: ImageGeometry,
    pub padding: usize,
    /// Cell indices `(iu, iv)` in the canonical half plane.
    pub cells: Vec<(i32, i32)>,
    /// Weighted mean visibility per cell.
    pub vis: Vec<Complex<f32>>,
    /// σ per real component of each cell's mean.
    pub sigma: Vec<f32>,
    /// Visibilities per cell.
    pub count: Vec<u32>,
    /// Usable visibilities beyond the grid, dropped.
    pub dropped: usize,
    /// With [`GridBuilder::exact`]: per cell (in `cells` order), the weighted mean over its
    /// visibilities of `exp(2πi(u_k l + v_k m))` at every pixel (`ny·nx` values each), i.e.
    /// the exact linear map from the image to the cell's mean visibility.
    pub kernels: Option<Vec<Complex<f32>>>,
}

/// The cell `(iu, iv)` of the visibility at `(u, v)` wavelengths on a uv grid of `P·N` cells of
/// `1/(P·N·Δ)`, moved into the canonical half plane (`v > 0`, or `v = 0, u ≥ 0`); `true` when
/// it had to be mirrored (its visibility then enters conjugated, at `(−u, −v)`).
pub fn canonical_cell(
    u: f64,
    v: f64,
    geometry: &ImageGeometry,
    padding: usize,
) -> (i32, i32, bool) {
    let g = geometry;
    let (iu, iv) = (
        (u * (padding * g.nx) as f64 * g.dx).round() as i32,
        (v * (padding * g.ny) as f64 * g.dy).round() as i32,
    );
    if iv < 0 || (iv == 0 && iu < 0) {
        (-iu, -iv, true)
    } else {
        (iu, iv, false)
    }
}

/// Per uv point (wavelengths), how many of the points fall in its cell of the uv grid matched
/// to the image (cells of `1/(N·Δ)`, mirrored into one half plane). Their rows of `A` are nearly
/// parallel, so `‖A Aᵀ‖` exceeds `diag(A Aᵀ)` by about that count: the factor by which the
/// convolved likelihood approximation must widen each datum's `Γ` to keep the reverse SDE
/// stable (see `GaussianLikelihood::inflate_gamma`).
pub fn cell_multiplicity(uv: &[(f64, f64)], geometry: &ImageGeometry) -> Vec<f32> {
    let cells: Vec<(i32, i32)> = uv
        .iter()
        .map(|&(u, v)| {
            let (iu, iv, _) = canonical_cell(u, v, geometry, 1);
            (iu, iv)
        })
        .collect();
    let mut counts: std::collections::HashMap<(i32, i32), u32> = Default::default();
    for &c in &cells {
        *counts.entry(c).or_default() += 1;
    }
    cells.iter().map(|c| counts[c] as f32).collect()
}

#[derive(Default, Clone, Copy)]
struct Acc {
    w: f64,
    wv: C64,
    n: u32,
    // For the scatter: Σ v and Σ |v|² (unweighted).
    s: C64,
    s2: f64,
}

impl GriddedVisibilities {
    /// Starts an empty grid; add chunks with [`GriddedVisibilities::builder`].
    pub fn builder(geometry: ImageGeometry, padding: usize) -> Result<GridBuilder, OperatorError> {
        if padding == 0 || padding > 8 {
            return Err(OperatorError::Invalid(format!(
                "uv grid padding must be 1 … 8, got {padding}"
            )));
        }
        Ok(GridBuilder {
            geometry,
            padding,
            acc: std::collections::HashMap::new(),
            kernels: None,
            dropped: 0,
        })
    }

    pub fn n_cells(&self) -> usize {
        self.cells.len()
    }

    /// Per datum (`[re, im, …]`), how many cells of this grid share its cell of the grid
    /// without oversampling ([`cell_multiplicity`] of the cell centres): 1 everywhere at
    /// padding 1; with padding the neighbouring cells' rows overlap.
    pub fn gamma_factors(&self) -> Vec<f32> {
        let g = &self.geometry;
        let p = self.padding as f64;
        let centres: Vec<(f64, f64)> = self
            .cells
            .iter()
            .map(|&(iu, iv)| {
                (
                    iu as f64 / (p * g.nx as f64 * g.dx),
                    iv as f64 / (p * g.ny as f64 * g.dy),
                )
            })
            .collect();
        cell_multiplicity(&centres, g)
            .into_iter()
            .flat_map(|m| [m, m])
            .collect()
    }

    /// The data vector `[re, im, …]` and its σ, in the operator's layout.
    pub fn data_and_sigma(&self) -> (Vec<f32>, Vec<f32>) {
        let y = self.vis.iter().flat_map(|v| [v.re, v.im]).collect();
        let s = self.sigma.iter().flat_map(|&s| [s, s]).collect();
        (y, s)
    }
}

pub struct GridBuilder {
    geometry: ImageGeometry,
    padding: usize,
    acc: std::collections::HashMap<(i32, i32), Acc>,
    /// Per cell, `Σ_k w_k exp(2πi(u_k l + v_k m))` over the pixels (when exact).
    kernels: Option<std::collections::HashMap<(i32, i32), Vec<C64>>>,
    dropped: usize,
}

impl GridBuilder {
    /// Also accumulates, per cell, the exact map from the image to the cell's mean visibility
    /// (see [`CellAveraged`]). Costs `ny·nx` complex products per visibility while gridding and
    /// `ny·nx` complex numbers of memory per occupied cell; call before [`GridBuilder::add`].
    pub fn exact(mut self) -> Self {
        self.kernels = Some(std::collections::HashMap::new());
        self
    }

    /// Adds a block of `nrow × nchan` visibilities (row-major) with their weights (0 = skip).
    pub fn add(
        &mut self,
        uvw: &[[f64; 3]],
        freq: &[f64],
        vis: &[Complex<f32>],
        weight: &[f32],
    ) -> Result<(), OperatorError> {
        let n = uvw.len() * freq.len();
        for (what, got) in [("visibilities", vis.len()), ("weights", weight.len())] {
            if got != n {
                return Err(OperatorError::LengthMismatch {
                    what,
                    expected: n,
                    got,
                });
            }
        }
        let g = &self.geometry;
        let (mut ex, mut ey) = (vec![C64::default(); g.nx], vec![C64::default(); g.ny]);
        let (half_u, half_v) = (
            (self.padding * g.nx / 2) as i32,
            (self.padding * g.ny / 2) as i32,
        );
        let nchan = freq.len();
        for (r, x) in uvw.iter().enumerate() {
            for (c, f) in freq.iter().enumerate() {
                let k = r * nchan + c;
                let w = weight[k];
                let v = vis[k];
                if !(w > 0.0 && w.is_finite() && v.re.is_finite() && v.im.is_finite()) {
                    continue;
                }
                let s = f / SPEED_OF_LIGHT;
                let (mut u, mut vv) = (x[0] * s, x[1] * s);
                let (iu, iv, mirrored) = canonical_cell(u, vv, g, self.padding);
                let mut v = C64::new(v.re as f64, v.im as f64);
                if mirrored {
                    (u, vv) = (-u, -vv);
                    v = v.conj();
                }
                if iu < -half_u || iu >= half_u || iv >= half_v {
                    self.dropped += 1;
                    continue;
                }
                if let Some(kernels) = self.kernels.as_mut() {
                    let k = kernels
                        .entry((iu, iv))
                        .or_insert_with(|| vec![C64::default(); g.len()]);
                    accumulate_kernel(k, g, u, vv, w as f64, &mut ex, &mut ey);
                }
                let a = self.acc.entry((iu, iv)).or_default();
                a.w += w as f64;
                a.wv += v * w as f64;
                a.n += 1;
                a.s += v;
                a.s2 += v.norm_sqr();
            }
        }
        Ok(())
    }

    /// Cell means and their σ; `weight_factor` converts `1/w` into a per-component variance.
    pub fn finish(self, weight_factor: f64, noise: CellNoise) -> GriddedVisibilities {
        let mut cells: Vec<_> = self.acc.into_iter().collect();
        cells.sort_by_key(|(k, _)| (k.1, k.0));
        let mut kernel_acc = self.kernels;
        let mut kernels = kernel_acc
            .as_ref()
            .map(|_| Vec::with_capacity(cells.len() * self.geometry.len()));
        let mut out = GriddedVisibilities {
            geometry: self.geometry,
            padding: self.padding,
            cells: Vec::with_capacity(cells.len()),
            vis: Vec::with_capacity(cells.len()),
            sigma: Vec::with_capacity(cells.len()),
            count: Vec::with_capacity(cells.len()),
            dropped: self.dropped,
            kernels: None,
        };
        for (k, a) in cells {
            let mean = a.wv / a.w;
            let from_weights = weight_factor / a.w;
            let var = match noise {
                CellNoise::Scatter { min_count } if a.n as usize >= min_count.max(2) => {
                    let n = a.n as f64;
                    // Unbiased per-component variance of one visibility, then of the mean. The
                    // scatter also holds the sky's variation across the cell (the gridding
                    // error), which is what makes it honest for bright sources; it never goes
                    // below what the weights say.
                    let per_vis = (a.s2 - a.s.norm_sqr() / n) / (2.0 * (n - 1.0));
                    (per_vis / n).max(from_weights)
                }
                _ => from_weights,
            };
            if let (Some(acc), Some(dst)) = (kernel_acc.as_mut(), kernels.as_mut()) {
                let kw = acc.remove(&k).expect("a kernel per cell");
                dst.extend(kw.iter().map(|z| {
                    let z = z / a.w;
                    Complex::new(z.re as f32, z.im as f32)
                }));
            }
            out.cells.push(k);
            out.vis.push(Complex::new(mean.re as f32, mean.im as f32));
            out.sigma.push(var.sqrt() as f32);
            out.count.push(a.n);
        }
        out.kernels = kernels;
        out
    }
}

/// `k[iy][ix] += w·exp(2πi(u l_ix + v m_iy))`, separable in x and y (`ex`, `ey` scratch).
fn accumulate_kernel(
    k: &mut [C64],
    g: &ImageGeometry,
    u: f64,
    v: f64,
    w: f64,
    ex: &mut [C64],
    ey: &mut [C64],
) {
    let tau = std::f64::consts::TAU;
    for (ix, e) in ex.iter_mut().enumerate() {
        *e = C64::from_polar(1.0, tau * u * (g.nx as f64 / 2.0 - ix as f64) * g.dx);
    }
    for (iy, e) in ey.iter_mut().enumerate() {
        *e = C64::from_polar(w, tau * v * (iy as f64 - g.ny as f64 / 2.0) * g.dy);
    }
    for (row, eyv) in k.chunks_mut(g.nx).zip(ey.iter()) {
        for (o, exv) in row.iter_mut().zip(ex.iter()) {
            *o += eyv * exv;
        }
    }
}

/// The exact operator of cell-averaged visibilities: row `c` maps the image to the weighted mean
/// of the visibilities that fell in cell `c`, each at its own `(u, v)` (w-term neglected). The
/// averaged data are then modelled without the cell-centre approximation of [`Gridded`] — the
/// likelihood of the averaged data is exact, it only forgoes the information in how the
/// visibilities vary inside a cell — and the cost per evaluation is `2 · cells · pixels`,
/// independent of the number of visibilities (which only the one-off gridding sees).
pub struct CellAveraged {
    geometry: ImageGeometry,
    /// `cells × pixels`, real and imaginary parts apart for contiguous dot products.
    re: Vec<f32>,
    im: Vec<f32>,
    diag: Vec<f32>,
}

impl CellAveraged {
    pub fn new(grid: &GriddedVisibilities) -> Result<Self, OperatorError> {
        let Some(k) = &grid.kernels else {
            return Err(OperatorError::Invalid(
                "the uv grid was built without exact kernels (GridBuilder::exact)".into(),
            ));
        };
        if grid.cells.is_empty() {
            return Err(OperatorError::Invalid(
                "no visibility falls on the uv grid".into(),
            ));
        }
        let npix = grid.geometry.len();
        let re: Vec<f32> = k.iter().map(|z| z.re).collect();
        let im: Vec<f32> = k.iter().map(|z| z.im).collect();
        let sq = |row: &[f32]| row.iter().map(|&v| (v as f64).powi(2)).sum::<f64>() as f32;
        let diag = re
            .chunks(npix)
            .zip(im.chunks(npix))
            .flat_map(|(r, i)| [sq(r), sq(i)])
            .collect();
        Ok(Self {
            geometry: grid.geometry,
            re,
            im,
            diag,
        })
    }

    pub fn n_cells(&self) -> usize {
        self.diag.len() / 2
    }
}

impl ForwardOperator for CellAveraged {
    fn image_shape(&self) -> [usize; 2] {
        [self.geometry.ny, self.geometry.nx]
    }

    fn data_len(&self) -> usize {
        self.diag.len()
    }

    fn forward(&self, image: &[f32], data: &mut [f32]) {
        let npix = self.geometry.len();
        assert_eq!(image.len(), npix, "image length");
        assert_eq!(data.len(), self.data_len(), "data length");
        let dot = |row: &[f32]| row.iter().zip(image).map(|(a, b)| a * b).sum::<f32>();
        data.par_chunks_mut(2)
            .zip(self.re.par_chunks(npix).zip(self.im.par_chunks(npix)))
            .for_each(|(d, (r, i))| {
                d[0] = dot(r);
                d[1] = dot(i);
            });
    }

    fn adjoint(&self, data: &[f32], image: &mut [f32]) {
        let npix = self.geometry.len();
        assert_eq!(image.len(), npix, "image length");
        assert_eq!(data.len(), self.data_len(), "data length");
        // Pixel blocks in parallel, each a sum over every cell's row.
        const BLOCK: usize = 256;
        image
            .par_chunks_mut(BLOCK)
            .enumerate()
            .for_each(|(b, out)| {
                out.iter_mut().for_each(|v| *v = 0.0);
                let o = b * BLOCK;
                for (c, d) in data.chunks(2).enumerate() {
                    let r = &self.re[c * npix + o..c * npix + o + out.len()];
                    let i = &self.im[c * npix + o..c * npix + o + out.len()];
                    for ((v, &a), &bb) in out.iter_mut().zip(r).zip(i) {
                        *v += a * d[0] + bb * d[1];
                    }
                }
            });
    }

    fn diag_aat(&self) -> Vec<f32> {
        self.diag.clone()
    }
}

/// The masked, separable Fourier transform from the image to the occupied cells.
pub struct Gridded {
    geometry: ImageGeometry,
    /// Distinct iu values and, per cell, the index into them.
    us: Vec<i32>,
    cell_u: Vec<usize>,
    cell_v: Vec<i32>,
    /// `ex[j][ix] = exp(2πi us[j] (nx/2 − ix)/(P nx))`.
    ex: Vec<C64>,
    /// `ey[iv][iy] = exp(2πi iv (iy − ny/2)/(P ny))` for iv in 0 … max.
    ey: Vec<C64>,
    diag: Vec<f32>,
}

impl Gridded {
    pub fn new(grid: &GriddedVisibilities) -> Result<Self, OperatorError> {
        let g = grid.geometry;
        let p = grid.padding as f64;
        if grid.cells.is_empty() {
            return Err(OperatorError::Invalid(
                "no visibility falls on the uv grid".into(),
            ));
        }
        let mut us: Vec<i32> = grid.cells.iter().map(|c| c.0).collect();
        us.sort_unstable();
        us.dedup();
        let cell_u = grid
            .cells
            .iter()
            .map(|c| us.binary_search(&c.0).expect("present"))
            .collect();
        let cell_v = grid.cells.iter().map(|c| c.1).collect();
        let vmax = grid.cells.iter().map(|c| c.1).max().unwrap_or(0) as usize;
        let tau = std::f64::consts::TAU;
        let ex: Vec<C64> = us
            .iter()
            .flat_map(|&iu| {
                (0..g.nx).map(move |ix| {
                    C64::from_polar(
                        1.0,
                        tau * iu as f64 * (g.nx as f64 / 2.0 - ix as f64) / (p * g.nx as f64),
                    )
                })
            })
            .collect();
        let ey: Vec<C64> = (0..=vmax)
            .flat_map(|iv| {
                (0..g.ny).map(move |iy| {
                    C64::from_polar(
                        1.0,
                        tau * iv as f64 * (iy as f64 - g.ny as f64 / 2.0) / (p * g.ny as f64),
                    )
                })
            })
            .collect();
        let mut op = Self {
            geometry: g,
            us,
            cell_u,
            cell_v,
            ex,
            ey,
            diag: Vec::new(),
        };
        op.diag = op.exact_diag();
        Ok(op)
    }

    /// `Σ_p cos² θ = N/2 + ½ Re Σ_p e^{2iθ}` and `Σ_p sin² θ = N/2 − ½ Re Σ_p e^{2iθ}`, the
    /// sum separable into the x and y phase sums.
    fn exact_diag(&self) -> Vec<f32> {
        let g = self.geometry;
        let half = g.len() as f64 / 2.0;
        let mut out = Vec::with_capacity(2 * self.cell_u.len());
        for (&j, &iv) in self.cell_u.iter().zip(&self.cell_v) {
            let sx: C64 = self.ex[j * g.nx..(j + 1) * g.nx]
                .iter()
                .map(|e| e * e)
                .sum();
            let row = &self.ey[iv as usize * g.ny..(iv as usize + 1) * g.ny];
            let sy: C64 = row.iter().map(|e| e * e).sum();
            let re = (sx * sy).re;
            out.push((half + 0.5 * re) as f32);
            out.push((half - 0.5 * re) as f32);
        }
        out
    }

    pub fn n_cells(&self) -> usize {
        self.cell_u.len()
    }
}

impl ForwardOperator for Gridded {
    fn image_shape(&self) -> [usize; 2] {
        [self.geometry.ny, self.geometry.nx]
    }

    fn data_len(&self) -> usize {
        2 * self.cell_u.len()
    }

    fn forward(&self, image: &[f32], data: &mut [f32]) {
        let (nx, ny, nu) = (self.geometry.nx, self.geometry.ny, self.us.len());
        assert_eq!(image.len(), nx * ny, "image length");
        assert_eq!(data.len(), self.data_len(), "data length");
        // h[iy][j] = Σ_ix ex[j][ix] I[iy][ix]
        let mut h = vec![C64::default(); ny * nu];
        h.par_chunks_mut(nu).enumerate().for_each(|(iy, row)| {
            let img = &image[iy * nx..(iy + 1) * nx];
            for (j, out) in row.iter_mut().enumerate() {
                let e = &self.ex[j * nx..(j + 1) * nx];
                *out = e.iter().zip(img).map(|(e, &v)| e * v as f64).sum();
            }
        });
        data.par_chunks_mut(2)
            .zip(self.cell_u.par_iter().zip(&self.cell_v))
            .for_each(|(d, (&j, &iv))| {
                let row = &self.ey[iv as usize * ny..(iv as usize + 1) * ny];
                let v: C64 = (0..ny).map(|iy| row[iy] * h[iy * nu + j]).sum();
                d[0] = v.re as f32;
                d[1] = v.im as f32;
            });
    }

    fn adjoint(&self, data: &[f32], image: &mut [f32]) {
        let (nx, ny, nu) = (self.geometry.nx, self.geometry.ny, self.us.len());
        assert_eq!(image.len(), nx * ny, "image length");
        assert_eq!(data.len(), self.data_len(), "data length");
        // x_p = Re Σ_k e^{−iθ_kp} c_k: first h[iy][j] = Σ_{k: u = j} conj(ey[iv_k][iy]) c_k.
        let mut h = vec![C64::default(); ny * nu];
        h.par_chunks_mut(nu).enumerate().for_each(|(iy, row)| {
            for (k, (&j, &iv)) in self.cell_u.iter().zip(&self.cell_v).enumerate() {
                let c = C64::new(data[2 * k] as f64, data[2 * k + 1] as f64);
                row[j] += self.ey[iv as usize * ny + iy].conj() * c;
            }
        });
        image.par_chunks_mut(nx).enumerate().for_each(|(iy, out)| {
            let hr = &h[iy * nu..(iy + 1) * nu];
            for (ix, o) in out.iter_mut().enumerate() {
                let s: f64 = hr
                    .iter()
                    .enumerate()
                    .map(|(j, hv)| (self.ex[j * nx + ix].conj() * hv).re)
                    .sum();
                *o = s as f32;
            }
        });
    }

    fn diag_aat(&self) -> Vec<f32> {
        self.diag.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::operator::testing::assert_adjoint;
    use rand::{rngs::StdRng, Rng, SeedableRng};

    #[test]
    fn gamma_factors_count_fine_cells_per_coarse_cell() {
        let geom = ImageGeometry::new(16, 16, 1e-4, 1e-4).unwrap();
        let coarse = 1.0 / (16.0 * 1e-4);
        // Two points in coarse cell (3, 2), one of them mirrored; one alone in (−5, 1).
        let uv = [
            (3.1 * coarse, 2.2 * coarse),
            (-2.9 * coarse, -1.8 * coarse),
            (-5.0 * coarse, 1.0 * coarse),
        ];
        assert_eq!(cell_multiplicity(&uv, &geom), vec![2.0, 2.0, 1.0]);

        let uvw: Vec<[f64; 3]> = uv.iter().map(|&(u, v)| [u, v, 0.0]).collect();
        let vis = vec![Complex::new(1.0f32, 0.0); 3];
        let grid = |padding| {
            let mut b = GriddedVisibilities::builder(geom, padding).unwrap();
            b.add(&uvw, &[SPEED_OF_LIGHT], &vis, &[1.0; 3]).unwrap();
            b.finish(1.0, CellNoise::Weights)
        };
        // Without oversampling the first two share a cell: two cells, no overlap.
        let g1 = grid(1);
        assert_eq!(g1.n_cells(), 2);
        assert_eq!(g1.gamma_factors(), vec![1.0; 4]);
        // Oversampled by 4 they sit in distinct fine cells of the same coarse cell.
        let g4 = grid(4);
        assert_eq!(g4.n_cells(), 3);
        let mut f = g4.gamma_factors();
        f.sort_by(f32::total_cmp);
        assert_eq!(f, vec![1.0, 1.0, 2.0, 2.0, 2.0, 2.0]);
    }

    fn random_grid(
        padding: usize,
        seed: u64,
    ) -> (GriddedVisibilities, Vec<[f64; 3]>, Vec<Complex<f32>>) {
        let geom = ImageGeometry::new(16, 16, 1e-4, 1e-4).unwrap();
        let mut rng = StdRng::seed_from_u64(seed);
        // c Hz: metres are wavelengths. Cell = 1/(P·16·1e-4) λ; extent ±P·8 cells.
        let cell = 1.0 / (padding as f64 * 16.0 * 1e-4);
        let uvw: Vec<[f64; 3]> = (0..300)
            .map(|_| {
                [
                    rng.random_range(-7.4..7.4) * padding as f64 * cell,
                    rng.random_range(-7.4..7.4) * padding as f64 * cell,
                    0.0,
                ]
            })
            .collect();
        let vis: Vec<Complex<f32>> = (0..300)
            .map(|_| Complex::new(rng.random_range(-1.0..1.0), rng.random_range(-1.0..1.0)))
            .collect();
        let mut b = GriddedVisibilities::builder(geom, padding).unwrap();
        b.add(&uvw, &[SPEED_OF_LIGHT], &vis, &vec![1.0; 300])
            .unwrap();
        (b.finish(1.0, CellNoise::Weights), uvw, vis)
    }

    #[test]
    fn adjoint_is_exact() {
        for p in [1, 2] {
            let (grid, _, _) = random_grid(p, 5);
            let op = Gridded::new(&grid).unwrap();
            assert_adjoint(&op, 1e-5);
        }
    }

    #[test]
    fn forward_is_the_dft_at_cell_centres() {
        let (grid, _, _) = random_grid(2, 9);
        let op = Gridded::new(&grid).unwrap();
        let g = grid.geometry;
        let mut rng = StdRng::seed_from_u64(2);
        let img: Vec<f32> = (0..g.len()).map(|_| rng.random_range(-1.0..1.0)).collect();
        let mut y = vec![0.0; op.data_len()];
        op.forward(&img, &mut y);
        let cell = 1.0 / (2.0 * 16.0 * 1e-4);
        for (k, &(iu, iv)) in grid.cells.iter().enumerate() {
            let (u, v) = (iu as f64 * cell, iv as f64 * cell);
            let mut want = C64::default();
            for iy in 0..g.ny {
                for ix in 0..g.nx {
                    let (l, m) = g.lm(iy, ix);
                    want += C64::from_polar(
                        img[iy * g.nx + ix] as f64,
                        std::f64::consts::TAU * (u * l + v * m),
                    );
                }
            }
            assert!(
                (want.re - y[2 * k] as f64).abs() < 1e-4
                    && (want.im - y[2 * k + 1] as f64).abs() < 1e-4
            );
        }
    }

    #[test]
    fn diag_matches_brute_force_rows() {
        let (grid, _, _) = random_grid(2, 11);
        let op = Gridded::new(&grid).unwrap();
        let n = op.data_len();
        let npix = grid.geometry.len();
        // Row i of A is Aᵀ e_i; its squared norm is (A Aᵀ)_ii.
        for i in (0..n).step_by(37) {
            let mut e = vec![0.0f32; n];
            e[i] = 1.0;
            let mut row = vec![0.0f32; npix];
            op.adjoint(&e, &mut row);
            let want: f64 = row.iter().map(|&r| (r as f64).powi(2)).sum();
            assert!(
                (want - op.diag_aat()[i] as f64).abs() < 1e-3 * want.max(1.0),
                "row {i}"
            );
        }
    }

    #[test]
    fn cell_averaged_is_the_mean_of_the_exact_visibilities() {
        let geom = ImageGeometry::new(16, 16, 1e-4, 1e-4).unwrap();
        let mut rng = StdRng::seed_from_u64(21);
        let cell = 1.0 / (16.0 * 1e-4);
        let n = 400;
        let uvw: Vec<[f64; 3]> = (0..n)
            .map(|_| {
                [
                    rng.random_range(-7.4..7.4) * cell,
                    rng.random_range(-7.4..7.4) * cell,
                    0.0,
                ]
            })
            .collect();
        let weight: Vec<f32> = (0..n).map(|_| rng.random_range(0.5..2.0)).collect();
        let img: Vec<f32> = (0..geom.len())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        // The exact visibilities of the image, by direct DFT.
        let dft = |u: f64, v: f64| -> C64 {
            let mut s = C64::default();
            for iy in 0..geom.ny {
                for ix in 0..geom.nx {
                    let (l, m) = geom.lm(iy, ix);
                    s += C64::from_polar(
                        img[iy * geom.nx + ix] as f64,
                        std::f64::consts::TAU * (u * l + v * m),
                    );
                }
            }
            s
        };
        let vis: Vec<Complex<f32>> = uvw
            .iter()
            .map(|x| {
                let z = dft(x[0], x[1]);
                Complex::new(z.re as f32, z.im as f32)
            })
            .collect();
        let mut b = GriddedVisibilities::builder(geom, 1).unwrap().exact();
        b.add(&uvw, &[SPEED_OF_LIGHT], &vis, &weight).unwrap();
        let grid = b.finish(1.0, CellNoise::Weights);
        let op = CellAveraged::new(&grid).unwrap();
        let mut y = vec![0.0f32; op.data_len()];
        op.forward(&img, &mut y);
        // Noise-free data averaged in their cells are reproduced exactly (the cell-centre
        // operator is off by the phase gradient across each cell).
        let (want, _) = grid.data_and_sigma();
        let scale = want.iter().map(|v| v.abs()).fold(0.0f32, f32::max);
        let err = y
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(err < 2e-5 * scale, "max error {err} of {scale}");
        let centre = Gridded::new(&grid).unwrap();
        let mut yc = vec![0.0f32; op.data_len()];
        centre.forward(&img, &mut yc);
        let err_c = yc
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            err_c > 100.0 * err,
            "cell-centre error {err_c} vs exact {err}"
        );
        assert_adjoint(&op, 1e-5);
        for i in (0..op.data_len()).step_by(13) {
            let mut e = vec![0.0f32; op.data_len()];
            e[i] = 1.0;
            let mut row = vec![0.0f32; geom.len()];
            op.adjoint(&e, &mut row);
            let want: f64 = row.iter().map(|&r| (r as f64).powi(2)).sum();
            assert!(
                (want - op.diag_aat()[i] as f64).abs() < 1e-4 * want.max(1.0),
                "row {i}"
            );
        }
    }

    #[test]
    fn averaging_and_hermitian_mirror() {
        let geom = ImageGeometry::new(16, 16, 1e-4, 1e-4).unwrap();
        let cell = 1.0 / (16.0 * 1e-4);
        // Two visibilities in cell (2, 1), one given as its mirror (−2, −1) and conjugated;
        // one beyond the grid.
        let uvw = [
            [2.0 * cell, cell, 0.0],
            [-2.0 * cell, -cell, 0.0],
            [9.0 * cell, 0.0, 0.0],
        ];
        let vis = [
            Complex::new(1.0, 2.0),
            Complex::new(3.0, -4.0),
            Complex::new(1.0, 0.0),
        ];
        let mut b = GriddedVisibilities::builder(geom, 1).unwrap();
        b.add(&uvw, &[SPEED_OF_LIGHT], &vis, &[1.0, 3.0, 1.0])
            .unwrap();
        let g = b.finish(2.0, CellNoise::Weights);
        assert_eq!(g.cells, vec![(2, 1)]);
        assert_eq!(g.dropped, 1);
        // (1·(1+2i) + 3·(3+4i)) / 4 = (2.5, 3.5)
        assert!((g.vis[0] - Complex::new(2.5, 3.5)).norm() < 1e-6);
        assert!((g.sigma[0] - (2.0f32 / 4.0).sqrt()).abs() < 1e-6);
        assert_eq!(g.count[0], 2);
    }

    #[test]
    fn scatter_noise_estimates_the_spread() {
        let geom = ImageGeometry::new(16, 16, 1e-4, 1e-4).unwrap();
        let mut rng = StdRng::seed_from_u64(4);
        let normal = rand_distr::Normal::new(0.0f64, 0.5).unwrap();
        let n = 4000;
        let uvw = vec![[100.0, 100.0, 0.0]; n];
        let vis: Vec<Complex<f32>> = (0..n)
            .map(|_| Complex::new(rng.sample(normal) as f32 + 1.0, rng.sample(normal) as f32))
            .collect();
        let mut b = GriddedVisibilities::builder(geom, 1).unwrap();
        b.add(&uvw, &[SPEED_OF_LIGHT], &vis, &vec![1.0; n]).unwrap();
        let g = b.finish(1e-6, CellNoise::Scatter { min_count: 5 });
        let want = 0.5 / (n as f32).sqrt();
        assert!(
            (g.sigma[0] / want - 1.0).abs() < 0.05,
            "{} vs {want}",
            g.sigma[0]
        );
    }
}
