//! The images of a training file a prior trained on, or held out: the split its config.json
//! records (`prior train --val-fraction`), so that `validate`, `prior stats` and `prior
//! reference` can score a prior on images it never saw.

use std::path::Path;

use super::{PipelineError, Result};
use crate::prior::{data, stats, train};

/// Which images of a prior's training file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Split {
    /// Every image of --data.
    All,
    /// The prior's held-out validation images (images it never trained on).
    Val,
    /// The images the prior trained on.
    Train,
}

/// `n` indices (seeded, or all when the part is smaller) of the `which` part of the split the
/// prior `spec` (a checkpoint folder, or `default`) recorded over the `n_images` images of
/// `data`; the error names both.
pub fn split_indices(
    spec: &str,
    data: &Path,
    n_images: usize,
    which: Split,
    n: usize,
    seed: u64,
) -> Result<Vec<usize>> {
    let (which, recorded) = match which {
        Split::All => (stats::Reference::All, None),
        Split::Val => (stats::Reference::Val, prior_split(spec)?),
        Split::Train => (stats::Reference::Train, prior_split(spec)?),
    };
    stats::reference_indices(n_images, recorded.as_ref(), which, n, seed)
        .map_err(|m| PipelineError::Input(format!("prior '{spec}', data {}: {m}", data.display())))
}

/// The validation split recorded in a prior's config.json (`None`: it records none).
fn prior_split(spec: &str) -> Result<Option<data::Split>> {
    if spec == "default" {
        // The same bytes as the embedded prior's (`prior::default`), read for the keys that
        // the checkpoint loader drops.
        static DEFAULT_CONFIG: &[u8] = include_bytes!("../../priors/default/config.json");
        let p = Path::new("<built-in prior>/config.json");
        return Ok(train::split_from_config_json(DEFAULT_CONFIG, p)?);
    }
    Ok(train::read_split(Path::new(spec))?)
}
