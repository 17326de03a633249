//! One handle for every visibility format the tool reads, chosen by the content of the path,
//! not its name: a directory holding `table.dat` is a Measurement Set, a file that starts with
//! a FITS primary header (`SIMPLE  =`) is read as UVFITS (which then checks `GROUPS = T`).

use std::io::Read;
use std::path::Path;

use crate::error::MsError;
use crate::reader::{ChunkIter, MeasurementSet};
use crate::types::{MsInfo, Selection, VisChunk, Visibilities};
use crate::uvfits::{looks_like_fits, UvfitsChunks, UvfitsFile};

/// A Measurement Set or a UVFITS file, opened read-only.
// One handle per command: the size difference of the variants does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum VisFile {
    Ms(MeasurementSet),
    Uvfits(UvfitsFile),
}

impl VisFile {
    /// Opens `path` by what it holds. A directory (or a missing path) goes to
    /// [`MeasurementSet::open`] unchanged, so that Measurement Sets behave, and fail, exactly
    /// as before; a FITS file goes to [`UvfitsFile::open`]; anything else is
    /// [`MsError::NotVisibilities`].
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MsError> {
        let path = path.as_ref();
        match std::fs::metadata(path) {
            Ok(m) if m.is_file() => {}
            _ => return MeasurementSet::open(path).map(VisFile::Ms),
        }
        let mut head = Vec::with_capacity(9);
        std::fs::File::open(path)
            .and_then(|f| f.take(9).read_to_end(&mut head))
            .map_err(|source| MsError::Io {
                path: path.to_path_buf(),
                context: "reading the first bytes".into(),
                source,
            })?;
        if looks_like_fits(&head) {
            return UvfitsFile::open(path).map(VisFile::Uvfits);
        }
        Err(MsError::NotVisibilities {
            path: path.to_path_buf(),
            reason: if head.is_empty() {
                "the file is empty".into()
            } else {
                "a plain file that does not start with a FITS header".into()
            },
        })
    }

    pub fn info(&self) -> &MsInfo {
        match self {
            VisFile::Ms(m) => m.info(),
            VisFile::Uvfits(u) => u.info(),
        }
    }

    pub fn path(&self) -> &Path {
        match self {
            VisFile::Ms(m) => m.path(),
            VisFile::Uvfits(u) => u.path(),
        }
    }

    /// See [`MeasurementSet::resolve_field`].
    pub fn resolve_field(&self, sel: &Selection) -> Result<usize, MsError> {
        match self {
            VisFile::Ms(m) => m.resolve_field(sel),
            VisFile::Uvfits(u) => u.resolve_field(sel),
        }
    }

    /// Rows (UVFITS: random groups) per field.
    pub fn rows_per_field(&self) -> Result<Vec<usize>, MsError> {
        match self {
            VisFile::Ms(m) => m.rows_per_field(),
            VisFile::Uvfits(u) => u.rows_per_field(),
        }
    }

    /// See [`MeasurementSet::chunks`].
    pub fn chunks(&self, sel: &Selection) -> Result<VisChunks<'_>, MsError> {
        match self {
            VisFile::Ms(m) => m.chunks(sel).map(VisChunks::Ms),
            VisFile::Uvfits(u) => u.chunks(sel).map(VisChunks::Uvfits),
        }
    }

    /// See [`MeasurementSet::read`].
    pub fn read(&self, sel: &Selection) -> Result<Visibilities, MsError> {
        match self {
            VisFile::Ms(m) => m.read(sel),
            VisFile::Uvfits(u) => u.read(sel),
        }
    }

    /// The Measurement Set, for what needs one (writing a simulated copy); a UVFITS file is
    /// [`MsError::NeedsMeasurementSet`] saying that `what` needs an MS.
    pub fn into_ms(self, what: &str) -> Result<MeasurementSet, MsError> {
        match self {
            VisFile::Ms(m) => Ok(m),
            VisFile::Uvfits(u) => Err(MsError::NeedsMeasurementSet {
                path: u.path().to_path_buf(),
                what: what.into(),
            }),
        }
    }
}

/// The chunks of either format.
pub enum VisChunks<'a> {
    Ms(ChunkIter<'a>),
    Uvfits(UvfitsChunks<'a>),
}

impl VisChunks<'_> {
    /// Rows skipped so far because ANTENNA1 = ANTENNA2.
    pub fn autocorrelations(&self) -> usize {
        match self {
            VisChunks::Ms(c) => c.autocorrelations(),
            VisChunks::Uvfits(c) => c.autocorrelations(),
        }
    }
}

impl Iterator for VisChunks<'_> {
    type Item = Result<VisChunk, MsError>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            VisChunks::Ms(c) => c.next(),
            VisChunks::Uvfits(c) => c.next(),
        }
    }
}

/// What the command-line readers need of a visibility source, so that they take a
/// [`MeasurementSet`], a [`UvfitsFile`] or a [`VisFile`] alike.
pub trait VisSource {
    fn info(&self) -> &MsInfo;
    fn path(&self) -> &Path;
    fn resolve_field(&self, sel: &Selection) -> Result<usize, MsError>;
    fn rows_per_field(&self) -> Result<Vec<usize>, MsError>;
    fn vis_chunks(&self, sel: &Selection) -> Result<VisChunks<'_>, MsError>;
}

macro_rules! vis_source {
    ($t:ty, $wrap:expr) => {
        impl VisSource for $t {
            fn info(&self) -> &MsInfo {
                <$t>::info(self)
            }
            fn path(&self) -> &Path {
                <$t>::path(self)
            }
            fn resolve_field(&self, sel: &Selection) -> Result<usize, MsError> {
                <$t>::resolve_field(self, sel)
            }
            fn rows_per_field(&self) -> Result<Vec<usize>, MsError> {
                <$t>::rows_per_field(self)
            }
            fn vis_chunks(&self, sel: &Selection) -> Result<VisChunks<'_>, MsError> {
                <$t>::chunks(self, sel).map($wrap)
            }
        }
    };
}

vis_source!(MeasurementSet, VisChunks::Ms);
vis_source!(UvfitsFile, VisChunks::Uvfits);
vis_source!(VisFile, |c| c);
