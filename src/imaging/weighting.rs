//! Imaging weights as WSClean computes them, so that our dirty images match WSClean's.
//!
//! WSClean grids the data weights of every sample onto a half uv plane (v ≥ 0, conjugating
//! samples with v < 0) whose size is the *padded* image (padding 1.2, rounded up to a multiple
//! of four) and whose cell is `1/(N·Δ)`. Samples that fall outside that grid get imaging weight
//! zero for every weighting, natural included: they are beyond the image's Nyquist limit.
//! - natural: imaging weight 1;
//! - uniform: `1/W_k`, with `W_k` the summed data weight of the sample's cell;
//! - Briggs: `1/(1 + W_k f²)`, `f² = (5·10^−R)² / (Σ_k W_k² / Σ_i w_i)`.
//!
//! After that, WSClean's default rank filter (`-weighting-rank-filter 3`, size 16) caps every
//! cell's imaging weight at 3× the mean of the non-zero cells in a 16-cell window around it,
//! which tames isolated cells under uniform weighting.
//! The weight a sample is gridded with is its data weight times its imaging weight.

use std::str::FromStr;

use super::ImagingError;
use crate::operator::ImageGeometry;
use ms_io::VisChunk;

const SPEED_OF_LIGHT: f64 = 299_792_458.0;
/// WSClean's default `-padding`.
pub const DEFAULT_PADDING: f64 = 1.2;

/// WSClean's `-weighting-rank-filter LEVEL` and `-weighting-rank-filter-size SIZE`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankFilter {
    pub level: f64,
    pub size: usize,
}

impl Default for RankFilter {
    fn default() -> Self {
        Self {
            level: 3.0,
            size: 16,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Weighting {
    Natural,
    Uniform,
    Briggs(f64),
}

impl Weighting {
    pub fn briggs(robust: f64) -> Result<Self, ImagingError> {
        if !(-2.0..=2.0).contains(&robust) || !robust.is_finite() {
            return Err(ImagingError::BadRobust(robust));
        }
        Ok(Weighting::Briggs(robust))
    }

    /// Parses WSClean's spelling: `natural`, `uniform`, `briggs <robust>`.
    pub fn from_words(words: &[String]) -> Result<Self, ImagingError> {
        let mode = words
            .first()
            .map(|s| s.to_ascii_lowercase())
            .unwrap_or_default();
        match (mode.as_str(), words.len()) {
            ("natural", 1) => Ok(Weighting::Natural),
            ("uniform", 1) => Ok(Weighting::Uniform),
            ("briggs", 2) => {
                let r = f64::from_str(&words[1])
                    .map_err(|_| ImagingError::UnknownWeighting(words.join(" ")))?;
                Weighting::briggs(r)
            }
            _ => Err(ImagingError::UnknownWeighting(words.join(" "))),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Weighting::Natural => "natural".into(),
            Weighting::Uniform => "uniform".into(),
            Weighting::Briggs(r) => format!("Briggs {r}"),
        }
    }
}

/// WSClean's padded size: `ceil(n · padding)`, rounded up to a multiple of four.
pub fn padded_size(n: usize, padding: f64) -> usize {
    let p = (n as f64 * padding).ceil() as usize;
    p + (4 - p % 4) % 4
}

/// The half-plane weight grid.
struct WeightGrid {
    width: usize,
    height: usize,
    /// `N·Δ` along u and v: cell index = floor(u · scale_u + width/2).
    scale_u: f64,
    scale_v: f64,
    cells: Vec<f64>,
}

impl WeightGrid {
    fn new(geom: &ImageGeometry, padding: f64) -> Self {
        let width = padded_size(geom.nx, padding);
        let height = padded_size(geom.ny, padding);
        Self {
            width,
            height,
            scale_u: width as f64 * geom.dx,
            scale_v: height as f64 * geom.dy,
            cells: vec![0.0; width * height / 2],
        }
    }

    /// Caps each non-zero cell at `level` × the mean of the non-zero cells in the window
    /// `[x − d, x + d) × [y − d, y + d)`, `d = size/2`, clipped to the half plane — WSClean's
    /// window, asymmetric as it is. Summed-area tables keep it linear in the grid size.
    fn rank_filter(&mut self, f: RankFilter) {
        let (w, h) = (self.width, self.height / 2);
        let d = f.size / 2;
        // sat[(y)*(w+1)+x] = sum over [0,x)×[0,y).
        let mut sum = vec![0.0f64; (w + 1) * (h + 1)];
        let mut cnt = vec![0u32; (w + 1) * (h + 1)];
        for y in 0..h {
            for x in 0..w {
                let v = self.cells[y * w + x];
                let i = (y + 1) * (w + 1) + x + 1;
                sum[i] = v + sum[i - 1] + sum[i - (w + 1)] - sum[i - w - 2];
                cnt[i] = u32::from(v != 0.0) + cnt[i - 1] + cnt[i - (w + 1)] - cnt[i - w - 2];
            }
        }
        let rect = |t: &[f64], x1: usize, y1: usize, x2: usize, y2: usize| {
            t[y2 * (w + 1) + x2] - t[y1 * (w + 1) + x2] - t[y2 * (w + 1) + x1]
                + t[y1 * (w + 1) + x1]
        };
        let cntf: Vec<f64> = cnt.iter().map(|&c| c as f64).collect();
        let mut out = self.cells.clone();
        for y in 0..h {
            for x in 0..w {
                let v = self.cells[y * w + x];
                if v == 0.0 {
                    continue;
                }
                let (x1, y1) = (x.saturating_sub(d), y.saturating_sub(d));
                let (x2, y2) = ((x + d).min(w), (y + d).min(h));
                let n = rect(&cntf, x1, y1, x2, y2);
                if n > 0.0 {
                    let mean = rect(&sum, x1, y1, x2, y2) / n;
                    if v > mean * f.level {
                        out[y * w + x] = mean * f.level;
                    }
                }
            }
        }
        self.cells = out;
    }

    fn index(&self, mut u: f64, mut v: f64) -> Option<usize> {
        if v < 0.0 {
            u = -u;
            v = -v;
        }
        let x = (u * self.scale_u + (self.width / 2) as f64).floor();
        let y = (v * self.scale_v).floor();
        if x >= 0.0 && x < self.width as f64 && y < (self.height / 2) as f64 {
            Some(x as usize + y as usize * self.width)
        } else {
            None
        }
    }
}

/// Calls `f(chunk index, sample index, u_λ, v_λ, data weight)` for every sample.
fn for_each_sample(chunks: &[VisChunk], mut f: impl FnMut(usize, usize, f64, f64, f32)) {
    for (ci, c) in chunks.iter().enumerate() {
        let nchan = c.n_chan();
        for (r, uvw) in c.uvw.iter().enumerate() {
            for (ch, &freq) in c.freq.iter().enumerate() {
                let k = r * nchan + ch;
                let scale = freq / SPEED_OF_LIGHT;
                f(ci, k, uvw[0] * scale, uvw[1] * scale, c.weight[k]);
            }
        }
    }
}

/// The weight each sample is gridded with (data weight × imaging weight), per chunk.
pub fn gridding_weights(
    weighting: Weighting,
    geom: &ImageGeometry,
    padding: f64,
    rank_filter: Option<RankFilter>,
    chunks: &[VisChunk],
) -> Vec<Vec<f32>> {
    let mut grid = WeightGrid::new(geom, padding);
    let mut total = 0.0f64;
    if weighting != Weighting::Natural {
        for_each_sample(chunks, |_, _, u, v, w| {
            if w > 0.0 {
                if let Some(i) = grid.index(u, v) {
                    grid.cells[i] += w as f64;
                    total += w as f64;
                }
            }
        });
        match weighting {
            Weighting::Uniform => {
                for c in grid.cells.iter_mut().filter(|c| **c != 0.0) {
                    *c = 1.0 / *c;
                }
            }
            Weighting::Briggs(robust) => {
                let sum_sq: f64 = grid.cells.iter().map(|c| c * c).sum();
                let avg = sum_sq / total;
                let num = 5.0 * 10f64.powf(-robust);
                let f2 = num * num / avg;
                for c in grid.cells.iter_mut() {
                    *c = 1.0 / (1.0 + *c * f2);
                }
            }
            Weighting::Natural => unreachable!(),
        }
        if let Some(f) = rank_filter.filter(|f| f.level >= 1.0) {
            grid.rank_filter(f);
        }
    } else {
        grid.cells.iter_mut().for_each(|c| *c = 1.0);
    }
    let mut out: Vec<Vec<f32>> = chunks.iter().map(|c| vec![0.0; c.weight.len()]).collect();
    for_each_sample(chunks, |ci, k, u, v, w| {
        if w > 0.0 {
            if let Some(i) = grid.index(u, v) {
                out[ci][k] = (w as f64 * grid.cells[i]) as f32;
            }
        }
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn padded_size_matches_wsclean() {
        // ceil(512·1.2) = 615 → 616; ceil(64·1.2) = 77 → 80; ceil(100·1.2) = 120.
        assert_eq!(padded_size(512, 1.2), 616);
        assert_eq!(padded_size(64, 1.2), 80);
        assert_eq!(padded_size(100, 1.2), 120);
    }

    #[test]
    fn parses_wsclean_spelling() {
        let w = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
        assert_eq!(
            Weighting::from_words(&w("natural")).unwrap(),
            Weighting::Natural
        );
        assert_eq!(
            Weighting::from_words(&w("briggs -0.5")).unwrap(),
            Weighting::Briggs(-0.5)
        );
        assert!(Weighting::from_words(&w("briggs 3")).is_err());
        assert!(Weighting::from_words(&w("briggs")).is_err());
        assert!(Weighting::from_words(&w("superuniform")).is_err());
    }

    fn chunk(uv: &[(f64, f64)], w: &[f32]) -> VisChunk {
        // 1 channel at c Hz: u, v in metres equal u, v in wavelengths.
        VisChunk {
            uvw: uv.iter().map(|&(u, v)| [u, v, 0.0]).collect(),
            freq: vec![SPEED_OF_LIGHT],
            vis: vec![Default::default(); uv.len()],
            weight: w.to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn uniform_divides_by_cell_weight_and_conjugates() {
        let geom = ImageGeometry::new(64, 64, 1e-4, 1e-4).unwrap();
        // Cell size 1/(80e-4) = 125 λ. Samples 0 and 1 share a cell (the second as the
        // conjugate of the first); sample 2 is alone; sample 3 is beyond the grid.
        let c = chunk(
            &[
                (300.0, 130.0),
                (-310.0, -140.0),
                (1000.0, 700.0),
                (1e6, 0.0),
            ],
            &[1.0, 3.0, 2.0, 5.0],
        );
        let w = gridding_weights(
            Weighting::Uniform,
            &geom,
            1.2,
            None,
            std::slice::from_ref(&c),
        );
        assert_eq!(w[0], vec![0.25, 0.75, 1.0, 0.0]);
        let n = gridding_weights(Weighting::Natural, &geom, 1.2, None, &[c]);
        assert_eq!(n[0], vec![1.0, 3.0, 2.0, 0.0]);
    }

    #[test]
    fn briggs_limits_are_natural_and_uniform() {
        let geom = ImageGeometry::new(64, 64, 1e-4, 1e-4).unwrap();
        let c = chunk(
            &[(300.0, 130.0), (-310.0, -140.0), (1000.0, 700.0)],
            &[1.0, 3.0, 2.0],
        );
        let nat = gridding_weights(
            Weighting::Briggs(2.0),
            &geom,
            1.2,
            None,
            std::slice::from_ref(&c),
        );
        // Robust +2: f² tiny, weights ≈ data weights (within 1 %).
        for (a, b) in nat[0].iter().zip([1.0, 3.0, 2.0]) {
            assert!((a / b - 1.0).abs() < 0.01, "{a} vs {b}");
        }
        let uni = gridding_weights(Weighting::Briggs(-2.0), &geom, 1.2, None, &[c]);
        // Robust −2: proportional to uniform weights (0.25, 0.75, 1.0) within 1 %.
        let s = uni[0][2];
        for (a, b) in uni[0].iter().zip([0.25, 0.75, 1.0]) {
            assert!((a / s / b - 1.0).abs() < 0.01, "{a} vs {b}");
        }
    }

    #[test]
    fn rank_filter_caps_isolated_heavy_cells_like_a_brute_force_window() {
        let geom = ImageGeometry::new(64, 64, 1e-4, 1e-4).unwrap();
        let mut g = WeightGrid::new(&geom, 1.2);
        let w = g.width;
        let mut seed = 3u64;
        for c in g.cells.iter_mut() {
            seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
            if (seed >> 60) < 6 {
                *c = ((seed >> 33) % 1000) as f64 / 10.0 + 0.1;
            }
        }
        let orig = g.cells.clone();
        let f = RankFilter {
            level: 1.5,
            size: 8,
        };
        g.rank_filter(f);
        let h = g.height / 2;
        let mut capped = 0;
        for y in 0..h {
            for x in 0..w {
                let v = orig[y * w + x];
                if v == 0.0 {
                    continue;
                }
                let (mut s, mut n) = (0.0, 0.0);
                for yy in y.saturating_sub(4)..(y + 4).min(h) {
                    for xx in x.saturating_sub(4)..(x + 4).min(w) {
                        if orig[yy * w + xx] != 0.0 {
                            s += orig[yy * w + xx];
                            n += 1.0;
                        }
                    }
                }
                let want = v.min(1.5 * s / n);
                capped += usize::from(want < v);
                assert!((g.cells[y * w + x] - want).abs() < 1e-9 * want.max(1.0));
            }
        }
        assert!(capped > 10, "the test grid should exercise the cap");
    }
}
