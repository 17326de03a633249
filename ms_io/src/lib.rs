//! Read CASA Measurement Sets through casacore, and UVFITS files in pure Rust, read-only;
//! write simulated copies of Measurement Sets.
//!
//! Returns plain Rust data: [`MsInfo`] for the metadata and [`VisChunk`]s of Stokes I
//! visibilities, row-major `(row, channel)`, ready for gridding. Knows nothing of operators,
//! priors or plotting.
//!
//! Columns are read in blocks of rows by a small C++ glue over casacore's bulk column reads
//! (`glue/msio_glue.cc`), as fast as python-casacore; tables are opened read-only and without
//! locks, so the input is never written.
//!
//! Conventions (WSClean's): UVW is antenna 1 minus antenna 2, in metres, in the frame of the
//! field's `PHASE_DIR`; `V = Σ I exp(+2πi (u l + v m + w (n − 1)))` with `(u, v, w)` = UVW / λ.
//! Stokes I and its weights follow WSClean too: see [`stokes`](crate::stokes) for the rules.
//!
//! [`VisFile`] opens either format by content (a directory holding `table.dat` is an MS, a
//! file starting with a FITS header is UVFITS, see [`uvfits`](crate::uvfits)); both give the
//! same [`MsInfo`] and [`VisChunk`]s.
//!
//! The writer ([`simulate_like`], [`create_like`], [`MsWriter`]) copies an MS and replaces the
//! copy's data by model visibilities plus noise; it never opens its input for writing.

mod direction;
mod error;
mod info;
mod reader;
pub mod stokes;
mod table;
mod types;
pub mod uvfits;
mod visfile;
mod writer;

pub use error::MsError;
pub use reader::{ChunkIter, MeasurementSet, DEFAULT_CHUNK_ROWS};
pub use types::*;
pub use uvfits::{UvfitsChunks, UvfitsFile};
pub use visfile::{VisChunks, VisFile, VisSource};
pub use writer::{create_like, simulate_like, MsWriter, StokesModel, VisChunkMeta, WriteStats};
