//! `image`'s check of its posterior samples against the prior's reference log-densities
//! ([`crate::prior::reference`]): the ELBO of what the prior drew, placed among the ELBOs of
//! images of the kind the prior was trained on.

use std::path::Path;

use candle_core::Tensor;

use super::{Context, Result};
use crate::prior::logp::{elbo, ElboOptions, Point};
use crate::prior::reference::{check, LogpReference, PriorCheck, FILE_NAME};
use crate::prior::{default_reference, ScoreModel};

/// Samples whose ELBO is computed: enough for a median, few enough to cost seconds.
pub const CHECKED_SAMPLES: usize = 16;

/// The check's outcome, and one line that says it (or why there is none).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub check: Option<PriorCheck>,
    pub line: String,
}

/// `prior_dir`: the `--prior` folder (None: the built-in prior). `diffuse`: the samples as the
/// prior drew them (prior units, without compact components).
pub fn prior_check(
    model: &ScoreModel,
    prior_dir: Option<&Path>,
    diffuse: &[Vec<f32>],
    seed: u64,
) -> Result<Outcome> {
    let reference = match prior_dir {
        None => default_reference().context("the built-in prior's log-density reference")?,
        Some(dir) => {
            let path = dir.join(FILE_NAME);
            if !path.exists() {
                return Ok(Outcome {
                    check: None,
                    line: format!(
                        "not made: {} has no {FILE_NAME} (`interf-image prior reference --prior \
                         {} --data TRAINING.npy --out {}` makes one)",
                        dir.display(),
                        dir.display(),
                        path.display()
                    ),
                });
            }
            LogpReference::read(&path)?
        }
    };
    let side = model.image_size();
    let k = diffuse.len().min(CHECKED_SAMPLES);
    if k == 0 {
        input_error!("no sample to check against the prior");
    }
    // The reference images are each divided by their peak, as the prior's training images
    // were: the check is of the shape. The samples' own peaks in prior units (the flux scale's
    // fit) are reported beside it.
    let peaks: Vec<f32> = diffuse[..k]
        .iter()
        .map(|s| s.iter().copied().fold(f32::MIN, f32::max))
        .collect();
    if let Some(p) = peaks.iter().find(|p| !(**p > 0.0 && p.is_finite())) {
        return Ok(Outcome {
            check: None,
            line: format!(
                "not made: a sample's diffuse part has no positive peak ({p}); the prior's \
                 images all have one"
            ),
        });
    }
    let flat: Vec<f32> = diffuse[..k]
        .iter()
        .zip(&peaks)
        .flat_map(|(s, p)| s.iter().map(move |v| v / p))
        .collect();
    let mut sorted = peaks.clone();
    sorted.sort_by(f32::total_cmp);
    let median_peak = sorted[k / 2];
    let x = Tensor::from_vec(flat, (k, 1, side, side), model.device())?;
    let opts = ElboOptions {
        samples: reference.elbo_samples,
        seed,
        batch: 64,
        point: Point::Noisy,
    };
    let nats: Vec<f64> = elbo(model, &x, &opts, &crate::observe::Quiet)?
        .iter()
        .map(|l| l.nats)
        .collect();
    let c = check(&reference, &nats);
    let [q05, _, q95] = c.reference_quantiles_nats;
    let line = format!(
        "ELBO of {k} samples (their diffuse part, each divided by its peak as the training \
         images were; peak {median_peak:.3} in prior units) median {:.0} nats, above {:.0} % of \
         the prior's own {} draws (5–95 %: {q05:.0} – {q95:.0}): {}",
        c.samples_median_nats,
        100.0 * c.fraction_of_reference_below,
        c.reference_images,
        c.verdict.describe()
    );
    Ok(Outcome {
        check: Some(c),
        line,
    })
}
