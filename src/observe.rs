//! One way for long work to report progress and to be stopped.
//!
//! Every loop that can take minutes (sampling, training, calibration runs, the prior's density)
//! takes an [`Observer`]: it tells it what stage runs and how far it got, and asks it, once per
//! step, whether to stop. A stopped run returns the one [`Interrupted`] error, before anything
//! is written. The terminal's observer (indicatif bars, Ctrl-C) lives in the CLI; a Python
//! binding or an MPI rank brings its own; tests pass [`Quiet`].

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// What long work reports, and how it is stopped. Every method has a do-nothing default.
pub trait Observer: Sync {
    /// A stage of `steps` units begins (the units are the stage's own: reverse-diffusion steps,
    /// truths, training steps); 0 when the length is unknown.
    fn stage(&self, _name: &str, _steps: u64) {}
    /// `n` more units of the current stage are done.
    fn advance(&self, _n: u64) {}
    /// A short status of the current stage (a χ², a loss).
    fn status(&self, _message: &str) {}
    /// Whether [`Observer::status`] is shown anywhere: a status that costs work to compute (the
    /// sampler's χ², a data-space pass) is only computed when it is.
    fn shows_status(&self) -> bool {
        false
    }
    /// A line worth keeping in the log (a self-calibration round, a warning).
    fn log(&self, _line: &str) {}
    /// True once the user asked to stop; asked once per step.
    fn stop_requested(&self) -> bool {
        false
    }
}

/// Reports nothing and never stops.
#[derive(Debug, Clone, Copy, Default)]
pub struct Quiet;

impl Observer for Quiet {}

/// Reports nothing; stops once its flag is set (by a signal handler, another thread, a test).
#[derive(Debug, Clone, Default)]
pub struct Cancel(pub Arc<AtomicBool>);

impl Observer for Cancel {
    fn stop_requested(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// The error of a run stopped through its observer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("interrupted by the user (Ctrl-C): no output was written")]
pub struct Interrupted;

/// `Err(Interrupted)` once the observer asks to stop.
pub fn check(obs: &dyn Observer) -> Result<(), Interrupted> {
    if obs.stop_requested() {
        Err(Interrupted)
    } else {
        Ok(())
    }
}

/// [`check`] inside candle code: the interruption travels as a candle error holding
/// [`Interrupted`]'s message (candle's wrapped errors cannot be downcast), which
/// [`is_interrupted`] recognises.
pub fn check_candle(obs: &dyn Observer) -> candle_core::Result<()> {
    check(obs).map_err(|i| candle_core::Error::Msg(i.to_string()))
}

/// Whether a candle error is (or holds, under any context) an interruption.
pub fn is_interrupted(e: &candle_core::Error) -> bool {
    use candle_core::Error as E;
    match e {
        E::Msg(m) => *m == Interrupted.to_string(),
        E::Context { inner, .. } | E::WithBacktrace { inner, .. } | E::WithPath { inner, .. } => {
            is_interrupted(inner)
        }
        _ => false,
    }
}

/// A candle error as [`Interrupted`] when the observer stopped the run, as itself otherwise.
pub fn interrupted_or<E: From<Interrupted> + From<candle_core::Error>>(
    obs: &dyn Observer,
    e: candle_core::Error,
) -> E {
    if is_interrupted(&e) || obs.stop_requested() {
        Interrupted.into()
    } else {
        e.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cancelled_run_is_recognised_through_candle() {
        let flag = Arc::new(AtomicBool::new(false));
        let obs = Cancel(flag.clone());
        assert!(check_candle(&obs).is_ok());
        flag.store(true, Ordering::Relaxed);
        let e = check_candle(&obs).unwrap_err();
        assert!(is_interrupted(&e));
        assert!(is_interrupted(&e.context("while sampling")));
        assert!(!is_interrupted(&candle_core::Error::Msg("other".into())));
        assert!(check(&Quiet).is_ok());
    }
}
