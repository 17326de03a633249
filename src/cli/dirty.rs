//! `interf-image dirty`: dirty image and PSF, as `wsclean -niter 0` makes them.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Args;
use indicatif::ProgressBar;

use super::common::{
    count_usable, default_name, freq_range, longest_baseline, output_path, parse_angle,
    read_with_progress, set_threads, sky_header, SelectionArgs,
};
use crate::imaging::weighting::RankFilter;
use crate::imaging::{make_dirty_and_psf, ImagingOptions, Weighting};
use crate::io::{write_image, HeaderValue};
use crate::operator::nufft::{NufftOptions, WMode};
use crate::operator::ImageGeometry;
use ms_io::MeasurementSet;

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
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub selection: SelectionArgs,
    /// Gridding accuracy (relative to a direct Fourier transform), 1e-7 … 1e-1.
    #[arg(long, default_value_t = 1e-4)]
    pub epsilon: f64,
    /// W-term correction: auto (when the field and |w| need it), on or off.
    #[arg(long, default_value = "auto")]
    pub wgridding: String,
    /// Padding of the weighting grid, as WSClean's -padding.
    #[arg(long, default_value_t = crate::imaging::weighting::DEFAULT_PADDING)]
    pub padding: f64,
    /// WSClean's weighting rank filter: cap imaging weights at LEVEL × the local mean
    /// (0 turns it off).
    #[arg(long, default_value_t = 3.0)]
    pub weighting_rank_filter: f64,
    /// Window of the rank filter, in uv cells.
    #[arg(long, default_value_t = 16)]
    pub weighting_rank_filter_size: usize,
    /// Threads (default: all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
}

impl DirtyArgs {
    /// What `interf-image VIS.ms` does with no other argument.
    pub fn defaults_for(vis: PathBuf) -> Self {
        Self {
            vis,
            size: vec![512],
            scale: None,
            weight: vec!["briggs".into(), "0".into()],
            name: None,
            selection: SelectionArgs {
                column: "DATA".into(),
                ..Default::default()
            },
            epsilon: 1e-4,
            wgridding: "auto".into(),
            padding: crate::imaging::weighting::DEFAULT_PADDING,
            weighting_rank_filter: 3.0,
            weighting_rank_filter_size: 16,
            threads: 0,
        }
    }
}

pub fn run(args: DirtyArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    set_threads(args.threads)?;
    let weighting = Weighting::from_words(&args.weight)?;
    let (nx, ny) = match args.size.as_slice() {
        [n] => (*n, *n),
        [w, h] => (*w, *h),
        _ => bail!("--size takes WIDTH [HEIGHT]"),
    };
    let w_mode = match args.wgridding.to_ascii_lowercase().as_str() {
        "auto" => WMode::Auto,
        "on" => WMode::On,
        "off" => WMode::Off,
        other => bail!("--wgridding must be auto, on or off, not '{other}'"),
    };
    if !(args.padding >= 1.0 && args.padding.is_finite()) {
        bail!("--padding must be at least 1, got {}", args.padding);
    }
    let selection = args.selection.to_selection()?;

    let ms = MeasurementSet::open(&args.vis)?;
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
    let geometry = ImageGeometry::new(nx, ny, scale, scale)?;
    let mut opts = ImagingOptions::new(geometry, weighting);
    opts.padding = args.padding;
    opts.rank_filter = (args.weighting_rank_filter >= 1.0).then_some(RankFilter {
        level: args.weighting_rank_filter,
        size: args.weighting_rank_filter_size.max(1),
    });
    opts.nufft = NufftOptions {
        epsilon: args.epsilon,
        w_mode,
    };

    let spinner = ProgressBar::new_spinner().with_message("gridding dirty image and PSF");
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    let products = make_dirty_and_psf(&chunks, &opts)?;
    spinner.finish_and_clear();
    let t_grid = start.elapsed() - t_read;

    let (fmin, fmax) = freq_range(&chunks);
    let name = args.name.clone().unwrap_or_else(|| default_name(&args.vis));
    let mut header = sky_header(&info, field_id, &chunks, scale, "JY/BEAM");
    header.extra = vec![
        ("WEIGHTNG".into(), HeaderValue::Str(weighting.describe())),
        ("EPSILON".into(), HeaderValue::F64(args.epsilon)),
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
    let asec = |rad: f64| rad.to_degrees() * 3600.0;
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
        "  uv range {:.0}–{:.0} λ, max |w| {:.0} λ, theoretical beam {:.3}″",
        s.min_uv,
        s.max_uv,
        s.max_abs_w,
        asec(s.theoretical_beam)
    );
    println!(
        "  image {}×{} of {:.4}″, {} weighting, ε = {:.0e}",
        nx,
        ny,
        asec(scale),
        weighting.describe(),
        args.epsilon
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
