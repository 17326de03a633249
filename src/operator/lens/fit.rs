//! The numerics of fitting a pixelated source behind a known lens: the lens light and the true
//! lensed source from a lens file, the NUFFT in autolens' convention, the source grid and the
//! fitted pixels chosen from the data, and the stiffness and brightness guesses that set up the
//! sampler.

use super::autolens::{render_light, LensSystem};
use super::{ImageGrid, Lens, Psf, SourceGrid};
use crate::operator::{ForwardOperator, ImageGeometry, Nufft, NufftOptions, OperatorError};

/// One arcsecond in radians.
pub const ARCSEC: f64 = std::f64::consts::PI / 180.0 / 3600.0;

/// Light profiles rendered (pixel-integrated), PSF-convolved on a padded grid (so light from
/// outside the field spills in as in the data), cropped to the grid.
pub fn light_image(
    profiles: &[crate::operator::lens::profiles::LightProfile],
    grid: &ImageGrid,
    psf: Option<&Psf>,
) -> Vec<f32> {
    if profiles.is_empty() {
        return vec![0.0; grid.len()];
    }
    let pad = psf.map_or(0, |p| p.ny.max(p.nx) / 2 + 1);
    let (img, py, px) = render_light(profiles, grid, pad);
    let img: Vec<f32> = img.iter().map(|&v| v as f32).collect();
    let conv = match psf {
        None => img,
        Some(p) => {
            let mut o = vec![0f32; img.len()];
            p.convolve(&img, py, px, &mut o);
            o
        }
    };
    (0..grid.len())
        .map(|i| conv[(i / grid.nx + pad) * px + i % grid.nx + pad])
        .collect()
}

/// The true source (from the lens file) lensed by ray tracing each of `s²` sub-pixel rays to the
/// analytic profile, then PSF-convolved: the model a perfect reconstruction approaches.
pub fn true_lensed_image(
    sys: &LensSystem,
    grid: &ImageGrid,
    psf: Option<&Psf>,
    s: usize,
) -> Vec<f32> {
    use rayon::prelude::*;
    let img: Vec<f32> = (0..grid.len())
        .into_par_iter()
        .map(|p| {
            let (iy, ix) = ((p / grid.nx) as f64, (p % grid.nx) as f64);
            let mut acc = 0.0;
            for a in 0..s {
                for b in 0..s {
                    let oy = (a as f64 + 0.5) / s as f64 - 0.5;
                    let ox = (b as f64 + 0.5) / s as f64 - 0.5;
                    let (x, y) = grid.xy(iy + oy, ix + ox);
                    let (bx, by) = sys.mass.trace(x, y);
                    acc += sys
                        .source_light
                        .iter()
                        .map(|l| l.value(bx, by))
                        .sum::<f64>();
                }
            }
            (acc / (s * s) as f64) as f32
        })
        .collect();
    match psf {
        None => img,
        Some(p) => {
            let mut o = vec![0f32; img.len()];
            p.convolve(&img, grid.ny, grid.nx, &mut o);
            o
        }
    }
}

/// The true source on the source grid (pixel means).
pub fn true_source(sys: &LensSystem, src: &SourceGrid) -> Vec<f32> {
    (0..src.len())
        .map(|j| {
            let (x, y) = src.xy(j / src.nx, j % src.nx);
            sys.source_light
                .iter()
                .map(|l| l.pixel_mean(x, y, src.scale, 8))
                .sum::<f64>() as f32
        })
        .collect()
}

/// Pearson correlation.
pub fn correlation(a: &[f32], b: &[f32]) -> f64 {
    let n = a.len() as f64;
    let (ma, mb) = (
        a.iter().map(|&v| v as f64).sum::<f64>() / n,
        b.iter().map(|&v| v as f64).sum::<f64>() / n,
    );
    let (mut sab, mut saa, mut sbb) = (0.0, 0.0, 0.0);
    for (&x, &y) in a.iter().zip(b) {
        let (dx, dy) = (x as f64 - ma, y as f64 - mb);
        sab += dx * dy;
        saa += dx * dx;
        sbb += dy * dy;
    }
    sab / (saa * sbb).sqrt()
}

/// The NUFFT for autolens visibilities on a lens image grid. autolens computes
/// `V = Σ I exp(−2πi (u x + v y))` with `x` right, `y` up; ours is `Σ I exp(+2πi (u l + v m))`
/// with `l = −x` (east to the left), `m = y`: the same sum at `(u, −v)`.
pub fn autolens_nufft(uv: &[[f64; 2]], grid: &ImageGrid) -> Result<Nufft, OperatorError> {
    let d = grid.pixel_scale * ARCSEC;
    let geom = ImageGeometry::new(grid.nx, grid.ny, d, d)?;
    let uvw: Vec<[f64; 3]> = uv.iter().map(|&[u, v]| [u, -v, 0.0]).collect();
    // Frequency c: the uvw "metres" are wavelengths.
    Nufft::new(geom, &uvw, &[299_792_458.0], None, &NufftOptions::default())
}

/// `λ_max(D^{-½} A Aᵀ D^{-½})`, `D = diag(Γ)`, by power iteration: how many data act as one.
/// The convolved likelihood treats data as independent; when rows of `A` overlap (a PSF, a
/// magnified source pixel seen by many image pixels, neighbouring uv samples) its score is that
/// much stiffer, so Γ is inflated by this factor to keep the reverse SDE stable.
pub fn stiffness(op: &dyn ForwardOperator, gamma: &[f32]) -> f64 {
    let n = op.data_len();
    let w: Vec<f32> = gamma
        .iter()
        .map(|&g| if g > 0.0 { 1.0 / g.sqrt() } else { 0.0 })
        .collect();
    let mut v: Vec<f32> = (0..n)
        .map(|i| 1.0 + ((i * 7919) % 13) as f32 / 13.0)
        .collect();
    let mut x = vec![0f32; op.image_len()];
    let mut lam = 0.0;
    for _ in 0..30 {
        let nv = v.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
        v.iter_mut().zip(&w).for_each(|(a, &b)| *a *= b / nv as f32);
        op.adjoint(&v, &mut x);
        op.forward(&x, &mut v);
        v.iter_mut().zip(&w).for_each(|(a, &b)| *a *= b);
        lam = v.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    }
    lam.max(1.0)
}

/// Non-negative least squares by projected gradient (`iters` steps of `1/L`): a data-driven
/// guess of the source's brightness, to set the flux scale.
pub fn nnls_source(op: &dyn ForwardOperator, y: &[f32], sigma: &[f32], iters: usize) -> Vec<f32> {
    let w: Vec<f32> = sigma.iter().map(|s| 1.0 / (s * s)).collect();
    let mut x = vec![0f32; op.image_len()];
    let mut r = vec![0f32; op.data_len()];
    let mut g = vec![0f32; op.image_len()];
    // Lipschitz constant of AᵀWA by power iteration.
    let mut v = vec![1f32; op.image_len()];
    let mut l = 1.0f64;
    for _ in 0..20 {
        let nv = v
            .iter()
            .map(|&a| (a as f64).powi(2))
            .sum::<f64>()
            .sqrt()
            .max(1e-30);
        v.iter_mut().for_each(|a| *a /= nv as f32);
        op.forward(&v, &mut r);
        r.iter_mut().zip(&w).for_each(|(a, &b)| *a *= b);
        op.adjoint(&r, &mut v);
        l = v.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    }
    let step = (1.0 / l.max(1e-30)) as f32;
    for _ in 0..iters {
        op.forward(&x, &mut r);
        r.iter_mut()
            .zip(y)
            .zip(&w)
            .for_each(|((a, &b), &c)| *a = (b - *a) * c);
        op.adjoint(&r, &mut g);
        x.iter_mut()
            .zip(&g)
            .for_each(|(a, &b)| *a = (*a + step * b).max(0.0));
    }
    x
}

/// Source grid from the significant pixels' traced positions: centred on their median, wide
/// enough for 98 % of them with a 30 % margin.
pub fn auto_source_grid(
    sys: &LensSystem,
    grid: &ImageGrid,
    snr: &[f32],
    side: usize,
    scale: Option<f64>,
    centre: Option<[f64; 2]>,
) -> Result<SourceGrid, OperatorError> {
    let mut xs = Vec::new();
    let mut ys = Vec::new();
    for (p, &s) in snr.iter().enumerate() {
        if s > 3.0 {
            let (x, y) = grid.xy((p / grid.nx) as f64, (p % grid.nx) as f64);
            let (bx, by) = sys.mass.trace(x, y);
            xs.push(bx);
            ys.push(by);
        }
    }
    if xs.len() < 10 && (scale.is_none() || centre.is_none()) {
        return Err(OperatorError::Invalid(
            "fewer than 10 pixels have S/N > 3 after subtracting the lens light: give \
             --source-scale and --source-centre"
                .into(),
        ));
    }
    let q = |v: &mut Vec<f64>, f: f64| {
        v.sort_by(f64::total_cmp);
        v[((v.len() - 1) as f64 * f).round() as usize]
    };
    let c = match centre {
        Some(c) => c,
        None => [q(&mut xs, 0.5), q(&mut ys, 0.5)],
    };
    let scale = match scale {
        Some(s) => s,
        None => {
            let dx: Vec<f64> = xs.iter().map(|x| (x - c[0]).abs()).collect();
            let dy: Vec<f64> = ys.iter().map(|y| (y - c[1]).abs()).collect();
            let half = q(&mut dx.clone(), 0.98).max(q(&mut dy.clone(), 0.98));
            2.0 * half * 1.3 / side as f64
        }
    };
    if !(scale.is_finite() && scale > 0.0) {
        return Err(OperatorError::Invalid(format!(
            "source pixel scale must be positive, got {scale} arcsec"
        )));
    }
    Ok(SourceGrid {
        ny: side,
        nx: side,
        scale,
        centre: c,
    })
}

/// Image pixels where the model can be non-zero: those that see the source grid through
/// the lens and the PSF (above 10⁻³ of the peak response).
pub fn reach_mask(lens: &Lens) -> Vec<bool> {
    let ones = vec![1f32; lens.source_grid().len()];
    let r = lens.render(&ones);
    let top = r.iter().cloned().fold(0f32, f32::max);
    r.iter().map(|&v| v > 1e-3 * top).collect()
}
