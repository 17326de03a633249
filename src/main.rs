use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = interf_image::cli::Cli::parse();
    match interf_image::cli::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if interf_image::cli::interrupt::is_interrupted(&e) => {
            eprintln!("{e}");
            ExitCode::from(130)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
