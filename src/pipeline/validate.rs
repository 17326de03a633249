//! The calibration job (`interf-image validate`): known truths observed through the uv coverage
//! of a real Measurement Set with known noise, every posterior sampled, and TARP coverage,
//! per-pixel interval coverage, χ² and errors measured — against CLEAN's on the same data.

use std::path::PathBuf;
use std::time::Instant;

use ms_io::{Selection, VisChunk, VisFile};

use super::resources::check_network_batch;
use super::split::{split_indices, Split};
use super::vis::{
    count_usable, longest_baseline, merge_by_frequency, read_vis, sky_header, vis_gamma_factors,
};
use super::Result;
use crate::imaging::beam::add_restored;
use crate::imaging::{clean, CleanOptions, ImagingOptions, Weighting};
use crate::io::{HeaderValue, SkyHeader};
use crate::observe::Observer;
use crate::operator::{ImageGeometry, Nufft, NufftOptions};
use crate::prior::ScoreModel;
use crate::sample::posterior::{Method, PosteriorOptions};
use crate::validate::truths::{self, TruthScaling};
use crate::validate::{BaselineFn, BaselineImage, ValidateOptions, Validation};

/// Where the truths come from.
#[derive(Debug, Clone)]
pub enum TruthSource {
    /// Images of a file (.npy stack, FITS cube, FITS with one image per HDU): its first `n`, or
    /// `n` of the prior's `split` when that is not [`Split::All`] (the file must then be the
    /// one the prior trained on).
    File {
        path: PathBuf,
        scaling: TruthScaling,
        split: Split,
    },
    /// Draws from the prior itself (Euler–Maruyama, this many steps; `None`: the sampler's).
    Prior { steps: Option<usize> },
}

#[derive(Debug, Clone)]
pub struct CalibrationOptions {
    /// The Measurement Set whose uv coverage observes the truths (read-only; its data values
    /// are not used).
    pub like: PathBuf,
    pub selection: Selection,
    /// The prior's folder (`None`: the built-in prior), for its split and the outputs' PRIOR.
    pub prior_dir: Option<PathBuf>,
    pub truths: TruthSource,
    /// Add the prior's resolution floor (N(0, floor²) per pixel, seeded; see
    /// [`truths::resolution_floor`]) to file truths: they are then draws of the density the
    /// prior represents. Off: the images as they are, whose exact zeros (MiraBest's clipped
    /// background) count as covered by any posterior that scatters around them.
    pub truth_floor: bool,
    /// Number of truths.
    pub n: usize,
    /// The sampler: `n_samples` per truth; chains of several truths share a batch.
    pub posterior: PosteriorOptions,
    /// Gaussian noise σ per real and imaginary part of each visibility, Jy.
    pub noise: f64,
    /// Jy/pixel of a prior image value of 1.
    pub flux_scale: f64,
    /// Pixel size, radians; `None`: a third of the theoretical beam, as `image`.
    pub scale: Option<f64>,
    /// Bootstrap resamples for the TARP band.
    pub bootstrap: usize,
    /// Image each simulated observation with CLEAN (Cotton–Schwab, Briggs 0, 3σ
    /// auto-threshold) for the error comparison.
    pub clean_baseline: bool,
    pub nufft: NufftOptions,
    pub max_memory: Option<u64>,
}

pub struct CalibrationResult {
    pub validation: Validation,
    /// Header of the truth/mean/std cubes (Jy/pixel).
    pub header: SkyHeader,
    pub side: usize,
    /// Pixel size, radians.
    pub scale: f64,
    pub n_usable: usize,
    /// Which images of the truth file, when a split chose them.
    pub truth_indices: Option<Vec<usize>>,
    /// Seconds spent sampling (and on the CLEAN baselines).
    pub t_sample: f64,
    /// The resolution floor added to the file truths (prior units), when it was.
    pub truth_floor: Option<f64>,
}

impl CalibrationOptions {
    fn prior_spec(&self) -> String {
        self.prior_dir
            .as_deref()
            .map_or_else(|| "default".to_string(), |p| p.display().to_string())
    }

    /// The prior's name as the outputs record it.
    pub fn prior_name(&self) -> String {
        super::prior_name(self.prior_dir.as_deref())
    }
}

/// Runs the calibration of `model` on `opts.like`'s uv coverage. Progress: the stages
/// "reading" (rows), "truths" (reverse steps, when drawn from the prior) and "sampling".
pub fn validate(
    model: &ScoreModel,
    opts: &CalibrationOptions,
    obs: &dyn Observer,
) -> Result<CalibrationResult> {
    let p = &opts.posterior;
    if opts.n == 0 {
        input_error!("--n must be at least 1");
    }
    if p.n_samples < 2 {
        input_error!("--samples must be at least 2");
    }
    if !(opts.noise > 0.0 && opts.noise.is_finite()) {
        input_error!("--noise must be a positive σ in Jy, got {}", opts.noise);
    }
    if !(opts.flux_scale > 0.0 && opts.flux_scale.is_finite()) {
        input_error!("--flux-scale must be positive, got {}", opts.flux_scale);
    }
    if let TruthSource::Prior { steps: Some(0) } = opts.truths {
        input_error!("--prior-steps must be at least 1");
    }
    if let TruthSource::File { path, .. } = &opts.truths {
        if !path.is_file() {
            input_error!("truth images {}: no such file", path.display());
        }
    }
    let side = model.image_size();
    check_network_batch(
        &model.config().network,
        p.batch,
        p.method == Method::Dps,
        opts.max_memory,
    )?;
    // MsError names the path already.
    let ms = VisFile::open(&opts.like)?;
    let info = ms.info().clone();
    let field_id = ms.resolve_field(&opts.selection)?;
    let chunks = merge_by_frequency(read_vis(&ms, &opts.selection, obs)?);
    let n_usable = count_usable(&chunks, &opts.like)?;
    let c = match chunks.as_slice() {
        [c] => c,
        _ => input_error!(
            "{} has spectral windows with different channel frequencies; select one with --spw",
            opts.like.display()
        ),
    };
    let scale = opts
        .scale
        .unwrap_or_else(|| (1.0 / 3.0) / longest_baseline(&chunks));
    let geometry = ImageGeometry::new(side, side, scale, scale)?;
    let mask: Vec<bool> = c.weight.iter().map(|&w| w > 0.0).collect();
    let nufft = Nufft::new(geometry, &c.uvw, &c.freq, Some(&mask), &opts.nufft)?;
    // The resolution floor applies to file truths only: drawn ones are the prior's own.
    let truth_floor = (opts.truth_floor && matches!(opts.truths, TruthSource::File { .. }))
        .then(|| truths::resolution_floor(model));
    let (truths, truth_indices) = load_truths(model, opts, truth_floor, obs)?;

    let vopts = ValidateOptions {
        posterior: p.clone(),
        flux_scale: opts.flux_scale as f32,
        sigma: opts.noise as f32,
        gamma_factors: Some(vis_gamma_factors(c, &geometry)),
        n_bootstrap: opts.bootstrap,
    };
    obs.stage(
        "sampling",
        ((truths.len() * p.n_samples).div_ceil(p.batch.max(1)) * p.steps) as u64,
    );
    let t_sample = Instant::now();
    let clean_opts = {
        let mut o = ImagingOptions::new(geometry, Weighting::Briggs(0.0));
        o.nufft = opts.nufft.clone();
        o
    };
    let baseline = |y: &[f32]| clean_baseline(c, y, opts.noise, &clean_opts, side);
    let baseline_ref: Option<&BaselineFn> = opts.clean_baseline.then_some(&baseline);
    let validation = crate::validate::validate(model, &nufft, &truths, &vopts, baseline_ref, obs)?;
    crate::observe::check(obs)?;
    let t_sample = t_sample.elapsed().as_secs_f64();

    let mut header = sky_header(&info, field_id, &chunks, scale, "JY/PIXEL");
    header.extra = vec![
        ("PRIOR".into(), HeaderValue::Str(opts.prior_name())),
        ("NSAMPLES".into(), HeaderValue::I64(p.n_samples as i64)),
        ("NSTEPS".into(), HeaderValue::I64(p.steps as i64)),
        ("SEED".into(), HeaderValue::I64(p.seed as i64)),
        ("ALPHA".into(), HeaderValue::F64(p.alpha as f64)),
        ("FLUXSCL".into(), HeaderValue::F64(opts.flux_scale)),
        ("NOISE".into(), HeaderValue::F64(opts.noise)),
    ];
    Ok(CalibrationResult {
        validation,
        header,
        side,
        scale,
        n_usable,
        truth_indices,
        t_sample,
        truth_floor,
    })
}

/// The truths in the prior's normalised units, and which images of the file when a split
/// chose them.
type ChosenTruths = (Vec<Vec<f32>>, Option<Vec<usize>>);

/// Reads or draws the truths (see [`ChosenTruths`]); file truths get N(0, `floor`²) per pixel
/// when it is given.
fn load_truths(
    model: &ScoreModel,
    opts: &CalibrationOptions,
    floor: Option<f64>,
    obs: &dyn Observer,
) -> Result<ChosenTruths> {
    let p = &opts.posterior;
    let side = model.image_size();
    Ok(match &opts.truths {
        TruthSource::File {
            path,
            scaling,
            split,
        } => {
            // Scaled after the choice: an image the run does not use may be empty.
            let mut t = truths::read_resized(path, side)?;
            let (idx, split_idx) = match split {
                Split::All => ((0..t.len().min(opts.n)).collect::<Vec<_>>(), None),
                which => {
                    let idx =
                        split_indices(&opts.prior_spec(), path, t.len(), *which, opts.n, p.seed)?;
                    (idx.clone(), Some(idx))
                }
            };
            let mut chosen = Vec::with_capacity(idx.len());
            for &i in &idx {
                let mut img = std::mem::take(&mut t[i]);
                truths::to_prior_units(&mut img, path, i, *scaling, opts.flux_scale)?;
                if let Some(f) = floor {
                    truths::add_floor(&mut img, f, p.seed, i);
                }
                chosen.push(img);
            }
            (chosen, split_idx)
        }
        TruthSource::Prior { steps } => {
            let steps = steps.unwrap_or(p.steps);
            obs.stage("truths", (opts.n.div_ceil(p.batch.max(1)) * steps) as u64);
            let t = truths::from_prior(model, opts.n, steps, p.batch, p.seed ^ 0x7247, obs)?;
            (t, None)
        }
    })
}

/// CLEAN of one simulated data set `y` (`[re, im, …]` per usable visibility of `c`), as WSClean
/// would image the real one: the baseline the posterior mean is compared with.
fn clean_baseline(
    c: &VisChunk,
    y: &[f32],
    noise: f64,
    clean_opts: &ImagingOptions,
    side: usize,
) -> std::result::Result<BaselineImage, String> {
    let w_sim = (1.0 / (noise * noise)) as f32;
    let mut vis = vec![num_complex::Complex::new(0.0f32, 0.0); c.vis.len()];
    let mut weight = vec![0.0f32; c.weight.len()];
    let used = (0..c.weight.len()).filter(|&k| c.weight[k] > 0.0);
    for (k, p) in used.zip(y.chunks(2)) {
        vis[k] = num_complex::Complex::new(p[0], p[1]);
        weight[k] = w_sim;
    }
    let sim = VisChunk {
        spw: c.spw,
        uvw: c.uvw.clone(),
        antenna1: c.antenna1.clone(),
        antenna2: c.antenna2.clone(),
        time: c.time.clone(),
        freq: c.freq.clone(),
        vis,
        weight,
    };
    let r = clean(
        std::slice::from_ref(&sim),
        clean_opts,
        &CleanOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    let beam = r.pixel_beam;
    let convolve = move |img: &[f32]| {
        let mut out = vec![0.0f32; side * side];
        add_restored(img, side, side, &beam, &mut out);
        out
    };
    // Σ of the beam of peak 1 on the pixel grid: a unit point source restored.
    let mut delta = vec![0.0f32; side * side];
    delta[(side / 2) * side + side / 2] = 1.0;
    let beam_area: f64 = convolve(&delta).iter().map(|&v| v as f64).sum();
    Ok(BaselineImage {
        restored: r.restored,
        convolve: Box::new(convolve),
        beam_area,
    })
}
