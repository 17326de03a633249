//! Command-line interface: one module per subcommand, each thin (parse, call the library,
//! report progress). This is the only layer that uses `anyhow`.

pub mod clean;
mod common;
pub mod compare_priors;
pub mod denoise;
pub mod dirty;
#[cfg(test)]
mod fuzz_tests;
pub mod image;
pub mod interrupt;
pub mod lens;
pub mod noise;
mod outputs;

pub use common::SelectionArgs;
pub mod prior;
pub mod simulate;
pub mod validate;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "interf-image",
    version,
    about = "Bayesian imaging of radio-interferometric data with score-based priors",
    long_about = "Bayesian imaging of radio-interferometric data with score-based priors.\n\n\
                  `interf-image VIS.ms` images a Measurement Set with the defaults; the \
                  subcommands give every option.",
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Measurement Set to image with the defaults (the posterior job, `image`).
    pub vis: Option<std::path::PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Posterior PSF deconvolution of an optical (HST) image: samples, mean, std, residuals.
    Denoise(denoise::DenoiseArgs),
    /// Posterior of a lensed source behind a known lens (SIE + shear), from an image or from
    /// visibilities, with a score-based prior on the source.
    Lens(lens::LensArgs),
    /// CLEAN images (model, residual, restored, PSF) as WSClean makes them.
    Clean(clean::CleanArgs),
    /// One observation under several priors, ranked by a lower bound on each prior's evidence
    /// p(y | prior): which prior do the data support?
    ComparePriors(compare_priors::ComparePriorsArgs),
    /// Dirty image and PSF, as `wsclean -niter 0` makes them.
    Dirty(dirty::DirtyArgs),
    /// Posterior imaging: samples, mean and std of the sky with a score-based prior.
    Image(image::ImageArgs),
    /// Score-based priors: train one on galaxy images, or draw samples from one.
    #[command(subcommand)]
    Prior(prior::PriorCommand),
    /// Learned noise models: train a score network on noise-only cutouts, for the learned
    /// (score-based) noise likelihood.
    #[command(subcommand)]
    Noise(noise::NoiseCommand),
    /// A new Measurement Set like an existing one, with DATA = A·truth + noise.
    ///
    /// Writes a new Measurement Set with the uv coverage, frequencies and metadata of an existing
    /// one and DATA = A·truth + noise (Stokes I: both parallel hands get the model, cross hands
    /// noise only). The input is copied, never modified. The truth image (Jy/pixel) is placed
    /// with its reference pixel (CRPIX) at the phase centre of the selected field; rows of other
    /// fields and spectral windows are zeroed and flagged. CORRECTED_DATA, if present, becomes a
    /// copy of DATA and MODEL_DATA zero.
    Simulate(simulate::SimulateArgs),
    /// Calibration: simulate known truths with a Measurement Set's uv coverage, sample each
    /// posterior, and report TARP coverage, per-pixel interval coverage, χ² and errors.
    Validate(validate::ValidateArgs),
}

pub fn run(cli: Cli) -> anyhow::Result<()> {
    interrupt::install();
    match (cli.command, cli.vis) {
        (Some(Command::Denoise(args)), _) => denoise::run(args),
        (Some(Command::Lens(args)), _) => lens::run(args),
        (Some(Command::Clean(args)), _) => clean::run(args),
        (Some(Command::ComparePriors(args)), _) => compare_priors::run(args),
        (Some(Command::Dirty(args)), _) => dirty::run(args),
        (Some(Command::Image(args)), _) => image::run(args),
        (Some(Command::Prior(cmd)), _) => prior::run(cmd),
        (Some(Command::Noise(cmd)), _) => noise::run(cmd),
        (Some(Command::Simulate(args)), _) => simulate::run(args),
        (Some(Command::Validate(args)), _) => validate::run(args),
        (None, Some(vis)) => image::run(image::ImageArgs::defaults_for(vis)),
        (None, None) => {
            anyhow::bail!("no Measurement Set given: run `interf-image VIS.ms` or see --help")
        }
    }
}
