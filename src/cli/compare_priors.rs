//! `interf-image compare-priors VIS --prior A --prior B …`: one observation imaged under
//! several score priors, ranked by a lower bound on each prior's evidence `p(y | prior)`
//! ([`crate::sample::evidence`]). The same data, the same noise estimate and the same visibility
//! likelihood for every prior; only the prior (and so its flux scale) differs.

use super::common::ComputeArgs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::common::{
    check_output, check_outputs, count_usable, longest_baseline, parse_angle, read_with_progress,
    set_threads, SelectionArgs,
};
use super::prior::{device, load_prior, DeviceArg};
use crate::imaging::estimate_noise;
use crate::likelihood::GaussianLikelihood;
use crate::operator::{ImageGeometry, Nufft, NufftOptions, Scaled};
use crate::pipeline::image::prior_flux_scale;
use crate::pipeline::vis::{
    merge_by_frequency, shortest_baseline_flux, usable_data, vis_gamma_factors,
};
use crate::prior::ScoreModel;
use crate::sample::evidence::{evidence, Evidence, EvidenceOptions};
use ms_io::{VisChunk, VisFile};

#[derive(Debug, Clone, Args)]
pub struct ComparePriorsArgs {
    /// Measurement Set or UVFITS file (opened read-only).
    pub vis: PathBuf,
    /// A prior checkpoint folder, or `default` for the built-in prior; give it once per prior.
    #[arg(long = "prior", required = true, num_args = 1)]
    pub priors: Vec<String>,
    /// Pixel size (0.5asec, 20masec, …). Default: a third of the theoretical beam, as `image`.
    #[arg(long)]
    pub scale: Option<String>,
    /// Jy/pixel of a prior image value of 1, the same for every prior. Default: each prior's
    /// own, at which its typical image holds the data's total flux (the median amplitude on the
    /// shortest 5 % of baselines), so that each prior is judged at the brightness it expects.
    #[arg(long)]
    pub flux_scale: Option<f64>,
    /// Draws of each prior's posterior flow (their spread gives the standard error).
    #[arg(long, default_value_t = 8, value_parser = super::common::at_least_one)]
    pub chains: usize,
    /// Runge–Kutta steps of the flow (four network passes with their backward pass each).
    #[arg(long, default_value_t = 50, value_parser = super::common::at_least_one)]
    pub steps: usize,
    /// Monte-Carlo draws of each draw's prior ELBO (even).
    #[arg(long, default_value_t = 64)]
    pub elbo_samples: usize,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Output prefix: NAME-evidence.json.
    #[arg(long, value_parser = super::common::output_name, default_value = "compare-priors")]
    pub name: String,
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    pub device: DeviceArg,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

/// The observation every prior is judged on: usable visibilities, their σ, the NUFFT plan.
struct Observation {
    y: Vec<f32>,
    sigma: Vec<f32>,
    nufft: Nufft,
    gamma_factors: Vec<f32>,
    geometry: ImageGeometry,
    /// Median amplitude on the shortest 5 % of baselines, Jy.
    total_flux: f64,
    noise_source: String,
}

fn observation(
    chunks: &[VisChunk],
    geometry: ImageGeometry,
    opts: &NufftOptions,
    vis: &Path,
) -> anyhow::Result<Observation> {
    let c = match chunks {
        [c] => c,
        _ => bail!(
            "{} has spectral windows with different channel frequencies; select one with --spw",
            vis.display()
        ),
    };
    let noise = estimate_noise(chunks);
    let factor = noise.as_ref().map_or(1.0, |n| n.weight_factor);
    let noise_source = match &noise {
        Some(n) => format!(
            "σ² = {:.3e}/w from {} successive differences",
            n.weight_factor, n.n_pairs
        ),
        None => "σ² = 1/WEIGHT (no successive integrations to estimate it from)".into(),
    };
    let mask: Vec<bool> = c.weight.iter().map(|&w| w > 0.0).collect();
    let nufft = Nufft::new(geometry, &c.uvw, &c.freq, Some(&mask), opts)?;
    let (y, sigma) = usable_data(c, factor);
    Ok(Observation {
        y,
        sigma,
        nufft,
        gamma_factors: vis_gamma_factors(c, &geometry),
        geometry,
        total_flux: shortest_baseline_flux(c),
        noise_source,
    })
}

/// One prior's evidence on the observation, its flux scale folded into the operator.
fn judge(
    model: &ScoreModel,
    obs: &Observation,
    flux_scale: f64,
    opts: &EvidenceOptions,
    bar: &ProgressBar,
) -> anyhow::Result<Evidence> {
    let op = Scaled {
        inner: &obs.nufft,
        scale: flux_scale as f32,
    };
    let mut lik = GaussianLikelihood::new(op, obs.y.clone(), &obs.sigma)?;
    lik.inflate_gamma(&obs.gamma_factors)?;
    evidence(model, &lik, opts, &super::interrupt::Terminal::bar(bar)).map_err(|e| {
        if super::interrupt::check().is_err() {
            super::interrupt::Interrupted.into()
        } else {
            anyhow::anyhow!("{e}")
        }
    })
}

pub fn run(args: ComparePriorsArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    super::prior::tune_malloc();
    set_threads(args.compute.threads)?;
    if args.chains < 2 || args.elbo_samples < 2 || args.elbo_samples % 2 == 1 {
        bail!("--chains must be at least 2 and --elbo-samples even and at least 2");
    }
    let inputs: Vec<&Path> = std::iter::once(args.vis.as_path())
        .chain(
            args.priors
                .iter()
                .filter(|p| *p != "default")
                .map(Path::new),
        )
        .collect();
    check_outputs(&args.name, &["evidence.json"], &inputs)?;
    let dev = device(args.device)?;
    let models = args
        .priors
        .iter()
        .map(|p| load_prior(p, &dev).with_context(|| format!("loading prior {p}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let side = models[0].image_size();
    if let Some((p, m)) = args
        .priors
        .iter()
        .zip(&models)
        .find(|(_, m)| m.image_size() != side)
    {
        bail!(
            "prior {p} makes {}² images and {} makes {side}²: compare priors of one size",
            m.image_size(),
            args.priors[0]
        );
    }
    let ms = VisFile::open(&args.vis)?;
    let chunks = merge_by_frequency(read_with_progress(&ms, &args.selection.to_selection()?)?);
    let n_usable = count_usable(&chunks, &args.vis)?;
    let scale = match &args.scale {
        Some(s) => parse_angle(s)?,
        None => (1.0 / 3.0) / longest_baseline(&chunks),
    };
    let geometry = ImageGeometry::new(side, side, scale, scale)?;
    let nufft_opts = NufftOptions {
        epsilon: args.compute.epsilon,
        ..Default::default()
    };
    let obs = observation(&chunks, geometry, &nufft_opts, &args.vis)?;
    if let Some(f) = args.flux_scale {
        if !(f > 0.0 && f.is_finite()) {
            bail!("--flux-scale must be positive, got {f}");
        }
    } else if obs.total_flux.is_nan() || obs.total_flux <= 0.0 {
        bail!(
            "{} holds no flux on its shortest baselines to scale the priors by: give --flux-scale",
            args.vis.display()
        );
    }
    eprintln!(
        "{}: {n_usable} visibilities, {side}×{side} pixels of {:.4}″, noise {}, total flux \
         {:.4} Jy (shortest 5 % of baselines)",
        args.vis.display(),
        obs.geometry.dx.abs().to_degrees() * 3600.0,
        obs.noise_source,
        obs.total_flux
    );
    let opts = EvidenceOptions {
        chains: args.chains,
        steps: args.steps,
        elbo_samples: args.elbo_samples,
        seed: args.seed,
    };
    let mut rows = Vec::new();
    for (spec, model) in args.priors.iter().zip(&models) {
        let bar = ProgressBar::new(args.steps as u64).with_style(
            ProgressStyle::with_template("{msg:>12} [{bar:40}] {pos}/{len} steps ({eta})")
                .expect("static template"),
        );
        bar.set_message(spec.clone());
        let t0 = Instant::now();
        let flux_scale = match args.flux_scale {
            Some(f) => f,
            None => prior_flux_scale(model, obs.total_flux, args.seed)?,
        };
        let e = judge(model, &obs, flux_scale, &opts, &bar)?;
        bar.finish_and_clear();
        let secs = t0.elapsed().as_secs_f64();
        eprintln!(
            "  {spec}: flux scale {flux_scale:.4} Jy/pixel, bound {:.1} ± {:.1} nats, {secs:.1} s",
            e.elbo, e.elbo_std_err
        );
        rows.push(Row {
            spec: spec.clone(),
            e,
            flux_scale,
            secs,
        });
    }
    print_ranking(&rows);
    write_json(&args, &rows, &obs, n_usable, &inputs)?;
    eprintln!("done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// One prior's result.
struct Row {
    spec: String,
    e: Evidence,
    flux_scale: f64,
    secs: f64,
}

fn print_ranking(rows: &[Row]) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| rows[b].e.elbo.total_cmp(&rows[a].e.elbo));
    let best = rows[order[0]].e.elbo;
    println!("rank  prior                         evidence bound (nats)   Δ to best   draws' χ²");
    for (rank, &i) in order.iter().enumerate() {
        let Row { spec, e, .. } = &rows[i];
        let chi2 = median(e.draws.iter().map(|d| d.reduced_chi2).collect());
        println!(
            "{:>4}  {spec:<28}  {:>14.1} ± {:<6.1}  {:>9.1}   {chi2:.3}",
            rank + 1,
            e.elbo,
            e.elbo_std_err,
            e.elbo - best
        );
    }
    println!(
        "(a lower bound on log p(y | prior), the same data and likelihood for each; differences \
         within about 2 standard errors do not rank)"
    );
}

fn write_json(
    args: &ComparePriorsArgs,
    rows: &[Row],
    obs: &Observation,
    n_usable: usize,
    inputs: &[&Path],
) -> anyhow::Result<()> {
    let priors: Vec<_> = rows
        .iter()
        .map(|Row { spec, e, flux_scale, secs }| {
            json!({
                "prior": spec,
                "flux_scale_jy_per_pixel": flux_scale,
                "evidence_lower_bound_nats": e.elbo,
                "std_err_nats": e.elbo_std_err,
                "mean_log_likelihood": e.mean_log_likelihood,
                "mean_log_prior_elbo": e.mean_log_prior,
                "mean_log_q": e.mean_log_q,
                "draws_reduced_chi2": e.draws.iter().map(|d| d.reduced_chi2).collect::<Vec<_>>(),
                "seconds": secs,
            })
        })
        .collect();
    let j = json!({
        "vis": args.vis,
        "visibilities": n_usable,
        "noise": obs.noise_source,
        "pixels": obs.geometry.nx,
        "pixel_arcsec": obs.geometry.dx.abs().to_degrees() * 3600.0,
        "total_flux_jy_shortest_baselines": obs.total_flux,
        "chains": args.chains,
        "steps": args.steps,
        "elbo_samples": args.elbo_samples,
        "seed": args.seed,
        "method": "posterior probability-flow ODE (Tweedie mean, free-fraction variance) as q; \
                   prior ELBO; Gaussian visibility likelihood with its normalisation",
        "priors": priors,
    });
    let path = PathBuf::from(format!("{}-evidence.json", args.name));
    check_output(&path, inputs)?;
    crate::io::write_atomic(&path, serde_json::to_string_pretty(&j)?.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    eprintln!("wrote {}", path.display());
    Ok(())
}
