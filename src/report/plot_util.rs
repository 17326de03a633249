//! Small plotting helpers shared by the CLI and the report: the embedded font, line plots of
//! training curves and grey-scale image grids.

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// DejaVu Sans (free licence, see `assets/fonts/DejaVuSans-LICENSE.txt`), embedded because the
/// `ab_glyph` backend of plotters has no access to system fonts.
pub static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Font family name to use in plots after [`ensure_font`].
pub const FONT: &str = "sans-serif";

static REGISTER: Once = Once::new();

/// Registers the embedded font with plotters (idempotent, thread-safe).
pub fn ensure_font() {
    REGISTER.call_once(|| {
        for name in [FONT, "DejaVu Sans"] {
            for style in [FontStyle::Normal, FontStyle::Bold] {
                // The bytes are a valid TTF compiled into the binary; failure is a build bug.
                plotters::style::register_font(name, style, DEJAVU_SANS)
                    .unwrap_or_else(|_| panic!("embedded DejaVu Sans is not a valid font"));
            }
        }
    });
}

fn perr<E: std::fmt::Display>(e: E) -> anyhow_like::Error {
    anyhow_like::Error(e.to_string())
}

/// A minimal error type so this module does not force `anyhow` on library callers.
pub mod anyhow_like {
    #[derive(Debug, thiserror::Error)]
    #[error("plot: {0}")]
    pub struct Error(pub String);
}

pub type PlotResult<T> = Result<T, anyhow_like::Error>;

/// One named line of a line plot.
pub struct Series<'a> {
    pub name: &'a str,
    pub points: &'a [(f64, f64)],
    pub color: RGBColor,
}

/// A tick value with at most three significant digits: plotters' own `{}` of a log axis's
/// ticks printed binary-rounding tails ("0.70000000001").
fn tick_label(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        return format!("{v}");
    }
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.1e}");
    }
    let decimals = (2 - a.log10().floor() as i32).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// Line plot to PNG; `log_y` for losses spanning decades.
pub fn line_plot(
    path: &Path,
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[Series],
    log_y: bool,
) -> PlotResult<()> {
    ensure_font();
    let all: Vec<(f64, f64)> = series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
        .collect();
    if all.is_empty() {
        return Err(anyhow_like::Error("no finite points to plot".into()));
    }
    let (mut x0, mut x1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    let (mut y0, mut y1) = all
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.1), b.max(p.1)));
    if x1 <= x0 {
        x1 = x0 + 1.0;
        x0 -= 1.0;
    }
    if y1 <= y0 {
        y1 = y0 * 1.1 + 1e-12;
        y0 *= 0.9;
    }
    let root = BitMapBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(perr)?;
    let mut b = ChartBuilder::on(&root);
    b.caption(title, (FONT, 22))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70);
    macro_rules! draw {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc(xlabel)
                .y_desc(ylabel)
                .x_label_formatter(&|v| tick_label(*v))
                .y_label_formatter(&|v| tick_label(*v))
                .label_style((FONT, 14))
                .draw()
                .map_err(perr)?;
            for s in series {
                let pts: Vec<(f64, f64)> = s
                    .points
                    .iter()
                    .copied()
                    .filter(|(x, y)| x.is_finite() && y.is_finite() && (!log_y || *y > 0.0))
                    .collect();
                let c = s.color;
                chart
                    .draw_series(LineSeries::new(pts, c.stroke_width(2)))
                    .map_err(perr)?
                    .label(s.name)
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c));
            }
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font((FONT, 14))
                .draw()
                .map_err(perr)?;
        }};
    }
    if log_y {
        draw!(b
            .build_cartesian_2d(x0..x1, (y0..y1).log_scale())
            .map_err(perr)?);
    } else {
        draw!(b.build_cartesian_2d(x0..x1, y0..y1).map_err(perr)?);
    }
    root.present().map_err(perr)?;
    Ok(())
}

/// Writes equally sized grey-scale images as a PNG grid, each scaled to its own [min, max]
/// (or to the shared `range` when given), `zoom` pixels per image pixel.
pub fn image_grid(
    path: &Path,
    images: &[&[f32]],
    h: usize,
    w: usize,
    ncols: usize,
    zoom: usize,
    range: Option<(f32, f32)>,
) -> PlotResult<()> {
    if images.is_empty() || ncols == 0 || zoom == 0 {
        return Err(anyhow_like::Error("empty image grid".into()));
    }
    let nrows = images.len().div_ceil(ncols);
    let gap = 2usize;
    let width = ncols * (w * zoom + gap) + gap;
    let height = nrows * (h * zoom + gap) + gap;
    let mut buf = vec![255u8; width * height * 3];
    for (k, img) in images.iter().enumerate() {
        let (lo, hi) = range.unwrap_or_else(|| {
            img.iter()
                .fold((f32::MAX, f32::MIN), |(a, b), &v| (a.min(v), b.max(v)))
        });
        let span = if hi > lo { hi - lo } else { 1.0 };
        let (r, c) = (k / ncols, k % ncols);
        let oy = gap + r * (h * zoom + gap);
        let ox = gap + c * (w * zoom + gap);
        for y in 0..h * zoom {
            for x in 0..w * zoom {
                // Row 0 of an astronomical image is the bottom: flip so north is up.
                let v = img[(h - 1 - y / zoom) * w + x / zoom];
                let g = (((v - lo) / span).clamp(0.0, 1.0) * 255.0).round() as u8;
                let p = ((oy + y) * width + ox + x) * 3;
                buf[p..p + 3].fill(g);
            }
        }
    }
    image_png(path, &buf, width, height)
}

fn image_png(path: &Path, rgb: &[u8], w: usize, h: usize) -> PlotResult<()> {
    let root = BitMapBackend::new(path, (w as u32, h as u32)).into_drawing_area();
    let mut it = rgb.chunks_exact(3);
    for y in 0..h {
        for x in 0..w {
            let p = it.next().unwrap();
            root.draw_pixel((x as i32, y as i32), &RGBColor(p[0], p[1], p[2]))
                .map_err(perr)?;
        }
    }
    root.present().map_err(perr)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn tick_labels_are_short() {
        use super::tick_label;
        assert_eq!(tick_label(0.7000000000001), "0.7");
        assert_eq!(tick_label(0.0123456), "0.0123");
        assert_eq!(tick_label(200.0), "200");
        assert_eq!(tick_label(1234.6), "1235");
        assert_eq!(tick_label(2e-5), "2.0e-5");
        assert_eq!(tick_label(0.0), "0");
    }

    use super::*;

    #[test]
    fn plots_write_pngs() {
        let dir = tempfile::tempdir().unwrap();
        let pts: Vec<(f64, f64)> = (1..50).map(|i| (i as f64, 1.0 / i as f64)).collect();
        let p = dir.path().join("loss.png");
        line_plot(
            &p,
            "DSM loss",
            "step",
            "loss",
            &[Series {
                name: "loss",
                points: &pts,
                color: BLUE,
            }],
            true,
        )
        .unwrap();
        assert!(std::fs::metadata(&p).unwrap().len() > 1000);
        let img: Vec<f32> = (0..64).map(|v| v as f32).collect();
        let g = dir.path().join("grid.png");
        image_grid(&g, &[&img, &img, &img], 8, 8, 2, 3, None).unwrap();
        assert!(std::fs::metadata(&g).unwrap().len() > 100);
    }
}
