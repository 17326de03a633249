//! Read CASA Measurement Sets through casacore (`rubbl_casatables`), read-only.
//!
//! Returns plain Rust data: [`MsInfo`] for the metadata and [`VisChunk`]s of Stokes I
//! visibilities, row-major `(row, channel)`, ready for gridding. Knows nothing of operators,
//! priors or plotting.
//!
//! Conventions (WSClean's): UVW is antenna 1 minus antenna 2, in metres, in the frame of the
//! field's `PHASE_DIR`; `V = Σ I exp(+2πi (u l + v m + w (n − 1)))` with `(u, v, w)` = UVW / λ.

mod types;

pub use types::*;
