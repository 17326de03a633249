//! interf-image: Bayesian imaging of radio-interferometric data with score-based priors.
//!
//! Module map (arrows point one way; README.md's layout table has one line per module):
//! `cli → pipeline → (validate, report) → (sample, imaging) → (likelihood, prior) → operator`.
//! `observe` (progress and stopping) is used by every layer; `ms_io` (a separate crate) by
//! `pipeline`, `imaging` and the CLI's argument checks only.

pub mod cli;
pub mod imaging;
pub mod io;
pub mod likelihood;
pub mod observe;
pub mod operator;
pub mod pipeline;
pub mod prior;
pub mod report;
pub mod sample;
pub mod validate;
