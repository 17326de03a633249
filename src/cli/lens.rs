//! `interf-image lens`: the posterior of a pixelated background source behind a known lens, from
//! an image (HST-like: data, noise map, PSF) or from visibilities (`--uv`: ALMA-like, through
//! the NUFFT composed with the lens), with a score-based prior on the source.
//!
//! The helpers are public so that integration tests check the same data handling the command
//! uses (conventions of autolens' datasets: see [`crate::operator::lens::autolens`]).

use super::common::SamplingArgs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::prior::{device, DeviceArg};
use crate::io::{
    read_image, write_atomic, write_cube, write_image, CubeAxis, HeaderValue, SkyHeader,
};
use crate::likelihood::GaussianLikelihood;
use crate::operator::lens::autolens::{read_lens_file, render_light, LensSystem};
use crate::operator::lens::{ImageGrid, Lens, LensOptions, Psf, SourceGrid};
use crate::operator::{Compose, ForwardOperator, ImageGeometry, Nufft, NufftOptions, Scaled};
use crate::prior::{default_prior, ScoreModel};
use crate::sample::posterior::{sample_posterior, PosteriorOptions};

const ARCSEC: f64 = std::f64::consts::PI / 180.0 / 3600.0;

#[derive(Debug, Clone, Args)]
pub struct LensArgs {
    /// Observed image (FITS; rows bottom-up as DS9 shows them), or with --uv the visibilities
    /// (FITS, N × 2: re, im).
    #[arg(long)]
    pub data: PathBuf,
    /// Noise σ per pixel (same shape as --data), or per re/im component with --uv.
    #[arg(long)]
    pub noise: PathBuf,
    /// PSF (FITS, odd sides, centred); imaging only.
    #[arg(long)]
    pub psf: Option<PathBuf>,
    /// The lens: our JSON (einstein_radius_arcsec, axis_ratio, angle_deg counter-clockwise
    /// from +x (west), centre_arcsec [x, y], shear {gamma_1, gamma_2}) or an autolens
    /// tracer.json. A lens light profile in it is subtracted (PSF-convolved) from image data.
    #[arg(long)]
    pub lens: PathBuf,
    /// uv coordinates (FITS, N × 2, wavelengths): fit visibilities instead of an image.
    #[arg(long)]
    pub uv: Option<PathBuf>,
    /// Source grid side, pixels (must equal the prior's size).
    #[arg(long, default_value_t = 64)]
    pub source_size: usize,
    /// Source pixel, arcsec. Default: images: the traced extent of the pixels with S/N > 3;
    /// visibilities: θ_E/20.
    #[arg(long)]
    pub source_scale: Option<f64>,
    /// Source grid centre "x,y" in arcsec. Default: images: the traced centre of the
    /// significant pixels; visibilities: the lens centre.
    #[arg(long)]
    pub source_centre: Option<String>,
    /// Image pixel, arcsec. Default: the PIXSCAX/CDELT1 of --data; with --uv, 1/(2.5 u_max).
    #[arg(long)]
    pub pixel_scale: Option<f64>,
    /// Row order of the image files (data, noise, PSF).
    #[arg(long, value_enum, default_value_t = RowsArg::Auto)]
    pub rows: RowsArg,
    /// Most memory the job may take (e.g. 64GB). Default: the memory available now; a larger
    /// --image-size is refused before anything is allocated.
    #[arg(long, value_parser = super::common::memory_size)]
    pub max_memory: Option<u64>,
    /// Image-plane grid side in pixels for --uv (even).
    #[arg(long, default_value_t = 512, value_parser = super::common::at_least_one)]
    pub image_size: usize,
    /// Rays per image pixel side.
    #[arg(long, default_value_t = 3, value_parser = super::common::at_least_one)]
    pub supersample: usize,
    /// Which image pixels are fitted: `auto` (those whose rays reach the source grid) or `all`.
    #[arg(long, default_value = "auto")]
    pub mask: String,
    /// Source value at prior value 1, in data units. Default: the peak of a non-negative
    /// least-squares source.
    #[arg(long)]
    pub flux_scale: Option<f64>,
    /// Prior checkpoint folder. Default: the built-in 64² prior (MiraBest radio galaxies).
    #[arg(long)]
    pub prior: Option<PathBuf>,
    #[arg(long, default_value_t = 16, value_parser = super::common::at_least_one)]
    pub samples: usize,
    #[arg(long, value_enum, default_value = "cpu")]
    pub device: DeviceArg,
    /// Output prefix: NAME-samples.fits, -mean, -std, -model, -residual, -summary.json, -report.html.
    #[arg(long, value_parser = super::common::output_name)]
    pub name: String,
    #[command(flatten)]
    pub sampling: SamplingArgs,
}

/// An image dataset.
pub struct ImagingData {
    pub data: Vec<f32>,
    pub noise: Vec<f32>,
    pub grid: ImageGrid,
    pub psf: Option<Psf>,
}

fn plane(
    path: &Path,
    what: &str,
) -> anyhow::Result<(usize, usize, Vec<f64>, crate::io::FitsImage)> {
    // FitsError names the file; the option says which input it was.
    let img = read_image(path).with_context(|| what.to_string())?;
    let (ny, nx, v) = super::common::single_plane(&img, what)?;
    Ok((ny, nx, v, img))
}

/// Which way up the rows of the image files are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum RowsArg {
    /// Top row first when the data header has PIXSCAX (autolens), else FITS order.
    Auto,
    /// FITS order: the first row is the bottom of the image (as DS9 shows it).
    Fits,
    /// The first row is the top of the image (arrays written as numpy holds them).
    TopDown,
}

/// Reads data, noise and PSF; the pixel scale from the argument, else from the header.
pub fn read_imaging(
    data: &Path,
    noise: &Path,
    psf: Option<&Path>,
    pixel_scale: Option<f64>,
) -> anyhow::Result<ImagingData> {
    read_imaging_rows(data, noise, psf, pixel_scale, RowsArg::Auto)
}

/// [`read_imaging`] with the row order chosen (`Auto` says on stderr what it chose, since
/// the same pixels fit differently the other way up).
pub fn read_imaging_rows(
    data: &Path,
    noise: &Path,
    psf: Option<&Path>,
    pixel_scale: Option<f64>,
    rows_arg: RowsArg,
) -> anyhow::Result<ImagingData> {
    let (ny, nx, d, hdr) = plane(data, "--data")?;
    let (ny2, nx2, n, _) = plane(noise, "--noise")?;
    if (ny, nx) != (ny2, nx2) {
        bail!(
            "{} is {ny2}×{nx2} but {} is {ny}×{nx}",
            noise.display(),
            data.display()
        );
    }
    if let Some(i) = n.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        bail!(
            "{}: noise σ must be positive and finite; pixel {i} has {}",
            noise.display(),
            n[i]
        );
    }
    if let Some(i) = d.iter().position(|v| !v.is_finite()) {
        bail!("{}: pixel {i} is not finite", data.display());
    }
    let scale = match pixel_scale {
        Some(s) => s,
        None => hdr
            .get_f64("PIXSCAX")
            .or_else(|| hdr.get_f64("CDELT1").map(|c| c.abs() * 3600.0))
            .with_context(|| {
                format!(
                    "{} has no PIXSCAX or CDELT1: give --pixel-scale (arcsec)",
                    data.display()
                )
            })?,
    };
    if !(scale.is_finite() && scale > 0.0) {
        bail!("pixel scale must be positive, got {scale} arcsec");
    }
    // autolens (whose headers carry PIXSCAX) writes its arrays as it holds them, top row
    // first; FITS and our images put the first row at the bottom. (Checked on the HST dataset:
    // the true model fits at χ² ≈ 1 only this way round; see tests/lens_truth.rs.)
    let top_down = match rows_arg {
        RowsArg::Fits => false,
        RowsArg::TopDown => true,
        RowsArg::Auto => {
            let t = hdr.get_f64("PIXSCAX").is_some();
            if t {
                eprintln!(
                    "{}: has PIXSCAX (an autolens file): rows read top row first, as autolens \
                     writes them (--rows fits to read them in FITS order)",
                    data.display()
                );
            }
            t
        }
    };
    let rows = |v: &[f64], ny: usize, nx: usize| -> Vec<f32> {
        (0..ny * nx)
            .map(|i| {
                let (y, x) = (i / nx, i % nx);
                let y = if top_down { ny - 1 - y } else { y };
                v[y * nx + x] as f32
            })
            .collect()
    };
    let psf = match psf {
        None => None,
        Some(p) => {
            let (ky, kx, k, _) = plane(p, "--psf")?;
            if k.iter().all(|&v| v == 0.0) {
                bail!(
                    "--psf {}: every pixel is zero; a PSF needs a positive sum",
                    p.display()
                );
            }
            Some(Psf::new(ky, kx, rows(&k, ky, kx)).with_context(|| format!("{}", p.display()))?)
        }
    };
    Ok(ImagingData {
        data: rows(&d, ny, nx),
        noise: rows(&n, ny, nx),
        grid: ImageGrid {
            ny,
            nx,
            pixel_scale: scale,
        },
        psf,
    })
}

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

/// Visibilities: `uv` (wavelengths), data `[re, im]` interleaved, σ per component.
pub struct VisData {
    pub uv: Vec<[f64; 2]>,
    pub data: Vec<f32>,
    pub sigma: Vec<f32>,
}

fn pairs(path: &Path) -> anyhow::Result<Vec<f64>> {
    let (ny, nx, v, _) = plane(path, "table")?;
    if nx != 2 {
        bail!("{}: expected N × 2 values, got {ny} × {nx}", path.display());
    }
    Ok(v)
}

pub fn read_visibilities(data: &Path, noise: &Path, uv: &Path) -> anyhow::Result<VisData> {
    let (d, n, u) = (pairs(data)?, pairs(noise)?, pairs(uv)?);
    if d.len() != u.len() || n.len() != u.len() {
        bail!(
            "{}, {} and {} must have the same number of rows ({}, {}, {})",
            data.display(),
            noise.display(),
            uv.display(),
            d.len() / 2,
            n.len() / 2,
            u.len() / 2
        );
    }
    if let Some(i) = n.iter().position(|s| !(s.is_finite() && *s > 0.0)) {
        bail!(
            "{}: σ must be positive; entry {i} is {}",
            noise.display(),
            n[i]
        );
    }
    if d.iter().chain(&u).any(|v| !v.is_finite()) {
        bail!(
            "{} or {} has non-finite values",
            data.display(),
            uv.display()
        );
    }
    Ok(VisData {
        uv: u.chunks(2).map(|c| [c[0], c[1]]).collect(),
        data: d.iter().map(|&v| v as f32).collect(),
        sigma: n.iter().map(|&v| v as f32).collect(),
    })
}

/// The NUFFT for autolens visibilities on a lens image grid. autolens computes
/// `V = Σ I exp(−2πi (u x + v y))` with `x` right, `y` up; ours is `Σ I exp(+2πi (u l + v m))`
/// with `l = −x` (east to the left), `m = y`: the same sum at `(u, −v)`.
pub fn autolens_nufft(uv: &[[f64; 2]], grid: &ImageGrid) -> anyhow::Result<Nufft> {
    let d = grid.pixel_scale * ARCSEC;
    let geom = ImageGeometry::new(grid.nx, grid.ny, d, d)?;
    let uvw: Vec<[f64; 3]> = uv.iter().map(|&[u, v]| [u, -v, 0.0]).collect();
    // Frequency c: the uvw "metres" are wavelengths.
    Ok(Nufft::new(
        geom,
        &uvw,
        &[299_792_458.0],
        None,
        &NufftOptions::default(),
    )?)
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

fn parse_pair(s: &str) -> anyhow::Result<[f64; 2]> {
    let v: Vec<f64> = s
        .split(',')
        .map(|t| t.trim().parse::<f64>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("--source-centre {s:?}: expected \"x,y\" in arcsec"))?;
    match v.as_slice() {
        [x, y] if x.is_finite() && y.is_finite() => Ok([*x, *y]),
        _ => bail!("--source-centre {s:?}: expected \"x,y\" in arcsec"),
    }
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
) -> anyhow::Result<SourceGrid> {
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
        bail!(
            "fewer than 10 pixels have S/N > 3 after subtracting the lens light: give \
             --source-scale and --source-centre"
        );
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
        bail!("source pixel scale must be positive, got {scale} arcsec");
    }
    Ok(SourceGrid {
        ny: side,
        nx: side,
        scale,
        centre: c,
    })
}

fn header(scale_arcsec: f64, bunit: &str, extra: Vec<(String, HeaderValue)>) -> SkyHeader {
    SkyHeader {
        cell_x_deg: scale_arcsec / 3600.0,
        cell_y_deg: scale_arcsec / 3600.0,
        freq_hz: 1.0,
        bunit: bunit.into(),
        extra,
        ..Default::default()
    }
}

fn progress(n: u64) -> ProgressBar {
    let bar = ProgressBar::new(n).with_style(
        ProgressStyle::with_template(
            "{msg:>10} [{bar:40}] {pos}/{len} steps ({per_sec}, eta {eta})",
        )
        .expect("static template")
        .progress_chars("=> "),
    );
    bar.set_message("sampling");
    bar
}

/// What a run measured; also written as NAME-summary.json.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LensSummary {
    pub mode: String,
    pub n_data: usize,
    pub reduced_chi2_mean: f64,
    pub reduced_chi2_samples: Vec<f64>,
    pub truth_correlation: Option<f64>,
    pub flux_scale: f64,
    pub source_scale_arcsec: f64,
    pub source_centre_arcsec: [f64; 2],
    pub image_pixel_scale_arcsec: f64,
    pub gamma_inflation: f64,
    pub alpha: f32,
    pub corrector_snr: f64,
    pub samples: usize,
    pub steps: usize,
    pub prior: String,
    pub seconds: f64,
}

pub fn run(args: LensArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    super::prior::tune_malloc();
    if args.samples == 0 || args.sampling.steps == 0 {
        bail!("--samples and --steps must be at least 1");
    }
    if !(args.sampling.alpha.is_finite() && args.sampling.alpha > 0.0) {
        bail!("--alpha must be positive, got {}", args.sampling.alpha);
    }
    if !(args.sampling.corrector_snr.is_finite() && args.sampling.corrector_snr >= 0.0) {
        bail!(
            "--corrector-snr must be 0 or positive, got {}",
            args.sampling.corrector_snr
        );
    }
    if args.mask != "auto" && args.mask != "all" {
        bail!("--mask must be auto or all, got {:?}", args.mask);
    }
    // Refused outputs fail before any work, and never leave a sibling half-written.
    let inputs: Vec<&Path> = [
        Some(args.data.as_path()),
        Some(args.noise.as_path()),
        Some(args.lens.as_path()),
        args.psf.as_deref(),
        args.uv.as_deref(),
        args.prior.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    super::common::check_outputs(
        &args.name,
        &[
            "samples.fits",
            "mean.fits",
            "std.fits",
            "model.fits",
            "residual.fits",
            "summary.json",
            "report.html",
        ],
        &inputs,
    )?;
    let sys = read_lens_file(&args.lens)?;
    let dev = device(args.device)?;
    let model = match &args.prior {
        Some(dir) => ScoreModel::load(dir, &dev)?,
        None => default_prior(&dev).context("loading the built-in prior")?,
    };
    let side = model.image_size();
    if args.source_size != side {
        bail!(
            "--source-size {} but the prior works on {side}×{side} images",
            args.source_size
        );
    }
    let centre = args.source_centre.as_deref().map(parse_pair).transpose()?;
    let out = |suffix: &str| super::common::output_path(&args.name, suffix, &inputs);
    let paths = [
        out("samples")?,
        out("mean")?,
        out("std")?,
        out("model")?,
        out("residual")?,
    ];
    let opts = args.sampling.options(args.samples);
    let batches = args.samples.div_ceil(args.sampling.batch_for(args.samples));
    let fit = match &args.uv {
        None => fit_imaging(&args, &sys, &model, side, centre, &opts)?,
        Some(uv) => fit_visibilities(&args, uv, &sys, &model, side, centre, &opts)?,
    };
    let _ = batches;
    let Fit {
        samples,
        source,
        chi2,
        chi2_mean,
        n_data,
        flux_scale,
        model_image,
        residual,
        data_image,
        image_grid,
        data_unit,
        residual_label,
        gamma_inflation,
        mode,
    } = fit;

    let n = samples.len();
    let npix = source.len();
    let mut mean = vec![0f32; npix];
    for s in &samples {
        mean.iter_mut().zip(s).for_each(|(m, v)| *m += v / n as f32);
    }
    let std: Vec<f32> = (0..npix)
        .map(|i| {
            let v: f64 = samples
                .iter()
                .map(|s| (s[i] - mean[i]) as f64)
                .map(|d| d * d)
                .sum::<f64>()
                / (n.max(2) - 1) as f64;
            v.sqrt() as f32
        })
        .collect();
    let truth = (!sys.source_light.is_empty()).then(|| true_source(&sys, &source));
    let corr = truth.as_ref().map(|t| correlation(&mean, t));

    let extra = vec![
        ("FLUXSCL".into(), HeaderValue::F64(flux_scale)),
        ("SRCX".into(), HeaderValue::F64(source.centre[0])),
        ("SRCY".into(), HeaderValue::F64(source.centre[1])),
        ("NSAMPLE".into(), HeaderValue::I64(n as i64)),
        ("SEED".into(), HeaderValue::I64(args.sampling.seed as i64)),
        (
            "COMMENT".into(),
            HeaderValue::Str("source plane; axes are arcsec offsets, not sky positions".into()),
        ),
    ];
    let sh = header(source.scale, &data_unit, extra);
    let flat: Vec<f32> = samples.iter().flatten().copied().collect();
    write_cube(&paths[0], &flat, n, side, side, &sh, CubeAxis::Sample)?;
    write_image(&paths[1], &mean, side, side, &sh)?;
    write_image(&paths[2], &std, side, side, &sh)?;
    let ih = header(image_grid.pixel_scale, &data_unit, Vec::new());
    write_image(&paths[3], &model_image, image_grid.ny, image_grid.nx, &ih)?;
    write_image(&paths[4], &residual, image_grid.ny, image_grid.nx, &ih)?;

    let summary = LensSummary {
        mode: mode.clone(),
        n_data,
        reduced_chi2_mean: chi2_mean,
        reduced_chi2_samples: chi2.clone(),
        truth_correlation: corr,
        flux_scale,
        source_scale_arcsec: source.scale,
        source_centre_arcsec: source.centre,
        image_pixel_scale_arcsec: image_grid.pixel_scale,
        gamma_inflation,
        alpha: args.sampling.alpha,
        corrector_snr: args.sampling.corrector_snr,
        samples: n,
        steps: args.sampling.steps,
        prior: args
            .prior
            .as_ref()
            .map_or("built-in (MiraBest)".into(), |p| p.display().to_string()),
        seconds: start.elapsed().as_secs_f64(),
    };
    let json = serde_json::to_string_pretty(&summary)?;
    let sp = PathBuf::from(format!("{}-summary.json", args.name));
    write_atomic(&sp, json.as_bytes()).with_context(|| format!("writing {}", sp.display()))?;

    let report = crate::report::lens::LensReport {
        title: format!("Lensed source posterior: {}", args.name),
        image_ny: image_grid.ny,
        image_nx: image_grid.nx,
        image_pixel_asec: image_grid.pixel_scale,
        data: &data_image,
        model: &model_image,
        residual: &residual,
        residual_label: &residual_label,
        data_unit: &data_unit,
        source_side: side,
        source_pixel_asec: source.scale,
        mean: &mean,
        std: &std,
        samples: &flat,
        n_samples: n,
        truth: truth.as_deref(),
        summary: vec![
            ("mode".into(), mode),
            ("data fitted".into(), format!("{n_data}")),
            ("reduced χ² of the mean".into(), format!("{chi2_mean:.3}")),
            (
                "correlation with the true source".into(),
                corr.map_or("(no truth given)".into(), |c| format!("{c:.3}")),
            ),
            ("flux scale".into(), format!("{flux_scale:.4} {data_unit}")),
            (
                "source grid".into(),
                format!(
                    "{side}² × {:.4}″ centred ({:.3}″, {:.3}″)",
                    source.scale, source.centre[0], source.centre[1]
                ),
            ),
            (
                "samples × steps".into(),
                format!("{n} × {}", args.sampling.steps),
            ),
            (
                "time".into(),
                format!("{:.1} s", start.elapsed().as_secs_f64()),
            ),
        ],
    };
    let html = crate::report::lens::write_lens_report(&args.name, &report)?;
    eprintln!(
        "reduced χ² of the mean {chi2_mean:.3} over {n_data} data{}; wrote {}-{{samples,mean,std,model,residual}}.fits, {}, {}",
        corr.map_or(String::new(), |c| format!(", correlation with the true source {c:.3}")),
        args.name,
        sp.display(),
        html.display()
    );
    Ok(())
}

struct Fit {
    /// Data units.
    samples: Vec<Vec<f32>>,
    source: SourceGrid,
    chi2: Vec<f64>,
    chi2_mean: f64,
    n_data: usize,
    flux_scale: f64,
    model_image: Vec<f32>,
    residual: Vec<f32>,
    data_image: Vec<f32>,
    image_grid: ImageGrid,
    data_unit: String,
    residual_label: String,
    gamma_inflation: f64,
    mode: String,
}

/// Samples (data units), reduced χ² of each, of their mean, and the Γ inflation.
type Sampled = (Vec<Vec<f32>>, Vec<f64>, f64, f64);

/// Samples with the likelihood over `op` (normalised units), scaled to data units, and the
/// reduced χ² of each and of their mean; also the Γ inflation used.
fn sample(
    model: &ScoreModel,
    op: Box<dyn ForwardOperator>,
    y: Vec<f32>,
    sigma: &[f32],
    flux: f64,
    opts: &PosteriorOptions,
) -> anyhow::Result<Sampled> {
    let scaled = Scaled {
        inner: op,
        scale: flux as f32,
    };
    let mut lik = GaussianLikelihood::new(scaled, y, sigma)?;
    let infl = stiffness(lik.operator(), &lik.operator().diag_aat());
    lik.inflate_gamma(&vec![infl as f32; lik.operator().data_len()])?;
    let bar = progress((opts.n_samples.div_ceil(opts.batch.max(1)) * opts.steps) as u64);
    let s = sample_posterior(model, &lik, opts, &super::interrupt::Terminal::bar(&bar))
        .map_err(super::interrupt::interrupted_or)?;
    bar.finish_and_clear();
    let chi2: Vec<f64> = s.iter().map(|x| lik.reduced_chi2(x)).collect();
    let n = s.len() as f32;
    let mut mean = vec![0f32; s[0].len()];
    for x in &s {
        mean.iter_mut().zip(x).for_each(|(m, v)| *m += v / n);
    }
    let chi2_mean = lik.reduced_chi2(&mean);
    let phys = s
        .into_iter()
        .map(|x| x.into_iter().map(|v| v * flux as f32).collect())
        .collect();
    Ok((phys, chi2, chi2_mean, infl))
}

/// Image pixels where the model can be non-zero: those that see the source grid through
/// the lens and the PSF (above 10⁻³ of the peak response).
pub fn reach_mask(lens: &Lens) -> Vec<bool> {
    let ones = vec![1f32; lens.source_grid().len()];
    let r = lens.render(&ones);
    let top = r.iter().cloned().fold(0f32, f32::max);
    r.iter().map(|&v| v > 1e-3 * top).collect()
}

fn fit_imaging(
    args: &LensArgs,
    sys: &LensSystem,
    model: &ScoreModel,
    side: usize,
    centre: Option<[f64; 2]>,
    opts: &PosteriorOptions,
) -> anyhow::Result<Fit> {
    let im = read_imaging_rows(
        &args.data,
        &args.noise,
        args.psf.as_deref(),
        args.pixel_scale,
        args.rows,
    )?;
    let grid = im.grid;
    let light = light_image(&sys.lens_light, &grid, im.psf.as_ref());
    let sub: Vec<f32> = im.data.iter().zip(&light).map(|(d, l)| d - l).collect();
    let snr: Vec<f32> = sub.iter().zip(&im.noise).map(|(d, s)| d / s).collect();
    let source = auto_source_grid(sys, &grid, &snr, side, args.source_scale, centre)?;
    let build = |mask: Option<Vec<bool>>| {
        Lens::new(
            &sys.mass,
            grid,
            source,
            LensOptions {
                supersample: args.supersample,
                psf: im.psf.clone(),
                mask,
            },
        )
    };
    let full = build(None)?;
    let mask = match args.mask.as_str() {
        "all" => vec![true; grid.len()],
        _ => reach_mask(&full),
    };
    let lens = build(Some(mask.clone()))?;
    let sel = |v: &[f32]| -> Vec<f32> { lens.observed().iter().map(|&p| v[p as usize]).collect() };
    let (y, sigma) = (sel(&sub), sel(&im.noise));
    let flux = flux_scale(args.flux_scale, &lens, &y, &sigma)?;
    let n_data = y.len();
    let (samples, chi2, chi2_mean, infl) = sample(model, Box::new(lens), y, &sigma, flux, opts)?;
    let n = samples.len() as f32;
    let mut mean = vec![0f32; source.len()];
    for s in &samples {
        mean.iter_mut().zip(s).for_each(|(m, v)| *m += v / n);
    }
    let model_image = full.render(&mean);
    let residual: Vec<f32> = sub
        .iter()
        .zip(&model_image)
        .zip(&im.noise)
        .zip(&mask)
        .map(|(((d, m), s), &k)| if k { (d - m) / s } else { f32::NAN })
        .collect();
    Ok(Fit {
        samples,
        source,
        chi2,
        chi2_mean,
        n_data,
        flux_scale: flux,
        model_image,
        residual,
        data_image: sub,
        image_grid: grid,
        data_unit: "DATA".into(),
        residual_label: "(data − lens light − model)/σ over the fitted pixels".into(),
        gamma_inflation: infl,
        mode: format!(
            "image {}×{} at {}″, lens light subtracted, {} fitted pixels ({})",
            grid.ny, grid.nx, grid.pixel_scale, n_data, args.mask
        ),
    })
}

fn flux_scale(
    given: Option<f64>,
    op: &dyn ForwardOperator,
    y: &[f32],
    sigma: &[f32],
) -> anyhow::Result<f64> {
    match given {
        Some(f) if f.is_finite() && f > 0.0 => Ok(f),
        Some(f) => bail!("--flux-scale must be positive, got {f}"),
        None => {
            let x = nnls_source(op, y, sigma, 200);
            let peak = x.iter().cloned().fold(0f32, f32::max) as f64;
            if peak > 0.0 {
                Ok(peak)
            } else {
                bail!("the data show no positive source: give --flux-scale")
            }
        }
    }
}

fn fit_visibilities(
    args: &LensArgs,
    uv_path: &Path,
    sys: &LensSystem,
    model: &ScoreModel,
    side: usize,
    centre: Option<[f64; 2]>,
    opts: &PosteriorOptions,
) -> anyhow::Result<Fit> {
    if args.image_size < 8 || !args.image_size.is_multiple_of(2) {
        bail!(
            "--image-size must be even and at least 8, got {}",
            args.image_size
        );
    }
    // Rays (supersample² per pixel, with their interpolation weights), the NUFFT's
    // oversampled grid and a batch of chains' images, estimated before any is allocated.
    let n2 = (args.image_size as f64).powi(2);
    let s2 = (args.supersample as f64).powi(2);
    super::common::check_memory(
        n2 * (64.0 * s2 + 64.0 + 16.0 * args.sampling.batch_for(args.samples) as f64),
        &format!("an image plane of {0}×{0} pixels", args.image_size),
        args.max_memory,
    )?;
    let vis = read_visibilities(&args.data, &args.noise, uv_path)?;
    let umax = vis.uv.iter().map(|[u, v]| u.hypot(*v)).fold(0.0, f64::max);
    if !(umax > 0.0 && umax.is_finite()) && args.pixel_scale.is_none() {
        bail!(
            "{}: every uv point is at u = v = 0 (or not finite): no baseline to set the pixel \
             scale from",
            uv_path.display()
        );
    }
    let pixel = match args.pixel_scale {
        Some(s) if s.is_finite() && s > 0.0 => s,
        Some(s) => bail!("--pixel-scale must be positive, got {s}"),
        None => 1.0 / (2.5 * umax) / ARCSEC,
    };
    let grid = ImageGrid {
        ny: args.image_size,
        nx: args.image_size,
        pixel_scale: pixel,
    };
    let source = SourceGrid {
        ny: side,
        nx: side,
        scale: args
            .source_scale
            .unwrap_or(sys.mass.sie.einstein_radius / 20.0),
        centre: centre.unwrap_or(sys.mass.sie.centre),
    };
    let lens = Lens::new(
        &sys.mass,
        grid,
        source,
        LensOptions {
            supersample: args.supersample,
            psf: None,
            mask: None,
        },
    )?;
    let render_lens = Lens::new(
        &sys.mass,
        grid,
        source,
        LensOptions {
            supersample: args.supersample,
            psf: None,
            mask: None,
        },
    )?;
    let nufft = autolens_nufft(&vis.uv, &grid)?;
    let nufft2 = autolens_nufft(&vis.uv, &grid)?;
    let op = Compose::new(nufft, lens)?;
    let flux = flux_scale(args.flux_scale, &op, &vis.data, &vis.sigma)?;
    let n_data = vis.data.len();
    let (samples, chi2, chi2_mean, infl) = sample(
        model,
        Box::new(op),
        vis.data.clone(),
        &vis.sigma,
        flux,
        opts,
    )?;
    let n = samples.len() as f32;
    let mut mean = vec![0f32; source.len()];
    for s in &samples {
        mean.iter_mut().zip(s).for_each(|(m, v)| *m += v / n);
    }
    let model_image = render_lens.render(&mean);
    // Natural-weighted dirty images of the data and of the residual (Jy/beam).
    let w: Vec<f32> = vis.sigma.iter().map(|s| 1.0 / (s * s)).collect();
    let wsum: f64 = w.iter().step_by(2).map(|&v| v as f64).sum();
    let dirty = |r: &[f32]| -> Vec<f32> {
        let rw: Vec<f32> = r.iter().zip(&w).map(|(a, b)| a * b).collect();
        let mut img = vec![0f32; grid.len()];
        nufft2.adjoint(&rw, &mut img);
        img.iter().map(|v| (*v as f64 / wsum) as f32).collect()
    };
    let mut mv = vec![0f32; n_data];
    nufft2.forward(&model_image, &mut mv);
    let res: Vec<f32> = vis.data.iter().zip(&mv).map(|(d, m)| d - m).collect();
    Ok(Fit {
        samples,
        source,
        chi2,
        chi2_mean,
        n_data,
        flux_scale: flux,
        model_image,
        residual: dirty(&res),
        data_image: dirty(&vis.data),
        image_grid: grid,
        data_unit: "JY/PIXEL".into(),
        residual_label: "residual dirty image (natural weighting, Jy/beam)".into(),
        gamma_inflation: infl,
        mode: format!(
            "{} visibilities, lens image {}² at {:.4}″",
            vis.uv.len(),
            grid.nx,
            grid.pixel_scale
        ),
    })
}
