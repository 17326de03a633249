//! `interf-image simulate`: a new Measurement Set with the uv coverage, frequencies and metadata
//! of an existing one, and DATA = A·truth + noise.

use super::common::ComputeArgs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use ms_io::{FieldSelector, Selection, StokesModel, VisChunkMeta, VisFile};
use num_complex::Complex;

use super::common::set_threads;
use crate::io::{read_image, FitsImage};
use crate::operator::{dirty2ms, ImageGeometry, NufftOptions};

/// Model visibilities per NUFFT call: large enough that the per-call FFT of the image is
/// amortised, small enough to keep a chunk's DATA in a few hundred MB.
const SAMPLES_PER_CHUNK: usize = 2_000_000;

/// Its `--help` text lives on the `Simulate` variant in `cli/mod.rs`, where clap reads it.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Truth image, FITS, in Jy/pixel (BUNIT JY/PIXEL), with CDELT1/CDELT2 in degrees.
    #[arg(long)]
    pub image: PathBuf,
    /// Measurement Set whose uv coverage, frequencies and metadata to copy (read only).
    #[arg(long)]
    pub like: PathBuf,
    /// Noise σ of Stokes I per real component (Jy). Each correlation gets independent complex
    /// Gaussian noise with σ_c = √2·SIGMA per real part (I = (A + B)/2), and WEIGHT = 1/σ_c²,
    /// SIGMA = σ_c. 0: noiseless, with unit weights.
    #[arg(long, default_value_t = 0.0, value_name = "SIGMA")]
    pub noise: f64,
    /// The new Measurement Set; must not exist.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the noise: the same seed gives the same data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Field whose phase centre the truth is placed at: its id or NAME. Default: field 0, or
    /// the first field holding data when field 0 holds none.
    #[arg(long)]
    pub field: Option<String>,
    /// Spectral windows to simulate, comma-separated ids (default: all).
    #[arg(long, value_delimiter = ',')]
    pub spw: Option<Vec<usize>>,
    /// Channel range START END to simulate (END exclusive); other channels are flagged.
    #[arg(long, num_args = 2, value_names = ["START", "END"])]
    pub channels: Option<Vec<usize>>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// The truth on the operator's pixel grid: `[iy][ix]`, RA growing to the left, Dec upwards,
/// the reference pixel at `(nx/2, ny/2)`.
struct Truth {
    geometry: ImageGeometry,
    pixels: Vec<f64>,
    /// Sum of the pixels (Jy) and the peak.
    flux: f64,
    peak: f64,
    /// Where CRVAL points (degrees), when the header says.
    crval: Option<(f64, f64)>,
}

fn check_bunit(img: &FitsImage) -> anyhow::Result<()> {
    let path = img.path.display();
    match img.get_str("BUNIT") {
        None => {
            eprintln!("warning: {path} has no BUNIT; taking its pixels as Jy/pixel");
            Ok(())
        }
        Some(u) => {
            let norm: String = u
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_uppercase();
            match norm.as_str() {
                "JY/PIXEL" | "JY/PIX" => Ok(()),
                "JY/BEAM" => bail!(
                    "{path} is in Jy/beam (BUNIT = '{u}'): a sky model must be in Jy/pixel. \
                     Use a model image (e.g. WSClean's -model.fits), not a restored or dirty image"
                ),
                _ => bail!("{path}: BUNIT = '{u}'; the truth image must be in Jy/pixel (JY/PIXEL)"),
            }
        }
    }
}

/// Puts the truth on the operator's grid: flips axes that run the other way, and pads so that
/// the reference pixel lands on the grid centre (even sizes, at least 8, as the NUFFT needs).
fn load_truth(img: &FitsImage) -> anyhow::Result<Truth> {
    let path = img.path.display();
    check_bunit(img)?;
    let (ny, nx, mut data) = img.plane();
    if img.shape.iter().rev().skip(2).any(|&n| n > 1) {
        eprintln!(
            "warning: {path} has shape {:?}; using its first plane",
            img.shape
        );
    }
    let cdelt = |k: &str| -> anyhow::Result<f64> {
        let v = img
            .get_f64(k)
            .with_context(|| format!("{path} has no {k}: the pixel scale is needed (degrees)"))?;
        if !(v.is_finite() && v != 0.0) {
            bail!("{path}: {k} = {v} is not a pixel scale");
        }
        Ok(v)
    };
    let (cd1, cd2) = (cdelt("CDELT1")?, cdelt("CDELT2")?);
    let (dx, dy) = (cd1.abs().to_radians(), cd2.abs().to_radians());
    if (dx / dy - 1.0).abs() > 0.01 {
        bail!(
            "{path}: pixels are not square (|CDELT1| = {}″, |CDELT2| = {}″)",
            cd1.abs() * 3600.0,
            cd2.abs() * 3600.0
        );
    }
    let blank = data.iter().filter(|v| !v.is_finite()).count();
    if blank > 0 {
        eprintln!("warning: {path}: {blank} blank (NaN) pixels taken as 0");
        for v in data.iter_mut().filter(|v| !v.is_finite()) {
            *v = 0.0;
        }
    }
    // 0-based reference pixel; WSClean's convention (n/2) when the header has none.
    let crpix = |k: &str, n: usize| -> anyhow::Result<f64> {
        match img.get_f64(k) {
            Some(v) if v.is_finite() => Ok(v - 1.0),
            Some(v) => bail!("{path}: {k} = {v}"),
            None => Ok((n / 2) as f64),
        }
    };
    let (mut px, mut py) = (crpix("CRPIX1", nx)?, crpix("CRPIX2", ny)?);
    // The operator's x runs towards decreasing RA (CDELT1 < 0) and y towards increasing Dec.
    let flip_x = cd1 > 0.0;
    let flip_y = cd2 < 0.0;
    if flip_x {
        px = (nx - 1) as f64 - px;
    }
    if flip_y {
        py = (ny - 1) as f64 - py;
    }
    let (rx, ry) = (px.round(), py.round());
    if (px - rx).abs() > 1e-6 || (py - ry).abs() > 1e-6 {
        eprintln!(
            "warning: {path}: the reference pixel ({}, {}) is not on a pixel centre; the truth is \
             shifted by less than half a pixel to put pixel ({rx}, {ry}) (0-based) at the phase \
             centre",
            px + 1.0,
            py + 1.0
        );
    }
    // Half-sizes of the canvas: the reference pixel sits at (half_x, half_y).
    let half = |r: f64, n: usize| -> anyhow::Result<(usize, usize)> {
        let r = r.clamp(-1e9, 1e9) as i64;
        let h = r.max(n as i64 - r).max(4);
        if h > 65_536 {
            bail!("{path}: the reference pixel is too far outside the image");
        }
        Ok((h as usize, (h - r) as usize))
    };
    let ((hx, ox), (hy, oy)) = (half(rx, nx)?, half(ry, ny)?);
    let (cx, cy) = (2 * hx, 2 * hy);
    let mut pixels = vec![0.0; cx * cy];
    for iy in 0..ny {
        let sy = if flip_y { ny - 1 - iy } else { iy };
        for ix in 0..nx {
            let sx = if flip_x { nx - 1 - ix } else { ix };
            pixels[(iy + oy) * cx + ix + ox] = data[sy * nx + sx];
        }
    }
    if (cx, cy) != (nx, ny) {
        eprintln!(
            "note: {path}: {nx}×{ny} pixels placed on a {cx}×{cy} grid centred on the reference \
             pixel"
        );
    }
    let crval = match (img.get_f64("CRVAL1"), img.get_f64("CRVAL2")) {
        (Some(a), Some(b)) => Some((a, b)),
        _ => None,
    };
    Ok(Truth {
        geometry: ImageGeometry::new(cx, cy, dx, dy)?,
        flux: pixels.iter().sum(),
        peak: pixels.iter().fold(0.0f64, |a, &b| a.max(b)),
        pixels,
        crval,
    })
}

/// Angle between two directions, radians.
fn separation(ra1: f64, dec1: f64, ra2: f64, dec2: f64) -> f64 {
    let h = ((dec2 - dec1) / 2.0).sin().powi(2)
        + dec1.cos() * dec2.cos() * ((ra2 - ra1) / 2.0).sin().powi(2);
    2.0 * h.sqrt().min(1.0).asin()
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    set_threads(args.compute.threads)?;
    if !(args.noise.is_finite() && args.noise >= 0.0) {
        bail!("--noise must be a σ ≥ 0 in Jy, got {}", args.noise);
    }
    // The writer refuses an existing --out or one inside --like; this also catches the truth
    // image under any spelling.
    super::common::check_output(&args.out, &[&args.image, &args.like])?;
    let img = read_image(&args.image)?;
    let truth = load_truth(&img)?;

    let field = args.field.as_ref().map(|f| match f.parse::<usize>() {
        Ok(id) => FieldSelector::Id(id),
        Err(_) => FieldSelector::Name(f.clone()),
    });
    let mut sel = Selection {
        field,
        spws: args.spw.clone(),
        channels: args.channels.as_ref().map(|c| (c[0], c[1])),
        ..Default::default()
    };
    let (info, field_id) = {
        let ms = VisFile::open(&args.like)?.into_ms("simulate, which writes a copy of --like,")?;
        let id = ms.resolve_field(&sel)?;
        (ms.info().clone(), id)
    };
    let max_chan = info
        .spws
        .iter()
        .map(|s| s.chan_freq.len())
        .max()
        .unwrap_or(1)
        .max(1);
    sel.chunk_rows = (SAMPLES_PER_CHUNK / max_chan).clamp(1_000, 200_000);

    let fld = &info.fields[field_id];
    let centre = fld.phase_dir.to_j2000_at(info.time_range.0 / 86400.0);
    let (ra0, dec0) = (
        centre.ra.to_degrees().rem_euclid(360.0),
        centre.dec.to_degrees(),
    );
    let g = truth.geometry;
    if let Some((ra, dec)) = truth.crval {
        let sep = separation(ra.to_radians(), dec.to_radians(), centre.ra, centre.dec);
        if sep > g.dx.max(g.dy) {
            eprintln!(
                "warning: the truth's CRVAL ({ra:.6}°, {dec:.6}°) is {:.2}″ from the phase centre \
                 of field {field_id} '{}' ({ra0:.6}°, {dec0:.6}° J2000): the truth is re-centred \
                 on the phase centre",
                sep.to_degrees() * 3600.0,
                fld.name
            );
        }
    }

    let bar = ProgressBar::new(info.n_rows as u64).with_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} rows ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message("simulating");
    let opts = NufftOptions {
        epsilon: args.compute.epsilon,
        ..Default::default()
    };
    let model = |m: &VisChunkMeta| -> anyhow::Result<StokesModel> {
        let vis: Vec<Complex<f64>> = dirty2ms(&g, &m.uvw, &m.freq, &truth.pixels, &opts)?;
        if let Some(&last) = m.rows.last() {
            bar.set_position(last + 1);
        }
        Ok(StokesModel {
            vis,
            sigma: args.noise,
        })
    };
    let stats = ms_io::simulate_like(&args.like, &args.out, &sel, args.seed, model)
        .with_context(|| format!("simulating {}", args.out.display()))?;
    bar.finish_and_clear();

    println!("{}", args.out.display());
    println!(
        "  like {} (field {field_id} '{}', phase centre {ra0:.6}° {dec0:.6}° J2000)",
        args.like.display(),
        fld.name
    );
    println!(
        "  truth {}: {}×{} pixels of {}, total flux {:.6} Jy, peak {:.6} Jy/pixel",
        args.image.display(),
        g.nx,
        g.ny,
        super::common::format_angle(g.dx),
        truth.flux,
        truth.peak
    );
    println!(
        "  rows written {} ({} simulated, {} outside the selection zeroed and flagged), \
         {} Stokes I samples",
        stats.rows, stats.simulated_rows, stats.flagged_out_rows, stats.simulated_samples
    );
    if args.noise > 0.0 {
        println!(
            "  noise σ = {} Jy per real part of Stokes I (σ_c = √2·σ = {:.6} Jy per parallel \
             hand), seed {}",
            args.noise,
            std::f64::consts::SQRT_2 * args.noise,
            args.seed
        );
    } else {
        println!("  noiseless (unit weights)");
    }
    println!("  done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}
