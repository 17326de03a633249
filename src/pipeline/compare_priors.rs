//! The prior-comparison job (`interf-image compare-priors`): one observation imaged under
//! several score priors, each judged by a lower bound on its evidence `p(y | prior)`
//! ([`crate::sample::evidence`]). The same data, the same noise estimate and the same visibility
//! likelihood for every prior; only the prior (and so its flux scale) differs.

use std::path::PathBuf;
use std::time::Instant;

use ms_io::{Selection, VisFile};

use super::image::prior_flux_scale;
use super::vis::{
    count_usable, longest_baseline, merge_by_frequency, read_vis, shortest_baseline_flux,
    usable_data, vis_gamma_factors,
};
use super::Result;
use crate::imaging::estimate_noise;
use crate::likelihood::GaussianLikelihood;
use crate::observe::Observer;
use crate::operator::{ImageGeometry, Nufft, NufftOptions, Scaled};
use crate::prior::ScoreModel;
use crate::sample::evidence::{evidence, Evidence, EvidenceOptions};

#[derive(Debug, Clone)]
pub struct ComparePriorsOptions {
    /// The Measurement Set or UVFITS file (read-only).
    pub vis: PathBuf,
    pub selection: Selection,
    /// Pixel size, radians; `None`: a third of the theoretical beam, as `image`.
    pub scale: Option<f64>,
    /// Jy/pixel of a prior image value of 1 for every prior; `None`: each prior's own, at
    /// which its typical image holds the data's total flux.
    pub flux_scale: Option<f64>,
    pub evidence: EvidenceOptions,
    pub nufft: NufftOptions,
}

/// The observation every prior was judged on.
#[derive(Debug, Clone)]
pub struct ObservationSummary {
    pub n_usable: usize,
    /// How σ was set, in words.
    pub noise_source: String,
    pub side: usize,
    /// Pixel size, radians.
    pub scale: f64,
    /// Median amplitude on the shortest 5 % of baselines, Jy.
    pub total_flux: f64,
}

/// One prior's verdict.
pub struct PriorEvidence {
    pub name: String,
    pub flux_scale: f64,
    pub evidence: Evidence,
    pub seconds: f64,
}

pub struct Comparison {
    pub observation: ObservationSummary,
    /// In the order the priors were given.
    pub priors: Vec<PriorEvidence>,
}

/// Judges each `(name, prior)` on the observation of `opts.vis`. Progress: "reading", then a
/// stage per prior (flow steps) named after it; a log line per prior as it finishes.
pub fn compare_priors(
    priors: &[(String, &ScoreModel)],
    opts: &ComparePriorsOptions,
    obs: &dyn Observer,
) -> Result<Comparison> {
    let e = &opts.evidence;
    if e.chains < 2 || e.elbo_samples < 2 || e.elbo_samples % 2 == 1 {
        input_error!("--chains must be at least 2 and --elbo-samples even and at least 2");
    }
    let Some((first, m0)) = priors.first() else {
        input_error!("no prior to compare: give --prior at least once");
    };
    let side = m0.image_size();
    if let Some((p, m)) = priors.iter().find(|(_, m)| m.image_size() != side) {
        input_error!(
            "prior {p} makes {}² images and {first} makes {side}²: compare priors of one size",
            m.image_size()
        );
    }
    if let Some(f) = opts.flux_scale {
        if !(f > 0.0 && f.is_finite()) {
            input_error!("--flux-scale must be positive, got {f}");
        }
    }
    let ms = VisFile::open(&opts.vis)?;
    let chunks = merge_by_frequency(read_vis(&ms, &opts.selection, obs)?);
    let n_usable = count_usable(&chunks, &opts.vis)?;
    let scale = opts
        .scale
        .unwrap_or_else(|| (1.0 / 3.0) / longest_baseline(&chunks));
    let geometry = ImageGeometry::new(side, side, scale, scale)?;
    let c = match chunks.as_slice() {
        [c] => c,
        _ => input_error!(
            "{} has spectral windows with different channel frequencies; select one with --spw",
            opts.vis.display()
        ),
    };
    let noise = estimate_noise(&chunks);
    let factor = noise.as_ref().map_or(1.0, |n| n.weight_factor);
    let noise_source = match &noise {
        Some(n) => format!(
            "σ² = {:.3e}/w from {} successive differences",
            n.weight_factor, n.n_pairs
        ),
        None => "σ² = 1/WEIGHT (no successive integrations to estimate it from)".into(),
    };
    let total_flux = shortest_baseline_flux(c);
    if opts.flux_scale.is_none() && (total_flux.is_nan() || total_flux <= 0.0) {
        input_error!(
            "{} holds no flux on its shortest baselines to scale the priors by: give --flux-scale",
            opts.vis.display()
        );
    }
    let mask: Vec<bool> = c.weight.iter().map(|&w| w > 0.0).collect();
    let nufft = Nufft::new(geometry, &c.uvw, &c.freq, Some(&mask), &opts.nufft)?;
    let (y, sigma) = usable_data(c, factor);
    let gamma_factors = vis_gamma_factors(c, &geometry);
    obs.log(&format!(
        "{}: {n_usable} visibilities, {side}×{side} pixels of {:.4}″, noise {noise_source}, \
         total flux {total_flux:.4} Jy (shortest 5 % of baselines)",
        opts.vis.display(),
        scale.to_degrees() * 3600.0,
    ));
    let mut out = Vec::with_capacity(priors.len());
    for (name, model) in priors {
        obs.stage(name, e.steps as u64);
        let t0 = Instant::now();
        let flux_scale = match opts.flux_scale {
            Some(f) => f,
            None => prior_flux_scale(model, total_flux, e.seed)?,
        };
        // The flux scale folded into the operator: the likelihood in the prior's units.
        let op = Scaled {
            inner: &nufft,
            scale: flux_scale as f32,
        };
        let mut lik = GaussianLikelihood::new(op, y.clone(), &sigma)?;
        lik.inflate_gamma(&gamma_factors)?;
        let ev = evidence(*model, &lik, e, obs)?;
        let seconds = t0.elapsed().as_secs_f64();
        obs.log(&format!(
            "  {name}: flux scale {flux_scale:.4} Jy/pixel, bound {:.1} ± {:.1} nats, {seconds:.1} s",
            ev.elbo, ev.elbo_std_err
        ));
        out.push(PriorEvidence {
            name: name.clone(),
            flux_scale,
            evidence: ev,
            seconds,
        });
    }
    Ok(Comparison {
        observation: ObservationSummary {
            n_usable,
            noise_source,
            side,
            scale,
            total_flux,
        },
        priors: out,
    })
}
