//! A sky image as a figure: perceptual colour map, colour bar with units, arcsec offset axes
//! (ΔRA increasing to the left, ΔDec up) and optional contours.
//!
//! Images are `[iy][ix]` with `ix` along FITS axis 1 (CDELT1 < 0) and `iy` along FITS axis 2,
//! the phase centre at the 0-based pixel `(nx/2, ny/2)` as `io` writes CRPIX.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::plot_util::{anyhow_like::Error as PlotError, ensure_font, PlotResult, FONT};

/// Colour maps as lookup tables sampled from matplotlib's, interpolated linearly in sRGB
/// (the tables are dense enough that the difference from the originals is invisible).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Colormap {
    /// Black → purple → orange → pale yellow; brightness, for sky images.
    Inferno,
    /// Purple → teal → yellow; for uncertainties, so they never look like a sky image.
    Viridis,
    /// Blue → white → red (RdBu reversed); zero is white, for signed maps such as residuals.
    Diverging,
}

const INFERNO: [[u8; 3]; 16] = [
    [0, 0, 4],
    [12, 8, 38],
    [36, 12, 79],
    [66, 10, 104],
    [93, 18, 110],
    [120, 28, 109],
    [147, 38, 103],
    [174, 48, 92],
    [199, 62, 76],
    [221, 81, 58],
    [237, 105, 37],
    [248, 133, 15],
    [252, 165, 10],
    [250, 198, 45],
    [242, 230, 97],
    [252, 255, 164],
];

const VIRIDIS: [[u8; 3]; 16] = [
    [68, 1, 84],
    [72, 26, 108],
    [71, 47, 125],
    [65, 68, 135],
    [57, 86, 140],
    [49, 104, 142],
    [42, 120, 142],
    [35, 137, 142],
    [31, 153, 138],
    [34, 168, 132],
    [53, 183, 121],
    [84, 197, 104],
    [122, 209, 81],
    [165, 219, 54],
    [210, 226, 27],
    [253, 231, 37],
];

const RDBU_R: [[u8; 3]; 11] = [
    [5, 48, 97],
    [33, 102, 172],
    [67, 147, 195],
    [146, 197, 222],
    [209, 229, 240],
    [247, 247, 247],
    [253, 219, 199],
    [244, 165, 130],
    [214, 96, 77],
    [178, 24, 43],
    [103, 0, 31],
];

/// Colour of pixels that are not finite (flagged or masked).
pub const NAN_COLOR: [u8; 3] = [128, 128, 128];

impl Colormap {
    fn table(self) -> &'static [[u8; 3]] {
        match self {
            Colormap::Inferno => &INFERNO,
            Colormap::Viridis => &VIRIDIS,
            Colormap::Diverging => &RDBU_R,
        }
    }

    /// Colour at `t` in [0, 1] (clamped; NaN gives [`NAN_COLOR`]).
    pub fn rgb(self, t: f64) -> [u8; 3] {
        if !t.is_finite() {
            return NAN_COLOR;
        }
        let lut = self.table();
        let s = t.clamp(0.0, 1.0) * (lut.len() - 1) as f64;
        let i = (s.floor() as usize).min(lut.len() - 2);
        let f = s - i as f64;
        let (a, b) = (lut[i], lut[i + 1]);
        std::array::from_fn(|c| (a[c] as f64 + f * (b[c] as f64 - a[c] as f64)).round() as u8)
    }
}

/// One sky image and how to show it.
pub struct SkyImage<'a> {
    pub data: &'a [f32],
    pub ny: usize,
    pub nx: usize,
    pub pixel_asec: f64,
    pub title: &'a str,
    /// "Jy/beam", "Jy/pixel" (shown as mJy/µJy when values are small) or any other label.
    pub unit: &'a str,
    pub cmap: Colormap,
    /// Colour range in data units; `None`: finite min..max (symmetric about 0 for `Diverging`).
    pub range: Option<(f64, f64)>,
    /// Contour levels in data units, drawn as thin black lines.
    pub contours: &'a [f64],
    /// How data values map to colours.
    pub stretch: Stretch,
}

/// How data values between the colour range's ends map to colours.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stretch {
    Linear,
    /// `asinh(v/soft)` rescaled to the range: linear within `soft` of zero, logarithmic
    /// beyond (either sign), so a 1000:1 jet and its core show in one picture (as DS9's and
    /// CARTA's asinh scales).
    Asinh {
        soft: f64,
    },
}

impl Stretch {
    /// An asinh stretch for an image whose faint end worth seeing is `soft` (e.g. a few σ of
    /// its noise), linear when that is within a factor 10 of the range's span anyway.
    pub fn asinh_for(soft: f64, lo: f64, hi: f64) -> Self {
        if soft > 0.0 && soft.is_finite() && (hi - lo) > 10.0 * soft {
            Stretch::Asinh { soft }
        } else {
            Stretch::Linear
        }
    }

    /// Position in [0, 1] of `v` in the range `lo..hi` (unclamped; NaN stays NaN).
    pub fn forward(self, v: f64, lo: f64, hi: f64) -> f64 {
        match self {
            Stretch::Linear => (v - lo) / (hi - lo),
            Stretch::Asinh { soft } => {
                let (a, b) = ((lo / soft).asinh(), (hi / soft).asinh());
                ((v / soft).asinh() - a) / (b - a)
            }
        }
    }

    /// The data value at position `t` of the range (the colour bar's labels).
    pub fn inverse(self, t: f64, lo: f64, hi: f64) -> f64 {
        match self {
            Stretch::Linear => lo + t * (hi - lo),
            Stretch::Asinh { soft } => {
                let (a, b) = ((lo / soft).asinh(), (hi / soft).asinh());
                soft * (a + t * (b - a)).sinh()
            }
        }
    }
}

/// Offsets shown in the unit that suits the field: µas for the EHT, mas for VLBI, arcsec for
/// the VLA and ALMA, arcmin and degrees for wide fields. Returns (arcsec per unit, name).
pub fn angle_unit(extent_asec: f64) -> (f64, &'static str) {
    if extent_asec < 2e-3 {
        (1e-6, "µas")
    } else if extent_asec < 2.0 {
        (1e-3, "mas")
    } else if extent_asec < 600.0 {
        (1.0, "arcsec")
    } else if extent_asec < 36_000.0 {
        (60.0, "arcmin")
    } else {
        (3600.0, "deg")
    }
}

/// Where the image raster landed on the canvas, in backend pixels (top-left origin).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageArea {
    pub x: i32,
    pub y: i32,
    pub w: u32,
    pub h: u32,
}

// Tick and legend text is 14 px throughout: plotters' ab_glyph backend truncates each glyph's
// vertical offset toward zero, which at 13 px lifts the decimal point a pixel ("0·98").

/// Default canvas of one sky figure: readable at the size the report shows it.
pub const SKY_SIZE: (u32, u32) = (500, 450);

/// A 500 px wide canvas whose height fits an `ny × nx` image without empty bands.
pub fn sky_canvas(ny: usize, nx: usize) -> (u32, u32) {
    let pw = 500.0 - (58 + 14 + 18 + 74 + 16) as f64;
    let ph = (pw * ny.max(1) as f64 / nx.max(1) as f64).clamp(120.0, 400.0);
    (500, ph.round() as u32 + 34 + 44 + 16)
}

fn err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError(e.to_string())
}

/// Finite min and max of `v` (None when nothing is finite).
pub fn finite_range(v: &[f32]) -> Option<(f64, f64)> {
    let (lo, hi) = v
        .iter()
        .filter(|x| x.is_finite())
        .fold((f64::MAX, f64::MIN), |(a, b), &x| {
            (a.min(x as f64), b.max(x as f64))
        });
    (lo <= hi).then_some((lo, hi))
}

/// Colour-bar range for an image: degenerate ranges are widened so the bar still has ticks.
fn colour_range(img: &SkyImage) -> (f64, f64) {
    let (mut lo, mut hi) = img
        .range
        .or_else(|| finite_range(img.data))
        .unwrap_or((0.0, 1.0));
    if img.range.is_none() && img.cmap == Colormap::Diverging {
        let m = lo.abs().max(hi.abs());
        (lo, hi) = (-m, m);
    }
    if hi <= lo {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        (lo, hi) = (lo - d, hi + d);
    }
    (lo, hi)
}

/// Flux units are rescaled to a prefix where the colour-bar labels stay short.
fn scaled_unit(unit: &str, lo: f64, hi: f64) -> (f64, String) {
    if !unit.starts_with("Jy") {
        return (1.0, unit.to_string());
    }
    let m = lo.abs().max(hi.abs());
    if m < 1e-3 {
        (1e6, format!("µ{unit}"))
    } else if m < 1.0 {
        (1e3, format!("m{unit}"))
    } else {
        (1.0, unit.to_string())
    }
}

/// Decimals for tick labels of an axis spanning `span`: enough for plotters' ~5 ticks to differ,
/// no trailing ".0" on whole steps.
pub fn decimals(span: f64) -> usize {
    let step = span.abs() / 5.0;
    if !(step.is_finite() && step > 0.0) {
        return 1;
    }
    (-step.log10().floor()).clamp(0.0, 4.0) as usize
}

/// A label with three significant digits and no exponent for everyday magnitudes.
fn significant(v: f64) -> String {
    let a = v.abs();
    if a == 0.0 || !a.is_finite() {
        return tick(v, 0);
    }
    if !(1e-3..1e5).contains(&a) {
        return format!("{v:.2e}");
    }
    let prec = (2 - a.log10().floor() as i64).clamp(0, 6) as usize;
    tick(v, prec)
}

fn tick(v: f64, prec: usize) -> String {
    // + 0.0 turns -0.0 into 0.0 so the centre tick does not read "-0".
    format!("{:.*}", prec, v + 0.0)
}

/// Draws the figure into `root` and returns where the image raster is. Generic over the backend
/// so tests can render into memory.
pub fn draw_sky_image<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    img: &SkyImage,
) -> PlotResult<ImageArea> {
    let (ny, nx) = (img.ny, img.nx);
    if ny == 0 || nx == 0 || img.data.len() != ny * nx {
        return Err(PlotError(format!(
            "{}: image of {} values is not {ny} × {nx}",
            img.title,
            img.data.len()
        )));
    }
    ensure_font();
    root.fill(&WHITE).map_err(err)?;
    let (cw, ch) = root.dim_in_pixel();

    let title_h = 34u32;
    let (ylab, xlab) = (58u32, 44u32);
    let (gap, bar_w, bar_lab) = (14u32, 18u32, 74u32);
    let pad = 8u32;
    let avail_w = cw
        .saturating_sub(ylab + gap + bar_w + bar_lab + 2 * pad)
        .max(16);
    let avail_h = ch.saturating_sub(title_h + xlab + 2 * pad).max(16);
    // Square sky pixels: the image area keeps the nx : ny aspect ratio.
    let aspect = nx as f64 / ny as f64;
    let (pw, ph) = if avail_w as f64 / avail_h as f64 > aspect {
        (((avail_h as f64) * aspect).round() as u32, avail_h)
    } else {
        (avail_w, ((avail_w as f64) / aspect).round() as u32)
    };
    let ml = pad + (avail_w - pw) / 2;
    let mt = pad + (avail_h - ph) / 2;
    let mb = ch.saturating_sub(title_h + mt + ph + xlab);

    let (title_area, body) = root.split_vertically(title_h);
    title_area
        .draw_text(
            img.title,
            &(FONT, 19)
                .into_text_style(&title_area)
                .pos(Pos::new(HPos::Center, VPos::Center)),
            (cw as i32 / 2, title_h as i32 / 2 + 2),
        )
        .map_err(err)?;
    let (main, bar) = body.split_horizontally(ml + ylab + pw);

    let (unit_asec, angle) = angle_unit(img.pixel_asec * nx.max(ny) as f64);
    let p = img.pixel_asec / unit_asec;
    let (cx, cy) = ((nx / 2) as f64, (ny / 2) as f64);
    // Chart x is −ΔRA so that it grows to the right with ix; the labels show ΔRA.
    let (x0, x1) = ((-cx - 0.5) * p, (nx as f64 - cx - 0.5) * p);
    let (y0, y1) = ((-cy - 0.5) * p, (ny as f64 - cy - 0.5) * p);
    let (xp, yp) = (decimals(x1 - x0), decimals(y1 - y0));
    let mut chart = ChartBuilder::on(&main)
        .margin_left(ml)
        .margin_top(mt)
        .margin_bottom(mb)
        .margin_right(0)
        .y_label_area_size(ylab)
        .x_label_area_size(xlab)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(err)?;
    let xfmt = |v: &f64| tick(-*v, xp);
    let yfmt = |v: &f64| tick(*v, yp);
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(6)
        .y_labels(6)
        .x_label_formatter(&xfmt)
        .y_label_formatter(&yfmt)
        .x_desc(format!("ΔRA ({angle})"))
        .y_desc(format!("ΔDec ({angle})"))
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(err)?;

    let (lo, hi) = colour_range(img);
    let plot = chart.plotting_area();
    let (w, h) = plot.dim_in_pixel();
    let (bx, by) = plot.get_base_pixel();
    let raster = rasterize(img, w as usize, h as usize, lo, hi);
    plot.strip_coord_spec()
        .draw(
            &BitMapElement::with_owned_buffer((0, 0), (w, h), raster)
                .ok_or_else(|| err("raster size"))?,
        )
        .map_err(err)?;
    for &level in img.contours {
        for seg in contour_segments(img.data, ny, nx, level) {
            let pts: Vec<(f64, f64)> = seg
                .iter()
                .map(|&(fx, fy)| ((fx - cx) * p, (fy - cy) * p))
                .collect();
            plot.draw(&PathElement::new(pts, BLACK.stroke_width(2)))
                .map_err(err)?;
        }
    }
    plot.draw(&Rectangle::new([(x0, y0), (x1, y1)], BLACK.stroke_width(1)))
        .map_err(err)?;

    // Colour bar: same top and bottom as the image so the two line up.
    let (scale, unit) = scaled_unit(img.unit, lo, hi);
    let stretch = img.stretch;
    let (blo, bhi) = match stretch {
        Stretch::Linear => (lo * scale, hi * scale),
        Stretch::Asinh { .. } => (0.0, 1.0),
    };
    let bp = decimals(bhi - blo);
    // Under asinh the bar is uniform in colour, its labels the data values there.
    let bfmt = |v: &f64| match stretch {
        Stretch::Linear => tick(*v, bp),
        Stretch::Asinh { .. } => significant(stretch.inverse(*v, lo, hi) * scale),
    };
    let mut cbar = ChartBuilder::on(&bar)
        .margin_left(gap)
        .margin_top(mt)
        .margin_bottom(mb + xlab)
        .margin_right(0)
        .right_y_label_area_size(bar_lab)
        .build_cartesian_2d(0.0..1.0, blo..bhi)
        .map_err(err)?;
    cbar.configure_mesh()
        .disable_mesh()
        .disable_x_axis()
        .y_labels(6)
        .y_label_formatter(&bfmt)
        .label_style((FONT, 14))
        .axis_desc_style((FONT, 15))
        .draw()
        .map_err(err)?;
    let barea = cbar.plotting_area();
    let (gw, gh) = barea.dim_in_pixel();
    let mut grad = Vec::with_capacity((gw * gh * 3) as usize);
    for r in 0..gh {
        let t = 1.0 - (r as f64 + 0.5) / gh.max(1) as f64;
        let c = img.cmap.rgb(t);
        for _ in 0..gw {
            grad.extend_from_slice(&c);
        }
    }
    barea
        .strip_coord_spec()
        .draw(
            &BitMapElement::with_owned_buffer((0, 0), (gw, gh), grad)
                .ok_or_else(|| err("bar size"))?,
        )
        .map_err(err)?;
    barea
        .draw(&Rectangle::new(
            [(0.0, blo), (1.0, bhi)],
            BLACK.stroke_width(1),
        ))
        .map_err(err)?;
    // The unit goes under the bar, in the free space beside the ΔRA label: a rotated axis title
    // on the right edge gets clipped by the canvas.
    let (gx, gy) = barea.get_base_pixel();
    let (rx, ry) = root.get_base_pixel();
    let half = 4 * unit.chars().count() as i32;
    let ux = (gx - rx + gw as i32 / 2).clamp(half, cw as i32 - half - 2);
    root.draw_text(
        &unit,
        &(FONT, 14)
            .into_text_style(root)
            .pos(Pos::new(HPos::Center, VPos::Top)),
        (ux, gy - ry + gh as i32 + 10),
    )
    .map_err(err)?;

    Ok(ImageArea { x: bx, y: by, w, h })
}

/// RGB raster of `w × h` canvas pixels: each is the mean of the image pixels it covers (so
/// large images are box-filtered, not aliased), north up.
fn rasterize(img: &SkyImage, w: usize, h: usize, lo: f64, hi: f64) -> Vec<u8> {
    let (ny, nx) = (img.ny, img.nx);
    let span = |k: usize, n: usize, m: usize| {
        let a = k * n / m;
        (a, ((k + 1) * n / m).max(a + 1).min(n))
    };
    let cols: Vec<(usize, usize)> = (0..w).map(|k| span(k, nx, w)).collect();
    let mut out = Vec::with_capacity(w * h * 3);
    for r in 0..h {
        let (ra, rb) = span(r, ny, h);
        for &(ca, cb) in &cols {
            let (mut s, mut n) = (0.0f64, 0usize);
            for rr in ra..rb {
                // Canvas row 0 is the top, image row 0 the bottom.
                let row = &img.data[(ny - 1 - rr) * nx..][..nx];
                for &v in &row[ca..cb] {
                    if v.is_finite() {
                        s += v as f64;
                        n += 1;
                    }
                }
            }
            let t = if n > 0 {
                img.stretch.forward(s / n as f64, lo, hi)
            } else {
                f64::NAN
            };
            out.extend_from_slice(&img.cmap.rgb(t));
        }
    }
    out
}

/// Marching squares on pixel centres: line segments, in fractional pixel coordinates `(ix, iy)`,
/// where the image crosses `level`. Saddles are resolved arbitrarily, harmless at this scale.
pub fn contour_segments(data: &[f32], ny: usize, nx: usize, level: f64) -> Vec<[(f64, f64); 2]> {
    let mut segs = Vec::new();
    if ny < 2 || nx < 2 {
        return segs;
    }
    let at = |ix: usize, iy: usize| data[iy * nx + ix] as f64;
    for iy in 0..ny - 1 {
        for ix in 0..nx - 1 {
            // Corners counter-clockwise from the bottom-left.
            let c = [
                (ix as f64, iy as f64, at(ix, iy)),
                (ix as f64 + 1.0, iy as f64, at(ix + 1, iy)),
                (ix as f64 + 1.0, iy as f64 + 1.0, at(ix + 1, iy + 1)),
                (ix as f64, iy as f64 + 1.0, at(ix, iy + 1)),
            ];
            if c.iter().any(|v| !v.2.is_finite()) {
                continue;
            }
            let mut cross = Vec::with_capacity(4);
            for e in 0..4 {
                let (a, b) = (c[e], c[(e + 1) % 4]);
                if (a.2 >= level) != (b.2 >= level) {
                    let f = (level - a.2) / (b.2 - a.2);
                    cross.push((a.0 + f * (b.0 - a.0), a.1 + f * (b.1 - a.1)));
                }
            }
            for pair in cross.chunks_exact(2) {
                segs.push([pair[0], pair[1]]);
            }
        }
    }
    segs
}

/// Renders the figure into an in-memory RGB buffer (`w × h × 3`, row-major from the top-left).
pub fn render_sky_image_rgb(
    img: &SkyImage,
    (w, h): (u32, u32),
) -> PlotResult<(Vec<u8>, ImageArea)> {
    let mut buf = vec![255u8; (w * h * 3) as usize];
    let area = {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let a = draw_sky_image(&root, img)?;
        root.present().map_err(err)?;
        a
    };
    Ok((buf, area))
}

/// Writes the figure as a PNG at `path` (the extension must be `.png`: plotters picks the
/// encoder from it).
pub fn write_sky_image_png(path: &Path, img: &SkyImage, size: (u32, u32)) -> PlotResult<()> {
    let root = BitMapBackend::new(path, size).into_drawing_area();
    draw_sky_image(&root, img)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_angle_unit_follows_the_field() {
        assert_eq!(angle_unit(2e-4), (1e-6, "µas"));
        assert_eq!(angle_unit(64.0 * 5.5e-5), (1e-3, "mas"));
        assert_eq!(angle_unit(64.0 * 0.684), (1.0, "arcsec"));
    }

    #[test]
    fn asinh_stretch_round_trips_and_is_linear_near_zero() {
        let s = Stretch::Asinh { soft: 0.01 };
        let (lo, hi) = (-0.05, 30.0);
        for v in [-0.05, -0.001, 0.0, 0.003, 0.5, 29.0, 30.0] {
            let t = s.forward(v, lo, hi);
            assert!((0.0..=1.0 + 1e-12).contains(&t));
            assert!((s.inverse(t, lo, hi) - v).abs() < 1e-9 * (1.0 + v.abs()));
        }
        // A jet at 1/1000 of the core sits well up the colour scale, not at its bottom.
        assert!(s.forward(0.03, lo, hi) > 0.3);
        assert_eq!(Stretch::asinh_for(1.0, 0.0, 5.0), Stretch::Linear);
    }

    #[test]
    fn colormaps_hit_their_ends() {
        assert_eq!(Colormap::Inferno.rgb(0.0), INFERNO[0]);
        assert_eq!(Colormap::Viridis.rgb(1.0), VIRIDIS[15]);
        assert_eq!(Colormap::Diverging.rgb(0.5), [247, 247, 247]);
        assert_eq!(Colormap::Inferno.rgb(f64::NAN), NAN_COLOR);
        // Inferno is monotonic in brightness, which is what makes it readable in grey.
        let lum = |c: [u8; 3]| 0.3 * c[0] as f64 + 0.59 * c[1] as f64 + 0.11 * c[2] as f64;
        let l: Vec<f64> = (0..=50)
            .map(|i| lum(Colormap::Inferno.rgb(i as f64 / 50.0)))
            .collect();
        assert!(l.windows(2).all(|w| w[1] >= w[0]), "{l:?}");
    }

    #[test]
    fn contour_of_a_peak_is_closed_around_it() {
        let (ny, nx) = (9, 9);
        let d: Vec<f32> = (0..ny * nx)
            .map(|i| {
                let (y, x) = ((i / nx) as f32 - 4.0, (i % nx) as f32 - 4.0);
                (-(x * x + y * y) / 4.0).exp()
            })
            .collect();
        let segs = contour_segments(&d, ny, nx, 0.5);
        assert!(segs.len() >= 8);
        for s in &segs {
            for &(x, y) in s {
                let r = ((x - 4.0).powi(2) + (y - 4.0).powi(2)).sqrt();
                // exp(-r²/4) = 0.5 at r ≈ 1.67; linear interpolation is within a pixel.
                assert!((r - 1.67).abs() < 0.5, "r = {r}");
            }
        }
    }
}
