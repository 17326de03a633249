//! The CLEAN job (`interf-image clean`): model, residual, restored image and PSF as WSClean
//! makes them (Högbom minor cycles inside Cotton–Schwab major cycles), with their FITS headers,
//! and the model's reduced χ² against every visibility.

use std::time::{Duration, Instant};

use super::dirty::{prepare, DirtyOptions};
use super::image::NoiseSource;
use super::resources::{check_memory, gridding_memory};
use super::vis::merge_by_frequency;
use super::Result;
use crate::imaging::{clean_with_progress, estimate_noise, fit, ImagingError, NoiseEstimate};
use crate::imaging::{CleanResult as Cleaned, StopReason};
use crate::io::{HeaderValue, SkyHeader};
use crate::observe::{Interrupted, Observer};

/// What `clean` images and how it CLEANs.
#[derive(Debug, Clone)]
pub struct CleanOptions {
    /// The selection, image and gridding, as `dirty` makes them.
    pub image: DirtyOptions,
    pub clean: crate::imaging::CleanOptions,
    /// The visibility noise of the model's reduced χ², as `image` sets it.
    pub noise: NoiseSource,
}

impl CleanOptions {
    /// The checks that need no data: [`clean`] runs them first, and a caller that must check
    /// something of its own before the work (its outputs) can run them before that.
    pub fn check(&self) -> Result<()> {
        let (img, c) = (&self.image, &self.clean);
        img.check_size()?;
        let (nx, ny) = (img.nx, img.ny);
        check_memory(
            gridding_memory(nx, ny, img.padding, 12),
            &format!("CLEAN of a {nx}×{ny} image"),
            img.max_memory,
        )?;
        if c.niter == 0 {
            input_error!("--niter must be at least 1 (use `interf-image dirty` for no CLEAN)");
        }
        if let Some(a) = c.auto_threshold {
            if !(a > 0.0 && a.is_finite()) {
                input_error!("--auto-threshold must be ≥ 0 (0 turns it off), got {a}");
            }
        }
        // The library checks these too; checking before reading the MS fails fast.
        if !(c.gain > 0.0 && c.gain <= 1.0) {
            input_error!("--gain must be in (0, 1], got {}", c.gain);
        }
        if !(c.mgain > 0.0 && c.mgain <= 1.0) {
            input_error!("--mgain must be in (0, 1], got {}", c.mgain);
        }
        if !(c.threshold >= 0.0 && c.threshold.is_finite()) {
            input_error!("--threshold must be ≥ 0 Jy, got {}", c.threshold);
        }
        if c.max_major_cycles == 0 {
            input_error!("--nmiter must be at least 1");
        }
        Ok(())
    }
}

/// CLEAN's products and how it went, their headers, and the model's fit to the data.
pub struct CleanResult {
    /// Model (Jy/pixel), residual, restored image, PSF, beam, iterations, why it stopped.
    pub clean: Cleaned,
    /// The header of the residual, restored image and PSF (Jy/beam, with the beam and the
    /// CLEAN parameters); the model's is the same in Jy/pixel.
    pub header: SkyHeader,
    pub model_header: SkyHeader,
    pub field_id: usize,
    pub field_name: String,
    /// Pixel size, radians.
    pub scale: f64,
    /// Sum of the model, Jy.
    pub model_flux: f64,
    /// Reduced χ² of the model over every usable visibility, with σ² = `noise_factor`/w.
    pub chi2: f64,
    pub noise_factor: f64,
    /// The noise measured from successive integrations; `None`: σ² = 1/WEIGHT.
    pub noise: Option<NoiseEstimate>,
    pub read_time: Duration,
    /// Imaging and CLEAN.
    pub clean_time: Duration,
}

/// Reads the selection (observer stage "reading"), CLEANs it (stage "CLEAN", in minor
/// iterations, the residual peak as status) and measures the model against the visibilities.
/// A diverging CLEAN stops with the last sane model and says so in the observer's log.
pub fn clean(opts: &CleanOptions, obs: &dyn Observer) -> Result<CleanResult> {
    opts.check()?;
    let vis = &opts.image.vis;
    if !vis.exists() {
        input_error!("{}: no such Measurement Set", vis.display());
    }
    let prep = prepare(&opts.image, obs)?;
    let start = Instant::now();

    obs.stage("CLEAN", opts.clean.niter as u64);
    obs.status("gridding");
    let mut done = 0;
    let r = clean_with_progress(&prep.chunks, &prep.imaging, &opts.clean, |p| {
        obs.advance(p.iterations.saturating_sub(done) as u64);
        done = done.max(p.iterations);
        obs.status(&format!(
            "major {} peak {:.3e} Jy/beam → {:.3e}",
            p.major_cycles, p.peak, p.stop_level
        ));
        !obs.stop_requested()
    })
    .map_err(|e| match e {
        ImagingError::Interrupted => Interrupted.into(),
        other => super::PipelineError::from(other),
    })?;
    if r.stop == StopReason::Diverged {
        obs.log(&format!(
            "warning: CLEAN diverged (a major cycle raised the residual peak); stopped after {} \
             iterations with the last sane model: try a lower --mgain or --gain, a higher \
             --auto-threshold or --threshold, or a larger image",
            r.iterations
        ));
    }
    let clean_time = start.elapsed();
    // The model against every visibility with `image`'s noise estimate: the two commands'
    // numbers compare directly.
    let merged = merge_by_frequency(prep.chunks.clone());
    let noise = match opts.noise {
        NoiseSource::Auto => estimate_noise(&merged),
        NoiseSource::Weights => None,
    };
    let noise_factor = noise.map_or(1.0, |n| n.weight_factor);
    let geometry = &prep.imaging.geometry;
    let chi2 = fit::reduced_chi2(
        &merged,
        geometry,
        &r.model,
        noise_factor,
        &prep.imaging.nufft,
    )?;

    let c = &opts.clean;
    let mut header = prep.header(r.stats.gridded);
    header.beam = Some(r.beam);
    header.extra.extend([
        ("NITER".into(), HeaderValue::I64(c.niter as i64)),
        ("GAIN".into(), HeaderValue::F64(c.gain)),
        ("MGAIN".into(), HeaderValue::F64(c.mgain)),
        ("THRESH".into(), HeaderValue::F64(c.threshold)),
        (
            "AUTOTHR".into(),
            HeaderValue::F64(c.auto_threshold.unwrap_or(0.0)),
        ),
        ("MINORIT".into(), HeaderValue::I64(r.iterations as i64)),
        ("MAJORIT".into(), HeaderValue::I64(r.major_cycles as i64)),
    ]);
    let mut model_header = header.clone();
    model_header.bunit = "JY/PIXEL".into();
    Ok(CleanResult {
        model_flux: r.model.iter().map(|&v| v as f64).sum(),
        clean: r,
        header,
        model_header,
        field_id: prep.field_id,
        field_name: prep.info.fields[prep.field_id].name.clone(),
        scale: prep.scale,
        chi2,
        noise_factor,
        noise,
        read_time: prep.read_time,
        clean_time,
    })
}
