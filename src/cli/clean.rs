//! `interf-image clean`: CLEAN images as WSClean makes them (Högbom minor cycles inside
//! Cotton–Schwab major cycles), writing NAME-model, -residual, -image and -psf.fits.

use super::common::ComputeArgs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{
    check_field_of_view, check_memory, check_outputs, count_usable, default_name, format_angle,
    gridding_memory, longest_baseline, output_path, parse_angle, read_with_progress, set_threads,
    sky_header, GriddingArgs, SelectionArgs,
};
use super::image::{merge_by_frequency, NoiseArg};
use crate::imaging::{
    clean_with_progress, estimate_noise, fit, CleanOptions, ImagingError, ImagingOptions, Weighting,
};
use crate::io::{write_image, HeaderValue};
use crate::operator::ImageGeometry;
use ms_io::VisFile;

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
    #[arg(long, value_enum, default_value_t = NoiseArg::Auto)]
    pub noise: NoiseArg,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

pub fn run(args: CleanArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    set_threads(args.compute.threads)?;
    let weighting = Weighting::from_words(&args.weight)?;
    let (nx, ny) = match args.size.as_slice() {
        [n] => (*n, *n),
        [w, h] => (*w, *h),
        _ => bail!("--size takes WIDTH [HEIGHT]"),
    };
    let w_mode = args.gridding.w_mode()?;
    if nx == 0 || ny == 0 {
        bail!("--size must be at least 1 pixel, got {nx}×{ny}");
    }
    check_memory(
        gridding_memory(nx, ny, args.gridding.padding, 12),
        &format!("CLEAN of a {nx}×{ny} image"),
        args.gridding.max_memory,
    )?;
    if args.niter == 0 {
        bail!("--niter must be at least 1 (use `interf-image dirty` for no CLEAN)");
    }
    if !(args.auto_threshold >= 0.0 && args.auto_threshold.is_finite()) {
        bail!(
            "--auto-threshold must be ≥ 0 (0 turns it off), got {}",
            args.auto_threshold
        );
    }
    let copts = CleanOptions {
        niter: args.niter,
        gain: args.gain,
        mgain: args.mgain,
        threshold: args.threshold,
        auto_threshold: (args.auto_threshold > 0.0).then_some(args.auto_threshold),
        max_major_cycles: args.nmiter,
        allow_negative: !args.no_negative,
    };
    // The library checks these too; checking before reading the MS fails fast.
    if !(copts.gain > 0.0 && copts.gain <= 1.0) {
        bail!("--gain must be in (0, 1], got {}", copts.gain);
    }
    if !(copts.mgain > 0.0 && copts.mgain <= 1.0) {
        bail!("--mgain must be in (0, 1], got {}", copts.mgain);
    }
    if !(copts.threshold >= 0.0 && copts.threshold.is_finite()) {
        bail!("--threshold must be ≥ 0 Jy, got {}", copts.threshold);
    }
    if copts.max_major_cycles == 0 {
        bail!("--nmiter must be at least 1");
    }
    let selection = args.selection.to_selection()?;
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
    if !args.vis.exists() {
        bail!("{}: no such Measurement Set", args.vis.display());
    }

    let ms = VisFile::open(&args.vis)?;
    let info = ms.info().clone();
    let field_id = ms.resolve_field(&selection)?;
    let field = &info.fields[field_id];

    let chunks = read_with_progress(&ms, &selection)?;
    let t_read = start.elapsed();
    count_usable(&chunks, &args.vis)?;

    let scale = match &args.scale {
        Some(s) => parse_angle(s)?,
        None => 0.25 / longest_baseline(&chunks),
    };
    check_field_of_view(nx, ny, scale, longest_baseline(&chunks))?;
    let geometry = ImageGeometry::new(nx, ny, scale, scale)?;
    let mut opts = ImagingOptions::new(geometry, weighting);
    args.gridding.apply(w_mode, args.compute.epsilon, &mut opts);

    let bar = ProgressBar::new(args.niter as u64).with_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {pos}/{len} iterations ({elapsed})")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message("gridding");
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    let result = clean_with_progress(&chunks, &opts, &copts, |p| {
        bar.set_position(p.iterations as u64);
        bar.set_message(format!(
            "major {} peak {:.3e} Jy/beam → {:.3e}",
            p.major_cycles, p.peak, p.stop_level
        ));
        super::interrupt::check().is_ok()
    });
    bar.finish_and_clear();
    let r = match result {
        Err(ImagingError::Interrupted) => return Err(super::interrupt::Interrupted.into()),
        other => other?,
    };
    let t_clean = start.elapsed() - t_read;
    if r.stop == crate::imaging::StopReason::Diverged {
        eprintln!(
            "warning: CLEAN diverged (a major cycle raised the residual peak); stopped after {} \
             iterations with the last sane model: try a lower --mgain or --gain, a higher \
             --auto-threshold or --threshold, or a larger image",
            r.iterations
        );
    }
    // The model against every visibility with `image`'s noise estimate: the two commands'
    // numbers compare directly.
    let merged = merge_by_frequency(chunks.clone());
    let noise = match args.noise {
        NoiseArg::Auto => estimate_noise(&merged),
        NoiseArg::Weights => None,
    };
    let factor = noise.map_or(1.0, |n| n.weight_factor);
    let chi2 = fit::reduced_chi2(&merged, &geometry, &r.model, factor, &opts.nufft)?;

    let inputs = [args.vis.as_path()];
    let paths = ["model", "residual", "image", "psf"]
        .map(|suffix| output_path(&name, suffix, &inputs))
        .into_iter()
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut header = sky_header(&info, field_id, &chunks, scale, "JY/BEAM");
    header.beam = Some(r.beam);
    header.extra = vec![
        ("WEIGHTNG".into(), HeaderValue::Str(weighting.describe())),
        ("EPSILON".into(), HeaderValue::F64(args.compute.epsilon)),
        ("NVIS".into(), HeaderValue::I64(r.stats.gridded as i64)),
        ("NITER".into(), HeaderValue::I64(args.niter as i64)),
        ("GAIN".into(), HeaderValue::F64(args.gain)),
        ("MGAIN".into(), HeaderValue::F64(args.mgain)),
        ("THRESH".into(), HeaderValue::F64(args.threshold)),
        ("AUTOTHR".into(), HeaderValue::F64(args.auto_threshold)),
        ("MINORIT".into(), HeaderValue::I64(r.iterations as i64)),
        ("MAJORIT".into(), HeaderValue::I64(r.major_cycles as i64)),
    ];
    let mut model_header = header.clone();
    model_header.bunit = "JY/PIXEL".into();
    let write = |path: &PathBuf, data: &[f32], h: &crate::io::SkyHeader| {
        write_image(path, data, ny, nx, h).with_context(|| format!("writing {}", path.display()))
    };
    write(&paths[0], &r.model, &model_header)?;
    write(&paths[1], &r.residual, &header)?;
    write(&paths[2], &r.restored, &header)?;
    write(&paths[3], &r.psf, &header)?;

    let model_flux: f64 = r.model.iter().map(|&v| v as f64).sum();
    let json = serde_json::json!({
        "measurement_set": args.vis,
        "image_size": [nx, ny],
        "pixel_arcsec": scale.to_degrees() * 3600.0,
        "weighting": weighting.describe(),
        "iterations": r.iterations,
        "major_cycles": r.major_cycles,
        "stop": r.stop.to_string(),
        "model_flux_jy": model_flux,
        "peak_residual_jy_per_beam": r.peak_residual,
        "residual_sigma_jy_per_beam": r.residual_sigma,
        "noise_factor": factor,
        "noise": if noise.is_some() { "successive differences" } else { "weights" },
        "reduced_chi2_model": chi2,
        "beam_arcsec": [r.beam.major_deg * 3600.0, r.beam.minor_deg * 3600.0],
        "beam_pa_deg": r.beam.pa_deg,
    });
    let jp = output_path(&name, "summary", &inputs)?.with_extension("json");
    crate::io::write_atomic(&jp, serde_json::to_string_pretty(&json)?.as_bytes())
        .with_context(|| format!("cannot write {}", jp.display()))?;
    println!("{}", args.vis.display());
    println!(
        "  field {} '{}', {} visibilities gridded, image {}×{} of {}, {} weighting",
        field_id,
        field.name,
        r.stats.gridded,
        nx,
        ny,
        format_angle(scale),
        weighting.describe()
    );
    println!(
        "  CLEAN: {} iterations, {} major cycles ({}); model flux {:.4} Jy",
        r.iterations, r.major_cycles, r.stop, model_flux
    );
    println!(
        "  peak residual {:.4e} Jy/beam (σ {:.4e}), restored peak {:.4} Jy/beam",
        r.peak_residual, r.residual_sigma, r.restored_peak
    );
    println!(
        "  reduced χ² of the model over all visibilities: {chi2:.3} (noise {})",
        match noise {
            Some(e) => format!(
                "σ² = {:.3e}/w from {} successive differences",
                e.weight_factor, e.n_pairs
            ),
            None => "σ² = 1/WEIGHT".into(),
        }
    );
    println!(
        "  beam {} × {}, PA {:.2}°",
        format_angle(r.beam.major_deg.to_radians()),
        format_angle(r.beam.minor_deg.to_radians()),
        r.beam.pa_deg
    );
    println!(
        "  wrote {}, {}, {}, {} in {:.2} s (read {:.2} s, imaging and CLEAN {:.2} s)",
        paths[0].display(),
        paths[1].display(),
        paths[2].display(),
        paths[3].display(),
        start.elapsed().as_secs_f64(),
        t_read.as_secs_f64(),
        t_clean.as_secs_f64()
    );
    Ok(())
}
