//! The report of `interf-image denoise` (PSF deconvolution of an optical image):
//! `NAME-report.html` with its PNGs beside it.
//!
//! Figures: the data, posterior mean, std, mean/std, up to four samples, the prediction (the
//! mean through the operator), residual/σ, and the histogram of residual/σ against N(0, 1).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::html::{self, Figure};
use super::image_plot::{self, Colormap, SkyImage, Stretch};
use super::plot_util::{anyhow_like::Error as PlotError, ensure_font, PlotResult, FONT};
use super::posterior::{split_prefix, write_bytes_atomic, write_png_atomic, ReportError};

/// Everything the report shows. Images are `[iy][ix]`, row 0 at the bottom.
pub struct DenoiseReport<'a> {
    pub title: String,
    /// Label of the pixel values (the input's BUNIT, or a description).
    pub unit: &'a str,
    /// Model grid: `[ny, nx]` and pixel size.
    pub model_shape: [usize; 2],
    pub model_pixel_asec: f64,
    /// Observed pixels used: `[ny, nx]` and pixel size.
    pub data_shape: [usize; 2],
    pub data_pixel_asec: f64,
    pub data: &'a [f32],
    pub prediction: &'a [f32],
    pub mean: &'a [f32],
    pub std: &'a [f32],
    /// `[k][iy][ix]`; the first four are shown.
    pub samples: &'a [f32],
    pub n_samples: usize,
    /// (data − prediction)/σ; NaN where a pixel was masked.
    pub resid_sigma: &'a [f32],
    pub summary: Vec<(String, String)>,
}

/// Writes `{prefix}-report.html` and `{prefix}-report-<what>.png`; returns the HTML's path and
/// the PNGs' paths.
pub fn write_denoise_report(
    prefix: &str,
    r: &DenoiseReport,
) -> Result<(PathBuf, Vec<PathBuf>), ReportError> {
    validate(r)?;
    let (dir, stem) = split_prefix(prefix)?;
    let stem = stem.as_str();
    let mut figures = Vec::new();
    let mut pngs = Vec::new();
    let mut emit = |what: &str,
                    alt: &str,
                    caption: String,
                    draw: &dyn Fn(&Path) -> PlotResult<()>|
     -> Result<(), ReportError> {
        let name = format!("{stem}-report-{what}.png");
        let path = dir.join(&name);
        write_png_atomic(&path, draw)?;
        pngs.push(path);
        figures.push(Figure {
            src: name,
            alt: alt.to_string(),
            caption,
        });
        Ok(())
    };

    let [my, mx] = r.model_shape;
    let [dy, dx] = r.data_shape;
    let (mcanvas, dcanvas) = (
        image_plot::sky_canvas(my, mx),
        image_plot::sky_canvas(dy, dx),
    );
    let model_img = |data, title, unit, cmap, range, contours| SkyImage {
        data,
        ny: my,
        nx: mx,
        pixel_asec: r.model_pixel_asec,
        title,
        unit,
        cmap,
        range,
        contours,
        stretch: Stretch::Linear,
    };
    let data_img = |data, title, unit, cmap, range| SkyImage {
        data,
        ny: dy,
        nx: dx,
        pixel_asec: r.data_pixel_asec,
        title,
        unit,
        cmap,
        range,
        contours: &[],
        stretch: Stretch::Linear,
    };
    let npix = my * mx;
    let shown: Vec<&[f32]> = (0..r.n_samples.min(4))
        .map(|k| &r.samples[k * npix..(k + 1) * npix])
        .collect();
    // Data and prediction share a scale; mean and samples share another (finer pixels hold
    // less flux each when the model is upsampled).
    let obs_range = [r.data, r.prediction]
        .into_iter()
        .filter_map(image_plot::finite_range)
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
    let model_range = std::iter::once(r.mean)
        .chain(shown.iter().copied())
        .filter_map(image_plot::finite_range)
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
    let unit = r.unit;

    emit(
        "data",
        "data",
        format!("The observed pixels fitted ({dy}×{dx}), {unit}."),
        &|p| {
            let s = data_img(r.data, "Data", unit, Colormap::Inferno, obs_range);
            image_plot::write_sky_image_png(p, &s, dcanvas)
        },
    )?;
    emit(
        "mean",
        "posterior mean",
        format!(
            "Posterior mean of the deconvolved image ({my}×{mx} model pixels of {:.4}″), {unit} \
             per model pixel (colour scale shared with the samples).",
            r.model_pixel_asec
        ),
        &|p| {
            let s = model_img(
                r.mean,
                "Posterior mean",
                unit,
                Colormap::Inferno,
                model_range,
                &[],
            );
            image_plot::write_sky_image_png(p, &s, mcanvas)
        },
    )?;
    emit(
        "std",
        "posterior standard deviation",
        format!("Posterior standard deviation per model pixel, {unit}."),
        &|p| {
            let range = image_plot::finite_range(r.std).map(|(_, hi)| (0.0, hi));
            let s = model_img(r.std, "Posterior std", unit, Colormap::Viridis, range, &[]);
            image_plot::write_sky_image_png(p, &s, mcanvas)
        },
    )?;
    let snr: Vec<f32> = r
        .mean
        .iter()
        .zip(r.std)
        .map(|(&m, &s)| if s > 0.0 { m / s } else { f32::NAN })
        .collect();
    emit(
        "significance",
        "significance mean/std",
        "Significance mean/std; black contours at −3, 3 and 5. Outside them (|mean/std| < 3) \
         the emission is not significant."
            .into(),
        &|p| {
            let s = model_img(
                &snr,
                "Significance (mean / std)",
                "σ",
                Colormap::Diverging,
                None,
                &[-3.0, 3.0, 5.0],
            );
            image_plot::write_sky_image_png(p, &s, mcanvas)
        },
    )?;
    let titles: Vec<String> = (1..=4).map(|k| format!("Posterior sample {k}")).collect();
    for (k, s) in shown.iter().enumerate() {
        emit(
            &format!("sample{}", k + 1),
            &format!("posterior sample {}", k + 1),
            format!(
                "Sample {} of {}, {unit} (colour scale of the mean).",
                k + 1,
                r.n_samples
            ),
            &|p| {
                let im = model_img(s, &titles[k], unit, Colormap::Inferno, model_range, &[]);
                image_plot::write_sky_image_png(p, &im, mcanvas)
            },
        )?;
    }
    emit(
        "prediction",
        "prediction",
        format!("The posterior mean through the operator (PSF, downsampling): what the data should look like, {unit} (colour scale of the data)."),
        &|p| {
            let s = data_img(r.prediction, "Prediction A·mean", unit, Colormap::Inferno, obs_range);
            image_plot::write_sky_image_png(p, &s, dcanvas)
        },
    )?;
    emit(
        "residual-sigma",
        "residual over sigma",
        "(data − prediction)/σ: should look like noise of unit variance, with no source-shaped \
         structure left."
            .into(),
        &|p| {
            let s = data_img(
                r.resid_sigma,
                "Residual / σ",
                "σ",
                Colormap::Diverging,
                Some((-4.0, 4.0)),
            );
            image_plot::write_sky_image_png(p, &s, dcanvas)
        },
    )?;
    emit(
        "residual-hist",
        "histogram of residual over sigma",
        "Histogram of (data − prediction)/σ (density) against the standard normal N(0, 1).".into(),
        &|p| resid_histogram(p, r.resid_sigma),
    )?;

    let page = html::page(&r.title, &r.summary, &figures, HOW_TO_READ);
    let html_path = dir.join(format!("{stem}-report.html"));
    write_bytes_atomic(&html_path, page.as_bytes())?;
    Ok((html_path, pngs))
}

const HOW_TO_READ: &str = "<ul>
<li><b>Posterior mean</b> is the average of the posterior samples: the deconvolved image (the
PSF removed), on the model grid, in the input's units per model pixel (the sum of its pixels is
the total flux).</li>
<li><b>Posterior std</b> is the pixel-wise standard deviation over samples: the error bar of each
pixel. <b>Significance</b> = mean/std; trust structure inside the 3σ contours.</li>
<li><b>Samples</b> are equally plausible images; features present in some and not in others are
uncertain.</li>
<li><b>Prediction</b> is the mean convolved with the PSF (and downsampled): it should match the
data. <b>Residual/σ</b> should be structureless noise; its histogram should follow N(0, 1).
A histogram wider than N(0, 1) means σ is underestimated or the model misses flux; narrower
means σ is overestimated.</li>
<li>The prior was trained on other images than these: where the data are weak, the samples look
like the prior's training set.</li>
</ul>";

fn validate(r: &DenoiseReport) -> Result<(), ReportError> {
    let (m, d) = (
        r.model_shape[0] * r.model_shape[1],
        r.data_shape[0] * r.data_shape[1],
    );
    if m == 0 || d == 0 {
        return Err(ReportError::Input("empty image".into()));
    }
    for p in [r.model_pixel_asec, r.data_pixel_asec] {
        if !(p.is_finite() && p > 0.0) {
            return Err(ReportError::Input(format!("pixel size {p} arcsec")));
        }
    }
    for (name, len, want) in [
        ("mean", r.mean.len(), m),
        ("std", r.std.len(), m),
        ("data", r.data.len(), d),
        ("prediction", r.prediction.len(), d),
        ("resid_sigma", r.resid_sigma.len(), d),
    ] {
        if len != want {
            return Err(ReportError::Input(format!(
                "{name} has {len} pixels, expected {want}"
            )));
        }
    }
    if r.samples.len() < r.n_samples * m {
        return Err(ReportError::Input(format!(
            "samples has {} values for {} samples of {m} pixels",
            r.samples.len(),
            r.n_samples
        )));
    }
    Ok(())
}

fn err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

const BAR_COLOR: RGBColor = RGBColor(31, 119, 180);
const LINE_SIZE: (u32, u32) = (560, 420);

/// Density histogram of residual/σ over [−5, 5] with the N(0, 1) density on top.
fn resid_histogram(path: &Path, v: &[f32]) -> PlotResult<()> {
    ensure_font();
    let vals: Vec<f64> = v
        .iter()
        .filter(|x| x.is_finite())
        .map(|&x| x as f64)
        .collect();
    let (lo, hi, nb) = (-5.0f64, 5.0f64, 50usize);
    let bw = (hi - lo) / nb as f64;
    let mut counts = vec![0usize; nb];
    let mut outside = 0usize;
    for &x in &vals {
        if (lo..hi).contains(&x) {
            counts[((x - lo) / bw) as usize] += 1;
        } else {
            outside += 1;
        }
    }
    let n = vals.len().max(1) as f64;
    let dens: Vec<f64> = counts.iter().map(|&c| c as f64 / (n * bw)).collect();
    let gauss = |x: f64| (-0.5 * x * x).exp() / (2.0 * std::f64::consts::PI).sqrt();
    let ymax = dens.iter().copied().fold(gauss(0.0), f64::max) * 1.3;
    let root = BitMapBackend::new(path, LINE_SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("Residual / σ", (FONT, 19))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(52)
        .build_cartesian_2d(lo..hi, 0.0..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc("(data − prediction) / σ")
        .y_desc("density")
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .draw()
        .map_err(err)?;
    chart
        .draw_series(
            dens.iter()
                .enumerate()
                .filter(|(_, &d)| d > 0.0)
                .map(|(i, &d)| {
                    let a = lo + i as f64 * bw;
                    Rectangle::new([(a, 0.0), (a + bw, d)], BAR_COLOR.mix(0.7).filled())
                }),
        )
        .map_err(err)?
        .label(format!(
            "{} pixels{}",
            vals.len(),
            if outside > 0 {
                format!(" ({outside} beyond ±5)")
            } else {
                String::new()
            }
        ))
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 16, y + 5)], BAR_COLOR.filled()));
    chart
        .draw_series(LineSeries::new(
            (0..=200).map(|i| {
                let x = lo + (hi - lo) * i as f64 / 200.0;
                (x, gauss(x))
            }),
            BLACK.stroke_width(2),
        ))
        .map_err(err)?
        .label("N(0, 1)")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], BLACK.stroke_width(2)));
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
