//! UVFITS: random-groups FITS as AIPS, Difmap, ehtim, pyuvdata and CASA's `exportuvfits` write
//! it, read-only, in pure Rust (no cfitsio: the format is simple, and ms_io stays free of a
//! second C library).
//!
//! What is read (AIPS Memo 117 is the reference):
//! - the primary header, in 2880-byte blocks of 80-character cards; BITPIX -32, -64, 16 or 32
//!   with BSCALE/BZERO (and BLANK for integers), big-endian;
//! - the random parameters, each scaled by PSCALn/PZEROn: UU/VV/WW (any `UU…` name, e.g.
//!   `UU`, `UU---SIN`, `UU--`, in seconds; `UU-L…` in wavelengths at the reference frequency,
//!   as Miriad reads it), BASELINE (`256 a1 + a2`, or `2048 a1 + a2 + 65536` past 255
//!   antennas, the fraction coding the subarray) or SUBARRAY/ANTENNA1/ANTENNA2, every DATE or
//!   `_DATE` summed into the Julian date, INTTIM (recognised, not needed), SOURCE, FREQSEL;
//! - the data axes COMPLEX (real, imaginary, weight), STOKES, FREQ, IF, RA, DEC in any order;
//!   a weight ≤ 0 flags the sample, as in AIPS;
//! - the binary tables AIPS AN (antennas), AIPS FQ (IF frequencies) and AIPS SU (sources).
//!
//! What comes out is what the Measurement Set reader gives: an [`MsInfo`] and
//! [`VisChunk`]s of Stokes I formed by the same rules ([`crate::stokes`]). Each IF is a
//! spectral window. Antenna ids are the UVFITS numbers minus one (CASA's `importuvfits` does
//! the same), so that a UVFITS file and its MS copy agree row by row. UVW is taken with its
//! sign as stored: CASA's `importuvfits`/`exportuvfits` copy it unchanged (× c), and the
//! TDEM0003 copies in tests/data agree sample by sample, so it already follows the MS
//! convention.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use num_complex::Complex;

use crate::error::MsError;
use crate::reader::{resolve_field, DEFAULT_CHUNK_ROWS};
use crate::stokes::{combine, Block, BlockWeights, StokesPlan};
use crate::types::{
    AntennaInfo, Correlation, DataColumn, Direction, FieldInfo, Frame, MsInfo, Selection, SpwInfo,
    VisChunk, Visibilities,
};

const BLOCK: usize = 2880;
const CARD: usize = 80;
const SPEED_OF_LIGHT: f64 = 299_792_458.0;
/// Julian date of MJD 0.
const MJD_ZERO_JD: f64 = 2_400_000.5;
/// Bytes read at once while scanning the parameters at open.
const SCAN_BYTES: usize = 16 << 20;
/// At most this many bytes of groups are read at once for a chunk, whatever `chunk_rows`
/// says: 10k groups of thousands of channels would otherwise take gigabytes.
const MAX_BLOCK_BYTES: usize = 256 << 20;
/// Groups longer than this are scanned parameters-only (a seek per group) rather than read
/// whole.
const SCAN_WHOLE_GROUP_BYTES: usize = 64 << 10;

/// True when `head` (the first bytes of a file) is the start of a FITS primary header.
pub(crate) fn looks_like_fits(head: &[u8]) -> bool {
    head.starts_with(b"SIMPLE  =")
}

// ---------------------------------------------------------------------------------------------
// FITS headers and binary tables
// ---------------------------------------------------------------------------------------------

/// A value as written on a card: a quoted string, or the raw text of a number or logical.
#[derive(Debug, Clone)]
enum Value {
    Str(String),
    Raw(String),
}

/// The cards of one header with a value (`KEYWORD = value`), in order.
#[derive(Debug, Default)]
struct Header {
    cards: Vec<(String, Value)>,
}

impl Header {
    fn parse_card(card: &str) -> Option<(String, Value)> {
        if card.len() < 10 || &card[8..10] != "= " {
            return None;
        }
        let key = card[..8].trim_end().to_string();
        let rest = card[10..].trim_start();
        if let Some(s) = rest.strip_prefix('\'') {
            // A quote inside a string is written twice.
            let mut out = String::new();
            let mut chars = s.chars().peekable();
            while let Some(c) = chars.next() {
                if c == '\'' {
                    if chars.peek() == Some(&'\'') {
                        chars.next();
                        out.push('\'');
                        continue;
                    }
                    break;
                }
                out.push(c);
            }
            Some((key, Value::Str(out.trim_end().to_string())))
        } else {
            let v = rest.split('/').next().unwrap_or("").trim().to_string();
            Some((key, Value::Raw(v)))
        }
    }

    fn get(&self, key: &str) -> Option<&Value> {
        self.cards.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    fn string(&self, key: &str) -> Option<String> {
        match self.get(key)? {
            Value::Str(s) | Value::Raw(s) => Some(s.clone()),
        }
    }

    fn float(&self, key: &str) -> Option<f64> {
        match self.get(key)? {
            // Fortran writers may use D exponents.
            Value::Raw(s) | Value::Str(s) => s.trim().replace(['D', 'd'], "E").parse().ok(),
        }
    }

    fn int(&self, key: &str) -> Option<i64> {
        let f = self.float(key)?;
        (f.fract() == 0.0 && f.abs() < 9e15).then_some(f as i64)
    }

    fn logical(&self, key: &str) -> Option<bool> {
        match self.get(key)? {
            Value::Raw(s) if s == "T" => Some(true),
            Value::Raw(s) if s == "F" => Some(false),
            _ => None,
        }
    }
}

/// Reads the header starting at byte `offset`: 2880-byte blocks up to the END card. Returns the
/// header and the offset of the data that follow it.
fn read_header(
    file: &mut File,
    path: &Path,
    offset: u64,
    file_len: u64,
) -> Result<(Header, u64), MsError> {
    let mut header = Header::default();
    let mut at = offset;
    let mut block = vec![0u8; BLOCK];
    loop {
        if at + BLOCK as u64 > file_len {
            return Err(MsError::Truncated {
                path: path.to_path_buf(),
                what: format!(
                    "the header at byte {offset} has no END card before the file ends \
                     ({file_len} bytes)"
                ),
            });
        }
        file.seek(SeekFrom::Start(at))
            .map_err(|e| io(path, "seeking", e))?;
        file.read_exact(&mut block)
            .map_err(|e| io(path, "reading a FITS header", e))?;
        at += BLOCK as u64;
        for card in block.chunks_exact(CARD) {
            if !card.iter().all(|&b| (0x20..=0x7e).contains(&b)) {
                return Err(MsError::BadFitsHeader {
                    path: path.to_path_buf(),
                    what: format!(
                        "a card of the header at byte {offset} holds bytes that are not printable \
                         ASCII"
                    ),
                });
            }
            let card = std::str::from_utf8(card).expect("checked ASCII");
            if card.starts_with("END") && card[3..].trim().is_empty() {
                return Ok((header, at));
            }
            if let Some(kv) = Header::parse_card(card) {
                header.cards.push(kv);
            }
        }
    }
}

fn io(path: &Path, context: &str, source: std::io::Error) -> MsError {
    MsError::Io {
        path: path.to_path_buf(),
        context: context.into(),
        source,
    }
}

fn bad_header(path: &Path, what: String) -> MsError {
    MsError::BadFitsHeader {
        path: path.to_path_buf(),
        what,
    }
}

/// Size in bytes of an HDU's data (without the padding to 2880), from its header.
fn data_bytes(h: &Header, path: &Path, primary: bool) -> Result<u64, MsError> {
    let bitpix = h
        .int("BITPIX")
        .ok_or_else(|| bad_header(path, "no BITPIX".into()))?;
    let naxis = h
        .int("NAXIS")
        .ok_or_else(|| bad_header(path, "no NAXIS".into()))?;
    if !(0..=999).contains(&naxis) {
        return Err(bad_header(path, format!("NAXIS = {naxis}")));
    }
    if naxis == 0 {
        return Ok(0);
    }
    let groups = primary && h.logical("GROUPS") == Some(true);
    let mut n: u64 = 1;
    for k in 1..=naxis {
        if groups && k == 1 {
            continue;
        }
        let len = h
            .int(&format!("NAXIS{k}"))
            .filter(|&l| l >= 0)
            .ok_or_else(|| bad_header(path, format!("NAXIS{k} missing or negative")))?;
        n = n
            .checked_mul(len as u64)
            .ok_or_else(|| bad_header(path, "the data size overflows".into()))?;
    }
    let pcount = h.int("PCOUNT").unwrap_or(0).max(0) as u64;
    let gcount = h.int("GCOUNT").unwrap_or(1).max(0) as u64;
    (n + pcount)
        .checked_mul(gcount)
        .and_then(|v| v.checked_mul(bitpix.unsigned_abs() / 8))
        .ok_or_else(|| bad_header(path, "the data size overflows".into()))
}

fn padded(n: u64) -> u64 {
    n.div_ceil(BLOCK as u64) * BLOCK as u64
}

/// One column of a binary table.
#[derive(Debug)]
struct Column {
    name: String,
    /// TFORM type letter.
    kind: u8,
    repeat: usize,
    /// Byte offset in the row.
    offset: usize,
}

/// A binary table extension read into memory (the AIPS tables are small).
#[derive(Debug)]
struct BinTable {
    header: Header,
    row_bytes: usize,
    n_rows: usize,
    columns: Vec<Column>,
    data: Vec<u8>,
}

impl BinTable {
    fn parse(header: Header, data: Vec<u8>, path: &Path, name: &str) -> Result<Self, MsError> {
        let bad = |what: String| bad_header(path, format!("table {name}: {what}"));
        let row_bytes = header.int("NAXIS1").unwrap_or(-1);
        let n_rows = header.int("NAXIS2").unwrap_or(-1);
        let n_fields = header.int("TFIELDS").unwrap_or(-1);
        if row_bytes < 0 || n_rows < 0 || n_fields < 0 {
            return Err(bad("NAXIS1, NAXIS2 or TFIELDS missing".into()));
        }
        let mut columns = Vec::new();
        let mut offset = 0usize;
        for k in 1..=n_fields {
            let form = header
                .string(&format!("TFORM{k}"))
                .ok_or_else(|| bad(format!("no TFORM{k}")))?;
            let form = form.trim();
            let digits = form.chars().take_while(|c| c.is_ascii_digit()).count();
            let repeat: usize = if digits == 0 {
                1
            } else {
                form[..digits]
                    .parse()
                    .map_err(|_| bad(format!("TFORM{k} = '{form}'")))?
            };
            let kind = *form
                .as_bytes()
                .get(digits)
                .ok_or_else(|| bad(format!("TFORM{k} = '{form}' has no type")))?;
            let width = match kind {
                b'L' | b'B' | b'A' => repeat,
                b'X' => repeat.div_ceil(8),
                b'I' => 2 * repeat,
                b'J' | b'E' => 4 * repeat,
                b'K' | b'D' | b'C' => 8 * repeat,
                b'M' => 16 * repeat,
                b'P' => 8 * repeat.min(1),
                b'Q' => 16 * repeat.min(1),
                _ => return Err(bad(format!("TFORM{k} = '{form}': unknown type"))),
            };
            let name = header
                .string(&format!("TTYPE{k}"))
                .unwrap_or_default()
                .trim()
                .to_string();
            columns.push(Column {
                name,
                kind,
                repeat,
                offset,
            });
            offset += width;
        }
        if offset > row_bytes as usize {
            return Err(bad(format!(
                "its columns take {offset} bytes, more than a row's NAXIS1 = {row_bytes}"
            )));
        }
        Ok(BinTable {
            header,
            row_bytes: row_bytes as usize,
            n_rows: n_rows as usize,
            columns,
            data,
        })
    }

    fn column(&self, name: &str) -> Option<&Column> {
        self.columns
            .iter()
            .find(|c| c.name.eq_ignore_ascii_case(name))
    }

    fn cell(&self, row: usize, c: &Column) -> &[u8] {
        &self.data[row * self.row_bytes + c.offset..]
    }

    /// A numeric cell as f64s (`repeat` values); `None` for a non-numeric column.
    fn numbers(&self, row: usize, c: &Column) -> Option<Vec<f64>> {
        let b = self.cell(row, c);
        let n = c.repeat;
        let be4 = |i: usize| [b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]];
        let be8 = |i: usize| {
            let mut a = [0u8; 8];
            a.copy_from_slice(&b[8 * i..8 * i + 8]);
            a
        };
        Some(match c.kind {
            b'B' => (0..n).map(|i| b[i] as f64).collect(),
            b'I' => (0..n)
                .map(|i| i16::from_be_bytes([b[2 * i], b[2 * i + 1]]) as f64)
                .collect(),
            b'J' => (0..n).map(|i| i32::from_be_bytes(be4(i)) as f64).collect(),
            b'K' => (0..n).map(|i| i64::from_be_bytes(be8(i)) as f64).collect(),
            b'E' => (0..n).map(|i| f32::from_be_bytes(be4(i)) as f64).collect(),
            b'D' => (0..n).map(|i| f64::from_be_bytes(be8(i))).collect(),
            _ => return None,
        })
    }

    fn number(&self, row: usize, name: &str) -> Option<f64> {
        let c = self.column(name)?;
        self.numbers(row, c)?.first().copied()
    }

    /// A character cell, without trailing blanks and NULs.
    fn text(&self, row: usize, name: &str) -> Option<String> {
        let c = self.column(name)?;
        if c.kind != b'A' {
            return None;
        }
        let b = &self.cell(row, c)[..c.repeat];
        let s: String = b
            .iter()
            .take_while(|&&x| x != 0)
            .map(|&x| x as char)
            .collect();
        Some(s.trim().to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// The random-groups layout
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bitpix {
    F32,
    F64,
    I16,
    I32,
}

impl Bitpix {
    fn bytes(self) -> usize {
        match self {
            Bitpix::I16 => 2,
            Bitpix::F32 | Bitpix::I32 => 4,
            Bitpix::F64 => 8,
        }
    }

    /// Raw value `i` of a big-endian buffer.
    #[inline]
    fn get(self, b: &[u8], i: usize) -> f64 {
        match self {
            Bitpix::F32 => {
                f32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]) as f64
            }
            Bitpix::F64 => {
                let mut a = [0u8; 8];
                a.copy_from_slice(&b[8 * i..8 * i + 8]);
                f64::from_be_bytes(a)
            }
            Bitpix::I16 => i16::from_be_bytes([b[2 * i], b[2 * i + 1]]) as f64,
            Bitpix::I32 => {
                i32::from_be_bytes([b[4 * i], b[4 * i + 1], b[4 * i + 2], b[4 * i + 3]]) as f64
            }
        }
    }
}

/// A random parameter: its index in the group and its scaling.
#[derive(Debug, Clone, Copy)]
struct Param {
    index: usize,
    scale: f64,
    zero: f64,
}

impl Param {
    #[inline]
    fn value(&self, bitpix: Bitpix, group: &[u8]) -> f64 {
        bitpix.get(group, self.index) * self.scale + self.zero
    }
}

/// How the two antennas of a group are stored.
#[derive(Debug, Clone, Copy)]
enum Baseline {
    /// BASELINE = 256 a1 + a2 (or 2048 a1 + a2 + 65536) + (subarray − 1) / 100.
    Coded(Param),
    /// SUBARRAY (optional), ANTENNA1, ANTENNA2.
    Separate {
        subarray: Option<Param>,
        a1: Param,
        a2: Param,
    },
}

#[derive(Debug, Clone)]
struct Params {
    uvw: [Param; 3],
    /// Metres per stored unit of UU/VV/WW (c for seconds, c / ν₀ for wavelengths).
    uvw_to_m: f64,
    /// Summed into the Julian date.
    date: Vec<Param>,
    baseline: Baseline,
    source: Option<Param>,
    freqsel: Option<Param>,
}

/// Per-group values the reader needs, decoded from the random parameters.
#[derive(Debug, Clone, Copy)]
struct GroupMeta {
    uvw: [f64; 3],
    /// MJD seconds (UTC), as the MS's TIME.
    time: f64,
    /// UVFITS antenna numbers (1-based).
    a1: i64,
    a2: i64,
    subarray: i64,
    source: Option<i64>,
    freqsel: Option<i64>,
}

impl Params {
    fn decode(&self, bitpix: Bitpix, g: &[u8]) -> GroupMeta {
        let uvw = self.uvw.map(|p| p.value(bitpix, g) * self.uvw_to_m);
        // Whole days and fractions summed apart, and the zero points apart from the stored
        // values: a Julian date (2.4e6) in one f64 keeps only ~40 µs.
        let (mut whole, mut frac) = (0.0f64, 0.0f64);
        for p in &self.date {
            for v in [p.zero, bitpix.get(g, p.index) * p.scale] {
                let f = v.floor();
                whole += f;
                frac += v - f;
            }
        }
        let time = ((whole - MJD_ZERO_JD.floor()) + (frac - MJD_ZERO_JD.fract())) * 86_400.0;
        let (a1, a2, subarray) = match self.baseline {
            Baseline::Coded(p) => {
                let b = p.value(bitpix, g);
                if !b.is_finite() {
                    (-1, -1, 1)
                } else {
                    let whole = b.floor();
                    let subarray = ((b - whole) * 100.0).round() as i64 + 1;
                    let whole = whole as i64;
                    // 256 a1 + a2 tops out at 65535; the large-antenna coding starts at 65536.
                    let (a1, a2) = if whole > 65_535 {
                        ((whole - 65_536) / 2048, (whole - 65_536) % 2048)
                    } else {
                        (whole / 256, whole % 256)
                    };
                    (a1, a2, subarray)
                }
            }
            Baseline::Separate { subarray, a1, a2 } => (
                a1.value(bitpix, g).round() as i64,
                a2.value(bitpix, g).round() as i64,
                subarray.map_or(1, |p| p.value(bitpix, g).round() as i64),
            ),
        };
        GroupMeta {
            uvw,
            time,
            a1,
            a2,
            subarray,
            source: self.source.map(|p| p.value(bitpix, g).round() as i64),
            freqsel: self.freqsel.map(|p| p.value(bitpix, g).round() as i64),
        }
    }
}

/// One data axis: its length and the stride of its index in a group's values.
#[derive(Debug, Clone, Copy, Default)]
struct Axis {
    len: usize,
    stride: usize,
}

#[derive(Debug, Clone)]
struct Layout {
    bitpix: Bitpix,
    /// Data value = raw × bscale + bzero; raw = blank is undefined (integers only).
    bscale: f64,
    bzero: f64,
    blank: Option<f64>,
    pcount: usize,
    gcount: usize,
    group_bytes: usize,
    data_start: u64,
    complex: Axis,
    stokes: Axis,
    chan: Axis,
    ifs: Axis,
    params: Params,
    plan: StokesPlan,
}

impl Layout {
    #[inline]
    fn datum(&self, g: &[u8], i: usize) -> f32 {
        let raw = self.bitpix.get(g, self.pcount + i);
        if self.blank == Some(raw) {
            return f32::NAN;
        }
        (raw * self.bscale + self.bzero) as f32
    }
}

// ---------------------------------------------------------------------------------------------
// The file
// ---------------------------------------------------------------------------------------------

/// A UVFITS file opened read-only (it is only ever opened for reading).
pub struct UvfitsFile {
    info: MsInfo,
    layout: Layout,
    /// SOURCE id → FIELD index; empty without a SOURCE parameter (every group is field 0).
    source_to_field: BTreeMap<i64, usize>,
    rows_per_field: Vec<usize>,
}

impl std::fmt::Debug for UvfitsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UvfitsFile")
            .field("path", &self.info.path)
            .field("n_rows", &self.info.n_rows)
            .finish()
    }
}

/// The tables a reader uses, by EXTNAME.
#[derive(Default)]
struct Tables {
    an: Option<BinTable>,
    fq: Option<BinTable>,
    su: Option<BinTable>,
}

/// The axis a CTYPE names: the text before the first '-' (`RA---SIN` is RA).
fn axis_kind(ctype: &str) -> String {
    ctype
        .trim()
        .split('-')
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

fn correlation_of(code: f64, path: &Path) -> Result<Correlation, MsError> {
    let unknown = || MsError::UnknownStokes {
        path: path.to_path_buf(),
        code,
    };
    if code.fract() != 0.0 {
        return Err(unknown());
    }
    // AIPS codes to casacore's Stokes enumeration (I Q U V = 1..4 there too).
    Ok(match code as i64 {
        1 => Correlation::Other(1),
        2 => Correlation::Other(2),
        3 => Correlation::Other(3),
        4 => Correlation::Other(4),
        -1 => Correlation::RR,
        -2 => Correlation::LL,
        -3 => Correlation::RL,
        -4 => Correlation::LR,
        -5 => Correlation::XX,
        -6 => Correlation::YY,
        -7 => Correlation::XY,
        -8 => Correlation::YX,
        _ => return Err(unknown()),
    })
}

fn frame_of(epoch: Option<f64>) -> Frame {
    match epoch {
        Some(e) if (e - 1950.0).abs() < 1.0 => Frame::B1950,
        _ => Frame::J2000,
    }
}

impl UvfitsFile {
    /// Opens the UVFITS file at `path` read-only, reads its headers and tables and scans its
    /// random parameters once (time range, rows per source). Nothing is ever written to it.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, MsError> {
        let path = path.as_ref();
        let mut file = File::open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => MsError::NotFound {
                path: path.to_path_buf(),
            },
            _ => io(path, "opening", e),
        })?;
        let file_len = file
            .metadata()
            .map_err(|e| io(path, "reading the size", e))?
            .len();
        let mut head = [0u8; 9];
        let n = file
            .read(&mut head)
            .map_err(|e| io(path, "reading the first bytes", e))?;
        if !looks_like_fits(&head[..n]) {
            return Err(MsError::NotVisibilities {
                path: path.to_path_buf(),
                reason: "the file does not start with 'SIMPLE  ='".into(),
            });
        }
        let (h, data_start) = read_header(&mut file, path, 0, file_len)?;
        let not_groups = |reason: String| MsError::NotRandomGroups {
            path: path.to_path_buf(),
            reason,
        };
        if h.logical("SIMPLE") != Some(true) {
            return Err(not_groups("SIMPLE is not T".into()));
        }
        if h.logical("GROUPS") != Some(true) {
            return Err(not_groups(
                "GROUPS is not T (an image or table, not visibilities)".into(),
            ));
        }
        let naxis = h.int("NAXIS").unwrap_or(0);
        if naxis < 2 {
            return Err(not_groups(format!("NAXIS = {naxis}: no data axes")));
        }
        if h.int("NAXIS1") != Some(0) {
            return Err(not_groups(format!(
                "NAXIS1 = {}, not 0",
                h.string("NAXIS1").unwrap_or_default()
            )));
        }
        let bitpix_v = h
            .int("BITPIX")
            .ok_or_else(|| bad_header(path, "no BITPIX".into()))?;
        let bitpix = match bitpix_v {
            -32 => Bitpix::F32,
            -64 => Bitpix::F64,
            16 => Bitpix::I16,
            32 => Bitpix::I32,
            b => {
                return Err(MsError::UnsupportedBitpix {
                    path: path.to_path_buf(),
                    bitpix: b,
                })
            }
        };
        let pcount = h.int("PCOUNT").unwrap_or(0);
        let gcount = h.int("GCOUNT").unwrap_or(1);
        if pcount < 0 || gcount < 0 {
            return Err(bad_header(
                path,
                format!("PCOUNT = {pcount}, GCOUNT = {gcount}"),
            ));
        }
        let (pcount, gcount) = (pcount as usize, gcount as usize);

        // The groups must all be there before anything else is read.
        let groups_bytes = data_bytes(&h, path, true)?;
        if data_start + groups_bytes > file_len {
            return Err(MsError::Truncated {
                path: path.to_path_buf(),
                what: format!(
                    "the header promises {gcount} random groups, {groups_bytes} bytes from byte \
                     {data_start}, but the file ends after {file_len} bytes ({} missing)",
                    data_start + groups_bytes - file_len
                ),
            });
        }
        let tables = read_tables(&mut file, path, data_start + padded(groups_bytes), file_len)?;

        // Data axes.
        let mut axes: BTreeMap<String, (Axis, f64, f64, f64)> = BTreeMap::new();
        let mut stride = 1usize;
        for k in 2..=naxis {
            let len = h
                .int(&format!("NAXIS{k}"))
                .filter(|&l| l >= 0)
                .ok_or_else(|| bad_header(path, format!("NAXIS{k} missing or negative")))?
                as usize;
            let ctype = h.string(&format!("CTYPE{k}")).unwrap_or_default();
            let kind = axis_kind(&ctype);
            let known = ["COMPLEX", "STOKES", "FREQ", "IF", "RA", "DEC"].contains(&kind.as_str());
            if known {
                if axes.contains_key(&kind) {
                    return Err(bad_header(path, format!("two {kind} axes")));
                }
                axes.insert(
                    kind,
                    (
                        Axis { len, stride },
                        h.float(&format!("CRVAL{k}")).unwrap_or(0.0),
                        h.float(&format!("CDELT{k}")).unwrap_or(1.0),
                        h.float(&format!("CRPIX{k}")).unwrap_or(1.0),
                    ),
                );
            } else if len != 1 {
                // A length-1 axis without a known CTYPE (ehtim leaves the IF axis unnamed) holds
                // nothing; a longer one would be misread.
                return Err(MsError::UnsupportedUvfits {
                    path: path.to_path_buf(),
                    what: format!(
                        "data axis {k} ('{ctype}', {len} long) is not one of COMPLEX, STOKES, \
                         FREQ, IF, RA, DEC"
                    ),
                });
            }
            stride = stride
                .checked_mul(len)
                .ok_or_else(|| bad_header(path, "the group size overflows".into()))?;
        }
        let n_values = stride;
        let missing = |axis: &'static str, why: &'static str| MsError::MissingAxis {
            path: path.to_path_buf(),
            axis,
            why,
        };
        let (complex, ..) = *axes.get("COMPLEX").ok_or_else(|| {
            missing(
                "COMPLEX",
                "the visibilities' real and imaginary parts cannot be found",
            )
        })?;
        if complex.len != 2 && complex.len != 3 {
            return Err(MsError::UnsupportedUvfits {
                path: path.to_path_buf(),
                what: format!(
                    "the COMPLEX axis has {} elements, not 3 (real, imaginary, weight) or 2",
                    complex.len
                ),
            });
        }
        let &(stokes, s_val, s_del, s_pix) = axes
            .get("STOKES")
            .ok_or_else(|| missing("STOKES", "the polarization of the data is unknown"))?;
        let &(chan, f_val, f_del, f_pix) = axes
            .get("FREQ")
            .ok_or_else(|| missing("FREQ", "the frequencies are unknown"))?;
        let ifs = axes.get("IF").map_or(Axis { len: 1, stride: 0 }, |a| a.0);
        let corr: Vec<Correlation> = (0..stokes.len)
            .map(|i| correlation_of(s_val + (i as f64 + 1.0 - s_pix) * s_del, path))
            .collect::<Result<_, _>>()?;
        // Stokes I itself when present, else the MS rules on the correlations.
        let plan = match corr.iter().position(|&c| c == Correlation::Other(1)) {
            Some(i) => Some(StokesPlan::Single(i)),
            None => StokesPlan::new(&corr),
        }
        .ok_or_else(|| MsError::UnsupportedCorrelations {
            path: path.to_path_buf(),
            pol_id: 0,
            corr: corr.clone(),
        })?;

        // Frequencies: the IF offsets and channel widths of the FQ table row in use.
        let params = read_params(&h, path, pcount, f_val)?;
        let fq_row = |id: i64| -> Option<usize> {
            let t = tables.fq.as_ref()?;
            (0..t.n_rows).find(|&r| t.number(r, "FRQSEL").map(|v| v as i64) == Some(id))
        };

        // One pass over the random parameters: time range, sources, subarrays, FREQSELs.
        let mut scan = Scan::default();
        scan_groups(
            &mut file,
            path,
            bitpix,
            &params,
            data_start,
            gcount,
            pcount + n_values,
            &mut scan,
            SCAN_WHOLE_GROUP_BYTES,
        )?;
        if scan.subarrays.len() > 1 {
            return Err(MsError::UnsupportedUvfits {
                path: path.to_path_buf(),
                what: format!(
                    "several subarrays ({:?}); split them first (AIPS USUBA/UVCOP)",
                    scan.subarrays
                ),
            });
        }
        if scan.freqsels.len() > 1 {
            return Err(MsError::UnsupportedUvfits {
                path: path.to_path_buf(),
                what: format!(
                    "several frequency setups (FREQSEL {:?}); split them first (AIPS UVCOP)",
                    scan.freqsels
                ),
            });
        }
        let freqsel = scan.freqsels.iter().next().copied().unwrap_or(1);
        let (if_freq, ch_width) = match &tables.fq {
            Some(t) => {
                let row = fq_row(freqsel)
                    .or((t.n_rows == 1).then_some(0))
                    .ok_or_else(|| MsError::Malformed {
                        path: path.to_path_buf(),
                        what: format!("AIPS FQ table: no row with FRQSEL = {freqsel}"),
                    })?;
                let col = |name: &str| -> Option<Vec<f64>> {
                    t.column(name).and_then(|c| t.numbers(row, c))
                };
                let if_freq = col("IF FREQ").ok_or_else(|| MsError::Malformed {
                    path: path.to_path_buf(),
                    what: "AIPS FQ table: no numeric IF FREQ column".into(),
                })?;
                if if_freq.len() != ifs.len {
                    return Err(MsError::Malformed {
                        path: path.to_path_buf(),
                        what: format!(
                            "AIPS FQ table has {} IFs, the IF axis {}",
                            if_freq.len(),
                            ifs.len
                        ),
                    });
                }
                let width = col("CH WIDTH").filter(|w| w.len() == ifs.len);
                (if_freq, width)
            }
            None if ifs.len == 1 => (vec![0.0], None),
            None => {
                return Err(MsError::UnsupportedUvfits {
                    path: path.to_path_buf(),
                    what: format!(
                        "{} IFs but no AIPS FQ table giving their frequencies",
                        ifs.len
                    ),
                })
            }
        };
        let spws: Vec<SpwInfo> = (0..ifs.len)
            .map(|i| {
                // The FQ table's channel width (signed: negative on a lower sideband) where it
                // gives one, else the FREQ axis's CDELT.
                let w = ch_width
                    .as_ref()
                    .map(|w| w[i])
                    .filter(|w| w.is_finite() && *w != 0.0)
                    .unwrap_or(f_del);
                let ref_freq = f_val + if_freq[i];
                SpwInfo {
                    name: format!("IF {}", i + 1),
                    chan_freq: (0..chan.len)
                        .map(|c| ref_freq + (c as f64 + 1.0 - f_pix) * w)
                        .collect(),
                    ref_freq,
                }
            })
            .collect();

        // Fields: the SU table when there is a SOURCE parameter, else the header's pointing.
        let epoch = h.float("EPOCH").or_else(|| h.float("EQUINOX")).or_else(|| {
            h.string("EQUINOX")
                .and_then(|s| s.trim_start_matches(['J', 'B']).parse().ok())
        });
        let header_dir = {
            let ra = axes.get("RA").map(|a| a.1).or_else(|| h.float("OBSRA"));
            let dec = axes.get("DEC").map(|a| a.1).or_else(|| h.float("OBSDEC"));
            match (ra, dec) {
                (Some(ra), Some(dec)) => Some(Direction {
                    ra: ra.to_radians(),
                    dec: dec.to_radians(),
                    frame: frame_of(epoch),
                }),
                _ => None,
            }
        };
        let object = h.string("OBJECT").unwrap_or_default().trim().to_string();
        let mut source_to_field = BTreeMap::new();
        let fields: Vec<FieldInfo> = match (&params.source, &tables.su) {
            (Some(_), Some(su)) => {
                let mut fields = Vec::new();
                for r in 0..su.n_rows {
                    let id = su
                        .number(r, "ID. NO.")
                        .or_else(|| su.number(r, "SOURCE ID"))
                        .ok_or_else(|| MsError::Malformed {
                            path: path.to_path_buf(),
                            what: "AIPS SU table: no ID. NO. column".into(),
                        })? as i64;
                    let ra = su.number(r, "RAEPO").or_else(|| su.number(r, "RAOBS"));
                    let dec = su.number(r, "DECEPO").or_else(|| su.number(r, "DECOBS"));
                    let (Some(ra), Some(dec)) = (ra, dec) else {
                        return Err(MsError::Malformed {
                            path: path.to_path_buf(),
                            what: "AIPS SU table: no RAEPO/DECEPO columns".into(),
                        });
                    };
                    if source_to_field.insert(id, fields.len()).is_some() {
                        return Err(MsError::Malformed {
                            path: path.to_path_buf(),
                            what: format!("AIPS SU table: source id {id} twice"),
                        });
                    }
                    fields.push(FieldInfo {
                        name: su.text(r, "SOURCE").unwrap_or_default(),
                        phase_dir: Direction {
                            ra: ra.to_radians(),
                            dec: dec.to_radians(),
                            frame: frame_of(su.number(r, "EPOCH").or(epoch)),
                        },
                    });
                }
                fields
            }
            (Some(_), None) if scan.sources.len() > 1 => {
                return Err(MsError::UnsupportedUvfits {
                    path: path.to_path_buf(),
                    what: format!(
                        "{} sources (SOURCE ids {:?}) but no AIPS SU table saying what and where \
                         they are",
                        scan.sources.len(),
                        scan.sources.keys().collect::<Vec<_>>()
                    ),
                })
            }
            _ => {
                if let Some(&id) = scan.sources.keys().next() {
                    source_to_field.insert(id, 0);
                }
                let phase_dir = header_dir.ok_or_else(|| {
                    missing(
                        "RA",
                        "no RA/DEC axes nor OBSRA/OBSDEC give the phase centre",
                    )
                })?;
                vec![FieldInfo {
                    name: object,
                    phase_dir,
                }]
            }
        };
        let mut rows_per_field = vec![0usize; fields.len()];
        for (id, n) in &scan.sources {
            let f = *source_to_field.get(id).ok_or_else(|| MsError::BadIndex {
                path: path.to_path_buf(),
                table: "random groups".into(),
                row: scan.first_group_of_source[id],
                what: "SOURCE",
                value: *id,
                len: fields.len(),
            })?;
            rows_per_field[f] += n;
        }
        if params.source.is_none() {
            rows_per_field[0] = gcount;
        }

        let antennas = match &tables.an {
            Some(an) => antennas_of(an, path)?,
            None => Vec::new(),
        };
        let telescope = h
            .string("TELESCOP")
            .or_else(|| tables.an.as_ref().and_then(|t| t.header.string("ARRNAM")))
            .unwrap_or_default()
            .trim()
            .to_string();
        let info = MsInfo {
            path: path.to_path_buf(),
            n_rows: gcount,
            telescope,
            observer: h.string("OBSERVER").unwrap_or_default().trim().to_string(),
            // The MS columns the file stands in for: it holds a single data column.
            columns: ["UVW", "TIME", "ANTENNA1", "ANTENNA2", "DATA", "WEIGHT"]
                .map(String::from)
                .to_vec(),
            fields,
            data_descs: (0..spws.len()).map(|s| (s, 0)).collect(),
            spws,
            polarizations: vec![corr],
            antennas,
            time_range: scan.time_range.unwrap_or((0.0, 0.0)),
        };
        let group_bytes = (pcount + n_values) * bitpix.bytes();
        Ok(UvfitsFile {
            info,
            layout: Layout {
                bitpix,
                bscale: h.float("BSCALE").unwrap_or(1.0),
                bzero: h.float("BZERO").unwrap_or(0.0),
                blank: match bitpix {
                    Bitpix::I16 | Bitpix::I32 => h.int("BLANK").map(|b| b as f64),
                    _ => None,
                },
                pcount,
                gcount,
                group_bytes,
                data_start,
                complex,
                stokes,
                chan,
                ifs,
                params,
                plan,
            },
            source_to_field,
            rows_per_field,
        })
    }

    pub fn info(&self) -> &MsInfo {
        &self.info
    }

    pub fn path(&self) -> &Path {
        &self.info.path
    }

    /// The field a selection means, as for a Measurement Set: its id (the row of the SU
    /// table), its name (exact, then ignoring case), or by default field 0, or the first field
    /// holding groups when field 0 holds none.
    pub fn resolve_field(&self, sel: &Selection) -> Result<usize, MsError> {
        let id = resolve_field(&self.info, sel)?;
        if sel.field.is_none() && self.rows_per_field.get(id) == Some(&0) {
            if let Some(first) = self.rows_per_field.iter().position(|&n| n > 0) {
                return Ok(first);
            }
        }
        Ok(id)
    }

    /// Random groups per field.
    pub fn rows_per_field(&self) -> Result<Vec<usize>, MsError> {
        Ok(self.rows_per_field.clone())
    }

    fn plan(&self, sel: &Selection) -> Result<Plan, MsError> {
        let path = &self.info.path;
        let field = self.resolve_field(sel)?;
        if sel.column != DataColumn::Data {
            return Err(MsError::MissingColumn {
                path: path.clone(),
                table: "MAIN".into(),
                column: sel.column.column_name().into(),
                hint: " (a UVFITS file holds a single data column: DATA)".into(),
            });
        }
        // The same checks, in the same order, as the Measurement Set reader's.
        let n_spw = self.info.spws.len();
        let spws: Vec<usize> = match &sel.spws {
            None => (0..n_spw).collect(),
            Some(v) => {
                if let Some(&bad) = v.iter().find(|&&s| s >= n_spw) {
                    return Err(MsError::SpwOutOfRange {
                        path: path.clone(),
                        spw: bad,
                        n_spw,
                    });
                }
                if v.is_empty() {
                    return Err(MsError::NoRows {
                        path: path.clone(),
                        what: "the selection lists no spectral window".into(),
                    });
                }
                // An MS gives one chunk per spectral window whatever the order listed.
                let set: BTreeSet<usize> = v.iter().copied().collect();
                set.into_iter().collect()
            }
        };
        let n_chan = self.layout.chan.len;
        if let Some((start, end)) = sel.channels {
            let why = if end <= start {
                Some("empty")
            } else if end > n_chan {
                Some("out of bounds")
            } else {
                None
            };
            if let Some(why) = why {
                return Err(MsError::BadChannelRange {
                    path: path.clone(),
                    start,
                    end,
                    spw: spws[0],
                    n_chan,
                    why,
                });
            }
        }
        Ok(Plan {
            field,
            spws,
            channels: sel.channels.unwrap_or((0, n_chan)),
            chunk_rows: if sel.chunk_rows == 0 {
                DEFAULT_CHUNK_ROWS
            } else {
                sel.chunk_rows
            },
        })
    }

    /// Streams the selection as Stokes I chunks, `chunk_rows` groups at a time; each block
    /// yields one [`VisChunk`] per selected IF. Autocorrelations are skipped and counted, as
    /// by [`crate::MeasurementSet::chunks`] (once per selected IF, as an MS holds one row per
    /// spectral window).
    pub fn chunks(&self, sel: &Selection) -> Result<UvfitsChunks<'_>, MsError> {
        let plan = self.plan(sel)?;
        let file = File::open(&self.info.path).map_err(|e| io(&self.info.path, "opening", e))?;
        Ok(UvfitsChunks {
            uv: self,
            file,
            plan,
            next_group: 0,
            pending: VecDeque::new(),
            failed: false,
            fields_seen: BTreeSet::new(),
            autocorrelations: 0,
            buf: Vec::new(),
        })
    }

    /// Reads the whole selection. Errors when nothing matches or every sample is flagged, as
    /// [`crate::MeasurementSet::read`] does.
    pub fn read(&self, sel: &Selection) -> Result<Visibilities, MsError> {
        let field_id = self.resolve_field(sel)?;
        let mut iter = self.chunks(sel)?;
        let (chunks, mut stats) = crate::reader::gather(&mut iter)?;
        stats.autocorrelations = iter.autocorrelations;
        let field = self.info.fields[field_id].clone();
        let spws = crate::reader::spw_label(sel);
        let what = format!(
            "field {field_id} ({:?}), spectral windows (IFs) {spws}, column DATA",
            field.name
        );
        crate::reader::finish_read(
            &self.info.path,
            field,
            what,
            "the file has groups of fields",
            &iter.fields_seen,
            (chunks, stats),
        )
    }
}

/// The FIELD index of a group.
fn field_of(
    map: &BTreeMap<i64, usize>,
    source: Option<i64>,
    group: usize,
    path: &Path,
    n_fields: usize,
) -> Result<usize, MsError> {
    match source {
        None => Ok(0),
        Some(id) => map.get(&id).copied().ok_or_else(|| MsError::BadIndex {
            path: path.to_path_buf(),
            table: "random groups".into(),
            row: group,
            what: "SOURCE",
            value: id,
            len: n_fields,
        }),
    }
}

/// Antennas by UVFITS number: entry `n − 1` is station number `n` (NOSTA), so that antenna ids
/// match the MS copy's; numbers missing from the table are left as unnamed entries.
fn antennas_of(an: &BinTable, path: &Path) -> Result<Vec<AntennaInfo>, MsError> {
    let centre = ["ARRAYX", "ARRAYY", "ARRAYZ"].map(|k| an.header.float(k).unwrap_or(0.0));
    let xyz = an.column("STABXYZ");
    let mut out: Vec<Option<AntennaInfo>> = Vec::new();
    for r in 0..an.n_rows {
        let nosta = an.number(r, "NOSTA").map_or(r as i64 + 1, |v| v as i64);
        if !(1..=65_536).contains(&nosta) {
            return Err(MsError::BadIndex {
                path: path.to_path_buf(),
                table: "AIPS AN".into(),
                row: r,
                what: "NOSTA",
                value: nosta,
                len: 65_536,
            });
        }
        let p = xyz
            .and_then(|c| an.numbers(r, c))
            .filter(|v| v.len() == 3)
            .map_or([0.0; 3], |v| [v[0], v[1], v[2]]);
        let i = nosta as usize - 1;
        if out.len() <= i {
            out.resize(i + 1, None);
        }
        if out[i].is_some() {
            return Err(MsError::Malformed {
                path: path.to_path_buf(),
                what: format!("AIPS AN table: station number {nosta} twice"),
            });
        }
        out[i] = Some(AntennaInfo {
            name: an.text(r, "ANNAME").unwrap_or_default(),
            dish_diameter: an.number(r, "DIAMETER").unwrap_or(0.0),
            position: [p[0] + centre[0], p[1] + centre[1], p[2] + centre[2]],
        });
    }
    Ok(out
        .into_iter()
        .map(|a| {
            a.unwrap_or(AntennaInfo {
                name: String::new(),
                dish_diameter: 0.0,
                position: [0.0; 3],
            })
        })
        .collect())
}

/// Walks the extensions after the random groups and keeps the first AIPS AN, FQ and SU
/// tables. Stops quietly at the end of the file or at bytes that are not an extension header
/// (some writers pad the file).
fn read_tables(
    file: &mut File,
    path: &Path,
    mut at: u64,
    file_len: u64,
) -> Result<Tables, MsError> {
    let mut tables = Tables::default();
    let mut first = [0u8; 8];
    while at + BLOCK as u64 <= file_len {
        file.seek(SeekFrom::Start(at))
            .map_err(|e| io(path, "seeking", e))?;
        file.read_exact(&mut first)
            .map_err(|e| io(path, "reading an extension", e))?;
        if &first != b"XTENSION" {
            break;
        }
        let (h, data_at) = read_header(file, path, at, file_len)?;
        let size = data_bytes(&h, path, false)?;
        let name = h
            .string("EXTNAME")
            .unwrap_or_default()
            .trim()
            .to_uppercase();
        let xt = h
            .string("XTENSION")
            .unwrap_or_default()
            .trim()
            .to_uppercase();
        if data_at + size > file_len {
            return Err(MsError::Truncated {
                path: path.to_path_buf(),
                what: format!(
                    "extension {name:?} at byte {at} needs {size} bytes of data, but the file \
                     ends after {file_len}"
                ),
            });
        }
        let slot = match name.as_str() {
            "AIPS AN" => Some(&mut tables.an),
            "AIPS FQ" => Some(&mut tables.fq),
            "AIPS SU" => Some(&mut tables.su),
            _ => None,
        };
        if let Some(slot) = slot.filter(|s| s.is_none() && xt == "BINTABLE") {
            let rows = (h.int("NAXIS1").unwrap_or(0) * h.int("NAXIS2").unwrap_or(0)).max(0);
            let mut data = vec![0u8; rows as usize];
            file.seek(SeekFrom::Start(data_at))
                .map_err(|e| io(path, "seeking", e))?;
            file.read_exact(&mut data)
                .map_err(|e| io(path, "reading a table", e))?;
            *slot = Some(BinTable::parse(h, data, path, &name)?);
        }
        at = data_at + padded(size);
    }
    Ok(tables)
}

/// The random parameters the reader uses, by PTYPE.
fn read_params(h: &Header, path: &Path, pcount: usize, ref_freq: f64) -> Result<Params, MsError> {
    let (mut uvw, mut date) = ([None, None, None], Vec::new());
    let mut wavelengths = [false; 3];
    let (mut baseline, mut subarray, mut a1, mut a2) = (None, None, None, None);
    let (mut source, mut freqsel) = (None, None);
    for k in 1..=pcount {
        let name = h
            .string(&format!("PTYPE{k}"))
            .unwrap_or_default()
            .trim()
            .to_ascii_uppercase();
        let p = Param {
            index: k - 1,
            scale: h.float(&format!("PSCAL{k}")).unwrap_or(1.0),
            zero: h.float(&format!("PZERO{k}")).unwrap_or(0.0),
        };
        let first = |slot: &mut Option<Param>| {
            if slot.is_none() {
                *slot = Some(p);
            }
        };
        for (i, axis) in ["UU", "VV", "WW"].iter().enumerate() {
            if (name == *axis || name.starts_with(&format!("{axis}-"))) && uvw[i].is_none() {
                uvw[i] = Some(p);
                wavelengths[i] = name.starts_with(&format!("{axis}-L"));
            }
        }
        match name.as_str() {
            "DATE" | "_DATE" => date.push(p),
            "BASELINE" => first(&mut baseline),
            "SUBARRAY" => first(&mut subarray),
            "ANTENNA1" => first(&mut a1),
            "ANTENNA2" => first(&mut a2),
            "SOURCE" | "SOURCE ID" => first(&mut source),
            "FREQSEL" => first(&mut freqsel),
            _ => {}
        }
    }
    let need = |p: Option<Param>, name: &'static str| {
        p.ok_or_else(|| MsError::MissingParameter {
            path: path.to_path_buf(),
            name,
            why: "the baseline coordinates are unknown",
        })
    };
    let uvw = [
        need(uvw[0], "UU")?,
        need(uvw[1], "VV")?,
        need(uvw[2], "WW")?,
    ];
    if wavelengths.iter().any(|&w| w) != wavelengths.iter().all(|&w| w) {
        return Err(MsError::UnsupportedUvfits {
            path: path.to_path_buf(),
            what: "UU, VV and WW in different units (some in wavelengths, some in seconds)".into(),
        });
    }
    if date.is_empty() {
        return Err(MsError::MissingParameter {
            path: path.to_path_buf(),
            name: "DATE",
            why: "the times of the visibilities are unknown",
        });
    }
    let baseline = match (baseline, a1, a2) {
        (_, Some(a1), Some(a2)) => Baseline::Separate { subarray, a1, a2 },
        (Some(b), _, _) => Baseline::Coded(b),
        _ => {
            return Err(MsError::MissingParameter {
                path: path.to_path_buf(),
                name: "BASELINE",
                why: "it has no ANTENNA1 and ANTENNA2 either, so the antennas are unknown",
            })
        }
    };
    // Seconds of light travel time → metres; wavelengths at the reference frequency → metres.
    let uvw_to_m = if wavelengths[0] {
        if !(ref_freq.is_finite() && ref_freq > 0.0) {
            return Err(MsError::UnsupportedUvfits {
                path: path.to_path_buf(),
                what: format!("UU in wavelengths but the FREQ axis's CRVAL is {ref_freq}"),
            });
        }
        SPEED_OF_LIGHT / ref_freq
    } else {
        SPEED_OF_LIGHT
    };
    Ok(Params {
        uvw,
        uvw_to_m,
        date,
        baseline,
        source,
        freqsel,
    })
}

#[derive(Default, Debug, PartialEq)]
struct Scan {
    time_range: Option<(f64, f64)>,
    subarrays: BTreeSet<i64>,
    freqsels: BTreeSet<i64>,
    /// Groups per SOURCE id.
    sources: BTreeMap<i64, usize>,
    first_group_of_source: BTreeMap<i64, usize>,
}

/// Values at the start of a group that hold every parameter the reader decodes.
fn params_len(p: &Params) -> usize {
    let mut all: Vec<Param> = p.uvw.to_vec();
    all.extend(&p.date);
    match p.baseline {
        Baseline::Coded(b) => all.push(b),
        Baseline::Separate { subarray, a1, a2 } => all.extend(subarray.into_iter().chain([a1, a2])),
    }
    all.extend(p.source.into_iter().chain(p.freqsel));
    all.iter().map(|q| q.index + 1).max().unwrap_or(0)
}

#[allow(clippy::too_many_arguments)]
fn scan_groups(
    file: &mut File,
    path: &Path,
    bitpix: Bitpix,
    params: &Params,
    data_start: u64,
    gcount: usize,
    values_per_group: usize,
    scan: &mut Scan,
    whole_group_bytes: usize,
) -> Result<(), MsError> {
    let group_bytes = values_per_group * bitpix.bytes();
    let param_bytes = params_len(params) * bitpix.bytes();
    let whole = group_bytes <= whole_group_bytes;
    let mut buf = Vec::new();
    let mut g0 = 0;
    while g0 < gcount {
        let n = if whole {
            (SCAN_BYTES / group_bytes.max(1)).max(1).min(gcount - g0)
        } else {
            // Only the random parameters of each group.
            let n = (SCAN_BYTES / param_bytes.max(1)).max(1).min(gcount - g0);
            buf.resize(n * param_bytes, 0);
            for (i, b) in buf.chunks_exact_mut(param_bytes).enumerate() {
                file.seek(SeekFrom::Start(
                    data_start + ((g0 + i) * group_bytes) as u64,
                ))
                .map_err(|e| io(path, "seeking", e))?;
                file.read_exact(b)
                    .map_err(|e| io(path, "reading random parameters", e))?;
            }
            n
        };
        if whole {
            read_groups(file, path, data_start, group_bytes, g0, n, &mut buf)?;
        }
        let stride = if whole { group_bytes } else { param_bytes };
        for (i, g) in buf.chunks_exact(stride).enumerate() {
            let m = params.decode(bitpix, g);
            if m.time.is_finite() {
                scan.time_range = Some(match scan.time_range {
                    None => (m.time, m.time),
                    Some((a, b)) => (a.min(m.time), b.max(m.time)),
                });
            }
            scan.subarrays.insert(m.subarray);
            if let Some(f) = m.freqsel {
                scan.freqsels.insert(f);
            }
            if let Some(s) = m.source {
                *scan.sources.entry(s).or_default() += 1;
                scan.first_group_of_source.entry(s).or_insert(g0 + i);
            }
        }
        g0 += n;
    }
    Ok(())
}

fn read_groups(
    file: &mut File,
    path: &Path,
    data_start: u64,
    group_bytes: usize,
    g0: usize,
    n: usize,
    buf: &mut Vec<u8>,
) -> Result<(), MsError> {
    buf.resize(n * group_bytes, 0);
    file.seek(SeekFrom::Start(data_start + (g0 * group_bytes) as u64))
        .map_err(|e| io(path, "seeking", e))?;
    file.read_exact(buf)
        .map_err(|e| io(path, &format!("reading random groups {g0}..{}", g0 + n), e))
}

struct Plan {
    field: usize,
    /// Selected IFs, ascending.
    spws: Vec<usize>,
    channels: (usize, usize),
    chunk_rows: usize,
}

/// The chunks of a selection, in group order (see [`UvfitsFile::chunks`]).
pub struct UvfitsChunks<'a> {
    uv: &'a UvfitsFile,
    file: File,
    plan: Plan,
    next_group: usize,
    pending: VecDeque<VisChunk>,
    failed: bool,
    /// Fields met so far, for the message when nothing was selected.
    fields_seen: BTreeSet<usize>,
    autocorrelations: usize,
    buf: Vec<u8>,
}

impl UvfitsChunks<'_> {
    /// Rows skipped so far because ANTENNA1 = ANTENNA2 (once per selected IF).
    pub fn autocorrelations(&self) -> usize {
        self.autocorrelations
    }

    fn read_block(&mut self, g0: usize, n: usize) -> Result<(), MsError> {
        let uv = self.uv;
        let lay = &uv.layout;
        let path = &uv.info.path;
        let mut buf = std::mem::take(&mut self.buf);
        read_groups(
            &mut self.file,
            path,
            lay.data_start,
            lay.group_bytes,
            g0,
            n,
            &mut buf,
        )?;
        let n_ant = uv.info.antennas.len();
        // (offset of the group in the block, its decoded parameters)
        let mut rows: Vec<(usize, GroupMeta)> = Vec::new();
        for i in 0..n {
            let g = &buf[i * lay.group_bytes..(i + 1) * lay.group_bytes];
            let m = lay.params.decode(lay.bitpix, g);
            let group = g0 + i;
            let field = field_of(
                &uv.source_to_field,
                m.source,
                group,
                path,
                uv.info.fields.len(),
            )?;
            for (what, a) in [("ANTENNA1", m.a1), ("ANTENNA2", m.a2)] {
                if a < 1 || (n_ant > 0 && a as usize > n_ant) {
                    return Err(MsError::BadIndex {
                        path: path.clone(),
                        table: "random groups".into(),
                        row: group,
                        what,
                        value: a - 1,
                        len: n_ant,
                    });
                }
            }
            self.fields_seen.insert(field);
            if field != self.plan.field {
                continue;
            }
            if m.a1 == m.a2 {
                self.autocorrelations += self.plan.spws.len();
                continue;
            }
            rows.push((i * lay.group_bytes, m));
        }
        if !rows.is_empty() {
            for &spw in &self.plan.spws {
                let chunk = self.chunk(spw, &rows, &buf);
                self.pending.push_back(chunk);
            }
        }
        self.buf = buf;
        Ok(())
    }

    /// One IF of the rows of a block, as Stokes I.
    fn chunk(&self, spw: usize, rows: &[(usize, GroupMeta)], buf: &[u8]) -> VisChunk {
        let lay = &self.uv.layout;
        let (c0, c1) = self.plan.channels;
        let n_chan = c1 - c0;
        let n_corr = lay.stokes.len;
        let n = rows.len();
        let mut data = Vec::with_capacity(n * n_chan * n_corr);
        let mut weight = Vec::with_capacity(n * n_chan * n_corr);
        for &(off, _) in rows {
            let g = &buf[off..off + lay.group_bytes];
            for c in c0..c1 {
                for s in 0..n_corr {
                    let base = s * lay.stokes.stride + c * lay.chan.stride + spw * lay.ifs.stride;
                    let re = lay.datum(g, base);
                    let im = lay.datum(g, base + lay.complex.stride);
                    let w = if lay.complex.len == 3 {
                        lay.datum(g, base + 2 * lay.complex.stride)
                    } else {
                        1.0
                    };
                    data.push(Complex::new(re, im));
                    weight.push(w);
                }
            }
        }
        // Flags are weights ≤ 0 in UVFITS, which the Stokes rules already drop.
        let flag = vec![0u8; data.len()];
        let block = Block {
            n_rows: n,
            n_chan,
            n_corr,
            data: &data,
            flag: &flag,
            flag_row: &[],
            weights: BlockWeights::PerChannel(&weight),
        };
        let mut chunk = VisChunk {
            spw,
            uvw: rows.iter().map(|(_, m)| m.uvw).collect(),
            antenna1: rows.iter().map(|(_, m)| (m.a1 - 1) as i32).collect(),
            antenna2: rows.iter().map(|(_, m)| (m.a2 - 1) as i32).collect(),
            time: rows.iter().map(|(_, m)| m.time).collect(),
            freq: self.uv.info.spws[spw].chan_freq[c0..c1].to_vec(),
            vis: Vec::new(),
            weight: Vec::new(),
        };
        combine(lay.plan, &block, &mut chunk.vis, &mut chunk.weight);
        chunk
    }
}

impl Iterator for UvfitsChunks<'_> {
    type Item = Result<VisChunk, MsError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            if let Some(c) = self.pending.pop_front() {
                return Some(Ok(c));
            }
            let n_groups = self.uv.layout.gcount;
            if self.failed || self.next_group >= n_groups {
                return None;
            }
            let start = self.next_group;
            let cap = (MAX_BLOCK_BYTES / self.uv.layout.group_bytes.max(1)).max(1);
            let n = self.plan.chunk_rows.min(cap).min(n_groups - start);
            self.next_group += n;
            if let Err(e) = self.read_block(start, n) {
                self.failed = true;
                return Some(Err(e));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cards() {
        let (k, v) = Header::parse_card(&format!("{:<80}", "OBJECT  = 'M87 ''x'' ' / c")).unwrap();
        assert_eq!(k, "OBJECT");
        assert!(matches!(v, Value::Str(s) if s == "M87 'x'"));
        let mut h = Header::default();
        for c in [
            "BITPIX  =                  -32 / x",
            "CRVAL4  =   3.630854195242D+10",
            "GROUPS  =                    T",
        ] {
            h.cards
                .push(Header::parse_card(&format!("{c:<80}")).unwrap());
        }
        assert_eq!(h.int("BITPIX"), Some(-32));
        assert_eq!(h.float("CRVAL4"), Some(3.630854195242e10));
        assert_eq!(h.logical("GROUPS"), Some(true));
        assert!(Header::parse_card(&format!("{:<80}", "HISTORY AIPS WTSCAL = 1.0")).is_none());
    }

    #[test]
    fn baselines() {
        let p = Param {
            index: 0,
            scale: 1.0,
            zero: 0.0,
        };
        let params = Params {
            uvw: [p; 3],
            uvw_to_m: 1.0,
            date: vec![p],
            baseline: Baseline::Coded(p),
            source: None,
            freqsel: None,
        };
        let decode = |b: f64| {
            let m = params.decode(Bitpix::F64, &b.to_be_bytes());
            (m.a1, m.a2, m.subarray)
        };
        assert_eq!(decode(1032.0), (4, 8, 1));
        assert_eq!(decode(256.0 * 255.0 + 254.0), (255, 254, 1));
        assert_eq!(decode(2048.0 * 300.0 + 17.0 + 65536.0), (300, 17, 1));
        assert_eq!(decode(2048.0 + 2.0 + 65536.0), (1, 2, 1));
        assert_eq!(decode(258.01), (1, 2, 2));
    }

    /// The parameters-only scan (long groups) finds what the whole-group scan finds.
    #[test]
    fn scan_parameters_only() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/data/vla_tdem0003.uvfits");
        let uv = UvfitsFile::open(&path).unwrap();
        let lay = &uv.layout;
        let values = lay.group_bytes / lay.bitpix.bytes();
        let scan = |limit: usize| {
            let mut s = Scan::default();
            let mut f = File::open(&path).unwrap();
            scan_groups(
                &mut f,
                &path,
                lay.bitpix,
                &lay.params,
                lay.data_start,
                lay.gcount,
                values,
                &mut s,
                limit,
            )
            .unwrap();
            s
        };
        let (a, b) = (scan(usize::MAX), scan(0));
        assert_eq!(a, b);
        assert_eq!(a.time_range, Some(uv.info().time_range));
        assert_eq!(a.subarrays.len(), 1);
    }

    #[test]
    fn stokes_codes() {
        let p = Path::new("x");
        assert_eq!(correlation_of(-1.0, p).unwrap(), Correlation::RR);
        assert_eq!(correlation_of(-6.0, p).unwrap(), Correlation::YY);
        assert_eq!(correlation_of(1.0, p).unwrap(), Correlation::Other(1));
        assert!(correlation_of(-9.0, p).is_err());
        assert!(correlation_of(0.0, p).is_err());
    }
}
