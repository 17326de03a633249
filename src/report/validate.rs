//! The calibration report: `NAME-validate.html` with its PNGs beside it (TARP curve with its
//! band and the diagonal, reduced-χ² histogram, per-pixel rank histogram, truth/mean/std/CLEAN
//! panels for a few truths).

use std::path::{Path, PathBuf};

use plotters::prelude::*;

use super::html::{self, Figure};
use super::image_plot::{self, Colormap, SkyImage, Stretch};
use super::plot_util::{anyhow_like::Error as PlotError, ensure_font, PlotResult, FONT};
use super::posterior::{split_prefix, ReportError};
use crate::validate::Validation;

/// What the report shows besides the numbers of [`Validation`].
pub struct ValidateReport<'a> {
    pub title: String,
    pub side: usize,
    pub pixel_asec: f64,
    pub validation: &'a Validation,
    /// Key/value lines for the table at the top.
    pub summary: Vec<(String, String)>,
    /// How many truths get an image panel.
    pub panels: usize,
}

fn err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

/// Writes `{prefix}-validate.html` and `{prefix}-validate-<what>.png`, each atomically.
/// Returns the HTML path and the TARP PNG path.
pub fn write_validate_report(
    prefix: &str,
    r: &ValidateReport,
) -> Result<(PathBuf, PathBuf), ReportError> {
    let (dir, stem) = split_prefix(prefix)?;
    let stem = stem.as_str();
    let v = r.validation;
    let mut figures = Vec::new();
    let mut emit = |what: &str,
                    alt: &str,
                    caption: String,
                    draw: &dyn Fn(&Path) -> PlotResult<()>|
     -> Result<PathBuf, ReportError> {
        let name = format!("{stem}-validate-{what}.png");
        let path = dir.join(&name);
        let tmp = dir.join(format!(".{name}.tmp.png"));
        if let Err(e) = draw(&tmp) {
            let _ = std::fs::remove_file(&tmp);
            return Err(ReportError::Plot { path, msg: e.0 });
        }
        std::fs::rename(&tmp, &path).map_err(|source| {
            let _ = std::fs::remove_file(&tmp);
            ReportError::Io {
                path: path.clone(),
                source,
            }
        })?;
        figures.push(Figure {
            src: name,
            alt: alt.into(),
            caption,
        });
        Ok(path)
    };

    let t = &v.tarp;
    let tarp_png = emit(
        "tarp",
        "TARP expected coverage",
        format!(
            "TARP expected coverage against credibility level over {} truths; grey: simultaneous \
             95 % bootstrap band; dashed: the diagonal (calibrated). Largest deviation {:.3} at \
             α = {:.2} ({}), KS p = {:.3}: {}.",
            t.n_truths,
            t.max_deviation,
            t.max_deviation_alpha,
            if t.max_deviation_signed < 0.0 {
                "below the diagonal"
            } else {
                "above the diagonal"
            },
            t.ks_p_value,
            t.verdict.describe()
        ),
        &|p| tarp_plot(p, v),
    )?;
    let s = &v.summary;
    emit(
        "chi2",
        "reduced chi-squared histogram",
        format!(
            "Reduced χ² of every sample against its simulated data (median {:.3}); the truths' \
             own χ² have median {:.3} (the noise level).",
            s.chi2_samples_median, s.chi2_truth_median
        ),
        &|p| chi2_plot(p, v),
    )?;
    emit(
        "ranks",
        "per-pixel rank histogram",
        format!(
            "Rank of each pixel's truth among its samples (flat when calibrated; U-shaped: \
             over-confident; dome: under-confident). Coverage of the 68 % / 95 % intervals: \
             {:.3} / {:.3} (source pixels {:.3} / {:.3}).",
            s.coverage_68, s.coverage_95, s.source_coverage_68, s.source_coverage_95
        ),
        &|p| rank_plot(p, v),
    )?;
    for tr in v.truths.iter().take(r.panels) {
        emit(
            &format!("truth{}", tr.index),
            "truth, mean, std, CLEAN",
            format!(
                "Truth {}: truth, posterior mean (same colour scale, Jy/pixel), posterior std, \
                 {}. RMSE of the mean {:.3e} Jy/pixel; reduced χ² of the mean {:.3}; TARP rank \
                 {:.2}.",
                tr.index,
                if tr.clean.is_some() {
                    "CLEAN restored image (Jy/beam)"
                } else {
                    "|mean − truth| / std"
                },
                tr.rmse_mean,
                tr.chi2_mean,
                tr.tarp_rank
            ),
            &|p| truth_panels(p, r, tr),
        )?;
    }

    let page = html::page(&r.title, &r.summary, &figures, HOW_TO_READ);
    let html_path = dir.join(format!("{stem}-validate.html"));
    crate::io::write_atomic(&html_path, page.as_bytes()).map_err(|source| ReportError::Io {
        path: html_path.clone(),
        source,
    })?;
    Ok((html_path, tarp_png))
}

const HOW_TO_READ: &str = "<ul>
<li>Each truth was observed through the Measurement Set's uv coverage with known Gaussian noise
and its posterior sampled; the numbers say whether the samples' spread is honest.</li>
<li><b>TARP</b> (Lemos et al. 2023): for each truth, the fraction f of samples nearer a random
reference point than the truth is. A calibrated posterior gives uniform f: the coverage curve
follows the diagonal, inside the grey band. <b>Below</b> the diagonal: truths lie outside the
samples' spread, the posterior is <b>over-confident</b> (error bars too small, or biased).
<b>Above</b>: under-confident (error bars too large).</li>
<li><b>Per-pixel coverage</b>: how often a pixel's truth falls inside the samples' central 68 %
and 95 % intervals; calibrated means 0.68 and 0.95. Source pixels (truth above 10 % of its
peak) are where it matters most.</li>
<li><b>Reduced χ²</b> of the samples near 1 (slightly above: each sample carries its own
posterior scatter) means they fit the data to the noise; well above 1, they misfit.</li>
<li><b>RMSE</b> compares the posterior mean with the truth in Jy/pixel. The CLEAN comparison
uses the restored image divided by the beam area (Jy/pixel) against the truth convolved with
the same restoring beam (a fair test of CLEAN at its own resolution) and against the truth.</li>
</ul>";

const BAND: RGBColor = RGBColor(200, 200, 200);
const CURVE: RGBColor = RGBColor(31, 119, 180);
const SIZE: (u32, u32) = (560, 480);

fn tarp_plot(path: &Path, v: &Validation) -> PlotResult<()> {
    ensure_font();
    let t = &v.tarp;
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let mut chart = ChartBuilder::on(&root)
        .caption("TARP coverage", (FONT, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(0.0f64..1.0, 0.0f64..1.0)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("credibility level α")
        .y_desc("expected coverage")
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    let mut band: Vec<(f64, f64)> = t.alpha.iter().copied().zip(t.band_hi.clone()).collect();
    band.extend(t.alpha.iter().copied().zip(t.band_lo.clone()).rev());
    chart
        .draw_series(std::iter::once(Polygon::new(band, BAND.filled())))
        .map_err(err)?
        .label("95 % band")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], BAND.filled()));
    chart
        .draw_series(DashedLineSeries::new(
            vec![(0.0, 0.0), (1.0, 1.0)],
            6,
            4,
            BLACK.stroke_width(1),
        ))
        .map_err(err)?
        .label("calibrated")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
    let curve: Vec<(f64, f64)> = t.alpha.iter().copied().zip(t.ecp.clone()).collect();
    chart
        .draw_series(LineSeries::new(curve, CURVE.stroke_width(2)))
        .map_err(err)?
        .label("ECP")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], CURVE.stroke_width(2)));
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()
        .map_err(err)?;
    root.present().map_err(err)?;
    Ok(())
}

fn histogram(
    path: &Path,
    title: &str,
    xlabel: &str,
    edges: (f64, f64),
    counts: &[f64],
    refs: &[(f64, RGBColor)],
) -> PlotResult<()> {
    ensure_font();
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let top = counts.iter().copied().fold(0.0, f64::max).max(1e-12) * 1.15;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, (FONT, 20))
        .margin(12)
        .x_label_area_size(44)
        .y_label_area_size(56)
        .build_cartesian_2d(edges.0..edges.1, 0.0..top)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc(xlabel)
        .y_desc("fraction")
        .label_style((FONT, 14))
        .draw()
        .map_err(err)?;
    let w = (edges.1 - edges.0) / counts.len().max(1) as f64;
    chart
        .draw_series(counts.iter().enumerate().map(|(i, &c)| {
            let x0 = edges.0 + i as f64 * w;
            Rectangle::new([(x0, 0.0), (x0 + w, c)], CURVE.mix(0.7).filled())
        }))
        .map_err(err)?;
    for &(x, color) in refs {
        if x.is_finite() && x >= edges.0 && x <= edges.1 {
            chart
                .draw_series(std::iter::once(PathElement::new(
                    vec![(x, 0.0), (x, top)],
                    color.stroke_width(2),
                )))
                .map_err(err)?;
        }
    }
    root.present().map_err(err)?;
    Ok(())
}

fn chi2_plot(path: &Path, v: &Validation) -> PlotResult<()> {
    let vals: Vec<f64> = v
        .truths
        .iter()
        .flat_map(|t| t.chi2_samples.iter().copied())
        .filter(|x| x.is_finite())
        .collect();
    let lo = vals.iter().copied().fold(1.0f64, f64::min);
    let hi = vals.iter().copied().fold(1.0f64, f64::max);
    let pad = ((hi - lo) * 0.05).max(0.01);
    let (x0, x1) = ((lo - pad).max(0.0), hi + pad);
    let nb = ((vals.len() as f64).sqrt().ceil() as usize).clamp(5, 40);
    let mut counts = vec![0.0; nb];
    for &x in &vals {
        let i = (((x - x0) / (x1 - x0) * nb as f64) as usize).min(nb - 1);
        counts[i] += 1.0 / vals.len() as f64;
    }
    histogram(
        path,
        "Reduced χ² of the samples",
        "reduced χ² (black: 1; red: median of the truths)",
        (x0, x1),
        &counts,
        &[
            (1.0, BLACK),
            (v.summary.chi2_truth_median, RGBColor(214, 39, 40)),
        ],
    )
}

fn rank_plot(path: &Path, v: &Validation) -> PlotResult<()> {
    let h = &v.summary.coverage.rank_hist;
    let n: usize = h.iter().sum();
    let counts: Vec<f64> = h.iter().map(|&c| c as f64 / n.max(1) as f64).collect();
    histogram(
        path,
        "Per-pixel rank of the truth",
        "fractional rank among the samples (flat when calibrated)",
        (0.0, 1.0),
        &counts,
        &[],
    )
}

fn truth_panels(
    path: &Path,
    r: &ValidateReport,
    tr: &crate::validate::TruthResult,
) -> PlotResult<()> {
    ensure_font();
    let (ny, nx) = (r.side, r.side);
    let (w, h) = image_plot::sky_canvas(ny, nx);
    let root = BitMapBackend::new(path, (4 * w, h)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let areas = root.split_evenly((1, 4));
    let range = [tr.truth.as_slice(), tr.mean.as_slice()]
        .into_iter()
        .filter_map(image_plot::finite_range)
        .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)));
    let z: Vec<f32> = tr
        .truth
        .iter()
        .zip(&tr.mean)
        .zip(&tr.std)
        .map(|((t, m), s)| {
            if *s > 0.0 {
                (m - t).abs() / s
            } else {
                f32::NAN
            }
        })
        .collect();
    let sky = |data, title, unit, cmap, range| SkyImage {
        data,
        ny,
        nx,
        pixel_asec: r.pixel_asec,
        title,
        unit,
        cmap,
        range,
        contours: &[],
        stretch: Stretch::Linear,
    };
    image_plot::draw_sky_image(
        &areas[0],
        &sky(&tr.truth, "Truth", "Jy/pixel", Colormap::Inferno, range),
    )?;
    image_plot::draw_sky_image(
        &areas[1],
        &sky(
            &tr.mean,
            "Posterior mean",
            "Jy/pixel",
            Colormap::Inferno,
            range,
        ),
    )?;
    let std_range = image_plot::finite_range(&tr.std).map(|(_, hi)| (0.0, hi));
    image_plot::draw_sky_image(
        &areas[2],
        &sky(
            &tr.std,
            "Posterior std",
            "Jy/pixel",
            Colormap::Viridis,
            std_range,
        ),
    )?;
    match &tr.clean {
        Some(c) => image_plot::draw_sky_image(
            &areas[3],
            &sky(c, "CLEAN restored", "Jy/beam", Colormap::Inferno, None),
        )?,
        None => image_plot::draw_sky_image(
            &areas[3],
            &sky(
                &z,
                "|mean − truth| / std",
                "σ",
                Colormap::Viridis,
                Some((0.0, 4.0)),
            ),
        )?,
    };
    root.present().map_err(err)?;
    Ok(())
}
