//! The terminal's [`Observer`]: an indicatif progress bar, and Ctrl-C to stop. Long runs stop
//! at the next step, before anything is written, and say so. (Outputs are written atomically
//! anyway, so an interruption never leaves a half-written FITS.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

use indicatif::ProgressBar;

pub use crate::observe::Interrupted;
use crate::observe::Observer;

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The flag a Ctrl-C sets.
fn flag() -> Arc<AtomicBool> {
    FLAG.get_or_init(|| Arc::new(AtomicBool::new(false)))
        .clone()
}

/// Installs the handler once; a second Ctrl-C kills the process as usual.
pub fn install() {
    let f = flag();
    let _ = ctrlc::set_handler(move || {
        if f.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\ninterrupted: stopping at the next step, nothing will be written");
    });
}

/// Progress on a bar (or nowhere), stopped by Ctrl-C.
#[derive(Clone, Copy)]
pub struct Terminal<'a>(pub Option<&'a ProgressBar>);

impl<'a> Terminal<'a> {
    pub fn bar(bar: &'a ProgressBar) -> Self {
        Self(Some(bar))
    }
}

impl Observer for Terminal<'_> {
    fn stage(&self, name: &str, steps: u64) {
        if let Some(b) = self.0 {
            b.set_length(steps);
            b.set_position(0);
            b.set_prefix(name.to_string());
        }
    }
    fn advance(&self, n: u64) {
        if let Some(b) = self.0 {
            b.inc(n);
        }
    }
    fn status(&self, message: &str) {
        if let Some(b) = self.0 {
            b.set_message(message.to_string());
        }
    }
    fn shows_status(&self) -> bool {
        self.0.is_some_and(|b| !b.is_hidden())
    }
    fn log(&self, line: &str) {
        // `println` prints nothing on a hidden bar (stderr not a terminal: logs, tests);
        // `suspend` clears a visible one around the line and prints in both cases.
        match self.0 {
            Some(b) => b.suspend(|| eprintln!("{line}")),
            None => eprintln!("{line}"),
        }
    }
    fn stop_requested(&self) -> bool {
        flag().load(Ordering::SeqCst)
    }
}

/// The bar of a training run (hidden with `--quiet`).
pub fn training_bar(quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    ProgressBar::new(0).with_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:30}] {pos}/{len} step  {msg}  eta {eta}",
        )
        .expect("static template")
        .progress_chars("=> "),
    )
}

/// `Err(Interrupted)` once Ctrl-C was pressed.
pub fn check() -> Result<(), Interrupted> {
    crate::observe::check(&Terminal(None))
}

/// A candle error as [`Interrupted`] when Ctrl-C stopped the run, as itself otherwise.
pub fn interrupted_or(e: candle_core::Error) -> anyhow::Error {
    crate::observe::interrupted_or::<InterruptedOr>(&Terminal(None), e).0
}

/// `anyhow::Error` cannot implement `From<Interrupted>` twice over; this carries it.
struct InterruptedOr(anyhow::Error);

impl From<Interrupted> for InterruptedOr {
    fn from(i: Interrupted) -> Self {
        Self(i.into())
    }
}

impl From<candle_core::Error> for InterruptedOr {
    fn from(e: candle_core::Error) -> Self {
        Self(e.into())
    }
}

/// Whether an error of a command is a stop by Ctrl-C (exit status 130, no "error:").
pub fn is_interrupted(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<Interrupted>()
            || c.downcast_ref::<crate::pipeline::PipelineError>()
                .is_some_and(|p| p.is_interrupted())
    })
}
