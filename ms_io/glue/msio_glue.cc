// Bulk column reads (and, for the simulator, writes into a copy) for ms_io. rubbl_casatables reads one cell per call (about 2 us each), which
// makes a Measurement Set read 15x slower than python-casacore; casacore's own
// getColumnCells/getColumnRange fill a whole block of rows in one call. This file exposes just
// that, plus the few metadata accessors ms_io needs, behind a plain C ABI.
//
// Every entry point catches all C++ exceptions: an exception must never unwind into Rust.
// Arrays are filled in place (casacore Array with SHARE storage over the Rust buffer), so a
// block of rows costs one copy, from the storage manager into the caller's memory.

#include <casacore/tables/Tables/Table.h>
#include <casacore/tables/Tables/TableLock.h>
#include <casacore/tables/Tables/TableDesc.h>
#include <casacore/tables/Tables/ColumnDesc.h>
#include <casacore/tables/Tables/TableColumn.h>
#include <casacore/tables/Tables/ScalarColumn.h>
#include <casacore/tables/Tables/ArrayColumn.h>
#include <casacore/tables/Tables/TableRecord.h>
#include <casacore/tables/Tables/RefRows.h>
#include <casacore/casa/Arrays/Array.h>
#include <casacore/casa/Arrays/Vector.h>
#include <casacore/casa/Arrays/Slicer.h>
#include <casacore/casa/Arrays/IPosition.h>
#include <casacore/casa/BasicSL/Complex.h>

#include <cstdint>
#include <cstring>
#include <exception>
#include <string>

using namespace casacore;

namespace {

enum ElemType { ET_BOOL = 0, ET_INT = 1, ET_FLOAT = 2, ET_DOUBLE = 3, ET_COMPLEX = 4 };

void set_err(char *err, size_t errlen, const char *msg) {
    if (err == nullptr || errlen == 0) return;
    std::strncpy(err, msg, errlen - 1);
    err[errlen - 1] = '\0';
}

void set_err_current(char *err, size_t errlen) {
    try {
        throw;
    } catch (const std::exception &e) {
        set_err(err, errlen, e.what());
    } catch (...) {
        set_err(err, errlen, "unknown C++ exception");
    }
}

// Copies a string out, reporting the full length so the caller can retry with a larger buffer.
void copy_out(const std::string &s, char *buf, size_t buflen, size_t *needed) {
    *needed = s.size();
    if (buf != nullptr && buflen > 0) {
        size_t n = s.size() < buflen - 1 ? s.size() : buflen - 1;
        std::memcpy(buf, s.data(), n);
        buf[n] = '\0';
    }
}

RefRows make_rows(const uint64_t *rows, uint64_t nrows, uint64_t range_start) {
    if (rows == nullptr) {
        // A contiguous range is given as a slice [start, end] (end inclusive, RefRows' rule).
        return RefRows(rownr_t(range_start), rownr_t(range_start + nrows - 1), rownr_t(1));
    }
    Vector<rownr_t> v(IPosition(1, nrows));
    for (uint64_t i = 0; i < nrows; ++i) v[i] = rows[i];
    // collapse: consecutive row numbers become slices, which the storage managers read fast.
    return RefRows(v, False, True);
}

template <typename T>
void read_scalar(const Table &t, const char *col, const RefRows &rr, uint64_t nrows, void *out) {
    ScalarColumn<T> c(t, col);
    Vector<T> v(IPosition(1, nrows), static_cast<T *>(out), SHARE);
    c.getColumnCells(rr, v, False);
}

template <typename T>
void read_array(const Table &t, const char *col, const RefRows &rr, uint64_t nrows, int ndim,
                const int64_t *cell_start, const int64_t *cell_len, bool sliced, void *out) {
    ArrayColumn<T> c(t, col);
    IPosition shape(ndim + 1);
    for (int i = 0; i < ndim; ++i) shape[i] = cell_len[i];
    shape[ndim] = nrows;
    Array<T> arr(shape, static_cast<T *>(out), SHARE);
    if (sliced) {
        IPosition st(ndim), ln(ndim);
        for (int i = 0; i < ndim; ++i) {
            st[i] = cell_start[i];
            ln[i] = cell_len[i];
        }
        c.getColumnCells(rr, Slicer(st, ln, Slicer::endIsLength), arr, False);
    } else {
        c.getColumnCells(rr, arr, False);
    }
}

template <typename T>
void write_scalar(Table &t, const char *col, const RefRows &rr, uint64_t nrows, const void *in) {
    ScalarColumn<T> c(t, col);
    // SHARE over the caller's buffer: casacore only reads it during a put.
    Vector<T> v(IPosition(1, nrows), static_cast<T *>(const_cast<void *>(in)), SHARE);
    c.putColumnCells(rr, v);
}

template <typename T>
void write_array(Table &t, const char *col, const RefRows &rr, uint64_t nrows, int ndim,
                 const int64_t *cell_len, const void *in) {
    ArrayColumn<T> c(t, col);
    IPosition shape(ndim + 1);
    for (int i = 0; i < ndim; ++i) shape[i] = cell_len[i];
    shape[ndim] = nrows;
    Array<T> arr(shape, static_cast<T *>(const_cast<void *>(in)), SHARE);
    // Whole cells: for a column without a fixed shape, casacore also defines undefined cells.
    c.putColumnCells(rr, arr);
}

}  // namespace

extern "C" {

void *msio_open(const char *path, char *err, size_t errlen) {
    try {
        // AutoNoReadLocking: a reader takes no lock, so nothing is ever written into the
        // input's table.lock; Table::Old opens read-only.
        return new Table(String(path), TableLock(TableLock::AutoNoReadLocking), Table::Old);
    } catch (...) {
        set_err_current(err, errlen);
        return nullptr;
    }
}

// Opens an existing table for update. Only ever called on a copy that ms_io made itself: the
// permanent lock keeps other processes out while we write, and is released on close.
void *msio_open_rw(const char *path, char *err, size_t errlen) {
    try {
        Table *t = new Table(String(path), TableLock(TableLock::PermanentLocking), Table::Update);
        if (!t->isWritable()) {
            delete t;
            set_err(err, errlen, "the table is not writable");
            return nullptr;
        }
        return t;
    } catch (...) {
        set_err_current(err, errlen);
        return nullptr;
    }
}

// Writes everything to disk (subtables too). Errors surface here rather than in the
// destructor, which swallows them.
int msio_flush(void *t, char *err, size_t errlen) {
    try {
        static_cast<Table *>(t)->flush(True, True);
        return 0;
    } catch (...) {
        set_err_current(err, errlen);
        return -1;
    }
}

void msio_close(void *t) {
    try {
        delete static_cast<Table *>(t);
    } catch (...) {
    }
}

uint64_t msio_nrows(void *t) { return static_cast<Table *>(t)->nrow(); }

int msio_has_column(void *t, const char *col) {
    try {
        return static_cast<Table *>(t)->tableDesc().isColumn(String(col)) ? 1 : 0;
    } catch (...) {
        return 0;
    }
}

int msio_column_names(void *t, char *buf, size_t buflen, size_t *needed, char *err, size_t errlen) {
    try {
        Vector<String> names = static_cast<Table *>(t)->tableDesc().columnNames();
        std::string joined;
        for (size_t i = 0; i < names.size(); ++i) {
            if (i) joined += '\n';
            joined += names[i];
        }
        copy_out(joined, buf, buflen, needed);
        return 0;
    } catch (...) {
        set_err_current(err, errlen);
        return -1;
    }
}

// Shape of one cell in casacore (Fortran) order; ndim = 0 for a scalar column.
int msio_cell_shape(void *t, const char *col, uint64_t row, int64_t *shape, int maxdim, int *ndim,
                    int *defined, char *err, size_t errlen) {
    try {
        const Table &tab = *static_cast<Table *>(t);
        TableColumn c(tab, col);
        if (c.columnDesc().isScalar()) {
            *ndim = 0;
            *defined = 1;
            return 0;
        }
        if (row >= tab.nrow() || !c.isDefined(row)) {
            *ndim = 0;
            *defined = 0;
            return 0;
        }
        IPosition s = c.shape(row);
        if ((int)s.size() > maxdim) {
            set_err(err, errlen, "cell has too many dimensions");
            return -1;
        }
        *ndim = s.size();
        *defined = 1;
        for (size_t i = 0; i < s.size(); ++i) shape[i] = s[i];
        return 0;
    } catch (...) {
        set_err_current(err, errlen);
        return -1;
    }
}

// Reads nrows values of a scalar column: the rows listed in `rows`, or, when `rows` is null, the
// range starting at range_start.
int msio_read_scalar(void *t, const char *col, int ty, const uint64_t *rows, uint64_t nrows,
                     uint64_t range_start, void *out, char *err, size_t errlen) {
    try {
        if (nrows == 0) return 0;
        const Table &tab = *static_cast<Table *>(t);
        RefRows rr = make_rows(rows, nrows, range_start);
        switch (ty) {
        case ET_BOOL: read_scalar<Bool>(tab, col, rr, nrows, out); break;
        case ET_INT: read_scalar<Int>(tab, col, rr, nrows, out); break;
        case ET_FLOAT: read_scalar<Float>(tab, col, rr, nrows, out); break;
        case ET_DOUBLE: read_scalar<Double>(tab, col, rr, nrows, out); break;
        default: set_err(err, errlen, "unsupported element type"); return -1;
        }
        return 0;
    } catch (...) {
        set_err_current(err, errlen);
        return -1;
    }
}

// Reads the cells of an array column for nrows rows into `out`, laid out (row, axis n-1, ...,
// axis 0) in C order. cell_len is the (sliced) cell shape in casacore order; when sliced != 0,
// cell_start/cell_len select a box of every cell.
int msio_read_array(void *t, const char *col, int ty, const uint64_t *rows, uint64_t nrows,
                    uint64_t range_start, int ndim, const int64_t *cell_start,
                    const int64_t *cell_len, int sliced, void *out, char *err, size_t errlen) {
    try {
        if (nrows == 0) return 0;
        const Table &tab = *static_cast<Table *>(t);
        RefRows rr = make_rows(rows, nrows, range_start);
        bool s = sliced != 0;
        switch (ty) {
        case ET_BOOL: read_array<Bool>(tab, col, rr, nrows, ndim, cell_start, cell_len, s, out); break;
        case ET_INT: read_array<Int>(tab, col, rr, nrows, ndim, cell_start, cell_len, s, out); break;
        case ET_FLOAT: read_array<Float>(tab, col, rr, nrows, ndim, cell_start, cell_len, s, out); break;
        case ET_DOUBLE: read_array<Double>(tab, col, rr, nrows, ndim, cell_start, cell_len, s, out); break;
        case ET_COMPLEX: read_array<Complex>(tab, col, rr, nrows, ndim, cell_start, cell_len, s, out); break;
        default: set_err(err, errlen, "unsupported element type"); return -1;
        }
        return 0;
    } catch (...) {
        set_err_current(err, errlen);
        return -1;
    }
}

int msio_read_string_cell(void *t, const char *col, uint64_t row, char *buf, size_t buflen,
                          size_t *needed, char *err, size_t errlen) {
    try {
        ScalarColumn<String> c(*static_cast<Table *>(t), col);
        copy_out(c(row), buf, buflen, needed);
        return 0;
    } catch (...) {
        set_err_current(err, errlen);
        return -1;
    }
}

// A string field of a column keyword record (e.g. MEASINFO / Ref). Returns 1 when found, 0 when
// the keyword or field is absent, -1 on error.
int msio_column_keyword_string(void *t, const char *col, const char *kw, const char *field,
                               char *buf, size_t buflen, size_t *needed, char *err,
                               size_t errlen) {
    try {
        TableColumn c(*static_cast<Table *>(t), col);
        const TableRecord &kws = c.keywordSet();
        if (!kws.isDefined(kw) || kws.dataType(kw) != TpRecord) return 0;
        const TableRecord &sub = kws.subRecord(kw);
        if (!sub.isDefined(field) || sub.dataType(field) != TpString) return 0;
        copy_out(sub.asString(field), buf, buflen, needed);
        return 1;
    } catch (...) {
        set_err_current(err, errlen);
        return -1;
    }
}

// Writes nrows values of a scalar column (rows as for msio_read_scalar).
int msio_write_scalar(void *t, const char *col, int ty, const uint64_t *rows, uint64_t nrows,
                      uint64_t range_start, const void *in, char *err, size_t errlen) {
    try {
        if (nrows == 0) return 0;
        Table &tab = *static_cast<Table *>(t);
        RefRows rr = make_rows(rows, nrows, range_start);
        switch (ty) {
        case ET_BOOL: write_scalar<Bool>(tab, col, rr, nrows, in); break;
        case ET_INT: write_scalar<Int>(tab, col, rr, nrows, in); break;
        case ET_FLOAT: write_scalar<Float>(tab, col, rr, nrows, in); break;
        case ET_DOUBLE: write_scalar<Double>(tab, col, rr, nrows, in); break;
        default: set_err(err, errlen, "unsupported element type"); return -1;
        }
        return 0;
    } catch (...) {
        set_err_current(err, errlen);
        return -1;
    }
}

// Writes whole cells of an array column for nrows rows from `in`, laid out as msio_read_array
// returns them; cell_len is the cell shape in casacore order.
int msio_write_array(void *t, const char *col, int ty, const uint64_t *rows, uint64_t nrows,
                     uint64_t range_start, int ndim, const int64_t *cell_len, const void *in,
                     char *err, size_t errlen) {
    try {
        if (nrows == 0) return 0;
        Table &tab = *static_cast<Table *>(t);
        RefRows rr = make_rows(rows, nrows, range_start);
        switch (ty) {
        case ET_BOOL: write_array<Bool>(tab, col, rr, nrows, ndim, cell_len, in); break;
        case ET_INT: write_array<Int>(tab, col, rr, nrows, ndim, cell_len, in); break;
        case ET_FLOAT: write_array<Float>(tab, col, rr, nrows, ndim, cell_len, in); break;
        case ET_DOUBLE: write_array<Double>(tab, col, rr, nrows, ndim, cell_len, in); break;
        case ET_COMPLEX: write_array<Complex>(tab, col, rr, nrows, ndim, cell_len, in); break;
        default: set_err(err, errlen, "unsupported element type"); return -1;
        }
        return 0;
    } catch (...) {
        set_err_current(err, errlen);
        return -1;
    }
}

}  // extern "C"
