//! The simulation job (`interf-image simulate`): a new Measurement Set with the uv coverage,
//! frequencies and metadata of an existing one, and DATA = A·truth + noise. Unlike the other
//! jobs it writes, because the new Measurement Set is its product: atomically (a temporary copy
//! renamed into place), never touching the input.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ms_io::{Selection, StokesModel, VisChunkMeta, VisFile, WriteStats};
use num_complex::Complex;

use super::{Context, PipelineError, Result};
use crate::io::{read_image, FitsImage};
use crate::observe::{check, Observer};
use crate::operator::{dirty2ms, ImageGeometry, NufftOptions};

/// Model visibilities per NUFFT call: large enough that the per-call FFT of the image is
/// amortised, small enough to keep a chunk's DATA in a few hundred MB.
const SAMPLES_PER_CHUNK: usize = 2_000_000;

/// What `simulate` copies, and what it puts in the copy.
#[derive(Debug, Clone)]
pub struct SimulateOptions {
    /// Truth image, FITS, in Jy/pixel, with CDELT1/CDELT2 in degrees.
    pub image: PathBuf,
    /// Measurement Set whose uv coverage, frequencies and metadata to copy (read only).
    pub like: PathBuf,
    /// The new Measurement Set; must not exist.
    pub out: PathBuf,
    /// Noise σ of Stokes I per real component (Jy); 0: noiseless, with unit weights.
    pub noise: f64,
    /// Seed of the noise: the same seed gives the same data.
    pub seed: u64,
    /// The field whose phase centre the truth is placed at, and the spectral windows and
    /// channels to simulate (the others are zeroed and flagged).
    pub selection: Selection,
    pub nufft: NufftOptions,
}

impl SimulateOptions {
    /// The checks that need no data: [`simulate`] runs them first, and a caller that must check
    /// something of its own before the work (its output) can run them before that.
    pub fn check(&self) -> Result<()> {
        if !(self.noise.is_finite() && self.noise >= 0.0) {
            input_error!("--noise must be a σ ≥ 0 in Jy, got {}", self.noise);
        }
        Ok(())
    }
}

/// What was written, and the truth and field it came from.
#[derive(Debug, Clone)]
pub struct SimulateResult {
    pub stats: WriteStats,
    pub field_id: usize,
    pub field_name: String,
    /// The field's phase centre, J2000 at the start of the observation (RA, Dec degrees).
    pub phase_centre: (f64, f64),
    /// The truth's grid, centred on its reference pixel.
    pub geometry: ImageGeometry,
    /// Sum of the truth's pixels (Jy), and its peak (Jy/pixel).
    pub flux: f64,
    pub peak: f64,
    pub time: Duration,
}

/// Writes the simulated copy of `like` at `out` (observer stage "simulating", in rows). Notes
/// and warnings on the truth image (no BUNIT, blank pixels, a reference pixel off a pixel
/// centre, a CRVAL away from the phase centre) go to the observer's log.
pub fn simulate(opts: &SimulateOptions, obs: &dyn Observer) -> Result<SimulateResult> {
    let start = Instant::now();
    opts.check()?;
    let img = read_image(&opts.image)?;
    let truth = load_truth(&img, obs)?;

    let mut sel = opts.selection.clone();
    let (info, field_id) = {
        let ms = VisFile::open(&opts.like)?.into_ms("simulate, which writes a copy of --like,")?;
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
            obs.log(&format!(
                "warning: the truth's CRVAL ({ra:.6}°, {dec:.6}°) is {:.2}″ from the phase centre \
                 of field {field_id} '{}' ({ra0:.6}°, {dec0:.6}° J2000): the truth is re-centred \
                 on the phase centre",
                sep.to_degrees() * 3600.0,
                fld.name
            ));
        }
    }

    obs.stage("simulating", info.n_rows as u64);
    let mut done = 0;
    let model = |m: &VisChunkMeta| -> Result<StokesModel> {
        // A stop leaves no output: the simulator removes its temporary copy on any error.
        check(obs)?;
        let vis: Vec<Complex<f64>> = dirty2ms(&g, &m.uvw, &m.freq, &truth.pixels, &opts.nufft)?;
        if let Some(&last) = m.rows.last() {
            obs.advance((last + 1).saturating_sub(done));
            done = done.max(last + 1);
        }
        Ok(StokesModel {
            vis,
            sigma: opts.noise,
        })
    };
    let stats =
        ms_io::simulate_like::<PipelineError>(&opts.like, &opts.out, &sel, opts.seed, model)
            .with_context(|| format!("simulating {}", opts.out.display()))?;
    Ok(SimulateResult {
        stats,
        field_id,
        field_name: fld.name.clone(),
        phase_centre: (ra0, dec0),
        geometry: g,
        flux: truth.flux,
        peak: truth.peak,
        time: start.elapsed(),
    })
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

fn check_bunit(img: &FitsImage, obs: &dyn Observer) -> Result<()> {
    let path = img.path.display();
    match img.get_str("BUNIT") {
        None => {
            obs.log(&format!(
                "warning: {path} has no BUNIT; taking its pixels as Jy/pixel"
            ));
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
                "JY/BEAM" => input_error!(
                    "{path} is in Jy/beam (BUNIT = '{u}'): a sky model must be in Jy/pixel. \
                     Use a model image (e.g. WSClean's -model.fits), not a restored or dirty image"
                ),
                _ => input_error!(
                    "{path}: BUNIT = '{u}'; the truth image must be in Jy/pixel (JY/PIXEL)"
                ),
            }
        }
    }
}

/// Puts the truth on the operator's grid: flips axes that run the other way, and pads so that
/// the reference pixel lands on the grid centre (even sizes, at least 8, as the NUFFT needs).
fn load_truth(img: &FitsImage, obs: &dyn Observer) -> Result<Truth> {
    let path = img.path.display();
    check_bunit(img, obs)?;
    let (ny, nx, mut data) = img.plane();
    if img.shape.iter().rev().skip(2).any(|&n| n > 1) {
        obs.log(&format!(
            "warning: {path} has shape {:?}; using its first plane",
            img.shape
        ));
    }
    let cdelt = |k: &str| -> Result<f64> {
        let Some(v) = img.get_f64(k) else {
            input_error!("{path} has no {k}: the pixel scale is needed (degrees)");
        };
        if !(v.is_finite() && v != 0.0) {
            input_error!("{path}: {k} = {v} is not a pixel scale");
        }
        Ok(v)
    };
    let (cd1, cd2) = (cdelt("CDELT1")?, cdelt("CDELT2")?);
    let (dx, dy) = (cd1.abs().to_radians(), cd2.abs().to_radians());
    if (dx / dy - 1.0).abs() > 0.01 {
        input_error!(
            "{path}: pixels are not square (|CDELT1| = {}″, |CDELT2| = {}″)",
            cd1.abs() * 3600.0,
            cd2.abs() * 3600.0
        );
    }
    let blank = data.iter().filter(|v| !v.is_finite()).count();
    if blank > 0 {
        obs.log(&format!(
            "warning: {path}: {blank} blank (NaN) pixels taken as 0"
        ));
        for v in data.iter_mut().filter(|v| !v.is_finite()) {
            *v = 0.0;
        }
    }
    // 0-based reference pixel; WSClean's convention (n/2) when the header has none.
    let crpix = |k: &str, n: usize| -> Result<f64> {
        match img.get_f64(k) {
            Some(v) if v.is_finite() => Ok(v - 1.0),
            Some(v) => input_error!("{path}: {k} = {v}"),
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
        obs.log(&format!(
            "warning: {path}: the reference pixel ({}, {}) is not on a pixel centre; the truth is \
             shifted by less than half a pixel to put pixel ({rx}, {ry}) (0-based) at the phase \
             centre",
            px + 1.0,
            py + 1.0
        ));
    }
    // Half-sizes of the canvas: the reference pixel sits at (half_x, half_y).
    let half = |r: f64, n: usize| -> Result<(usize, usize)> {
        let r = r.clamp(-1e9, 1e9) as i64;
        let h = r.max(n as i64 - r).max(4);
        if h > 65_536 {
            input_error!("{path}: the reference pixel is too far outside the image");
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
        obs.log(&format!(
            "note: {path}: {nx}×{ny} pixels placed on a {cx}×{cy} grid centred on the reference \
             pixel"
        ));
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
