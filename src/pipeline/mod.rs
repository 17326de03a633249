//! The pipeline layer: one function per job, each taking an options struct and an
//! [`Observer`](crate::observe::Observer) and returning a result struct (arrays with their
//! WCS header, χ², fluxes, timings). It prints nothing and writes no image: the CLI parses,
//! calls and writes; the Python module and MPI ranks call the same functions. Two jobs write
//! because writing is their result: `simulate` (a new Measurement Set, atomically) and `train`
//! (the checkpoint folder).

#[macro_use]
mod error;

pub use error::{Context, PipelineError, Result};
pub mod clean;
pub mod compare_priors;
pub mod denoise;
pub mod dirty;
pub mod image;
pub mod lens;
pub mod prior_check;
pub mod resources;
pub mod simulate;
pub mod split;
pub mod train;
pub mod validate;
pub mod vis;

/// A prior's name as the outputs (FITS PRIOR, summaries) record it: its folder, or the
/// built-in one.
pub fn prior_name(dir: Option<&std::path::Path>) -> String {
    dir.map_or_else(
        || "built-in (MiraBest 64)".to_string(),
        |p| p.display().to_string(),
    )
}
