//! `interf-image compare-priors VIS --prior A --prior B …`: one observation imaged under
//! several score priors, ranked by a lower bound on each prior's evidence `p(y | prior)`
//! ([`crate::sample::evidence`]). The same data, the same noise estimate and the same visibility
//! likelihood for every prior; only the prior (and so its flux scale) differs.

use super::common::ComputeArgs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use super::common::{check_output, check_outputs, parse_angle, set_threads, SelectionArgs};
use super::interrupt::Terminal;
use super::prior::{device, load_prior, DeviceArg};
use crate::operator::NufftOptions;
use crate::pipeline::compare_priors::{
    compare_priors, ComparePriorsOptions, Comparison, PriorEvidence,
};
use crate::prior::ScoreModel;
use crate::sample::evidence::EvidenceOptions;

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

pub fn run(args: ComparePriorsArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    super::prior::tune_malloc();
    set_threads(args.compute.threads)?;
    let inputs: Vec<&Path> = std::iter::once(args.vis.as_path())
        .chain(
            args.priors
                .iter()
                .filter(|p| *p != "default")
                .map(Path::new),
        )
        .collect();
    check_outputs(&args.name, &["evidence.json"], &inputs)?;
    let opts = ComparePriorsOptions {
        vis: args.vis.clone(),
        selection: args.selection.to_selection()?,
        scale: args.scale.as_deref().map(parse_angle).transpose()?,
        flux_scale: args.flux_scale,
        evidence: EvidenceOptions {
            chains: args.chains,
            steps: args.steps,
            elbo_samples: args.elbo_samples,
            seed: args.seed,
        },
        nufft: NufftOptions {
            epsilon: args.compute.epsilon,
            ..Default::default()
        },
    };
    let dev = device(args.device)?;
    let models = args
        .priors
        .iter()
        .map(|p| load_prior(p, &dev).with_context(|| format!("loading prior {p}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let named: Vec<(String, &ScoreModel)> = args.priors.iter().cloned().zip(&models).collect();
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{prefix:>12} [{bar:40}] {pos}/{len} ({eta}) {msg}")
            .expect("static template"),
    );
    let res = compare_priors(&named, &opts, &Terminal::bar(&bar));
    bar.finish_and_clear();
    let res = res?;
    print_ranking(&res.priors);
    write_json(&args, &res, &inputs)?;
    eprintln!("done in {:.1} s", start.elapsed().as_secs_f64());
    Ok(())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn print_ranking(rows: &[PriorEvidence]) {
    let mut order: Vec<usize> = (0..rows.len()).collect();
    order.sort_by(|&a, &b| rows[b].evidence.elbo.total_cmp(&rows[a].evidence.elbo));
    let best = rows[order[0]].evidence.elbo;
    println!("rank  prior                         evidence bound (nats)   Δ to best   draws' χ²");
    for (rank, &i) in order.iter().enumerate() {
        let PriorEvidence {
            name: spec,
            evidence: e,
            ..
        } = &rows[i];
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

fn write_json(args: &ComparePriorsArgs, res: &Comparison, inputs: &[&Path]) -> anyhow::Result<()> {
    let obs = &res.observation;
    let priors: Vec<_> = res
        .priors
        .iter()
        .map(|p| {
            let (spec, e, flux_scale, secs) = (&p.name, &p.evidence, p.flux_scale, p.seconds);
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
        "visibilities": obs.n_usable,
        "noise": obs.noise_source,
        "pixels": obs.side,
        "pixel_arcsec": obs.scale.to_degrees() * 3600.0,
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
