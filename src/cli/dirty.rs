//! `interf-image dirty`: dirty image and PSF, as `wsclean -niter 0` makes them.

use super::common::ComputeArgs;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::ProgressBar;

use super::common::{
    check_field_of_view, check_memory, check_outputs, count_usable, default_name, format_angle,
    freq_range, gridding_memory, longest_baseline, output_path, parse_angle, read_with_progress,
    set_threads, sky_header, GriddingArgs, SelectionArgs,
};
use crate::imaging::{make_dirty_and_psf, ImagingOptions, Weighting};
use crate::io::{write_image, HeaderValue};
use crate::operator::ImageGeometry;
use ms_io::VisFile;

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
        gridding_memory(nx, ny, args.gridding.padding, 6),
        &format!("a {nx}×{ny} dirty image and PSF"),
        args.gridding.max_memory,
    )?;
    let selection = args.selection.to_selection()?;
    // Refused outputs fail before any work, and never leave a sibling half-written.
    let name = args.name.clone().unwrap_or_else(|| default_name(&args.vis));
    check_outputs(&name, &["dirty.fits", "psf.fits"], &[&args.vis])?;

    let ms = VisFile::open(&args.vis)?;
    let info = ms.info().clone();
    let field_id = ms.resolve_field(&selection)?;
    let field = &info.fields[field_id];

    let chunks = read_with_progress(&ms, &selection)?;
    let t_read = start.elapsed();

    let n_samples: usize = chunks.iter().map(|c| c.weight.len()).sum();
    let n_usable = count_usable(&chunks, &args.vis)?;

    let scale = match &args.scale {
        Some(s) => parse_angle(s)?,
        None => {
            let b = longest_baseline(&chunks);
            0.25 / b
        }
    };
    check_field_of_view(nx, ny, scale, longest_baseline(&chunks))?;
    let geometry = ImageGeometry::new(nx, ny, scale, scale)?;
    let mut opts = ImagingOptions::new(geometry, weighting);
    args.gridding.apply(w_mode, args.compute.epsilon, &mut opts);

    let spinner = ProgressBar::new_spinner().with_message("gridding dirty image and PSF");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let products = make_dirty_and_psf(&chunks, &opts)?;
    spinner.finish_and_clear();
    let t_grid = start.elapsed() - t_read;

    let (fmin, fmax) = freq_range(&chunks);
    let mut header = sky_header(&info, field_id, &chunks, scale, "JY/BEAM");
    header.extra = vec![
        ("WEIGHTNG".into(), HeaderValue::Str(weighting.describe())),
        ("EPSILON".into(), HeaderValue::F64(args.compute.epsilon)),
        (
            "NVIS".into(),
            HeaderValue::I64(products.stats.gridded as i64),
        ),
    ];
    let dirty_path = output_path(&name, "dirty", &[&args.vis])?;
    let psf_path = output_path(&name, "psf", &[&args.vis])?;
    write_image(&dirty_path, &products.dirty, ny, nx, &header)
        .with_context(|| format!("writing {}", dirty_path.display()))?;
    header.extra.retain(|(k, _)| k != "NVIS");
    write_image(&psf_path, &products.psf, ny, nx, &header)
        .with_context(|| format!("writing {}", psf_path.display()))?;

    let s = &products.stats;
    let (peak_i, peak) = products
        .dirty
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
    println!("{}", args.vis.display());
    println!(
        "  telescope {}, field {} '{}', {} rows, {:.4}–{:.4} GHz",
        info.telescope,
        field_id,
        field.name,
        info.n_rows,
        fmin / 1e9,
        fmax / 1e9
    );
    println!(
        "  visibilities: {} samples, {} used, {} flagged or zero weight, {} beyond the uv grid",
        n_samples,
        s.gridded,
        n_samples - n_usable,
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
        nx,
        ny,
        format_angle(scale),
        weighting.describe(),
        args.compute.epsilon
    );
    println!(
        "  dirty peak {:.4} Jy/beam at pixel ({}, {})",
        peak,
        peak_i / nx,
        peak_i % nx
    );
    println!(
        "  wrote {} and {} in {:.2} s (read {:.2} s, gridding {:.2} s)",
        dirty_path.display(),
        psf_path.display(),
        start.elapsed().as_secs_f64(),
        t_read.as_secs_f64(),
        t_grid.as_secs_f64()
    );
    Ok(())
}
