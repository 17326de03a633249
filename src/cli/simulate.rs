//! `interf-image simulate`: a new Measurement Set with the uv coverage, frequencies and metadata
//! of an existing one, and DATA = A·truth + noise.

use std::path::PathBuf;

use clap::Args;
use ms_io::{FieldSelector, Selection};

use super::common::{check_output, format_angle, set_threads, ComputeArgs};
use super::dirty::stage_bar;
use super::interrupt::Terminal;
use crate::operator::NufftOptions;
use crate::pipeline::simulate::{simulate, SimulateOptions, SimulateResult};

/// Its `--help` text lives on the `Simulate` variant in `cli/mod.rs`, where clap reads it.
#[derive(Debug, Clone, Args)]
pub struct SimulateArgs {
    /// Truth image, FITS, in Jy/pixel (BUNIT JY/PIXEL), with CDELT1/CDELT2 in degrees.
    #[arg(long)]
    pub image: PathBuf,
    /// Measurement Set whose uv coverage, frequencies and metadata to copy (read only).
    #[arg(long)]
    pub like: PathBuf,
    /// Noise σ of Stokes I per real component (Jy). Each correlation gets independent complex
    /// Gaussian noise with σ_c = √2·SIGMA per real part (I = (A + B)/2), and WEIGHT = 1/σ_c²,
    /// SIGMA = σ_c. 0: noiseless, with unit weights.
    #[arg(long, default_value_t = 0.0, value_name = "SIGMA")]
    pub noise: f64,
    /// The new Measurement Set; must not exist.
    #[arg(long)]
    pub out: PathBuf,
    /// Seed of the noise: the same seed gives the same data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Field whose phase centre the truth is placed at: its id or NAME. Default: field 0, or
    /// the first field holding data when field 0 holds none.
    #[arg(long)]
    pub field: Option<String>,
    /// Spectral windows to simulate, comma-separated ids (default: all).
    #[arg(long, value_delimiter = ',')]
    pub spw: Option<Vec<usize>>,
    /// Channel range START END to simulate (END exclusive); other channels are flagged.
    #[arg(long, num_args = 2, value_names = ["START", "END"])]
    pub channels: Option<Vec<usize>>,
    #[command(flatten)]
    pub compute: ComputeArgs,
}

pub fn run(args: SimulateArgs) -> anyhow::Result<()> {
    set_threads(args.compute.threads)?;
    let field = args.field.as_ref().map(|f| match f.parse::<usize>() {
        Ok(id) => FieldSelector::Id(id),
        Err(_) => FieldSelector::Name(f.clone()),
    });
    let opts = SimulateOptions {
        image: args.image.clone(),
        like: args.like.clone(),
        out: args.out.clone(),
        noise: args.noise,
        seed: args.seed,
        selection: Selection {
            field,
            spws: args.spw.clone(),
            channels: args.channels.as_ref().map(|c| (c[0], c[1])),
            ..Default::default()
        },
        nufft: NufftOptions {
            epsilon: args.compute.epsilon,
            ..Default::default()
        },
    };
    opts.check()?;
    // The writer refuses an existing --out or one inside --like; this also catches the truth
    // image under any spelling.
    check_output(&args.out, &[&args.image, &args.like])?;

    let bar = stage_bar();
    let r = simulate(&opts, &Terminal::bar(&bar));
    bar.finish_and_clear();
    report(&opts, &r?);
    Ok(())
}

fn report(opts: &SimulateOptions, r: &SimulateResult) {
    let (ra0, dec0) = r.phase_centre;
    let g = &r.geometry;
    let s = &r.stats;
    println!("{}", opts.out.display());
    println!(
        "  like {} (field {} '{}', phase centre {ra0:.6}° {dec0:.6}° J2000)",
        opts.like.display(),
        r.field_id,
        r.field_name
    );
    println!(
        "  truth {}: {}×{} pixels of {}, total flux {:.6} Jy, peak {:.6} Jy/pixel",
        opts.image.display(),
        g.nx,
        g.ny,
        format_angle(g.dx),
        r.flux,
        r.peak
    );
    println!(
        "  rows written {} ({} simulated, {} outside the selection zeroed and flagged), \
         {} Stokes I samples",
        s.rows, s.simulated_rows, s.flagged_out_rows, s.simulated_samples
    );
    if opts.noise > 0.0 {
        println!(
            "  noise σ = {} Jy per real part of Stokes I (σ_c = √2·σ = {:.6} Jy per parallel \
             hand), seed {}",
            opts.noise,
            std::f64::consts::SQRT_2 * opts.noise,
            opts.seed
        );
    } else {
        println!("  noiseless (unit weights)");
    }
    println!("  done in {:.1} s", r.time.as_secs_f64());
}
