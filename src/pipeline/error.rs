//! The pipeline layer's one error type: what went wrong, in words a user can act on, with the
//! file or option it concerns. The CLI prints it; the Python module raises it.

use crate::observe::Interrupted;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    /// Options or data that cannot give a result (the message names the option or file).
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    Interrupted(#[from] Interrupted),
    #[error(transparent)]
    Ms(#[from] ms_io::MsError),
    #[error(transparent)]
    Fits(#[from] crate::io::FitsError),
    #[error(transparent)]
    Imaging(#[from] crate::imaging::ImagingError),
    #[error(transparent)]
    Selfcal(#[from] crate::imaging::selfcal::SelfcalError),
    #[error(transparent)]
    Operator(#[from] crate::operator::OperatorError),
    #[error(transparent)]
    Likelihood(#[from] crate::likelihood::LikelihoodError),
    #[error(transparent)]
    Prior(#[from] crate::prior::PriorError),
    #[error(transparent)]
    Logp(#[from] crate::prior::logp::LogpError),
    #[error(transparent)]
    Validate(#[from] crate::validate::ValidateError),
    #[error(transparent)]
    LensFile(#[from] crate::operator::lens::autolens::LensFileError),
    #[error("{0}")]
    Candle(candle_core::Error),
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// An error with what was being done when it happened. Its message is the context alone
    /// and the cause its `source()`, as `anyhow` chains them: `{:#}` prints both.
    #[error("{context}")]
    Context {
        context: String,
        #[source]
        source: Box<PipelineError>,
    },
    #[error(transparent)]
    LensData(#[from] crate::operator::lens::data::LensDataError),
}

/// Candle errors become [`Interrupted`] when they carry a stop request
/// ([`crate::observe::is_interrupted`]).
impl From<candle_core::Error> for PipelineError {
    fn from(e: candle_core::Error) -> Self {
        if crate::observe::is_interrupted(&e) {
            Self::Interrupted(Interrupted)
        } else {
            Self::Candle(e)
        }
    }
}

pub type Result<T, E = PipelineError> = std::result::Result<T, E>;

/// `.context(…)` / `.with_context(|| …)` on any result whose error converts into a
/// [`PipelineError`], as `anyhow` spells them.
pub trait Context<T> {
    fn context(self, context: impl Into<String>) -> Result<T>;
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T>;
}

impl<T, E: Into<PipelineError>> Context<T> for std::result::Result<T, E> {
    fn context(self, context: impl Into<String>) -> Result<T> {
        self.map_err(|e| PipelineError::Context {
            context: context.into(),
            source: Box::new(e.into()),
        })
    }
    fn with_context<S: Into<String>>(self, f: impl FnOnce() -> S) -> Result<T> {
        self.map_err(|e| PipelineError::Context {
            context: f().into(),
            source: Box::new(e.into()),
        })
    }
}

impl PipelineError {
    /// Whether the run was stopped through its observer (under any context).
    pub fn is_interrupted(&self) -> bool {
        match self {
            Self::Interrupted(_) => true,
            Self::Context { source, .. } => source.is_interrupted(),
            _ => false,
        }
    }
}

/// Returns a [`PipelineError::Input`] with a formatted message.
#[macro_export]
macro_rules! input_error {
    ($($arg:tt)*) => {
        return Err($crate::pipeline::PipelineError::Input(format!($($arg)*)))
    };
}
