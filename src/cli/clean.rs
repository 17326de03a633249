//! `interf-image clean`: CLEAN images as WSClean makes them (Högbom minor cycles inside
//! Cotton–Schwab major cycles), writing NAME-model, -residual, -image and -psf.fits.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;

use super::common::{
    check_outputs, default_name, format_angle, output_path, set_threads, ComputeArgs, GriddingArgs,
    SelectionArgs,
};
use super::dirty::{dirty_options, stage_bar};
use super::interrupt::Terminal;
use crate::io::{write_image, SkyHeader};
use crate::pipeline::clean::{clean, CleanOptions, CleanResult};
use crate::pipeline::image::NoiseSource;

#[derive(Debug, Clone, Args)]
pub struct CleanArgs {
    /// The Measurement Set (opened read-only).
    pub vis: PathBuf,
    /// Image size in pixels: WIDTH [HEIGHT].
    #[arg(long, num_args = 1..=2, default_values_t = [512])]
    pub size: Vec<usize>,
    /// Pixel size with a unit, as WSClean's -scale: 0.5asec, 20masec, 1amin, 0.01deg.
    /// Default: a quarter of the theoretical beam (1/longest baseline).
    #[arg(long)]
    pub scale: Option<String>,
    /// Weighting: natural, uniform or briggs ROBUST (−2 … 2).
    #[arg(long, num_args = 1..=2, default_values = ["briggs", "0"], allow_negative_numbers = true)]
    pub weight: Vec<String>,
    /// Most CLEAN components (minor iterations), as WSClean's -niter.
    #[arg(long, default_value_t = 10_000)]
    pub niter: usize,
    /// Loop gain: the fraction of the peak taken per component.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.1)]
    pub gain: f64,
    /// Major-cycle gain: clean the peak down by this fraction before the residual is
    /// recomputed from the visibilities (WSClean's default is 1, a single major cycle).
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.8)]
    pub mgain: f64,
    /// Stop at this residual peak, Jy/beam.
    #[arg(long, allow_negative_numbers = true, default_value_t = 0.0)]
    pub threshold: f64,
    /// Stop at this many σ of the residual (σ = 1.4826 × median |residual|, as WSClean's
    /// -auto-threshold); 0 turns it off.
    #[arg(long, allow_negative_numbers = true, default_value_t = 3.0)]
    pub auto_threshold: f64,
    /// Most major cycles, as WSClean's -nmiter.
    #[arg(long, default_value_t = 20)]
    pub nmiter: usize,
    /// Only positive components (peak by value, not by absolute value).
    #[arg(long)]
    pub no_negative: bool,
    /// Output prefix: writes NAME-model.fits, NAME-residual.fits, NAME-image.fits and
    /// NAME-psf.fits. Default: the MS name.
    #[arg(long, value_parser = super::common::output_name)]
    pub name: Option<String>,
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[command(flatten)]
    pub gridding: GriddingArgs,
    /// The visibility noise for the model's reduced χ², as `image` sets it: `auto` from
    /// successive integrations, `weights` σ² = 1/WEIGHT.
    #[arg(long, value_enum, default_value_t = NoiseSource::Auto)]
    pub noise: NoiseSource,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

pub fn run(args: CleanArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    set_threads(args.compute.threads)?;
    let opts = options(&args)?;
    opts.check()?;
    // Refused outputs fail before any work, and never leave a sibling half-written.
    let name = args.name.clone().unwrap_or_else(|| default_name(&args.vis));
    check_outputs(
        &name,
        &[
            "model.fits",
            "residual.fits",
            "image.fits",
            "psf.fits",
            "summary.json",
        ],
        &[&args.vis],
    )?;

    let bar = stage_bar();
    let r = clean(&opts, &Terminal::bar(&bar));
    bar.finish_and_clear();
    let r = r?;

    let inputs = [args.vis.as_path()];
    let paths = ["model", "residual", "image", "psf"]
        .map(|suffix| output_path(&name, suffix, &inputs))
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let (nx, ny) = (opts.image.nx, opts.image.ny);
    let write = |path: &PathBuf, data: &[f32], h: &SkyHeader| {
        write_image(path, data, ny, nx, h).with_context(|| format!("writing {}", path.display()))
    };
    let c = &r.clean;
    write(&paths[0], &c.model, &r.model_header)?;
    write(&paths[1], &c.residual, &r.header)?;
    write(&paths[2], &c.restored, &r.header)?;
    write(&paths[3], &c.psf, &r.header)?;
    let jp = output_path(&name, "summary", &inputs)?.with_extension("json");
    crate::io::write_atomic(
        &jp,
        serde_json::to_string_pretty(&summary(&opts, &r))?.as_bytes(),
    )
    .with_context(|| format!("cannot write {}", jp.display()))?;
    report(&opts, &r, &paths, start);
    Ok(())
}

fn options(args: &CleanArgs) -> anyhow::Result<CleanOptions> {
    Ok(CleanOptions {
        image: dirty_options(
            &args.vis,
            &args.size,
            args.scale.as_deref(),
            &args.weight,
            &args.selection,
            &args.gridding,
            &args.compute,
        )?,
        clean: crate::imaging::CleanOptions {
            niter: args.niter,
            gain: args.gain,
            mgain: args.mgain,
            threshold: args.threshold,
            // 0 turns it off; a negative one is refused by the pipeline's check.
            auto_threshold: (args.auto_threshold != 0.0).then_some(args.auto_threshold),
            max_major_cycles: args.nmiter,
            allow_negative: !args.no_negative,
        },
        noise: args.noise,
    })
}

/// NAME-summary.json.
fn summary(opts: &CleanOptions, r: &CleanResult) -> serde_json::Value {
    let (img, c) = (&opts.image, &r.clean);
    serde_json::json!({
        "measurement_set": img.vis,
        "image_size": [img.nx, img.ny],
        "pixel_arcsec": r.scale.to_degrees() * 3600.0,
        "weighting": img.weighting.describe(),
        "iterations": c.iterations,
        "major_cycles": c.major_cycles,
        "stop": c.stop.to_string(),
        "model_flux_jy": r.model_flux,
        "peak_residual_jy_per_beam": c.peak_residual,
        "residual_sigma_jy_per_beam": c.residual_sigma,
        "noise_factor": r.noise_factor,
        "noise": if r.noise.is_some() { "successive differences" } else { "weights" },
        "reduced_chi2_model": r.chi2,
        "beam_arcsec": [c.beam.major_deg * 3600.0, c.beam.minor_deg * 3600.0],
        "beam_pa_deg": c.beam.pa_deg,
    })
}

fn report(opts: &CleanOptions, r: &CleanResult, paths: &[PathBuf], start: Instant) {
    let (img, c) = (&opts.image, &r.clean);
    println!("{}", img.vis.display());
    println!(
        "  field {} '{}', {} visibilities gridded, image {}×{} of {}, {} weighting",
        r.field_id,
        r.field_name,
        c.stats.gridded,
        img.nx,
        img.ny,
        format_angle(r.scale),
        img.weighting.describe()
    );
    println!(
        "  CLEAN: {} iterations, {} major cycles ({}); model flux {:.4} Jy",
        c.iterations, c.major_cycles, c.stop, r.model_flux
    );
    println!(
        "  peak residual {:.4e} Jy/beam (σ {:.4e}), restored peak {:.4} Jy/beam",
        c.peak_residual, c.residual_sigma, c.restored_peak
    );
    println!(
        "  reduced χ² of the model over all visibilities: {:.3} (noise {})",
        r.chi2,
        match r.noise {
            Some(e) => format!(
                "σ² = {:.3e}/w from {} successive differences",
                e.weight_factor, e.n_pairs
            ),
            None => "σ² = 1/WEIGHT".into(),
        }
    );
    println!(
        "  beam {} × {}, PA {:.2}°",
        format_angle(c.beam.major_deg.to_radians()),
        format_angle(c.beam.minor_deg.to_radians()),
        c.beam.pa_deg
    );
    let p: Vec<_> = paths.iter().map(|p| p.display()).collect();
    println!(
        "  wrote {}, {}, {}, {} in {:.2} s (read {:.2} s, imaging and CLEAN {:.2} s)",
        p[0],
        p[1],
        p[2],
        p[3],
        start.elapsed().as_secs_f64(),
        r.read_time.as_secs_f64(),
        r.clean_time.as_secs_f64()
    );
}
