//! The posterior imaging job (`interf-image image`, and plain `interf-image VIS.ms`): read a
//! selection, make the classic products at the posterior's geometry (dirty image, PSF, two deep
//! CLEANs), find compact components and the window, set the noise and the flux scale, sample the
//! posterior (after optional self-calibration rounds), and measure it against the data and
//! against CLEAN.
//!
//! The enums derive `clap::ValueEnum` so that the CLI and the Python module parse the same
//! spellings; nothing here parses arguments or prints.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ms_io::{Selection, VisChunk, VisFile};
use rand::rngs::StdRng;
use rand::SeedableRng;

use super::prior_check::{prior_check, Outcome};
use super::resources::check_network_batch;
use super::vis::{
    count_usable, longest_baseline, merge_by_frequency, read_vis, shortest_baseline_flux,
    sky_header, usable_data, vis_gamma_factors,
};
use super::Result;
use crate::imaging::{
    clean_window, compact_pixels, estimate_noise, make_dirty_and_psf, solve_gains, CleanResult,
    CompactOptions, DirtyProducts, ImagingOptions, NoiseEstimate, SelfcalOptions, Weighting,
};
use crate::io::{HeaderValue, SkyHeader};
use crate::likelihood::closure::ClosureLikelihood;
use crate::likelihood::{CompactMarginal, GaussianLikelihood};
use crate::observe::Observer;
use crate::operator::nufft::ms2dirty;
use crate::operator::{
    CellAveraged, CellNoise, ForwardOperator, Gridded, GriddedVisibilities, ImageGeometry, Masked,
    Nufft, NufftOptions, Scaled,
};
use crate::prior::ScoreModel;
use crate::sample::posterior::{sample_posterior, Method, PosteriorOptions};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LikelihoodKind {
    /// `visibilities` up to 100 000 usable visibilities (exact, still cheap), `gridded` beyond.
    Auto,
    /// Visibilities averaged into the cells of a uv grid matched to the image (Dia et al.
    /// 2023), each cell modelled exactly as the mean of its visibilities: sampling cost
    /// independent of the number of visibilities (gridding them once is linear in it).
    Gridded,
    /// Every unflagged visibility through the NUFFT: exact, cost grows with the data.
    Visibilities,
}

/// Which quantities of the visibilities the likelihood fits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DataKind {
    /// The complex visibilities (calibrated data).
    Vis,
    /// Closure phases only (VLBI data whose station phases cannot be trusted), with a
    /// total-flux constraint for the scale.
    Cphase,
    /// Closure phases and log closure amplitudes (neither station phases nor amplitudes
    /// trusted), with a total-flux constraint; the EHT's choice.
    CphaseLcamp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CellModel {
    Auto,
    Exact,
    Centre,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum CompactMode {
    Auto,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WindowMode {
    Auto,
    Off,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum NoiseSource {
    /// σ from the scatter of successive integrations, shaped by the MS weights.
    Auto,
    /// σ² = 1/WEIGHT as written in the Measurement Set.
    Weights,
}

/// What `image` does; [`ImageOptions::new`] gives the command line's defaults.
#[derive(Debug, Clone)]
pub struct ImageOptions {
    /// The Measurement Set or UVFITS file (opened read-only).
    pub vis: PathBuf,
    pub selection: Selection,
    /// The prior's folder, for its log-density reference and the outputs' PRIOR; `None`: the
    /// built-in prior.
    pub prior_dir: Option<PathBuf>,
    /// The sampler (`n_samples` posterior samples). Closure data are always sampled with DPS.
    pub posterior: PosteriorOptions,
    pub likelihood: LikelihoodKind,
    /// Oversampling of the gridded likelihood's uv grid.
    pub grid_padding: usize,
    pub cell_model: CellModel,
    /// Gridded likelihood: a cell's σ from the scatter of its visibilities when it holds at
    /// least this many; 0: from the weights.
    pub cell_scatter_min: usize,
    /// Pixel size, radians. `None`: a third of the theoretical beam.
    pub scale: Option<f64>,
    /// Jy/pixel of a prior image's value 1. `None`: from the data (see the CLI's help).
    pub flux_scale: Option<f64>,
    pub compact: CompactMode,
    pub compact_max: usize,
    pub window: WindowMode,
    /// A disk of this radius (radians) around the phase centre where the sky may be non-zero.
    pub window_radius: Option<f64>,
    /// Self-calibration rounds before the final posterior, and how each solves.
    pub selfcal_rounds: usize,
    pub selfcal: SelfcalOptions,
    pub data: DataKind,
    /// Total flux (Jy) closure likelihoods are held to; `None`: the shortest baselines'.
    pub total_flux: Option<f64>,
    pub noise: NoiseSource,
    pub nufft: NufftOptions,
    /// Most memory the network batch may take; `None`: what is available.
    pub max_memory: Option<u64>,
}

impl ImageOptions {
    /// The defaults of `interf-image VIS.ms`.
    pub fn new(vis: impl Into<PathBuf>) -> Self {
        Self {
            vis: vis.into(),
            selection: Selection::default(),
            prior_dir: None,
            posterior: PosteriorOptions::default(),
            likelihood: LikelihoodKind::Auto,
            grid_padding: 4,
            cell_model: CellModel::Auto,
            cell_scatter_min: 0,
            scale: None,
            flux_scale: None,
            compact: CompactMode::Auto,
            compact_max: 32,
            window: WindowMode::Off,
            window_radius: None,
            selfcal_rounds: 0,
            selfcal: SelfcalOptions::default(),
            data: DataKind::Vis,
            total_flux: None,
            noise: NoiseSource::Auto,
            nufft: NufftOptions::default(),
            max_memory: None,
        }
    }

    /// The prior's name as the outputs record it.
    pub fn prior_name(&self) -> String {
        super::prior_name(self.prior_dir.as_deref())
    }

    /// The sampler actually used: DPS for closure data, which are not linear-Gaussian.
    pub fn method(&self) -> Method {
        match self.data {
            DataKind::Vis => self.posterior.method,
            _ => Method::Dps,
        }
    }
}

/// One self-calibration round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SelfcalRound {
    pub round: usize,
    pub reduced_chi2_mean_before: f64,
    pub gains_solved: usize,
    pub intervals: usize,
    pub rms_amplitude: f64,
    pub rms_phase_deg: f64,
}

/// One compact component of the posterior.
#[derive(Debug, Clone)]
pub struct CompactComponent {
    pub pixel_yx: [usize; 2],
    /// ΔRA, ΔDec from the phase centre, arcsec.
    pub offset_asec: [f64; 2],
    pub flux_mean: f64,
    pub flux_std: f64,
}

/// Everything `image` found: images in Jy/pixel (posterior) and Jy/beam (classic), row-major
/// `side × side`, with their FITS headers, and the numbers that judge them.
pub struct ImageResult {
    pub side: usize,
    /// Pixel size, radians.
    pub scale: f64,
    /// Header of the posterior products (Jy/pixel, with PRIOR, METHOD, … keywords).
    pub header: SkyHeader,
    /// Header of the classic products (Jy/beam, natural weighting).
    pub beam_header: SkyHeader,
    /// Posterior samples in Jy/pixel, one after another.
    pub samples: Vec<f32>,
    pub n_samples: usize,
    pub mean: Vec<f32>,
    pub std: Vec<f32>,
    pub dirty: DirtyProducts,
    /// Dirty image of the mean's residual visibilities (natural weighting, Jy/beam).
    pub residual_dirty: Vec<f32>,
    /// Per usable visibility: uv distance (λ), |data|, |mean's model|.
    pub uv_dist: Vec<f64>,
    pub data_amp: Vec<f32>,
    pub model_amp: Vec<f32>,
    /// Reduced χ² of each sample over every usable visibility.
    pub chi2: Vec<f64>,
    /// The same over the likelihood's own data (cells, closures).
    pub chi2_lik: Vec<f64>,
    pub chi2_mean: f64,
    /// CLEAN's model against the same visibilities and noise.
    pub chi2_clean: Option<f64>,
    /// With self-calibration: the mean against the data as they came.
    pub chi2_raw: Option<f64>,
    /// Closure data: the mean's reduced χ² over the closures.
    pub chi2_closure_mean: Option<f64>,
    /// Closure data: closure phases and log closure amplitudes used.
    pub closure_counts: Option<(usize, usize)>,
    pub clean: Option<CleanResult>,
    pub compact: Vec<CompactComponent>,
    /// mean/std of the samples at CLEAN's resolution.
    pub beam_significance: Option<Vec<f32>>,
    pub prior_check: Outcome,
    pub flux_scale: f64,
    pub noise: Option<NoiseEstimate>,
    /// σ² = factor / weight.
    pub noise_factor: f64,
    pub n_usable: usize,
    pub n_data: usize,
    /// The likelihood used (`Auto` resolved).
    pub likelihood: LikelihoodKind,
    pub method: Method,
    pub window_pixels: Option<usize>,
    pub selfcal: Vec<SelfcalRound>,
    /// Total flux of the samples, Jy: mean and std.
    pub total_flux: (f64, f64),
    pub t_sample: Duration,
}

/// Images one observation under `model` (the prior `opts.prior_dir` names, or the built-in
/// one): the posterior samples, their mean and std, the classic products at the same geometry
/// and the numbers that judge them. Progress: the stages "reading" (rows) and "sampling"
/// (reverse steps, once per self-calibration round and for the final posterior).
pub fn image(model: &ScoreModel, o: &ImageOptions, obs: &dyn Observer) -> Result<ImageResult> {
    let popts = &o.posterior;
    if popts.n_samples == 0 || popts.steps == 0 {
        input_error!("--samples and --steps must be at least 1");
    }
    let closures = o.data != DataKind::Vis;
    if closures && o.selfcal_rounds > 0 {
        input_error!(
            "--selfcal fits station gains, which --data {:?} is already blind to: drop one of them",
            o.data
        );
    }
    let side = model.image_size();
    check_network_batch(
        &model.config().network,
        popts.batch.min(popts.n_samples),
        o.method() == Method::Dps,
        o.max_memory,
    )?;
    let ms = VisFile::open(&o.vis)?;
    let info = ms.info().clone();
    let field_id = ms.resolve_field(&o.selection)?;
    let mut chunks = merge_by_frequency(read_vis(&ms, &o.selection, obs)?);
    let n_usable = count_usable(&chunks, &o.vis)?;
    // A third of the theoretical beam: fine enough to resolve the beam, wide enough at the
    // prior's 64 pixels to hold a source of a few beams (3C 273's core and jet).
    let scale = o
        .scale
        .unwrap_or_else(|| (1.0 / 3.0) / longest_baseline(&chunks));
    let geometry = ImageGeometry::new(side, side, scale, scale)?;
    if closures && popts.method == Method::Cla {
        obs.log("closure likelihood: sampling with DPS (the convolved approximation needs a linear-Gaussian likelihood)");
    }
    let opts = PosteriorOptions {
        method: o.method(),
        ..popts.clone()
    };
    // Self-calibration rounds: a posterior (at most 16 samples) gives a model, station gains
    // are solved against it and divided out, and the next round images the corrected data.
    let raw_chunks = (o.selfcal_rounds > 0).then(|| chunks.clone());
    let mut selfcal = Vec::new();
    for round in 0..o.selfcal_rounds {
        let short = PosteriorOptions {
            n_samples: opts.n_samples.min(16),
            ..opts.clone()
        };
        let pass = posterior_pass(o, model, &chunks, geometry, &o.nufft, &short, n_usable, obs)?;
        let sol = {
            let c = &chunks[0];
            let mv = full_model_vis(c, &pass.model_vis);
            solve_gains(c, &mv, &o.selfcal)?
        };
        sol.apply(&mut chunks[0]);
        let (amp, phase) = sol.rms();
        obs.log(&format!(
            "self-calibration round {}: mean's χ² {:.3} before; {} gains over {} intervals, rms |g|−1 {:.4}, phase {:.2}°",
            round + 1, pass.chi2_mean, sol.n_solved(), sol.intervals.len(), amp, phase
        ));
        selfcal.push(SelfcalRound {
            round: round + 1,
            reduced_chi2_mean_before: pass.chi2_mean,
            gains_solved: sol.n_solved(),
            intervals: sol.intervals.len(),
            rms_amplitude: amp,
            rms_phase_deg: phase,
        });
    }
    let pass = posterior_pass(o, model, &chunks, geometry, &o.nufft, &opts, n_usable, obs)?;
    let c = &chunks[0];
    let npix = side * side;
    let n_samples = pass.samples.len();
    // With self-calibration, the mean against the data as they came, for honesty.
    let chi2_raw = raw_chunks.as_ref().map(|raw| {
        let f = match o.noise {
            NoiseSource::Auto => estimate_noise(raw).map_or(1.0, |e| e.weight_factor),
            NoiseSource::Weights => 1.0,
        };
        visibility_chi2(&pass.vis_nufft, &raw[0], f, &pass.mean).0
    });
    // The samples against the data themselves, whatever the likelihood met: for the gridded
    // likelihood the cells are fewer than the visibilities and blind to variation inside a
    // cell, so its own χ² is not the yardstick.
    let chi2: Vec<f64> = pass
        .phys
        .chunks(npix)
        .map(|s| visibility_chi2(&pass.vis_nufft, c, pass.factor, s).0)
        .collect();
    let (residual_dirty, uv_dist, data_amp, model_amp) = residual_products(
        c,
        &pass.model_vis,
        &geometry,
        &o.nufft,
        pass.dirty.stats.weight_sum,
    )?;
    // CLEAN's model against the same visibilities and noise: the yardstick a user knows.
    let chi2_clean = pass
        .clean_baseline
        .as_ref()
        .map(|cb| visibility_chi2(&pass.vis_nufft, c, pass.factor, &cb.model).0);
    let compact = compact_summary(&pass.compact_px, &pass.phys, &geometry);
    // Significance at CLEAN's resolution: each sample convolved with the restoring beam, so
    // that the posterior and CLEAN are judged on the same footing (a pixel of the mean is far
    // smaller than a beam, and its significance per pixel far lower).
    let beam_significance = pass
        .clean_baseline
        .as_ref()
        .map(|cb| beam_significance(&pass.phys, n_samples, &geometry, &cb.pixel_beam));
    // Where the samples sit among the images the prior was made for (Feng et al. 2023).
    let prior_check = prior_check(model, o.prior_dir.as_deref(), &pass.diffuse, popts.seed)?;

    let mut header = sky_header(&info, field_id, &chunks, scale, "JY/PIXEL");
    header.extra = vec![
        ("PRIOR".into(), HeaderValue::Str(o.prior_name())),
        (
            "METHOD".into(),
            HeaderValue::Str(format!("{:?}", opts.method).to_uppercase()),
        ),
        ("NSAMPLES".into(), HeaderValue::I64(n_samples as i64)),
        ("NSTEPS".into(), HeaderValue::I64(opts.steps as i64)),
        ("SEED".into(), HeaderValue::I64(opts.seed as i64)),
        ("ALPHA".into(), HeaderValue::F64(opts.alpha as f64)),
        ("FLUXSCL".into(), HeaderValue::F64(pass.flux_scale)),
        ("NOISEFAC".into(), HeaderValue::F64(pass.factor)),
    ];
    let mut beam_header = sky_header(&info, field_id, &chunks, scale, "JY/BEAM");
    beam_header.extra = vec![("WEIGHTNG".into(), HeaderValue::Str("natural".into()))];
    let total: Vec<f64> = pass
        .phys
        .chunks(npix)
        .map(|s| s.iter().map(|&v| v as f64).sum())
        .collect();
    let n = n_samples.max(1) as f64;
    let fmean = total.iter().sum::<f64>() / n;
    let fstd = (total.iter().map(|f| (f - fmean).powi(2)).sum::<f64>() / n).sqrt();
    Ok(ImageResult {
        side,
        scale,
        header,
        beam_header,
        n_samples,
        mean: pass.mean,
        std: pass.std,
        dirty: pass.dirty,
        residual_dirty,
        uv_dist,
        data_amp,
        model_amp,
        chi2,
        chi2_lik: pass.chi2_lik,
        chi2_mean: pass.chi2_mean,
        chi2_clean,
        chi2_raw,
        chi2_closure_mean: pass.chi2_closure_mean,
        closure_counts: pass.closure_counts,
        clean: pass.clean_baseline,
        compact,
        beam_significance,
        prior_check,
        flux_scale: pass.flux_scale,
        noise: pass.noise,
        noise_factor: pass.factor,
        n_usable,
        n_data: pass.n_data,
        likelihood: pass.likelihood,
        method: opts.method,
        window_pixels: pass
            .window
            .as_ref()
            .map(|w| w.iter().filter(|&&m| m).count()),
        selfcal,
        total_flux: (fmean, fstd),
        t_sample: pass.t_sample,
        samples: pass.phys,
    })
}

/// One posterior run on `chunks`: noise, classic products, CLEAN, compact components, flux
/// scale, the samples, their mean and std, and the mean's χ².
#[allow(clippy::too_many_arguments)]
fn posterior_pass(
    o: &ImageOptions,
    model: &ScoreModel,
    chunks: &[VisChunk],
    geometry: ImageGeometry,
    nufft_opts: &NufftOptions,
    opts: &PosteriorOptions,
    n_usable: usize,
    obs: &dyn Observer,
) -> Result<Pass> {
    let side = geometry.nx;
    // Classic products at the posterior's geometry, natural weighting (what the likelihood sees).
    let mut img_opts = ImagingOptions::new(geometry, Weighting::Natural);
    img_opts.nufft = nufft_opts.clone();
    let dirty = make_dirty_and_psf(chunks, &img_opts)?;
    if let Some(f) = o.flux_scale {
        if !(f > 0.0 && f.is_finite()) {
            input_error!("--flux-scale must be positive, got {f}");
        }
    }

    // Noise per real component of each usable visibility.
    let noise = match o.noise {
        NoiseSource::Auto => estimate_noise(chunks),
        NoiseSource::Weights => None,
    };
    let factor = noise.map_or(1.0, |n| n.weight_factor);

    // The likelihood, in the prior's normalised units (flux scale folded into the operator).
    let c = match chunks {
        [c] => c,
        _ => input_error!(
            "{} has spectral windows with different channel frequencies; select one with --spw",
            o.vis.display()
        ),
    };
    // Every usable visibility, its σ, and one NUFFT plan for the likelihood and the χ².
    let mask: Vec<bool> = c.weight.iter().map(|&w| w > 0.0).collect();
    let vis_nufft = Nufft::new(geometry, &c.uvw, &c.freq, Some(&mask), nufft_opts)?;
    let (y_vis, sigma_vis) = usable_data(c, factor);

    // Two CLEANs at the posterior's geometry (natural weighting, as the likelihood), 0.1 s
    // each, both deep (1σ, as a careful user cleans a bright source: at 3σ of a residual
    // still full of the core's sidelobes CLEAN stopped after 79 components on 3C 273, χ² 147
    // against 3.1 at 1σ). The report's baseline is WSClean's kind, negative components
    // allowed; compact components are looked for in a positive-only one, since they are
    // emission and on the sparse VLBA coverage of 3C 279 CLEAN with negative components
    // diverged (χ² 8·10²⁹).
    let deep_clean = |allow_negative: bool, what: &str| {
        crate::imaging::clean(
            chunks,
            &img_opts,
            &crate::imaging::CleanOptions {
                niter: 10_000,
                auto_threshold: Some(1.0),
                allow_negative,
                ..Default::default()
            },
        )
        .map_err(|e| obs.log(&format!("warning: no {what}: {e}")))
        .ok()
    };
    let clean_baseline = deep_clean(true, "CLEAN image in the report");
    let clean_positive = match (o.compact, o.window) {
        (CompactMode::Off, WindowMode::Off) => None,
        _ => deep_clean(false, "compact components or window (CLEAN failed)"),
    };
    let compact_px = match &clean_positive {
        Some(cb) if o.compact == CompactMode::Auto && o.data == DataKind::Vis => compact_pixels(
            &cb.model,
            &cb.restored,
            cb.residual_sigma,
            &CompactOptions {
                max_pixels: o.compact_max,
                ..Default::default()
            },
        ),
        _ => Vec::new(),
    };
    // The window: where the positive CLEAN's restored image is above 5σ of its residual,
    // grown by one restoring beam (major axis), and every compact pixel.
    let window = match (o.window, &clean_positive) {
        (WindowMode::Off, _) => None,
        (WindowMode::Auto, Some(cb)) => Some(clean_window(
            &cb.restored,
            side,
            side,
            cb.residual_sigma,
            5.0,
            cb.pixel_beam.major,
            &compact_px,
        )),
        (WindowMode::Auto, None) => input_error!(
            "--window auto needs a CLEAN image of {}, and CLEAN failed (see the warning above); \
             use --window off",
            o.vis.display()
        ),
    };
    let window = match o.window_radius {
        None => window,
        Some(r) => {
            let disk = disk_window(side, r / geometry.dx.abs());
            Some(match window {
                Some(w) => w.iter().zip(&disk).map(|(&a, &b)| a && b).collect(),
                None => disk,
            })
        }
    };
    if let Some(w) = &window {
        if !w.iter().any(|&m| m) {
            input_error!(
                "the window (--window auto: emission above 5σ in the CLEAN image, and \
                 --window-radius) of {} holds no pixel; use --window off or a larger radius",
                o.vis.display()
            );
        }
    }
    // The compact fluxes by least squares with no diffuse emission, in Jy/pixel: the prior's
    // flux scale is the peak of what they leave in the dirty image, so the diffuse emission
    // fills the prior's range however bright the core.
    let diffuse_dirty = if compact_px.is_empty() {
        dirty.dirty.clone()
    } else {
        let base = GaussianLikelihood::new(&vis_nufft, y_vis.clone(), &sigma_vis)?;
        let cm = CompactMarginal::new(base, compact_px.clone())?;
        let zero = vec![0.0f32; geometry.len()];
        let compact_ls = cm.with_fluxes(&zero, &cm.best_fluxes(&zero)?);
        let mut mv = vec![0.0f32; vis_nufft.data_len()];
        vis_nufft.forward(&compact_ls, &mut mv);
        residual_products(c, &mv, &geometry, nufft_opts, dirty.stats.weight_sum)?.0
    };
    let diffuse_peak = diffuse_dirty
        .iter()
        .enumerate()
        .filter(|(k, _)| window.as_ref().is_none_or(|w| w[*k]))
        .map(|(_, &v)| v)
        .fold(f32::MIN, f32::max);
    // Closures: the total flux they are held to, and (the dirty image of data with
    // uncalibrated phases being no guide) a flux scale at which the prior's typical image holds it.
    let closure_total = match o.data {
        DataKind::Vis => None,
        _ => Some(match o.total_flux {
            Some(f) if f > 0.0 && f.is_finite() => f,
            Some(f) => input_error!("--total-flux must be positive, got {f}"),
            None => shortest_baseline_flux(c),
        }),
    };
    let flux_scale =
        match o.flux_scale {
            Some(f) => f,
            None if closure_total.is_some() => {
                prior_flux_scale(model, closure_total.unwrap_or(1.0), o.posterior.seed)?
            }
            None if diffuse_peak > 0.0 => diffuse_peak as f64,
            None => input_error!(
            "the dirty image has no positive peak ({diffuse_peak} Jy/beam{}): give --flux-scale",
            if compact_px.is_empty() { "" } else { " once the compact components are fitted" }
        ),
        };

    let batches = opts.n_samples.div_ceil(opts.batch);
    obs.stage("sampling", (batches * opts.steps) as u64);
    let t_sample = Instant::now();
    let scale_f32 = flux_scale as f32;
    // On a simulated 3C 273 observation the exact visibility likelihood fitted the data far
    // better (reduced χ² 5 against 7500 for the mean, over all visibilities) than the gridded
    // one, whose cell-centre approximation dominates for bright extended emission; gridding
    // pays only when the visibilities are too many to evaluate at every step.
    let likelihood = match o.likelihood {
        LikelihoodKind::Auto if n_usable <= 100_000 => LikelihoodKind::Visibilities,
        LikelihoodKind::Auto => LikelihoodKind::Gridded,
        l => l,
    };
    let mut chi2_closure_mean = None;
    let mut closure_counts = None;
    let (draws, n_data) = match likelihood {
        _ if o.data != DataKind::Vis => {
            let total = closure_total.unwrap_or(1.0);
            let lik = closure_likelihood(
                o, c, &geometry, nufft_opts, factor, scale_f32, total, &window, obs,
            )?;
            let mut samples = sample_posterior(model, &lik, opts, obs)?;
            // Closure phases carry no absolute position: each sample is free to shift, and
            // their mean would smear. Without a window to pin it, every sample's centre of
            // light is moved to the phase centre (whole pixels, zero fill), as VLBI imagers
            // centre closure-only images.
            if window.is_none() {
                samples.iter_mut().for_each(|x| recentre(x, side));
            }
            let chi2_lik = samples.iter().map(|x| lik.reduced_chi2(x)).collect();
            let n = samples.len().max(1) as f32;
            let mut m = vec![0.0f32; geometry.len()];
            for x in &samples {
                m.iter_mut().zip(x).for_each(|(a, &b)| *a += b / n);
            }
            if let Some(w) = &window {
                m.iter_mut()
                    .zip(w)
                    .filter(|(_, &k)| !k)
                    .for_each(|(a, _)| *a = 0.0);
            }
            chi2_closure_mean = Some(lik.reduced_chi2(&m));
            let (np, na) = lik.counts();
            closure_counts = Some((np, na));
            obs.log(&format!(
                "closure likelihood: {np} closure phases, {na} log closure amplitudes"
            ));
            let diffuse = samples.clone();
            (
                SkyDraws {
                    samples,
                    diffuse,
                    chi2_lik,
                },
                np + na,
            )
        }
        LikelihoodKind::Gridded => {
            let cell_noise = match o.cell_scatter_min {
                0 => CellNoise::Weights,
                n => CellNoise::Scatter { min_count: n },
            };
            let grid = |exact: bool| -> Result<GriddedVisibilities> {
                let mut b = GriddedVisibilities::builder(geometry, o.grid_padding)?;
                if exact {
                    b = b.exact();
                }
                b.add(&c.uvw, &c.freq, &c.vis, &c.weight)?;
                Ok(b.finish(factor, cell_noise))
            };
            // Gridding is cheap next to sampling: grid once to count the cells, and again
            // with the exact rows when they fit.
            let coarse = grid(false)?;
            let exact = match o.cell_model {
                CellModel::Exact => true,
                CellModel::Centre => false,
                CellModel::Auto => coarse.n_cells() * geometry.len() <= 1 << 26,
            };
            let grid = if exact { grid(true)? } else { coarse };
            let (y, sigma) = grid.data_and_sigma();
            let inner: Box<dyn ForwardOperator> = if exact {
                Box::new(CellAveraged::new(&grid)?)
            } else {
                Box::new(Gridded::new(&grid)?)
            };
            let op = windowed(
                Scaled {
                    inner,
                    scale: scale_f32,
                },
                &window,
            )?;
            let mut lik = GaussianLikelihood::new(op, y, &sigma)?;
            lik.inflate_gamma(&grid.gamma_factors())?;
            let lik = CompactMarginal::new(lik, compact_px.clone())?;
            (sample_sky(model, &lik, opts, obs)?, grid.n_cells())
        }
        LikelihoodKind::Visibilities | LikelihoodKind::Auto => {
            let op = windowed(
                Scaled {
                    inner: &vis_nufft,
                    scale: scale_f32,
                },
                &window,
            )?;
            let mut lik = GaussianLikelihood::new(op, y_vis.clone(), &sigma_vis)?;
            lik.inflate_gamma(&vis_gamma_factors(c, &geometry))?;
            let lik = CompactMarginal::new(lik, compact_px.clone())?;
            (sample_sky(model, &lik, opts, obs)?, n_usable)
        }
    };
    let SkyDraws {
        mut samples,
        diffuse,
        chi2_lik,
    } = draws;
    // Outside the window the pixels never met the data: they are the prior's, not the sky.
    if let Some(w) = &window {
        for s in &mut samples {
            s.iter_mut()
                .zip(w)
                .filter(|(_, &m)| !m)
                .for_each(|(v, _)| *v = 0.0);
        }
    }
    crate::observe::check(obs)?;
    let t_sample = t_sample.elapsed();
    let npix = side * side;
    let phys: Vec<f32> = samples
        .iter()
        .flat_map(|s| s.iter().map(|v| v * flux_scale as f32))
        .collect();
    let n = samples.len() as f64;
    let mut mean = vec![0.0f64; npix];
    let mut sq = vec![0.0f64; npix];
    for s in phys.chunks(npix) {
        for (k, &v) in s.iter().enumerate() {
            mean[k] += v as f64 / n;
            sq[k] += (v as f64).powi(2) / n;
        }
    }
    let std: Vec<f32> = mean
        .iter()
        .zip(&sq)
        .map(|(m, s)| (s - m * m).max(0.0).sqrt() as f32)
        .collect();
    let mean: Vec<f32> = mean.iter().map(|&m| m as f32).collect();
    // χ² of the mean against every visibility (whatever the likelihood used).
    let (chi2_mean, model_vis) = visibility_chi2(&vis_nufft, c, factor, &mean);
    Ok(Pass {
        dirty,
        noise,
        factor,
        vis_nufft,
        clean_baseline,
        compact_px,
        flux_scale,
        samples,
        diffuse,
        chi2_lik,
        t_sample,
        n_data,
        likelihood,
        phys,
        mean,
        std,
        chi2_mean,
        model_vis,
        window,
        chi2_closure_mean,
        closure_counts,
    })
}

/// The closure likelihood of `c` on the prior's units (flux scale folded into the operator,
/// window applied), with its total-flux constraint.
#[allow(clippy::too_many_arguments)]
fn closure_likelihood<'a>(
    o: &ImageOptions,
    c: &VisChunk,
    geometry: &ImageGeometry,
    nufft_opts: &NufftOptions,
    factor: f64,
    scale: f32,
    total: f64,
    window: &Option<Vec<bool>>,
    obs: &dyn Observer,
) -> Result<ClosureLikelihood<Box<dyn ForwardOperator + 'a>>> {
    use crate::likelihood::closure::{closure_phases, log_closure_amplitudes};
    // Closures index visibilities in the chunk's rows × channels layout: a NUFFT over all of
    // them (unusable ones are never referenced).
    let nufft = Nufft::new(*geometry, &c.uvw, &c.freq, None, nufft_opts)?;
    let mut phases = Vec::new();
    let mut amplitudes = Vec::new();
    for ch in 0..c.n_chan() {
        phases.extend(closure_phases(c, ch, factor));
        if o.data == DataKind::CphaseLcamp {
            amplitudes.extend(log_closure_amplitudes(c, ch, factor));
        }
    }
    if phases.is_empty() && amplitudes.is_empty() {
        input_error!(
            "{}: no closure can be formed (closure phases need three stations observing at the              same time stamp)",
            o.vis.display()
        );
    }
    let op = windowed(
        Scaled {
            inner: nufft,
            scale,
        },
        window,
    )?;
    let lik = ClosureLikelihood::new(op, phases, amplitudes)?
        .with_total_flux(total / scale as f64, 0.1 * total / scale as f64);
    obs.log(&format!(
        "closure likelihood: total flux held to {total:.4} ± {:.4} Jy",
        0.1 * total
    ));
    Ok(lik)
}

/// The pixels of a `side²` image within `radius_px` of the phase centre pixel (`side/2`).
fn disk_window(side: usize, radius_px: f64) -> Vec<bool> {
    let c = (side / 2) as f64;
    (0..side * side)
        .map(|k| ((k / side) as f64 - c).hypot((k % side) as f64 - c) <= radius_px)
        .collect()
}

/// Shifts a `side²` image by whole pixels so that the centre of light of its positive part
/// falls on the phase centre pixel (`side/2`), filling with zeros.
fn recentre(x: &mut [f32], side: usize) {
    let (mut w, mut cy, mut cx) = (0.0f64, 0.0f64, 0.0f64);
    for (k, &v) in x.iter().enumerate().filter(|(_, &v)| v > 0.0) {
        w += v as f64;
        cy += v as f64 * (k / side) as f64;
        cx += v as f64 * (k % side) as f64;
    }
    if w <= 0.0 {
        return;
    }
    let c = (side / 2) as isize;
    let dy = c - (cy / w).round() as isize;
    let dx = c - (cx / w).round() as isize;
    let src = x.to_vec();
    x.iter_mut().for_each(|v| *v = 0.0);
    let n = side as isize;
    for y in 0..n {
        for xx in 0..n {
            let (ty, tx) = (y + dy, xx + dx);
            if (0..n).contains(&ty) && (0..n).contains(&tx) {
                x[(ty * n + tx) as usize] = src[(y * n + xx) as usize];
            }
        }
    }
}

/// The Jy/pixel of a prior image's value 1 at which the prior's typical image (the median
/// over 8 unconditional draws of 100 steps, a few seconds) holds `total` Jy.
pub fn prior_flux_scale(model: &ScoreModel, total: f64, seed: u64) -> Result<f64> {
    let draws = crate::validate::truths::from_prior(
        model,
        8,
        100,
        8,
        seed ^ 0xF1A5_0000,
        &crate::observe::Quiet,
    )?;
    let draws: Vec<f32> = draws.concat();
    let npix = model.image_size() * model.image_size();
    let mut sums: Vec<f64> = draws
        .chunks(npix)
        .map(|x| x.iter().map(|&v| v.max(0.0) as f64).sum())
        .collect();
    sums.sort_by(f64::total_cmp);
    let typical = sums[sums.len() / 2];
    if typical.is_nan() || typical <= 0.0 {
        input_error!("the prior's draws hold no positive flux: give --flux-scale");
    }
    Ok(total / typical)
}

/// `op` restricted to the window's pixels, when there is one.
fn windowed<'a, A: ForwardOperator + 'a>(
    op: A,
    window: &Option<Vec<bool>>,
) -> Result<Box<dyn ForwardOperator + 'a>> {
    Ok(match window {
        Some(w) => Box::new(Masked::new(op, w.clone())?),
        None => Box::new(op),
    })
}

/// What [`posterior_pass`] returns.
struct Pass {
    dirty: crate::imaging::DirtyProducts,
    noise: Option<crate::imaging::NoiseEstimate>,
    factor: f64,
    vis_nufft: Nufft,
    clean_baseline: Option<crate::imaging::CleanResult>,
    compact_px: Vec<usize>,
    flux_scale: f64,
    samples: Vec<Vec<f32>>,
    /// What the prior drew, prior units (see [`SkyDraws`]).
    diffuse: Vec<Vec<f32>>,
    chi2_lik: Vec<f64>,
    t_sample: std::time::Duration,
    n_data: usize,
    likelihood: LikelihoodKind,
    /// Samples in Jy/pixel, one after another.
    phys: Vec<f32>,
    mean: Vec<f32>,
    std: Vec<f32>,
    chi2_mean: f64,
    /// Model visibilities of the mean, `[re, im, …]` per usable visibility.
    model_vis: Vec<f32>,
    window: Option<Vec<bool>>,
    /// `--data` with closures: the mean's reduced χ² over the closures.
    chi2_closure_mean: Option<f64>,
    closure_counts: Option<(usize, usize)>,
}

/// Model visibilities (`[re, im, …]` per usable visibility) spread over every visibility of
/// `c` (zero where unusable), the layout the gain solver takes.
fn full_model_vis(c: &VisChunk, usable: &[f32]) -> Vec<num_complex::Complex<f32>> {
    let mut out = vec![num_complex::Complex::new(0.0f32, 0.0); c.vis.len()];
    let used = (0..c.vis.len()).filter(|&k| c.weight[k] > 0.0);
    for (k, v) in used.zip(usable.chunks(2)) {
        out[k] = num_complex::Complex::new(v[0], v[1]);
    }
    out
}

/// Posterior skies (prior units) with the compact fluxes drawn in.
struct SkyDraws {
    samples: Vec<Vec<f32>>,
    /// What the prior drew (the samples without their compact fluxes), prior units.
    diffuse: Vec<Vec<f32>>,
    /// Reduced χ² of each sky over the likelihood's own data (cells for the gridded one).
    chi2_lik: Vec<f64>,
}

/// The diffuse images from the reverse diffusion under the compact-marginal likelihood, then
/// each one's compact fluxes from their exact conditional: joint posterior draws.
fn sample_sky<A: ForwardOperator>(
    model: &ScoreModel,
    lik: &CompactMarginal<A>,
    opts: &PosteriorOptions,
    obs: &dyn Observer,
) -> Result<SkyDraws> {
    let diffuse = sample_posterior(model, lik, opts, obs)?;
    // A stream of its own, so that the diffuse draws do not depend on the compact ones.
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5EED_C0DE_0000_0001);
    let mut out = SkyDraws {
        samples: Vec::with_capacity(diffuse.len()),
        diffuse: Vec::new(),
        chi2_lik: Vec::with_capacity(diffuse.len()),
    };
    for x in &diffuse {
        let f = lik.draw_fluxes(x, &mut rng)?;
        let sky = lik.with_fluxes(x, &f);
        out.chi2_lik.push(lik.base().reduced_chi2(&sky));
        out.samples.push(sky);
    }
    out.diffuse = diffuse;
    Ok(out)
}

/// mean/std over the samples (Jy/pixel, back to back) each convolved with `beam`.
fn beam_significance(
    samples: &[f32],
    n: usize,
    g: &ImageGeometry,
    beam: &crate::imaging::PixelBeam,
) -> Vec<f32> {
    let npix = g.len();
    let (mut m1, mut m2) = (vec![0.0f64; npix], vec![0.0f64; npix]);
    let mut conv = vec![0.0f32; npix];
    for s in samples.chunks(npix).take(n) {
        conv.iter_mut().for_each(|v| *v = 0.0);
        crate::imaging::beam::add_restored(s, g.nx, g.ny, beam, &mut conv);
        for ((a, b), &v) in m1.iter_mut().zip(m2.iter_mut()).zip(&conv) {
            *a += v as f64;
            *b += (v as f64).powi(2);
        }
    }
    let k = n.max(1) as f64;
    m1.iter()
        .zip(&m2)
        .map(|(&a, &b)| {
            let (mean, var) = (a / k, (b / k - (a / k).powi(2)).max(0.0));
            if var > 0.0 {
                (mean / var.sqrt()) as f32
            } else {
                0.0
            }
        })
        .collect()
}

/// Each compact pixel's flux over the samples (Jy/pixel): the component and the diffuse
/// emission under it together — the split between the two is the prior's, the sum the data's.
fn compact_summary(pixels: &[usize], samples: &[f32], g: &ImageGeometry) -> Vec<CompactComponent> {
    let npix = g.len();
    let n = (samples.len() / npix).max(1) as f64;
    pixels
        .iter()
        .map(|&p| {
            let (iy, ix) = (p / g.nx, p % g.nx);
            let f: Vec<f64> = samples.chunks(npix).map(|s| s[p] as f64).collect();
            let mean = f.iter().sum::<f64>() / n;
            let std = (f.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            // l = (nx/2 − ix)·Δx is ΔRA (east positive), m = (iy − ny/2)·Δy is ΔDec.
            let asec = |r: f64| r.to_degrees() * 3600.0;
            CompactComponent {
                pixel_yx: [iy, ix],
                offset_asec: [
                    asec(((g.nx / 2) as f64 - ix as f64) * g.dx),
                    asec((iy as f64 - (g.ny / 2) as f64) * g.dy),
                ],
                flux_mean: mean,
                flux_std: std,
            }
        })
        .collect()
}

type ResidualProducts = (Vec<f32>, Vec<f64>, Vec<f32>, Vec<f32>);

/// The dirty image of the residual visibilities (natural weighting, Jy/beam) and, per usable
/// visibility, uv distance and the amplitudes of data and model.
fn residual_products(
    c: &VisChunk,
    model: &[f32],
    geometry: &ImageGeometry,
    nufft_opts: &NufftOptions,
    weight_sum: f64,
) -> Result<ResidualProducts> {
    let mut resid = vec![num_complex::Complex::new(0.0f32, 0.0); c.vis.len()];
    let (mut uv, mut da, mut ma) = (Vec::new(), Vec::new(), Vec::new());
    let used = (0..c.vis.len()).filter(|&k| c.weight[k] > 0.0);
    for (k, m) in used.zip(model.chunks(2)) {
        let mv = num_complex::Complex::new(m[0], m[1]);
        resid[k] = c.vis[k] - mv;
        let (r, ch) = (k / c.n_chan(), k % c.n_chan());
        let f = c.freq[ch] / 299_792_458.0;
        uv.push((c.uvw[r][0].powi(2) + c.uvw[r][1].powi(2)).sqrt() * f);
        da.push(c.vis[k].norm());
        ma.push(mv.norm());
    }
    let img = ms2dirty(geometry, &c.uvw, &c.freq, &resid, &c.weight, nufft_opts)?;
    let res = img.iter().map(|v| (v / weight_sum) as f32).collect();
    Ok((res, uv, da, ma))
}

/// Reduced χ² of a physical image (Jy/pixel) against every usable visibility, and the model
/// visibilities.
fn visibility_chi2(op: &Nufft, c: &VisChunk, factor: f64, image: &[f32]) -> (f64, Vec<f32>) {
    let (chi2, model) = crate::imaging::fit::chunk_chi2(op, c, factor, image);
    (chi2 / model.len() as f64, model)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A blob off centre lands with its centre of light on the centre pixel, flux kept; an
    /// image with nothing positive is left alone.
    #[test]
    fn recentre_moves_the_centre_of_light() {
        let n = 16;
        let mut x = vec![0.0f32; n * n];
        x[3 * n + 4] = 2.0;
        x[3 * n + 5] = 2.0;
        x[4 * n + 4] = -0.5;
        recentre(&mut x, n);
        // Centre of light of the positive part: (3, 4.5) rounds to (3, 5) → moved by (5, 3).
        assert_eq!(x[8 * n + 7], 2.0);
        assert_eq!(x[8 * n + 8], 2.0);
        assert_eq!(x[9 * n + 7], -0.5);
        assert_eq!(x.iter().filter(|&&v| v != 0.0).count(), 3);
        let disk = disk_window(9, 2.0);
        assert_eq!(disk.iter().filter(|&&m| m).count(), 13);
        assert!(disk[4 * 9 + 4] && disk[2 * 9 + 4] && !disk[2 * 9 + 3]);
        let mut neg = vec![-1.0f32; 4];
        recentre(&mut neg, 2);
        assert_eq!(neg, vec![-1.0; 4]);
    }

    /// The shortest 5 % of baselines: their median amplitude, whatever the longer ones hold.
    #[test]
    fn shortest_baselines_give_the_total_flux() {
        let n = 100;
        let c = VisChunk {
            uvw: (0..n).map(|k| [k as f64 + 1.0, 0.0, 0.0]).collect(),
            antenna1: vec![0; n],
            antenna2: vec![1; n],
            time: vec![0.0; n],
            freq: vec![1e9],
            vis: (0..n)
                .map(|k| num_complex::Complex::new(if k < 5 { 3.0 } else { 0.1 }, 0.0))
                .collect(),
            weight: vec![1.0; n],
            ..Default::default()
        };
        assert_eq!(shortest_baseline_flux(&c), 3.0);
    }
}
