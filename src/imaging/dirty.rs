//! Dirty image and PSF, normalised as WSClean does (Jy/beam: the PSF peaks at exactly 1).

use super::weighting::{gridding_weights, RankFilter, Weighting, DEFAULT_PADDING};
use super::ImagingError;
use crate::operator::nufft::{ms2dirty_chunks, NufftOptions, VisSource};
use crate::operator::ImageGeometry;
use ms_io::VisChunk;

const SPEED_OF_LIGHT: f64 = 299_792_458.0;

#[derive(Debug, Clone)]
pub struct ImagingOptions {
    pub geometry: ImageGeometry,
    pub weighting: Weighting,
    /// Padding of the weighting grid (WSClean's `-padding`, default 1.2).
    pub padding: f64,
    /// WSClean's weighting rank filter (on by default, level 3, size 16); `None` turns it off.
    pub rank_filter: Option<RankFilter>,
    pub nufft: NufftOptions,
}

impl ImagingOptions {
    pub fn new(geometry: ImageGeometry, weighting: Weighting) -> Self {
        Self {
            geometry,
            weighting,
            padding: DEFAULT_PADDING,
            rank_filter: Some(RankFilter::default()),
            nufft: NufftOptions::default(),
        }
    }
}

/// What the user wants to know about the uv coverage that went into the image.
#[derive(Debug, Clone, Copy, Default)]
pub struct UvStats {
    /// Samples gridded (non-zero imaging weight).
    pub gridded: usize,
    /// Samples with a usable data weight that fell beyond the uv grid.
    pub beyond_grid: usize,
    pub min_uv: f64,
    pub max_uv: f64,
    pub max_abs_w: f64,
    /// Sum of gridding weights (data × imaging weight).
    pub weight_sum: f64,
    /// `1/max_uv` in radians, WSClean's "theoretic beam".
    pub theoretical_beam: f64,
}

pub struct DirtyProducts {
    /// Jy/beam, row-major `[iy][ix]`.
    pub dirty: Vec<f32>,
    /// Peak-normalised.
    pub psf: Vec<f32>,
    pub stats: UvStats,
    /// The weights each sample was gridded with, per chunk (needed to re-use the weighting, e.g.
    /// for CLEAN's major cycles or residual images).
    pub weights: Vec<Vec<f32>>,
}

fn uv_stats(chunks: &[VisChunk], weights: &[Vec<f32>]) -> UvStats {
    let mut s = UvStats {
        min_uv: f64::INFINITY,
        ..Default::default()
    };
    for (c, w) in chunks.iter().zip(weights) {
        let nchan = c.n_chan();
        for (r, uvw) in c.uvw.iter().enumerate() {
            for (ch, &freq) in c.freq.iter().enumerate() {
                let k = r * nchan + ch;
                if c.weight[k] <= 0.0 {
                    continue;
                }
                if w[k] <= 0.0 {
                    s.beyond_grid += 1;
                    continue;
                }
                let scale = freq / SPEED_OF_LIGHT;
                let uv = (uvw[0] * uvw[0] + uvw[1] * uvw[1]).sqrt() * scale;
                s.gridded += 1;
                s.min_uv = s.min_uv.min(uv);
                s.max_uv = s.max_uv.max(uv);
                s.max_abs_w = s.max_abs_w.max((uvw[2] * scale).abs());
                s.weight_sum += w[k] as f64;
            }
        }
    }
    s.theoretical_beam = if s.max_uv > 0.0 { 1.0 / s.max_uv } else { 0.0 };
    s
}

fn shortest_baseline(chunks: &[VisChunk]) -> f64 {
    chunks
        .iter()
        .flat_map(|c| {
            c.uvw.iter().flat_map(move |uvw| {
                c.freq
                    .iter()
                    .map(move |f| (uvw[0] * uvw[0] + uvw[1] * uvw[1]).sqrt() * f / SPEED_OF_LIGHT)
            })
        })
        .fold(f64::INFINITY, f64::min)
}

/// Weights the visibilities, grids them and their PSF, and normalises both by the weight sum.
pub fn make_dirty_and_psf(
    chunks: &[VisChunk],
    opts: &ImagingOptions,
) -> Result<DirtyProducts, ImagingError> {
    if chunks.iter().all(|c| c.weight.iter().all(|&w| w <= 0.0)) {
        return Err(ImagingError::AllZeroWeight);
    }
    let geom = &opts.geometry;
    let weights = gridding_weights(opts.weighting, geom, opts.padding, opts.rank_filter, chunks);
    let stats = uv_stats(chunks, &weights);
    if stats.gridded == 0 {
        return Err(ImagingError::NothingOnGrid {
            size: geom.nx.max(geom.ny),
            scale_asec: geom.dx.to_degrees() * 3600.0,
            max_uv: 0.5 / geom.dx.max(geom.dy),
            min_data_uv: shortest_baseline(chunks),
        });
    }

    // One gridder per product over all chunks: one FFT per w-plane at the end, however many
    // chunks the Measurement Set came in.
    // The bound must cover the gridder's own measure of each chunk: |w| of a row at the row's
    // highest frequency whenever any of its channels is used (a hair of margin for rounding).
    let max_w = chunks
        .iter()
        .zip(&weights)
        .flat_map(|(c, w)| {
            let nchan = c.n_chan();
            let fmax = c.freq.iter().cloned().fold(0.0, f64::max);
            c.uvw.iter().enumerate().filter_map(move |(r, uvw)| {
                w[r * nchan..(r + 1) * nchan]
                    .iter()
                    .any(|&x| x != 0.0)
                    .then_some(uvw[2].abs() * fmax / SPEED_OF_LIGHT)
            })
        })
        .fold(0.0f64, f64::max)
        * (1.0 + 1e-9);
    // One pass over the samples for both products, one w-plane at a time: the PSF shares the
    // dirty image's plan and kernel taps, and only one uv grid per product is ever held.
    let sources: Vec<VisSource> = chunks
        .iter()
        .zip(&weights)
        .map(|(c, w)| VisSource {
            uvw: &c.uvw,
            freq: &c.freq,
            vis: &c.vis,
            weight: w,
        })
        .collect();
    let (dirty, psf) = ms2dirty_chunks(geom, &opts.nufft, max_w, &sources, true)?;
    let psf = psf.expect("asked for the PSF");
    // In exact arithmetic the PSF's central value is the weight sum; dividing by the computed
    // value instead makes the PSF peak exactly 1 whatever the gridding accuracy, and scales the
    // dirty image consistently (Jy/beam).
    let centre = psf[(geom.ny / 2) * geom.nx + geom.nx / 2];
    let norm = 1.0 / centre;
    Ok(DirtyProducts {
        dirty: dirty.iter().map(|v| (v * norm) as f32).collect(),
        psf: psf.iter().map(|v| (v * norm) as f32).collect(),
        stats,
        weights,
    })
}
