//! Calibration of the posterior: simulate observations of known truths with a real uv
//! coverage, sample each posterior, and test whether the truths are covered as often as the
//! samples' spread says (TARP, per-pixel interval coverage, χ², errors against the truth and
//! against a CLEAN baseline).
//!
//! Everything here works on plain images and a [`ForwardOperator`]; the CLI reads the
//! Measurement Set and the truths and writes the report.

pub mod stats;
pub mod tarp;
pub mod truths;

use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use serde::Serialize;
use thiserror::Error;

use crate::likelihood::{GaussianLikelihood, LikelihoodError};
use crate::observe::Observer;
use crate::operator::{ForwardOperator, Scaled};
use crate::sample::posterior::PriorScore;
use crate::sample::posterior::{sample_many, PosteriorOptions};
use stats::{mean_std, pixel_coverage, quantile, rmse, Coverage};
use tarp::{reference_points, tarp_from_ranks, tarp_rank, Tarp};

#[derive(Debug, Error)]
pub enum ValidateError {
    #[error("validation: {0}")]
    Input(String),
    #[error(transparent)]
    Likelihood(#[from] LikelihoodError),
    #[error("sampling: {0}")]
    Sampling(#[from] candle_core::Error),
    #[error(transparent)]
    Interrupted(#[from] crate::observe::Interrupted),
    #[error("CLEAN baseline: {0}")]
    Baseline(String),
}

/// One operator shared by the likelihoods of many truths, with `diag(A Aᵀ)` computed once
/// (for the NUFFT it costs about a transform of its own).
pub struct Shared<'a, A: ?Sized> {
    pub op: &'a A,
    pub diag: &'a [f32],
}

impl<A: ForwardOperator + ?Sized> ForwardOperator for Shared<'_, A> {
    fn image_shape(&self) -> [usize; 2] {
        self.op.image_shape()
    }
    fn data_len(&self) -> usize {
        self.op.data_len()
    }
    fn forward(&self, image: &[f32], data: &mut [f32]) {
        self.op.forward(image, data)
    }
    fn adjoint(&self, data: &[f32], image: &mut [f32]) {
        self.op.adjoint(data, image)
    }
    fn diag_aat(&self) -> Vec<f32> {
        self.diag.to_vec()
    }
}

#[derive(Debug, Clone)]
pub struct ValidateOptions {
    /// The sampler: `n_samples` per truth; chains of several truths share a batch. Its seed
    /// also seeds the simulated noise, TARP's reference points and the bootstrap.
    pub posterior: PosteriorOptions,
    /// Jy/pixel of a prior image value of 1.
    pub flux_scale: f32,
    /// Noise σ per real datum (Jy per visibility component).
    pub sigma: f32,
    /// Per-datum factors on Γ = diag(AAᵀ) (cell multiplicity for the visibility NUFFT).
    pub gamma_factors: Option<Vec<f32>>,
    pub n_bootstrap: usize,
}

/// A map from one image to another (e.g. a convolution), shareable across threads.
pub type ImageMap = Box<dyn Fn(&[f32]) -> Vec<f32> + Send + Sync>;

/// A classic image of one simulated data set, to compare the posterior mean against.
pub struct BaselineImage {
    /// Restored image, Jy/beam.
    pub restored: Vec<f32>,
    /// `image ↦ image ⊛ beam` (beam of peak 1): a Jy/pixel image to Jy/beam at the restoring
    /// resolution.
    pub convolve: ImageMap,
    /// Beam area in pixels (`Σ beam`): Jy/beam ÷ area = Jy/pixel.
    pub beam_area: f64,
}

/// Makes the baseline image from a simulated data vector (the operator's layout, Jy).
pub type BaselineFn<'a> = dyn Fn(&[f32]) -> Result<BaselineImage, String> + Sync + 'a;

/// What is kept of one truth (physical units, Jy/pixel, unless said otherwise).
#[derive(Debug, Clone, Serialize)]
pub struct TruthResult {
    pub index: usize,
    #[serde(skip)]
    pub truth: Vec<f32>,
    #[serde(skip)]
    pub mean: Vec<f32>,
    #[serde(skip)]
    pub std: Vec<f32>,
    /// CLEAN restored image, Jy/beam, when a baseline was made.
    #[serde(skip)]
    pub clean: Option<Vec<f32>>,
    pub tarp_rank: f64,
    pub coverage: Coverage,
    /// Reduced χ² of each sample, of the mean and of the truth (≈ 1 + O(1/√N)) against the
    /// simulated data.
    pub chi2_samples: Vec<f64>,
    pub chi2_mean: f64,
    pub chi2_truth: f64,
    pub rmse_mean: f64,
    /// RMSE of the mean after convolution with the CLEAN beam, against the truth convolved
    /// likewise, both ÷ beam area (Jy/pixel at CLEAN resolution).
    pub rmse_mean_beam: Option<f64>,
    /// CLEAN restored ÷ beam area against the truth convolved with the beam ÷ beam area.
    pub rmse_clean_beam: Option<f64>,
    /// CLEAN restored ÷ beam area against the truth itself.
    pub rmse_clean_truth: Option<f64>,
    pub truth_peak: f64,
    pub truth_flux: f64,
    pub mean_flux: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub n_truths: usize,
    pub samples_per_truth: usize,
    pub coverage: Coverage,
    pub coverage_68: f64,
    pub coverage_95: f64,
    pub source_coverage_68: f64,
    pub source_coverage_95: f64,
    /// Median and 16/84 % quantiles of the samples' reduced χ², pooled over truths.
    pub chi2_samples_median: f64,
    pub chi2_samples_q16: f64,
    pub chi2_samples_q84: f64,
    pub chi2_mean_median: f64,
    pub chi2_truth_median: f64,
    /// Mean over truths of the per-truth RMSE (Jy/pixel).
    pub rmse_mean: f64,
    pub rmse_mean_beam: Option<f64>,
    pub rmse_clean_beam: Option<f64>,
    pub rmse_clean_truth: Option<f64>,
    /// RMSE of an all-zero image, for scale.
    pub rmse_zero: f64,
}

pub struct Validation {
    pub truths: Vec<TruthResult>,
    pub tarp: Tarp,
    pub summary: Summary,
}

/// Simulates `y = flux_scale · A x + σ n` for each truth (normalised units), samples each
/// posterior with `model`, and summarises. `baseline`, when given, images each simulated data
/// set classically (CLEAN) for the error comparison.
pub fn validate<A, P>(
    model: &P,
    op: &A,
    truths: &[Vec<f32>],
    opts: &ValidateOptions,
    baseline: Option<&BaselineFn>,
    obs: &dyn Observer,
) -> Result<Validation, ValidateError>
where
    A: ForwardOperator + ?Sized,
    P: PriorScore + ?Sized,
{
    let side = model.image_size();
    let npix = side * side;
    if op.image_shape() != [side, side] {
        let [ny, nx] = op.image_shape();
        return Err(ValidateError::Input(format!(
            "the operator's image is {ny}×{nx} but the prior works on {side}×{side}"
        )));
    }
    if truths.is_empty() || opts.posterior.n_samples < 2 || opts.posterior.steps == 0 {
        return Err(ValidateError::Input(
            "need at least one truth, two samples per truth and one step".into(),
        ));
    }
    if let Some(t) = truths.iter().find(|t| t.len() != npix) {
        return Err(ValidateError::Input(format!(
            "a truth has {} pixels, the prior's images {npix}",
            t.len()
        )));
    }
    let positive = |v: f64| v > 0.0 && v.is_finite();
    if !positive(opts.sigma as f64) || !positive(opts.flux_scale as f64) {
        return Err(ValidateError::Input(format!(
            "noise σ ({}) and flux scale ({}) must be positive",
            opts.sigma, opts.flux_scale
        )));
    }
    let diag = op.diag_aat();
    let m = op.data_len();
    let sigma = vec![opts.sigma; m];
    let scale = opts.flux_scale;
    // Noise has its own stream so that changing the sampler settings keeps the data fixed.
    let mut noise_rng = StdRng::seed_from_u64(opts.posterior.seed ^ 0x5EED_DA7A);
    let mut liks = Vec::with_capacity(truths.len());
    let mut data = Vec::with_capacity(truths.len());
    for t in truths {
        let shared = Shared { op, diag: &diag };
        let mut y = vec![0.0f32; m];
        shared.forward(t, &mut y);
        for v in y.iter_mut() {
            *v = *v * scale + opts.sigma * noise_rng.sample::<f32, _>(StandardNormal);
        }
        let mut lik = GaussianLikelihood::new(
            Scaled {
                inner: shared,
                scale,
            },
            y.clone(),
            &sigma,
        )?;
        if let Some(f) = &opts.gamma_factors {
            lik.inflate_gamma(f)?;
        }
        liks.push(lik);
        data.push(y);
    }
    let truth_refs: Vec<&[f32]> = truths.iter().map(|t| t.as_slice()).collect();
    let references = reference_points(&truth_refs, opts.posterior.seed ^ 0x7A49);
    let mut rank_rng = StdRng::seed_from_u64(opts.posterior.seed ^ 0x4A4E);

    let popts = &opts.posterior;
    let lik_refs: Vec<_> = liks.iter().collect();
    let mut pending: HashMap<usize, Vec<f32>> = HashMap::new();
    let mut results: Vec<TruthResult> = Vec::with_capacity(truths.len());
    sample_many(model, &lik_refs, popts, obs, |set, j, img| {
        let buf = pending
            .entry(set)
            .or_insert_with(|| Vec::with_capacity(opts.posterior.n_samples * npix));
        buf.extend_from_slice(&img);
        if j + 1 < opts.posterior.n_samples {
            return Ok(());
        }
        let samples = pending.remove(&set).unwrap_or_default();
        let truth = &truths[set];
        let lik = &liks[set];
        let f = tarp_rank(&samples, truth, &references[set], &mut rank_rng);
        let coverage = pixel_coverage(&samples, truth, &mut rank_rng);
        let chi2_samples: Vec<f64> = samples.chunks(npix).map(|s| lik.reduced_chi2(s)).collect();
        let (mean, std) = mean_std(&samples, npix);
        let phys = |v: &[f32]| v.iter().map(|x| x * scale).collect::<Vec<f32>>();
        let (truth_p, mean_p) = (phys(truth), phys(&mean));
        results.push(TruthResult {
            index: set,
            chi2_mean: lik.reduced_chi2(&mean),
            chi2_truth: lik.reduced_chi2(truth),
            rmse_mean: rmse(&mean_p, &truth_p),
            truth_peak: truth_p.iter().cloned().fold(f32::MIN, f32::max) as f64,
            truth_flux: truth_p.iter().map(|&v| v as f64).sum(),
            mean_flux: mean_p.iter().map(|&v| v as f64).sum(),
            truth: truth_p,
            mean: mean_p,
            std: phys(&std),
            clean: None,
            tarp_rank: f,
            coverage,
            chi2_samples,
            rmse_mean_beam: None,
            rmse_clean_beam: None,
            rmse_clean_truth: None,
        });
        Ok(())
    })?;

    if let Some(make) = baseline {
        for r in results.iter_mut() {
            let b = make(&data[r.index]).map_err(ValidateError::Baseline)?;
            let area = b.beam_area as f32;
            let per_pixel = |v: &[f32]| v.iter().map(|x| x / area).collect::<Vec<f32>>();
            let truth_b = per_pixel(&(b.convolve)(&r.truth));
            let mean_b = per_pixel(&(b.convolve)(&r.mean));
            let clean_p = per_pixel(&b.restored);
            r.rmse_mean_beam = Some(rmse(&mean_b, &truth_b));
            r.rmse_clean_beam = Some(rmse(&clean_p, &truth_b));
            r.rmse_clean_truth = Some(rmse(&clean_p, &r.truth));
            r.clean = Some(b.restored);
        }
    }

    let f: Vec<f64> = results.iter().map(|r| r.tarp_rank).collect();
    let tarp = tarp_from_ranks(&f, 101, opts.n_bootstrap, opts.posterior.seed ^ 0xB007);
    let summary = summarise(&results, opts.posterior.n_samples);
    Ok(Validation {
        truths: results,
        tarp,
        summary,
    })
}

fn summarise(results: &[TruthResult], samples: usize) -> Summary {
    let mut coverage = Coverage::default();
    for r in results {
        coverage.add(&r.coverage);
    }
    let n = results.len().max(1) as f64;
    let pooled: Vec<f64> = results
        .iter()
        .flat_map(|r| r.chi2_samples.iter().copied())
        .collect();
    let col = |f: &dyn Fn(&TruthResult) -> f64| results.iter().map(f).collect::<Vec<f64>>();
    let avg = |f: &dyn Fn(&TruthResult) -> Option<f64>| -> Option<f64> {
        let v: Option<Vec<f64>> = results.iter().map(f).collect();
        v.map(|v| v.iter().sum::<f64>() / n)
    };
    Summary {
        n_truths: results.len(),
        samples_per_truth: samples,
        coverage_68: coverage.fraction(0),
        coverage_95: coverage.fraction(1),
        source_coverage_68: coverage.source_fraction(0),
        source_coverage_95: coverage.source_fraction(1),
        coverage,
        chi2_samples_median: quantile(&pooled, 0.5),
        chi2_samples_q16: quantile(&pooled, 0.16),
        chi2_samples_q84: quantile(&pooled, 0.84),
        chi2_mean_median: quantile(&col(&|r| r.chi2_mean), 0.5),
        chi2_truth_median: quantile(&col(&|r| r.chi2_truth), 0.5),
        rmse_mean: col(&|r| r.rmse_mean).iter().sum::<f64>() / n,
        rmse_mean_beam: avg(&|r| r.rmse_mean_beam),
        rmse_clean_beam: avg(&|r| r.rmse_clean_beam),
        rmse_clean_truth: avg(&|r| r.rmse_clean_truth),
        rmse_zero: col(&|r| rmse(&r.truth, &vec![0.0; r.truth.len()]))
            .iter()
            .sum::<f64>()
            / n,
    }
}
