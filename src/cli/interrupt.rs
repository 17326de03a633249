//! Ctrl-C: long runs stop at the next step, before anything is written, and say so. (Outputs
//! are written atomically anyway, so an interruption never leaves a half-written FITS.)

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

static FLAG: OnceLock<Arc<AtomicBool>> = OnceLock::new();

/// The flag a Ctrl-C sets.
pub fn flag() -> Arc<AtomicBool> {
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

#[derive(Debug, thiserror::Error)]
#[error("interrupted by the user (Ctrl-C): no output was written")]
pub struct Interrupted;

/// `Err(Interrupted)` once Ctrl-C was pressed.
pub fn check() -> Result<(), Interrupted> {
    if flag().load(Ordering::SeqCst) {
        Err(Interrupted)
    } else {
        Ok(())
    }
}
