//! Safe wrapper over the C++ glue (`glue/msio_glue.cc`): a casacore table and bulk reads (and,
//! on a copy opened for update, writes) of whole row blocks to and from Rust buffers.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::ptr::NonNull;
use std::sync::{Mutex, MutexGuard};

use num_complex::Complex;

use crate::error::MsError;

// Linked for its casacore build; the glue library calls into it.
use rubbl_casatables_impl as _;

const ERR_LEN: usize = 2048;

/// casacore shares one table object between all openers of the same path in a process (its
/// table cache), and its storage managers' buffers are not safe for concurrent use: two threads
/// reading the same MS crashed inside SSMColumn. Every call into casacore holds this lock.
static CASACORE: Mutex<()> = Mutex::new(());

fn casacore_lock() -> MutexGuard<'static, ()> {
    // A panic cannot happen while the lock is held (the glue catches every C++ exception), but
    // if one did, the data behind the lock is casacore's, not ours: carry on.
    CASACORE.lock().unwrap_or_else(|e| e.into_inner())
}

mod ffi {
    use super::*;
    extern "C" {
        pub fn msio_open(path: *const c_char, err: *mut c_char, errlen: usize) -> *mut c_void;
        pub fn msio_open_rw(path: *const c_char, err: *mut c_char, errlen: usize) -> *mut c_void;
        pub fn msio_flush(t: *mut c_void, err: *mut c_char, errlen: usize) -> c_int;
        pub fn msio_close(t: *mut c_void);
        pub fn msio_nrows(t: *mut c_void) -> u64;
        pub fn msio_has_column(t: *mut c_void, col: *const c_char) -> c_int;
        pub fn msio_column_names(
            t: *mut c_void,
            buf: *mut c_char,
            buflen: usize,
            needed: *mut usize,
            err: *mut c_char,
            errlen: usize,
        ) -> c_int;
        pub fn msio_cell_shape(
            t: *mut c_void,
            col: *const c_char,
            row: u64,
            shape: *mut i64,
            maxdim: c_int,
            ndim: *mut c_int,
            defined: *mut c_int,
            err: *mut c_char,
            errlen: usize,
        ) -> c_int;
        pub fn msio_read_scalar(
            t: *mut c_void,
            col: *const c_char,
            ty: c_int,
            rows: *const u64,
            nrows: u64,
            range_start: u64,
            out: *mut c_void,
            err: *mut c_char,
            errlen: usize,
        ) -> c_int;
        pub fn msio_read_array(
            t: *mut c_void,
            col: *const c_char,
            ty: c_int,
            rows: *const u64,
            nrows: u64,
            range_start: u64,
            ndim: c_int,
            cell_start: *const i64,
            cell_len: *const i64,
            sliced: c_int,
            out: *mut c_void,
            err: *mut c_char,
            errlen: usize,
        ) -> c_int;
        pub fn msio_write_scalar(
            t: *mut c_void,
            col: *const c_char,
            ty: c_int,
            rows: *const u64,
            nrows: u64,
            range_start: u64,
            input: *const c_void,
            err: *mut c_char,
            errlen: usize,
        ) -> c_int;
        pub fn msio_write_array(
            t: *mut c_void,
            col: *const c_char,
            ty: c_int,
            rows: *const u64,
            nrows: u64,
            range_start: u64,
            ndim: c_int,
            cell_len: *const i64,
            input: *const c_void,
            err: *mut c_char,
            errlen: usize,
        ) -> c_int;
        pub fn msio_read_string_cell(
            t: *mut c_void,
            col: *const c_char,
            row: u64,
            buf: *mut c_char,
            buflen: usize,
            needed: *mut usize,
            err: *mut c_char,
            errlen: usize,
        ) -> c_int;
        pub fn msio_column_keyword_string(
            t: *mut c_void,
            col: *const c_char,
            kw: *const c_char,
            field: *const c_char,
            buf: *mut c_char,
            buflen: usize,
            needed: *mut usize,
            err: *mut c_char,
            errlen: usize,
        ) -> c_int;
    }
}

/// Element types the glue can read; the numbers are the glue's `ElemType`.
///
/// # Safety
/// Implementors must have the exact memory layout of the casacore type named by `CODE`.
pub(crate) unsafe trait Elem: Copy + Default {
    const CODE: c_int;
}
// casacore's Bool is C++ `bool`: one byte holding 0 or 1, read here as u8 so that no byte
// pattern can be an invalid Rust bool.
unsafe impl Elem for u8 {
    const CODE: c_int = 0;
}
unsafe impl Elem for i32 {
    const CODE: c_int = 1;
}
unsafe impl Elem for f32 {
    const CODE: c_int = 2;
}
unsafe impl Elem for f64 {
    const CODE: c_int = 3;
}
// std::complex<float> is two floats, as is num_complex's #[repr(C)] Complex<f32>.
unsafe impl Elem for Complex<f32> {
    const CODE: c_int = 4;
}

/// Which rows to read: a contiguous range or an explicit list (row numbers ascending).
#[derive(Clone, Copy)]
pub(crate) enum Rows<'a> {
    Range { start: u64, len: u64 },
    List(&'a [u64]),
}

impl Rows<'_> {
    fn parts(&self) -> (*const u64, u64, u64) {
        match *self {
            Rows::Range { start, len } => (std::ptr::null(), len, start),
            Rows::List(l) => (l.as_ptr(), l.len() as u64, 0),
        }
    }
    fn len(&self) -> usize {
        self.parts().1 as usize
    }
}

/// A casacore table, opened read-only ([`Table::open`]) or, for a copy that ms_io made, for
/// update ([`Table::open_rw`]).
pub(crate) struct Table {
    ptr: NonNull<c_void>,
    path: PathBuf,
    n_rows: u64,
    writable: bool,
}

fn err_string(buf: &[u8]) -> String {
    CStr::from_bytes_until_nul(buf)
        .map(|c| c.to_string_lossy().into_owned())
        .unwrap_or_else(|_| String::from_utf8_lossy(buf).into_owned())
}

fn cstr(path: &Path, s: &str) -> Result<CString, MsError> {
    CString::new(s).map_err(|_| MsError::Malformed {
        path: path.to_path_buf(),
        what: format!("name {s:?} (contains NUL)"),
    })
}

impl Table {
    /// Opens `path` read-only. Errors name `path`; `NotATable` when casacore refuses it.
    pub(crate) fn open(path: &Path) -> Result<Self, MsError> {
        Self::open_mode(path, false)
    }

    /// Opens `path` for update, holding casacore's lock until dropped. Only for tables that
    /// ms_io created (see `writer::create_like`): inputs are never opened this way.
    pub(crate) fn open_rw(path: &Path) -> Result<Self, MsError> {
        Self::open_mode(path, true)
    }

    fn open_mode(path: &Path, writable: bool) -> Result<Self, MsError> {
        let s = path.to_str().ok_or_else(|| MsError::Malformed {
            path: path.to_path_buf(),
            what: "path (not valid UTF-8)".into(),
        })?;
        let c = cstr(path, s)?;
        let mut err = [0u8; ERR_LEN];
        let p = unsafe {
            let _g = casacore_lock();
            if writable {
                ffi::msio_open_rw(c.as_ptr(), err.as_mut_ptr().cast(), ERR_LEN)
            } else {
                ffi::msio_open(c.as_ptr(), err.as_mut_ptr().cast(), ERR_LEN)
            }
        };
        let ptr = NonNull::new(p).ok_or_else(|| MsError::NotATable {
            path: path.to_path_buf(),
            reason: err_string(&err),
        })?;
        let n_rows = unsafe {
            let _g = casacore_lock();
            ffi::msio_nrows(ptr.as_ptr())
        };
        Ok(Table {
            ptr,
            path: path.to_path_buf(),
            n_rows,
            writable,
        })
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn n_rows(&self) -> usize {
        self.n_rows as usize
    }

    fn casa_err(&self, context: String, err: &[u8]) -> MsError {
        MsError::Casacore {
            path: self.path.clone(),
            context,
            message: err_string(err),
        }
    }

    pub(crate) fn has_column(&self, col: &str) -> bool {
        match CString::new(col) {
            Ok(c) => unsafe {
                let _g = casacore_lock();
                ffi::msio_has_column(self.ptr.as_ptr(), c.as_ptr()) != 0
            },
            Err(_) => false,
        }
    }

    /// Errors with `MissingColumn` unless the column exists.
    pub(crate) fn require_column(&self, col: &str) -> Result<(), MsError> {
        if self.has_column(col) {
            Ok(())
        } else {
            Err(MsError::MissingColumn {
                path: self.path.clone(),
                table: self.table_name(),
                column: col.to_string(),
                hint: String::new(),
            })
        }
    }

    /// The table's name as users know it (`MAIN`, `SPECTRAL_WINDOW`, ...).
    pub(crate) fn table_name(&self) -> String {
        self.path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .filter(|n| n.chars().all(|c| c.is_ascii_uppercase() || c == '_'))
            .unwrap_or_else(|| "MAIN".to_string())
    }

    pub(crate) fn column_names(&self) -> Result<Vec<String>, MsError> {
        let s = self.get_string(|buf, len, needed, err, errlen| unsafe {
            let _g = casacore_lock();
            ffi::msio_column_names(self.ptr.as_ptr(), buf, len, needed, err, errlen)
        });
        let s = s.map_err(|e| self.casa_err("listing columns".into(), &e))?;
        Ok(s.lines().map(str::to_string).collect())
    }

    /// Calls a glue function that copies a string out, growing the buffer once if needed.
    fn get_string(
        &self,
        mut f: impl FnMut(*mut c_char, usize, *mut usize, *mut c_char, usize) -> c_int,
    ) -> Result<String, Vec<u8>> {
        let mut buf = vec![0u8; 256];
        for _ in 0..2 {
            let mut needed = 0usize;
            let mut err = vec![0u8; ERR_LEN];
            let rc = f(
                buf.as_mut_ptr().cast(),
                buf.len(),
                &mut needed,
                err.as_mut_ptr().cast(),
                ERR_LEN,
            );
            if rc < 0 {
                return Err(err);
            }
            if needed < buf.len() {
                return Ok(String::from_utf8_lossy(&buf[..needed]).into_owned());
            }
            buf = vec![0u8; needed + 1];
        }
        Err(b"string grew while reading it\0".to_vec())
    }

    pub(crate) fn get_string_cell(&self, col: &str, row: usize) -> Result<String, MsError> {
        self.require_column(col)?;
        let c = cstr(&self.path, col)?;
        self.get_string(|buf, len, needed, err, errlen| unsafe {
            let _g = casacore_lock();
            ffi::msio_read_string_cell(
                self.ptr.as_ptr(),
                c.as_ptr(),
                row as u64,
                buf,
                len,
                needed,
                err,
                errlen,
            )
        })
        .map_err(|e| self.casa_err(format!("reading {col} row {row}"), &e))
    }

    /// A string field of a column keyword record (`MEASINFO`/`Ref`); `None` when absent.
    pub(crate) fn column_keyword_string(
        &self,
        col: &str,
        kw: &str,
        field: &str,
    ) -> Result<Option<String>, MsError> {
        let (c, k, f) = (
            cstr(&self.path, col)?,
            cstr(&self.path, kw)?,
            cstr(&self.path, field)?,
        );
        let mut found = false;
        let r = self.get_string(|buf, len, needed, err, errlen| {
            let rc = unsafe {
                let _g = casacore_lock();
                ffi::msio_column_keyword_string(
                    self.ptr.as_ptr(),
                    c.as_ptr(),
                    k.as_ptr(),
                    f.as_ptr(),
                    buf,
                    len,
                    needed,
                    err,
                    errlen,
                )
            };
            if rc == 0 {
                unsafe { *needed = 0 };
            }
            found = rc == 1;
            rc
        });
        let s = r.map_err(|e| self.casa_err(format!("reading keyword {kw} of {col}"), &e))?;
        Ok(found.then_some(s))
    }

    /// Shape of one cell in casacore order (fastest axis first); `None` if the cell is undefined.
    pub(crate) fn cell_shape(&self, col: &str, row: usize) -> Result<Option<Vec<usize>>, MsError> {
        self.require_column(col)?;
        let c = cstr(&self.path, col)?;
        let mut shape = [0i64; 8];
        let (mut ndim, mut defined) = (0 as c_int, 0 as c_int);
        let mut err = [0u8; ERR_LEN];
        let rc = unsafe {
            let _g = casacore_lock();
            ffi::msio_cell_shape(
                self.ptr.as_ptr(),
                c.as_ptr(),
                row as u64,
                shape.as_mut_ptr(),
                8,
                &mut ndim,
                &mut defined,
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if rc < 0 {
            return Err(self.casa_err(format!("reading the shape of {col} row {row}"), &err));
        }
        if defined == 0 {
            return Ok(None);
        }
        Ok(Some(
            shape[..ndim as usize]
                .iter()
                .map(|&s| s.max(0) as usize)
                .collect(),
        ))
    }

    fn check_rows(&self, col: &str, rows: Rows) -> Result<(), MsError> {
        let bad = match rows {
            Rows::Range { start, len } => start.checked_add(len).is_none_or(|e| e > self.n_rows),
            Rows::List(l) => l.iter().any(|&r| r >= self.n_rows),
        };
        if bad {
            return Err(MsError::Malformed {
                path: self.path.clone(),
                what: format!("row selection for {col} (beyond {} rows)", self.n_rows),
            });
        }
        Ok(())
    }

    /// Reads a scalar column for `rows` into `out` (resized to the row count).
    pub(crate) fn read_scalar<T: Elem>(
        &self,
        col: &str,
        rows: Rows,
        out: &mut Vec<T>,
    ) -> Result<(), MsError> {
        self.require_column(col)?;
        self.check_rows(col, rows)?;
        let c = cstr(&self.path, col)?;
        out.clear();
        out.resize(rows.len(), T::default());
        let (rp, n, start) = rows.parts();
        let mut err = [0u8; ERR_LEN];
        let rc = unsafe {
            let _g = casacore_lock();
            ffi::msio_read_scalar(
                self.ptr.as_ptr(),
                c.as_ptr(),
                T::CODE,
                rp,
                n,
                start,
                out.as_mut_ptr().cast(),
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if rc < 0 {
            return Err(self.casa_err(format!("reading column {col}"), &err));
        }
        Ok(())
    }

    /// Reads the whole scalar column.
    pub(crate) fn read_scalar_all<T: Elem>(&self, col: &str) -> Result<Vec<T>, MsError> {
        let mut v = Vec::new();
        self.read_scalar(
            col,
            Rows::Range {
                start: 0,
                len: self.n_rows,
            },
            &mut v,
        )?;
        Ok(v)
    }

    /// Reads array cells of `rows`, all of shape `cell` (casacore order), optionally a box
    /// `[start, start + len)` of each; `out` becomes rows × reversed(len), C order.
    pub(crate) fn read_array<T: Elem>(
        &self,
        col: &str,
        rows: Rows,
        cell: &[usize],
        slice: Option<(&[usize], &[usize])>,
        out: &mut Vec<T>,
    ) -> Result<(), MsError> {
        self.require_column(col)?;
        self.check_rows(col, rows)?;
        let c = cstr(&self.path, col)?;
        let (start, len): (Vec<i64>, Vec<i64>) = match slice {
            Some((s, l)) => {
                if s.len() != cell.len()
                    || l.len() != cell.len()
                    || s.iter().zip(l).zip(cell).any(|((&s, &l), &c)| s + l > c)
                {
                    return Err(MsError::Malformed {
                        path: self.path.clone(),
                        what: format!("slice of {col} outside its cell shape {cell:?}"),
                    });
                }
                (
                    s.iter().map(|&x| x as i64).collect(),
                    l.iter().map(|&x| x as i64).collect(),
                )
            }
            None => (
                vec![0; cell.len()],
                cell.iter().map(|&x| x as i64).collect(),
            ),
        };
        let per_row: usize = len.iter().map(|&x| x as usize).product();
        out.clear();
        out.resize(per_row * rows.len(), T::default());
        let (rp, n, rstart) = rows.parts();
        let mut err = [0u8; ERR_LEN];
        let rc = unsafe {
            let _g = casacore_lock();
            ffi::msio_read_array(
                self.ptr.as_ptr(),
                c.as_ptr(),
                T::CODE,
                rp,
                n,
                rstart,
                cell.len() as c_int,
                start.as_ptr(),
                len.as_ptr(),
                slice.is_some() as c_int,
                out.as_mut_ptr().cast(),
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if rc < 0 {
            return Err(self.casa_err(format!("reading column {col}"), &err));
        }
        Ok(())
    }

    fn check_writable(&self, col: &str) -> Result<(), MsError> {
        if self.writable {
            Ok(())
        } else {
            Err(self.casa_err(format!("writing column {col}"), b"table opened read-only\0"))
        }
    }

    /// Writes a scalar column for `rows` from `values` (one per row).
    pub(crate) fn write_scalar<T: Elem>(
        &self,
        col: &str,
        rows: Rows,
        values: &[T],
    ) -> Result<(), MsError> {
        self.check_writable(col)?;
        self.require_column(col)?;
        self.check_rows(col, rows)?;
        assert_eq!(values.len(), rows.len(), "one value per row");
        let c = cstr(&self.path, col)?;
        let (rp, n, start) = rows.parts();
        let mut err = [0u8; ERR_LEN];
        let rc = unsafe {
            let _g = casacore_lock();
            ffi::msio_write_scalar(
                self.ptr.as_ptr(),
                c.as_ptr(),
                T::CODE,
                rp,
                n,
                start,
                values.as_ptr().cast(),
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if rc < 0 {
            return Err(self.casa_err(format!("writing column {col}"), &err));
        }
        Ok(())
    }

    /// Writes whole cells of shape `cell` (casacore order) for `rows` from `values`, laid out
    /// as [`Table::read_array`] returns them (rows × reversed(cell), C order).
    pub(crate) fn write_array<T: Elem>(
        &self,
        col: &str,
        rows: Rows,
        cell: &[usize],
        values: &[T],
    ) -> Result<(), MsError> {
        self.check_writable(col)?;
        self.require_column(col)?;
        self.check_rows(col, rows)?;
        let per_row: usize = cell.iter().product();
        assert_eq!(values.len(), per_row * rows.len(), "one cell per row");
        let c = cstr(&self.path, col)?;
        let len: Vec<i64> = cell.iter().map(|&x| x as i64).collect();
        let (rp, n, start) = rows.parts();
        let mut err = [0u8; ERR_LEN];
        let rc = unsafe {
            let _g = casacore_lock();
            ffi::msio_write_array(
                self.ptr.as_ptr(),
                c.as_ptr(),
                T::CODE,
                rp,
                n,
                start,
                cell.len() as c_int,
                len.as_ptr(),
                values.as_ptr().cast(),
                err.as_mut_ptr().cast(),
                ERR_LEN,
            )
        };
        if rc < 0 {
            return Err(self.casa_err(format!("writing column {col}"), &err));
        }
        Ok(())
    }

    /// Flushes a writable table (and its subtables) to disk, fsync included.
    pub(crate) fn flush(&self) -> Result<(), MsError> {
        let mut err = [0u8; ERR_LEN];
        let rc = unsafe {
            let _g = casacore_lock();
            ffi::msio_flush(self.ptr.as_ptr(), err.as_mut_ptr().cast(), ERR_LEN)
        };
        if rc < 0 {
            return Err(self.casa_err("flushing to disk".into(), &err));
        }
        Ok(())
    }

    /// One array cell, whatever its shape (subtables: CHAN_FREQ, CORR_TYPE, PHASE_DIR, ...).
    /// Returns the shape (casacore order) and the values; an undefined cell is empty.
    pub(crate) fn read_cell<T: Elem>(
        &self,
        col: &str,
        row: usize,
    ) -> Result<(Vec<usize>, Vec<T>), MsError> {
        let Some(shape) = self.cell_shape(col, row)? else {
            return Ok((vec![], vec![]));
        };
        let mut v = Vec::new();
        self.read_array(
            col,
            Rows::Range {
                start: row as u64,
                len: 1,
            },
            &shape,
            None,
            &mut v,
        )?;
        Ok((shape, v))
    }
}

// SAFETY: the handle is only used through calls that hold CASACORE, so casacore never sees two
// threads at once, whichever thread owns or shares the Table.
unsafe impl Send for Table {}
unsafe impl Sync for Table {}

impl Drop for Table {
    fn drop(&mut self) {
        unsafe {
            let _g = casacore_lock();
            ffi::msio_close(self.ptr.as_ptr())
        }
    }
}
