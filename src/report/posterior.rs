//! The posterior uncertainty report: `NAME-report.html` with its PNGs beside it.
//!
//! Figures: dirty image, posterior mean (and a CLEAN image when given), posterior std,
//! significance mean/std, up to four samples, residual dirty image of the mean, the distribution
//! of reduced χ² over samples, and data/model amplitude against uv distance.

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::html::{self, Figure};
use super::image_plot::{self, Colormap, SkyImage, Stretch};
use super::plot_util::{anyhow_like::Error as PlotError, ensure_font, PlotResult, FONT};

/// Everything the report shows. Images are `[iy][ix]`, row `iy = 0` at the bottom (south),
/// `ix` along FITS axis 1 (RA decreasing), phase centre at pixel `(nx/2, ny/2)`.
pub struct PosteriorReport<'a> {
    pub title: String,
    pub ny: usize,
    pub nx: usize,
    pub pixel_asec: f64,
    /// Jy/beam.
    pub dirty: &'a [f32],
    /// Jy/pixel.
    pub mean: &'a [f32],
    /// Jy/pixel.
    pub std: &'a [f32],
    /// `[k][iy][ix]`, Jy/pixel; the first four are shown.
    pub samples: &'a [f32],
    pub n_samples: usize,
    /// Jy/beam: dirty image of (data − model of the mean).
    pub residual_dirty: &'a [f32],
    /// Jy/beam, shown beside the mean when present.
    pub clean_image: Option<&'a [f32]>,
    /// Reduced χ² per sample.
    pub chi2: &'a [f64],
    /// Reduced χ² of the posterior mean.
    pub chi2_mean: f64,
    /// Reduced χ² of the CLEAN model over the same visibilities, when there is one.
    pub chi2_clean: Option<f64>,
    /// Significance (mean/std) of the samples convolved with CLEAN's restoring beam.
    pub beam_significance: Option<&'a [f32]>,
    /// Per visibility, wavelengths.
    pub uv_dist: &'a [f64],
    pub data_amp: &'a [f32],
    pub model_amp: &'a [f32],
    /// Key/value lines for the table at the top.
    pub summary: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error(
        "report: output directory {dir} does not exist or is not a directory (prefix {prefix:?})"
    )]
    NoDir { dir: PathBuf, prefix: String },
    #[error("report: invalid input: {0}")]
    Input(String),
    #[error("report: cannot plot {path}: {msg}")]
    Plot { path: PathBuf, msg: String },
    #[error("report: cannot write {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Most points drawn in the amplitude plot (data and model together); more only blurs the
/// cloud and slows the PNG down.
pub const MAX_SCATTER_POINTS: usize = 20_000;

/// Significance contours drawn on the mean/std map.
const SIGNIFICANCE_LEVELS: [f64; 3] = [-3.0, 3.0, 5.0];

/// Writes `{prefix}-report.html` and `{prefix}-report-<what>.png` beside it; each file appears
/// atomically (written to a temporary name in the same directory, then renamed). Returns the
/// path of the HTML.
pub fn write_report(prefix: &str, r: &PosteriorReport) -> Result<PathBuf, ReportError> {
    validate(r)?;
    let (dir, stem) = split_prefix(prefix)?;
    let stem = stem.as_str();
    let mut figures = Vec::new();
    // A macro, not a closure: the drawing closures borrow locals of their own iteration.
    macro_rules! emit {
        ($($a:expr),* $(,)?) => {
            emit_png(&dir, stem, &mut figures, $($a),*)
        };
    }

    let (ny, nx, p) = (r.ny, r.nx, r.pixel_asec);
    // Made before `sky` so they outlive the one lifetime its closure infers for titles.
    let sample_titles: Vec<String> = (1..=4).map(|k| format!("Posterior sample {k}")).collect();
    let sky = |data, title, unit, cmap, range, contours, stretch| SkyImage {
        data,
        ny,
        nx,
        pixel_asec: p,
        title,
        unit,
        cmap,
        range,
        contours,
        stretch,
    };
    let npix = ny * nx;
    let canvas = image_plot::sky_canvas(ny, nx);
    let shown: Vec<&[f32]> = (0..r.n_samples.min(4))
        .map(|k| &r.samples[k * npix..(k + 1) * npix])
        .collect();
    // Mean and samples share one colour scale so a sample's excursions read against the mean.
    let flux_range = std::iter::once(r.mean)
        .chain(shown.iter().copied())
        .filter_map(image_plot::finite_range)
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
    // Sky images in an asinh stretch, linear up to 3σ of their noise: a linear scale hides a
    // jet at 1/1000 of its core. σ in Jy/beam from the residual dirty image, in Jy/pixel from
    // the posterior's median std.
    let beam_soft = 3.0 * median_abs(r.residual_dirty) * 1.4826;
    let pixel_soft = pixel_soft(r.std);
    let stretch = |soft: f64, range: Option<(f64, f64)>| {
        range.map_or(Stretch::Linear, |(lo, hi)| Stretch::asinh_for(soft, lo, hi))
    };
    let dirty_stretch = stretch(beam_soft, image_plot::finite_range(r.dirty));
    let flux_stretch = stretch(pixel_soft, flux_range);

    emit!(
        "dirty",
        "dirty image",
        "Dirty image (no deconvolution), Jy/beam, asinh colour scale (linear below 3σ of the \
         residual's noise, logarithmic above) so faint emission beside a bright core shows."
            .into(),
        &|path| {
            let s = sky(
                r.dirty,
                "Dirty image",
                "Jy/beam",
                Colormap::Inferno,
                None,
                &[],
                dirty_stretch,
            );
            image_plot::write_sky_image_png(path, &s, canvas)
        },
    )?;
    emit!(
        "mean",
        "posterior mean",
        "Posterior mean, Jy/pixel (same asinh colour scale as the samples).".into(),
        &|path| {
            let s = sky(
                r.mean,
                "Posterior mean",
                "Jy/pixel",
                Colormap::Inferno,
                flux_range,
                &[],
                flux_stretch,
            );
            image_plot::write_sky_image_png(path, &s, canvas)
        },
    )?;
    if let Some(clean) = r.clean_image {
        emit!(
            "clean",
            "CLEAN image",
            match r.chi2_clean {
                Some(x) => format!(
                    "CLEAN restored image (baseline for comparison), Jy/beam, asinh colour \
                     scale. Reduced χ² of its model {x:.3}, of the posterior mean {:.3}.",
                    r.chi2_mean
                ),
                None => "CLEAN restored image (baseline for comparison), Jy/beam.".into(),
            },
            &|path| {
                let s = sky(
                    clean,
                    "CLEAN image",
                    "Jy/beam",
                    Colormap::Inferno,
                    None,
                    &[],
                    stretch(beam_soft, image_plot::finite_range(clean)),
                );
                image_plot::write_sky_image_png(path, &s, canvas)
            },
        )?;
    }
    emit!(
        "std",
        "posterior standard deviation",
        "Posterior standard deviation per pixel, Jy/pixel.".into(),
        &|path| {
            let range = image_plot::finite_range(r.std).map(|(_, hi)| (0.0, hi));
            let s = sky(
                r.std,
                "Posterior std",
                "Jy/pixel",
                Colormap::Viridis,
                range,
                &[],
                Stretch::Linear,
            );
            image_plot::write_sky_image_png(path, &s, canvas)
        },
    )?;
    let snr = significance(r.mean, r.std);
    emit!(
        "significance",
        "significance mean/std",
        "Significance mean/std; black contours at −3, 3 and 5. Pale pixels outside the \
         contours (|mean/std| < 3) are not significant."
            .into(),
        &|path| {
            let s = sky(
                &snr,
                "Significance (mean / std)",
                "σ",
                Colormap::Diverging,
                None,
                &SIGNIFICANCE_LEVELS,
                Stretch::Linear,
            );
            image_plot::write_sky_image_png(path, &s, canvas)
        },
    )?;
    if let Some(bs) = r.beam_significance {
        emit!(
            "significance-beam",
            "significance at CLEAN's resolution",
            "Significance mean/std of the samples convolved with CLEAN's restoring beam: the \
             posterior judged at the resolution of the CLEAN image; contours at −3, 3 and 5."
                .into(),
            &|path| {
                let s = sky(
                    bs,
                    "Significance at the CLEAN beam",
                    "σ",
                    Colormap::Diverging,
                    None,
                    &SIGNIFICANCE_LEVELS,
                    Stretch::Asinh { soft: 5.0 },
                );
                image_plot::write_sky_image_png(path, &s, canvas)
            },
        )?;
    }
    for (k, (s, title)) in shown.iter().zip(&sample_titles).enumerate() {
        emit!(
            &format!("sample{}", k + 1),
            &format!("posterior sample {}", k + 1),
            format!(
                "Sample {} of {}, Jy/pixel (colour scale of the mean).",
                k + 1,
                r.n_samples
            ),
            &|path| {
                let im = sky(
                    s,
                    title,
                    "Jy/pixel",
                    Colormap::Inferno,
                    flux_range,
                    &[],
                    flux_stretch,
                );
                image_plot::write_sky_image_png(path, &im, canvas)
            },
        )?;
    }
    emit!(
        "residual",
        "residual dirty image",
        "Dirty image of the residual visibilities (data − model of the mean), Jy/beam; should \
         look like noise."
            .into(),
        &|path| {
            let s = sky(
                r.residual_dirty,
                "Residual dirty image of the mean",
                "Jy/beam",
                Colormap::Diverging,
                None,
                &[],
                Stretch::Linear,
            );
            image_plot::write_sky_image_png(path, &s, canvas)
        },
    )?;
    emit!(
        "chi2",
        "reduced chi-squared histogram",
        format!(
            "Reduced χ² of the {} samples; the mean's χ² is {:.3}{}.",
            r.chi2.len(),
            r.chi2_mean,
            r.chi2_clean
                .map_or_else(String::new, |x| format!(", the CLEAN model's {x:.3}"))
        ),
        &|path| chi2_histogram(path, r.chi2, r.chi2_mean),
    )?;
    emit!(
        "uvamp",
        "amplitude versus uv distance",
        "Visibility amplitude of the data and of the model of the mean against uv distance.".into(),
        &|path| amp_vs_uv(path, r.uv_dist, r.data_amp, r.model_amp),
    )?;

    let page = html::page(&r.title, &r.summary, &figures, HOW_TO_READ);
    let html_path = dir.join(format!("{stem}-report.html"));
    write_bytes_atomic(&html_path, page.as_bytes())?;
    Ok(html_path)
}

const HOW_TO_READ: &str = "<ul>
<li><b>Posterior mean</b> is the average of the posterior samples: the best single image
(in Jy/pixel, not convolved with a beam, so it is sharper than a CLEAN image).</li>
<li><b>Posterior std</b> is the pixel-wise standard deviation over samples: how much each pixel
could change while still fitting the data and the prior. It is the error bar of that pixel.</li>
<li><b>Significance</b> is mean/std. Pixels with |mean/std| &lt; 3 (pale, outside the contours) are
<b>not significant</b>: emission there may be a product of the prior, not of the data. Trust
structure inside the 3σ contour; 5σ is a firm detection.</li>
<li><b>Samples</b> are equally plausible skies. Features that appear in some samples and not in
others are uncertain; features present in all of them are constrained by the data.</li>
<li><b>Residual dirty image</b> of the mean should look like noise, with no source-shaped
structure left; left-over sources mean the model misses flux.</li>
<li><b>Reduced χ²</b> near 1 means the model fits the data to within the noise model. χ² ≫ 1
means the noise is underestimated or the model misfits, and the posterior is
<b>overconfident</b> (the std is too small). χ² ≪ 1 means the noise is overestimated and the
std is too large.</li>
<li><b>Amplitude vs uv distance</b>: the model (orange) should follow the data (blue) at every
baseline length; short baselines show total flux, long ones compact structure.</li>
</ul>";

/// Median of |v| over finite values (0 for none).
/// The asinh stretch's linear range for images in Jy/pixel: 3× the median posterior std of the
/// sampled pixels. Pixels outside a window have std exactly 0 (they are not sampled): over half
/// of the image on 3C 279, where the median over all pixels was 0 and the stretch fell back to
/// linear, hiding the jet.
fn pixel_soft(std: &[f32]) -> f64 {
    let sampled: Vec<f32> = std.iter().copied().filter(|&s| s != 0.0).collect();
    3.0 * median_abs(&sampled)
}

fn median_abs(v: &[f32]) -> f64 {
    let mut a: Vec<f32> = v
        .iter()
        .filter(|x| x.is_finite())
        .map(|x| x.abs())
        .collect();
    if a.is_empty() {
        return 0.0;
    }
    let mid = a.len() / 2;
    let (_, m, _) = a.select_nth_unstable_by(mid, |x, y| x.total_cmp(y));
    *m as f64
}

fn validate(r: &PosteriorReport) -> Result<(), ReportError> {
    let npix = r.ny * r.nx;
    if npix == 0 {
        return Err(ReportError::Input(format!(
            "empty image {} × {}",
            r.ny, r.nx
        )));
    }
    if !(r.pixel_asec.is_finite() && r.pixel_asec > 0.0) {
        return Err(ReportError::Input(format!(
            "pixel size {} arcsec",
            r.pixel_asec
        )));
    }
    let mut images = vec![
        ("dirty", r.dirty.len()),
        ("mean", r.mean.len()),
        ("std", r.std.len()),
        ("residual_dirty", r.residual_dirty.len()),
    ];
    if let Some(c) = r.clean_image {
        images.push(("clean_image", c.len()));
    }
    for (name, len) in images {
        if len != npix {
            return Err(ReportError::Input(format!(
                "{name} has {len} pixels, expected {} × {} = {npix}",
                r.ny, r.nx
            )));
        }
    }
    if r.samples.len() < r.n_samples * npix {
        return Err(ReportError::Input(format!(
            "samples has {} values, fewer than {} samples × {npix} pixels",
            r.samples.len(),
            r.n_samples
        )));
    }
    if r.data_amp.len() != r.uv_dist.len() || r.model_amp.len() != r.uv_dist.len() {
        return Err(ReportError::Input(format!(
            "uv_dist, data_amp and model_amp differ in length: {}, {}, {}",
            r.uv_dist.len(),
            r.data_amp.len(),
            r.model_amp.len()
        )));
    }
    Ok(())
}

/// mean/std; NaN where std is 0 or not finite (shown grey) rather than an infinite significance.
fn significance(mean: &[f32], std: &[f32]) -> Vec<f32> {
    mean.iter()
        .zip(std)
        .map(|(&m, &s)| {
            if s > 0.0 && s.is_finite() {
                m / s
            } else {
                f32::NAN
            }
        })
        .collect()
}

/// Plotters picks the encoder from the extension, so the temporary name ends in `.png` too;
/// the leading dot keeps it out of casual listings if a crash leaves it behind.
fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .and_then(|s| s.to_str())
        .unwrap_or("report.png");
    let ext = Path::new(name)
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or("tmp");
    path.with_file_name(format!(".{name}.{}.tmp.{ext}", std::process::id()))
}

/// `DIR/STEM` → `(DIR, STEM)`: the folder (`.` when none; it must exist) and the file stem
/// every product of a report is named after.
pub(super) fn split_prefix(prefix: &str) -> Result<(PathBuf, String), ReportError> {
    let base = Path::new(prefix);
    let stem = base
        .file_name()
        .and_then(|s| s.to_str())
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ReportError::Input(format!("prefix {prefix:?} has no file name")))?;
    let dir = match base.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !dir.is_dir() {
        return Err(ReportError::NoDir {
            dir,
            prefix: prefix.to_string(),
        });
    }
    Ok((dir, stem.to_string()))
}

/// Draws `{stem}-report-{what}.png` in `dir` and adds it to the figure list.
fn emit_png(
    dir: &Path,
    stem: &str,
    figures: &mut Vec<Figure>,
    what: &str,
    alt: &str,
    caption: String,
    draw: &dyn Fn(&Path) -> PlotResult<()>,
) -> Result<(), ReportError> {
    let name = format!("{stem}-report-{what}.png");
    write_png_atomic(&dir.join(&name), draw)?;
    figures.push(Figure {
        src: name,
        alt: alt.to_string(),
        caption,
    });
    Ok(())
}

pub(super) fn write_png_atomic(
    path: &Path,
    draw: &dyn Fn(&Path) -> PlotResult<()>,
) -> Result<(), ReportError> {
    let tmp = temp_path(path);
    // Plotters panics in its Drop if present() was never reached; the error is what we report.
    let res = draw(&tmp);
    if let Err(e) = res {
        let _ = std::fs::remove_file(&tmp);
        return Err(ReportError::Plot {
            path: path.to_path_buf(),
            msg: e.0,
        });
    }
    rename(&tmp, path)
}

pub(super) fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<(), ReportError> {
    let tmp = temp_path(path);
    std::fs::write(&tmp, bytes).map_err(|source| ReportError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    rename(&tmp, path)
}

fn rename(tmp: &Path, path: &Path) -> Result<(), ReportError> {
    std::fs::rename(tmp, path).map_err(|source| {
        let _ = std::fs::remove_file(tmp);
        ReportError::Io {
            path: path.to_path_buf(),
            source,
        }
    })
}

fn err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

const DATA_COLOR: RGBColor = RGBColor(31, 119, 180);
const MODEL_COLOR: RGBColor = RGBColor(255, 127, 14);
const LINE_SIZE: (u32, u32) = (560, 420);

/// Histogram of reduced χ² over samples with reference lines at 1 and at the mean's χ².
fn chi2_histogram(path: &Path, chi2: &[f64], chi2_mean: f64) -> PlotResult<()> {
    ensure_font();
    let vals: Vec<f64> = chi2.iter().copied().filter(|v| v.is_finite()).collect();
    let root = BitMapBackend::new(path, LINE_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut lo = vals.iter().copied().fold(1.0f64, f64::min);
    let mut hi = vals.iter().copied().fold(1.0f64, f64::max);
    if chi2_mean.is_finite() {
        (lo, hi) = (lo.min(chi2_mean), hi.max(chi2_mean));
    }
    let pad = ((hi - lo) * 0.08).max(0.02 * hi.abs().max(1.0));
    let (x0, x1) = ((lo - pad).max(0.0), hi + pad);
    let nb = ((vals.len() as f64).sqrt().ceil() as usize).clamp(5, 40);
    let (vlo, vhi) = vals
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), &v| (a.min(v), b.max(v)));
    // Bins span the samples only, so a far-off reference line does not squash them into one bar.
    let (b0, bw) = if vals.is_empty() {
        (x0, (x1 - x0) / nb as f64)
    } else if vhi > vlo {
        (vlo, (vhi - vlo) / nb as f64)
    } else {
        let w = (x1 - x0) / 40.0;
        (vlo - w / 2.0, w / nb as f64)
    };
    let mut counts = vec![0usize; nb];
    for &v in &vals {
        let i = (((v - b0) / bw).floor().max(0.0) as usize).min(nb - 1);
        counts[i] += 1;
    }
    // Headroom so the legend sits above the bars.
    let ymax = counts.iter().copied().max().unwrap_or(0).max(1) as f64 * 1.45;
    let xp = image_plot::decimals(x1 - x0);
    let xfmt = |v: &f64| format!("{:.*}", xp, v);
    let mut chart = ChartBuilder::on(&root)
        .caption("Reduced χ² over posterior samples", (FONT, 19))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(52)
        .build_cartesian_2d(x0..x1, 0.0..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("reduced χ²")
        .y_desc("samples")
        .x_label_formatter(&xfmt)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .y_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(ymax.ceil() as usize + 1)
        .draw()
        .map_err(err)?;
    chart
        .draw_series(
            counts
                .iter()
                .enumerate()
                .filter(|(_, &c)| c > 0)
                .map(|(i, &c)| {
                    let a = b0 + i as f64 * bw;
                    Rectangle::new(
                        [(a, 0.0), (a + bw, c as f64)],
                        DATA_COLOR.mix(0.75).filled(),
                    )
                }),
        )
        .map_err(err)?
        .label(format!("samples (n = {})", vals.len()))
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], DATA_COLOR.filled()));
    let vline = |x: f64| vec![(x, 0.0), (x, ymax)];
    chart
        .draw_series(std::iter::once(PathElement::new(
            vline(1.0),
            BLACK.stroke_width(2),
        )))
        .map_err(err)?
        .label("χ² = 1 (noise model fits)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(2)));
    if chi2_mean.is_finite() {
        chart
            .draw_series(std::iter::once(PathElement::new(
                vline(chi2_mean),
                MODEL_COLOR.stroke_width(2),
            )))
            .map_err(err)?
            .label(format!("χ² of the mean = {chi2_mean:.3}"))
            .legend(|(x, y)| {
                PathElement::new(vec![(x, y), (x + 16, y)], MODEL_COLOR.stroke_width(2))
            });
    }
    let centre = vals.iter().sum::<f64>() / vals.len().max(1) as f64;
    let legend_at = if centre > 0.5 * (x0 + x1) {
        SeriesLabelPosition::UpperLeft
    } else {
        SeriesLabelPosition::UpperRight
    };
    chart
        .configure_series_labels()
        .position(legend_at)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Deterministic subsample of `0..n` of at most `m` sorted indices. A fixed-seed partial
/// Fisher–Yates rather than a stride, because visibilities are ordered by time and baseline and
/// a stride can alias with that order.
pub fn subsample_indices(n: usize, m: usize) -> Vec<usize> {
    if n <= m {
        return (0..n).collect();
    }
    let mut idx: Vec<usize> = (0..n).collect();
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = || {
        // splitmix64
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    };
    for i in 0..m {
        let j = i + (next() % (n - i) as u64) as usize;
        idx.swap(i, j);
    }
    idx.truncate(m);
    idx.sort_unstable();
    idx
}

/// Data and model |V| against uv distance, in kλ or Mλ.
fn amp_vs_uv(path: &Path, uv: &[f64], data: &[f32], model: &[f32]) -> PlotResult<()> {
    ensure_font();
    let keep: Vec<usize> = subsample_indices(uv.len(), MAX_SCATTER_POINTS / 2)
        .into_iter()
        .filter(|&i| uv[i].is_finite())
        .collect();
    let umax = keep.iter().map(|&i| uv[i].abs()).fold(0.0f64, f64::max);
    let (scale, ulabel) = if umax >= 1e7 {
        (1e-6, "uv distance (Mλ)")
    } else if umax >= 1e4 {
        (1e-3, "uv distance (kλ)")
    } else {
        (1.0, "uv distance (λ)")
    };
    let pts = |a: &[f32]| -> Vec<(f64, f64)> {
        keep.iter()
            .filter(|&&i| a[i].is_finite())
            .map(|&i| (uv[i].abs() * scale, a[i] as f64))
            .collect()
    };
    let (dp, mp) = (pts(data), pts(model));
    let amax = dp.iter().chain(&mp).map(|p| p.1).fold(0.0f64, f64::max);
    let x1 = if umax > 0.0 { umax * scale * 1.03 } else { 1.0 };
    let y1 = if amax > 0.0 { amax * 1.08 } else { 1.0 };
    let (xp, yp) = (image_plot::decimals(x1), image_plot::decimals(y1));
    let xfmt = |v: &f64| format!("{:.*}", xp, v);
    let yfmt = |v: &f64| format!("{:.*}", yp, v);
    let root = BitMapBackend::new(path, LINE_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Visibility amplitude vs uv distance", (FONT, 19))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(62)
        .build_cartesian_2d(0.0..x1, 0.0..y1)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc(ulabel)
        .y_desc("|V| (Jy)")
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(err)?;
    let shown = if keep.len() < uv.len() {
        format!(" ({} of {})", keep.len(), uv.len())
    } else {
        String::new()
    };
    chart
        .draw_series(
            dp.iter()
                .map(|&p| Circle::new(p, 1, DATA_COLOR.mix(0.45).filled())),
        )
        .map_err(err)?
        .label(format!("data{shown}"))
        .legend(|(x, y)| Circle::new((x + 8, y), 4, DATA_COLOR.filled()));
    chart
        .draw_series(
            mp.iter()
                .map(|&p| Circle::new(p, 1, MODEL_COLOR.mix(0.8).filled())),
        )
        .map_err(err)?
        .label("model of the posterior mean")
        .legend(|(x, y)| Circle::new((x + 8, y), 4, MODEL_COLOR.filled()));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsample_is_deterministic_sorted_and_bounded() {
        let a = subsample_indices(100_000, 10_000);
        assert_eq!(a.len(), 10_000);
        assert_eq!(a, subsample_indices(100_000, 10_000));
        assert!(a.windows(2).all(|w| w[0] < w[1]));
        assert!(*a.last().unwrap() < 100_000);
        // Spread over the whole range, not bunched at the start.
        assert!(a[0] < 100 && a[9_999] > 99_900);
        assert_eq!(subsample_indices(5, 10), vec![0, 1, 2, 3, 4]);
    }

    #[test]
    fn stretch_scale_ignores_unsampled_pixels() {
        // 60 % of the image outside a window (std 0), the rest 0.01 and 0.02.
        let mut std = vec![0.0f32; 60];
        std.extend([0.01f32; 25]);
        std.extend([0.02f32; 15]);
        assert!((pixel_soft(&std) - 0.03).abs() < 1e-6);
        assert_eq!(pixel_soft(&[0.0; 10]), 0.0);
    }

    #[test]
    fn significance_masks_zero_std() {
        let s = significance(&[3.0, 1.0, -2.0], &[1.0, 0.0, 0.5]);
        assert_eq!(s[0], 3.0);
        assert!(s[1].is_nan());
        assert_eq!(s[2], -4.0);
    }
}
