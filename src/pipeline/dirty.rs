//! The dirty-image job (`interf-image dirty`): the dirty image and PSF of a selection, as
//! `wsclean -niter 0` makes them, with their FITS headers. Also the reading and imaging set-up
//! that `clean` starts from.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ms_io::{MsInfo, Selection, VisChunk, VisFile};

use super::resources::{check_field_of_view, check_memory, gridding_memory};
use super::vis::{count_usable, freq_range, longest_baseline, read_vis, sky_header};
use super::Result;
use crate::imaging::weighting::RankFilter;
use crate::imaging::{make_dirty_and_psf, ImagingOptions, UvStats, Weighting};
use crate::io::{HeaderValue, SkyHeader};
use crate::observe::{check, Observer};
use crate::operator::{ImageGeometry, NufftOptions};

/// What `dirty` images, and how; `clean` images the same way.
#[derive(Debug, Clone)]
pub struct DirtyOptions {
    /// The Measurement Set or UVFITS file (opened read-only).
    pub vis: PathBuf,
    pub selection: Selection,
    /// Image size in pixels.
    pub nx: usize,
    pub ny: usize,
    /// Pixel size, radians. `None`: a quarter of the theoretical beam (1/longest baseline).
    pub scale: Option<f64>,
    pub weighting: Weighting,
    /// Padding of the weighting grid (WSClean's `-padding`).
    pub padding: f64,
    /// WSClean's weighting rank filter; `None` turns it off.
    pub rank_filter: Option<RankFilter>,
    pub nufft: NufftOptions,
    /// Most memory the job may take; `None`: the memory available now.
    pub max_memory: Option<u64>,
}

impl DirtyOptions {
    /// The checks that need no data: [`dirty`] runs them first, and a caller that must check
    /// something of its own before the work (its outputs) can run them before that.
    pub fn check(&self) -> Result<()> {
        self.check_size()?;
        let (nx, ny) = (self.nx, self.ny);
        check_memory(
            gridding_memory(nx, ny, self.padding, 6),
            &format!("a {nx}×{ny} dirty image and PSF"),
            self.max_memory,
        )
    }

    pub(super) fn check_size(&self) -> Result<()> {
        if self.nx == 0 || self.ny == 0 {
            input_error!(
                "--size must be at least 1 pixel, got {}×{}",
                self.nx,
                self.ny
            );
        }
        Ok(())
    }
}

/// The dirty image and PSF, their headers, and what the data and the gridding were like.
#[derive(Debug, Clone)]
pub struct DirtyResult {
    /// Jy/beam, row-major `[iy][ix]`.
    pub dirty: Vec<f32>,
    /// Peak-normalised.
    pub psf: Vec<f32>,
    /// The dirty image's header; the PSF's is the same without NVIS.
    pub dirty_header: SkyHeader,
    pub psf_header: SkyHeader,
    pub info: MsInfo,
    pub field_id: usize,
    /// Lowest and highest selected frequency, Hz.
    pub freq_range: (f64, f64),
    /// Selected samples, and those of them with weight > 0.
    pub n_samples: usize,
    pub n_usable: usize,
    pub stats: UvStats,
    /// Pixel size, radians.
    pub scale: f64,
    /// The dirty image's largest value (Jy/beam) and its pixel (row, column).
    pub peak: f32,
    pub peak_pixel: (usize, usize),
    pub read_time: Duration,
    pub grid_time: Duration,
}

/// Reads the selection (observer stage "reading") and grids the dirty image and PSF (stage
/// "gridding").
pub fn dirty(opts: &DirtyOptions, obs: &dyn Observer) -> Result<DirtyResult> {
    opts.check()?;
    let prep = prepare(opts, obs)?;
    let start = Instant::now();
    obs.stage("gridding", 0);
    check(obs)?;
    let products = make_dirty_and_psf(&prep.chunks, &prep.imaging)?;
    let grid_time = start.elapsed();

    let dirty_header = prep.header(products.stats.gridded);
    let mut psf_header = dirty_header.clone();
    psf_header.extra.retain(|(k, _)| k != "NVIS");
    let (peak_i, peak) = products
        .dirty
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &v)| if v > a.1 { (i, v) } else { a });
    Ok(DirtyResult {
        peak,
        peak_pixel: (peak_i / opts.nx, peak_i % opts.nx),
        dirty: products.dirty,
        psf: products.psf,
        dirty_header,
        psf_header,
        freq_range: freq_range(&prep.chunks),
        n_samples: prep.n_samples,
        n_usable: prep.n_usable,
        stats: products.stats,
        scale: prep.scale,
        info: prep.info,
        field_id: prep.field_id,
        read_time: prep.read_time,
        grid_time,
    })
}

/// A selection read, and the imaging options fitted to it: where `dirty` and `clean` start.
pub(super) struct Prepared {
    pub info: MsInfo,
    pub field_id: usize,
    pub chunks: Vec<VisChunk>,
    pub n_samples: usize,
    pub n_usable: usize,
    pub scale: f64,
    pub imaging: ImagingOptions,
    pub read_time: Duration,
}

/// Opens and reads the selection, and sets the pixel scale (checked against the data's
/// resolution) and the imaging options.
pub(super) fn prepare(opts: &DirtyOptions, obs: &dyn Observer) -> Result<Prepared> {
    let start = Instant::now();
    let ms = VisFile::open(&opts.vis)?;
    let info = ms.info().clone();
    let field_id = ms.resolve_field(&opts.selection)?;
    let chunks = read_vis(&ms, &opts.selection, obs)?;
    let read_time = start.elapsed();

    let n_samples: usize = chunks.iter().map(|c| c.weight.len()).sum();
    let n_usable = count_usable(&chunks, &opts.vis)?;
    let longest = longest_baseline(&chunks);
    let scale = opts.scale.unwrap_or(0.25 / longest);
    check_field_of_view(opts.nx, opts.ny, scale, longest)?;
    let imaging = ImagingOptions {
        geometry: ImageGeometry::new(opts.nx, opts.ny, scale, scale)?,
        weighting: opts.weighting,
        padding: opts.padding,
        rank_filter: opts.rank_filter,
        nufft: opts.nufft.clone(),
    };
    Ok(Prepared {
        info,
        field_id,
        chunks,
        n_samples,
        n_usable,
        scale,
        imaging,
        read_time,
    })
}

impl Prepared {
    /// The header of an image in Jy/beam made of `nvis` gridded samples: the field's WCS, the
    /// weighting and the NUFFT accuracy.
    pub fn header(&self, nvis: usize) -> SkyHeader {
        let mut header = sky_header(
            &self.info,
            self.field_id,
            &self.chunks,
            self.scale,
            "JY/BEAM",
        );
        header.extra = vec![
            (
                "WEIGHTNG".into(),
                HeaderValue::Str(self.imaging.weighting.describe()),
            ),
            (
                "EPSILON".into(),
                HeaderValue::F64(self.imaging.nufft.epsilon),
            ),
            ("NVIS".into(), HeaderValue::I64(nvis as i64)),
        ];
        header
    }
}
