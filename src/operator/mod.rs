//! Forward operators: linear maps from a real image (ny × nx, f32, row-major `[iy][ix]`) to a
//! real data vector, each with an exact adjoint. Everything downstream (likelihoods, samplers)
//! sees only [`ForwardOperator`].
//!
//! Image convention (WSClean's, see the README, below its layout table): pixel `[iy][ix]`, `ix` along
//! FITS axis 1 with RA increasing to the *left* (CDELT1 < 0), `iy` along FITS axis 2 with Dec
//! increasing upwards; the phase centre is pixel `(ny/2, nx/2)`. Direction cosines of a pixel:
//! `l = (nx/2 − ix)·Δx`, `m = (iy − ny/2)·Δy`.
//!
//! Complex data are stored as interleaved `[re, im]` pairs in the real data vector.

pub mod compose;
mod error;
pub mod geometry;
pub mod gridded;
pub mod hst;
pub mod lens;
mod masked;
pub mod nufft;
mod scaled;
pub mod testing;

pub use compose::Compose;
pub use error::OperatorError;
pub use geometry::ImageGeometry;
pub use gridded::{
    canonical_cell, cell_multiplicity, CellAveraged, CellNoise, Gridded, GriddedVisibilities,
};
pub use hst::{DataWindow, Hst, HstOptions};
pub use lens::{Lens, LensOptions};
pub use masked::Masked;
pub use nufft::{dirty2ms, ms2dirty, Gridder, Nufft, NufftOptions, NufftPlanInfo, WMode};
pub use scaled::Scaled;

/// A linear forward model `A` with its exact adjoint `Aᵀ`.
pub trait ForwardOperator: Send + Sync {
    /// `[ny, nx]` of the image the operator acts on.
    fn image_shape(&self) -> [usize; 2];

    /// Length of the real data vector (twice the number of complex samples for visibilities).
    fn data_len(&self) -> usize;

    /// `y = A x`; `image.len() == ny*nx`, `data.len() == data_len()`. Overwrites `data`.
    fn forward(&self, image: &[f32], data: &mut [f32]);

    /// `x = Aᵀ r`; overwrites `image`.
    fn adjoint(&self, data: &[f32], image: &mut [f32]);

    /// A cheap estimate of `diag(A Aᵀ)` (length `data_len()`), as the convolved-likelihood
    /// approximation needs it.
    fn diag_aat(&self) -> Vec<f32>;

    fn image_len(&self) -> usize {
        let [ny, nx] = self.image_shape();
        ny * nx
    }
}
