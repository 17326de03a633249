//! Errors of FITS reading and writing. Every message names the file, because a pipeline that
//! writes dozens of products is undebuggable with "cfitsio error 104".

use std::path::{Path, PathBuf};

/// What went wrong reading or writing a FITS file.
#[derive(Debug, thiserror::Error)]
pub enum FitsError {
    #[error("{}: no such file", .path.display())]
    NotFound { path: PathBuf },

    #[error("{}: not a FITS file ({reason})", .path.display())]
    NotFits { path: PathBuf, reason: String },

    #[error("{}: no image in {what}", .path.display())]
    NoImage { path: PathBuf, what: String },

    #[error("{}: HDU {index} requested but the file has {count} HDU(s)", .path.display())]
    NoSuchHdu {
        path: PathBuf,
        index: usize,
        count: usize,
    },

    #[error("{}: cannot write: directory {} does not exist", .path.display(), .dir.display())]
    NoOutputDir { path: PathBuf, dir: PathBuf },

    #[error("{}: {problem}", .path.display())]
    BadInput { path: PathBuf, problem: String },

    /// A file that is not the single 2-D image an input must be; `what` names the input.
    #[error("{what} {}: {problem}", .path.display())]
    NotAPlane {
        what: String,
        path: PathBuf,
        problem: String,
    },

    #[error("{}: {context}: {source}", .path.display())]
    Io {
        path: PathBuf,
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{}: {context}: {message}", .path.display())]
    Cfitsio {
        path: PathBuf,
        context: String,
        message: String,
    },
}

impl FitsError {
    pub(crate) fn bad(path: &Path, problem: impl Into<String>) -> Self {
        FitsError::BadInput {
            path: path.to_path_buf(),
            problem: problem.into(),
        }
    }

    pub(crate) fn io(path: &Path, context: impl Into<String>, source: std::io::Error) -> Self {
        FitsError::Io {
            path: path.to_path_buf(),
            context: context.into(),
            source,
        }
    }

    /// fitsio's own Display prints a Debug struct; users should see cfitsio's words instead.
    pub(crate) fn cfitsio(
        path: &Path,
        context: impl Into<String>,
        err: fitsio::errors::Error,
    ) -> Self {
        let message = match err {
            fitsio::errors::Error::Fits(e) => {
                format!("{} (cfitsio status {})", e.message, e.status)
            }
            other => other.to_string(),
        };
        FitsError::Cfitsio {
            path: path.to_path_buf(),
            context: context.into(),
            message,
        }
    }

    pub(crate) fn status(path: &Path, context: impl Into<String>, status: i32) -> Self {
        let mut buf = [0 as std::os::raw::c_char; 81];
        // SAFETY: cfitsio writes at most 31 bytes (FLEN_STATUS), NUL-terminated.
        unsafe { fitsio::sys::ffgerr(status, buf.as_mut_ptr()) };
        // SAFETY: NUL-terminated by ffgerr within the buffer.
        let text = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) }.to_string_lossy();
        FitsError::Cfitsio {
            path: path.to_path_buf(),
            context: context.into(),
            message: format!("{text} (cfitsio status {status})"),
        }
    }
}
