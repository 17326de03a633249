//! Errors of the readers (Measurement Set, UVFITS) and the writer. Every message names the
//! Measurement Set, table or file and what is wrong with it, so that a user reading only the
//! message knows which input to fix.

use std::path::PathBuf;

use crate::types::Correlation;

#[derive(Debug, thiserror::Error)]
pub enum MsError {
    #[error("{path}: no such file or directory")]
    NotFound { path: PathBuf },

    #[error("{path}: is a plain file, not a Measurement Set (a Measurement Set is a directory)")]
    NotADirectory { path: PathBuf },

    #[error("{path}: not a casacore table: {reason}")]
    NotATable { path: PathBuf, reason: String },

    #[error("{path}: not a Measurement Set: {reason}")]
    NotAMeasurementSet { path: PathBuf, reason: String },

    #[error("{path}: table {table} has no column {column}{hint}")]
    MissingColumn {
        path: PathBuf,
        table: String,
        column: String,
        /// Extra advice, e.g. which data columns do exist.
        hint: String,
    },

    #[error("{path}: unknown field {field}; the FIELD table has {available:?}")]
    UnknownField {
        path: PathBuf,
        field: String,
        /// `"id: NAME"` for every field.
        available: Vec<String>,
    },

    #[error("{path}: spectral window {spw} out of range (the Measurement Set has {n_spw})")]
    SpwOutOfRange {
        path: PathBuf,
        spw: usize,
        n_spw: usize,
    },

    #[error(
        "{path}: channel range [{start}, {end}) is {why} (spectral window {spw} has {n_chan} channels)"
    )]
    BadChannelRange {
        path: PathBuf,
        start: usize,
        end: usize,
        spw: usize,
        n_chan: usize,
        why: &'static str,
    },

    #[error("{path}: nothing selected: {what}")]
    NoRows { path: PathBuf, what: String },

    #[error("{path}: all {samples} selected samples are flagged or have zero weight ({what})")]
    AllFlagged {
        path: PathBuf,
        samples: usize,
        what: String,
    },

    #[error(
        "{path}: cannot form Stokes I from the correlations {corr:?} (polarization {pol_id}); \
         need XX and YY, RR and LL, or a single parallel hand"
    )]
    UnsupportedCorrelations {
        path: PathBuf,
        pol_id: usize,
        corr: Vec<Correlation>,
    },

    #[error("{path}: {table} row {row}: {what} = {value} is out of range (0..{len})")]
    BadIndex {
        path: PathBuf,
        table: String,
        row: usize,
        what: &'static str,
        value: i64,
        len: usize,
    },

    #[error("{path}: malformed {what}")]
    Malformed { path: PathBuf, what: String },

    #[error("{path}: casacore error while {context}: {message}")]
    Casacore {
        path: PathBuf,
        context: String,
        message: String,
    },

    #[error("{path}: already exists; choose a new output path (an existing output is never overwritten)")]
    OutputExists { path: PathBuf },

    #[error("{dst}: the output lies inside the input Measurement Set {src}")]
    OutputInsideInput { src: PathBuf, dst: PathBuf },

    #[error("{path}: {context}: {source}")]
    Io {
        path: PathBuf,
        context: String,
        #[source]
        source: std::io::Error,
    },

    #[error("{path}: bad model visibilities: {what}")]
    BadModel { path: PathBuf, what: String },

    #[error(
        "{path}: neither a Measurement Set (a directory holding table.dat) nor a UVFITS file \
         (a FITS file starting with SIMPLE = T and GROUPS = T): {reason}"
    )]
    NotVisibilities { path: PathBuf, reason: String },

    #[error(
        "{path}: a FITS file but not UVFITS: {reason} (UVFITS is random-groups FITS: \
         GROUPS = T, NAXIS1 = 0)"
    )]
    NotRandomGroups { path: PathBuf, reason: String },

    #[error("{path}: truncated: {what}")]
    Truncated { path: PathBuf, what: String },

    #[error("{path}: malformed FITS header: {what}")]
    BadFitsHeader { path: PathBuf, what: String },

    #[error("{path}: UVFITS without a {axis} axis (no CTYPEn = '{axis}'): {why}")]
    MissingAxis {
        path: PathBuf,
        axis: &'static str,
        why: &'static str,
    },

    #[error("{path}: UVFITS without the random parameter {name} (a PTYPEn card); {why}")]
    MissingParameter {
        path: PathBuf,
        name: &'static str,
        why: &'static str,
    },

    #[error("{path}: unsupported BITPIX = {bitpix} (UVFITS data must be -32, -64, 16 or 32)")]
    UnsupportedBitpix { path: PathBuf, bitpix: i64 },

    #[error(
        "{path}: unknown Stokes code {code} on the STOKES axis (known: 1..4 = I Q U V, \
         -1..-4 = RR LL RL LR, -5..-8 = XX YY XY YX)"
    )]
    UnknownStokes { path: PathBuf, code: f64 },

    #[error("{path}: UVFITS not supported: {what}")]
    UnsupportedUvfits { path: PathBuf, what: String },

    #[error(
        "{path}: is a UVFITS file, but {what} needs a Measurement Set (convert it with CASA's \
         importuvfits)"
    )]
    NeedsMeasurementSet { path: PathBuf, what: String },
}
