//! `interf-image dirty`: dirty image and PSF, as `wsclean -niter 0` makes them.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};

use super::common::{
    check_outputs, default_name, format_angle, output_path, parse_angle, set_threads, ComputeArgs,
    GriddingArgs, SelectionArgs,
};
use super::interrupt::Terminal;
use crate::imaging::{ImagingOptions, Weighting};
use crate::io::write_image;
use crate::operator::ImageGeometry;
use crate::pipeline::dirty::{dirty, DirtyOptions, DirtyResult};

#[derive(Debug, Clone, Args)]
pub struct DirtyArgs {
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
    /// Output prefix: writes NAME-dirty.fits and NAME-psf.fits. Default: the MS name.
    #[arg(long, value_parser = super::common::output_name)]
    pub name: Option<String>,
    #[command(flatten)]
    pub selection: SelectionArgs,
    #[command(flatten)]
    pub gridding: GriddingArgs,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

pub fn run(args: DirtyArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    set_threads(args.compute.threads)?;
    let opts = dirty_options(
        &args.vis,
        &args.size,
        args.scale.as_deref(),
        &args.weight,
        &args.selection,
        &args.gridding,
        &args.compute,
    )?;
    opts.check()?;
    // Refused outputs fail before any work, and never leave a sibling half-written.
    let name = args.name.clone().unwrap_or_else(|| default_name(&args.vis));
    check_outputs(&name, &["dirty.fits", "psf.fits"], &[&args.vis])?;

    let bar = stage_bar();
    let r = dirty(&opts, &Terminal::bar(&bar));
    bar.finish_and_clear();
    let r = r?;

    let dirty_path = output_path(&name, "dirty", &[&args.vis])?;
    let psf_path = output_path(&name, "psf", &[&args.vis])?;
    let (nx, ny) = (opts.nx, opts.ny);
    write_image(&dirty_path, &r.dirty, ny, nx, &r.dirty_header)
        .with_context(|| format!("writing {}", dirty_path.display()))?;
    write_image(&psf_path, &r.psf, ny, nx, &r.psf_header)
        .with_context(|| format!("writing {}", psf_path.display()))?;
    report(&opts, &r, [&dirty_path, &psf_path], start);
    Ok(())
}

/// The imaging options `dirty` and `clean` share, from their common arguments (the size and
/// memory checks are the pipeline's).
pub(super) fn dirty_options(
    vis: &Path,
    size: &[usize],
    scale: Option<&str>,
    weight: &[String],
    selection: &SelectionArgs,
    gridding: &GriddingArgs,
    compute: &ComputeArgs,
) -> anyhow::Result<DirtyOptions> {
    let weighting = Weighting::from_words(weight)?;
    let (nx, ny) = match size {
        [n] => (*n, *n),
        [w, h] => (*w, *h),
        _ => bail!("--size takes WIDTH [HEIGHT]"),
    };
    let w_mode = gridding.w_mode()?;
    // `GriddingArgs::apply` fills ImagingOptions, whose geometry the pipeline sets only once
    // the data give the default scale: this one is a placeholder, never used.
    let mut imaging = ImagingOptions::new(ImageGeometry::new(8, 8, 1.0, 1.0)?, weighting);
    gridding.apply(w_mode, compute.epsilon, &mut imaging);
    Ok(DirtyOptions {
        vis: vis.to_path_buf(),
        selection: selection.to_selection()?,
        nx,
        ny,
        scale: scale.map(parse_angle).transpose()?,
        weighting,
        padding: imaging.padding,
        rank_filter: imaging.rank_filter,
        nufft: imaging.nufft,
        max_memory: gridding.max_memory,
    })
}

/// A bar for the pipeline's stages, each named in its prefix; it ticks through stages that
/// report no length (gridding).
pub(super) fn stage_bar() -> ProgressBar {
    let bar = ProgressBar::new(0).with_style(
        ProgressStyle::with_template("{prefix:>10} [{bar:40}] {pos}/{len} ({elapsed}) {msg}")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn report(opts: &DirtyOptions, r: &DirtyResult, paths: [&Path; 2], start: Instant) {
    let (info, s) = (&r.info, &r.stats);
    let (fmin, fmax) = r.freq_range;
    println!("{}", opts.vis.display());
    println!(
        "  telescope {}, field {} '{}', {} rows, {:.4}–{:.4} GHz",
        info.telescope,
        r.field_id,
        info.fields[r.field_id].name,
        info.n_rows,
        fmin / 1e9,
        fmax / 1e9
    );
    println!(
        "  visibilities: {} samples, {} used, {} flagged or zero weight, {} beyond the uv grid",
        r.n_samples,
        s.gridded,
        r.n_samples - r.n_usable,
        s.beyond_grid
    );
    println!(
        "  uv range {:.0}–{:.0} λ, max |w| {:.0} λ, theoretical beam {}",
        s.min_uv,
        s.max_uv,
        s.max_abs_w,
        format_angle(s.theoretical_beam)
    );
    println!(
        "  image {}×{} of {}, {} weighting, ε = {:.0e}",
        opts.nx,
        opts.ny,
        format_angle(r.scale),
        opts.weighting.describe(),
        opts.nufft.epsilon
    );
    println!(
        "  dirty peak {:.4} Jy/beam at pixel ({}, {})",
        r.peak, r.peak_pixel.0, r.peak_pixel.1
    );
    println!(
        "  wrote {} and {} in {:.2} s (read {:.2} s, gridding {:.2} s)",
        paths[0].display(),
        paths[1].display(),
        start.elapsed().as_secs_f64(),
        r.read_time.as_secs_f64(),
        r.grid_time.as_secs_f64()
    );
}
