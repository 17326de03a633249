//! The UVFITS reader: the UVFITS and MS copies of TDEM0003 give the same Stokes I
//! visibilities, weights, uvw, antennas and times row by row; the EHT M87 file reads with
//! sensible metadata; broken files give one clear error naming the file, with the input
//! byte-identical afterwards.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::{ms, tree_hash};
use ms_io::{
    Correlation, DataColumn, FieldSelector, MeasurementSet, MsError, Selection, UvfitsFile,
    VisChunk, VisFile,
};

fn tdem_uvfits() -> PathBuf {
    ms("vla_tdem0003.uvfits")
}

fn eht() -> PathBuf {
    ms("eht_m87_2017/SR1_M87_2017_096_lo_hops_netcal_StokesI.uvfits")
}

/// Rows of all chunks: (time, a1, a2, uvw, vis per channel, weight per channel), by spw.
type Row = (
    f64,
    i32,
    i32,
    [f64; 3],
    Vec<num_complex::Complex<f32>>,
    Vec<f32>,
);

fn rows(chunks: &[VisChunk]) -> BTreeMap<usize, Vec<Row>> {
    let mut out: BTreeMap<usize, Vec<Row>> = BTreeMap::new();
    for c in chunks {
        let nc = c.n_chan();
        for r in 0..c.n_rows() {
            out.entry(c.spw).or_default().push((
                c.time[r],
                c.antenna1[r],
                c.antenna2[r],
                c.uvw[r],
                c.vis[r * nc..(r + 1) * nc].to_vec(),
                c.weight[r * nc..(r + 1) * nc].to_vec(),
            ));
        }
    }
    out
}

#[test]
fn tdem0003_uvfits_equals_ms() {
    let uv_path = tdem_uvfits();
    let before = tree_hash(&uv_path);
    let ms_file = MeasurementSet::open(ms("vla_tdem0003.ms")).unwrap();
    let uv = VisFile::open(&uv_path).unwrap();
    assert!(matches!(uv, VisFile::Uvfits(_)));
    assert!(matches!(
        VisFile::open(ms("vla_tdem0003.ms")).unwrap(),
        VisFile::Ms(_)
    ));

    let (mi, ui) = (ms_file.info(), uv.info());
    assert_eq!(ui.n_rows, mi.n_rows);
    assert_eq!(ui.telescope, "EVLA");
    assert_eq!(ui.observer, mi.observer);
    assert_eq!(ui.spws.len(), mi.spws.len());
    for (a, b) in ui.spws.iter().zip(&mi.spws) {
        assert_eq!(a.chan_freq.len(), b.chan_freq.len());
        for (x, y) in a.chan_freq.iter().zip(&b.chan_freq) {
            assert!((x - y).abs() < 1e-3, "channel frequency {x} vs {y}");
        }
        assert!((a.ref_freq - b.ref_freq).abs() < 1e-3);
    }
    use Correlation::*;
    // RR LL RL LR in the file; Stokes I uses RR and LL in both.
    assert_eq!(ui.polarizations, vec![vec![RR, LL, RL, LR]]);
    assert_eq!(ui.fields.len(), 1);
    assert_eq!(ui.fields[0].name, mi.fields[0].name);
    let (pu, pm) = (ui.fields[0].phase_dir, mi.fields[0].phase_dir);
    assert!((pu.ra - pm.ra).abs() < 1e-10 && (pu.dec - pm.dec).abs() < 1e-10);
    assert_eq!(pu.frame, pm.frame);
    // Antenna ids are the UVFITS numbers − 1, as in the MS written from it (whose names are
    // those numbers: "1" is the AN table's W09, station number 1).
    assert_eq!(ui.antennas.len(), mi.antennas.len());
    assert_eq!(ui.antennas[0].name, "W09");
    assert_eq!(
        ui.antennas.iter().filter(|a| !a.name.is_empty()).count(),
        19
    );
    for (a, b) in ui.antennas.iter().zip(&mi.antennas) {
        if !a.name.is_empty() {
            for k in 0..3 {
                assert!((a.position[k] - b.position[k]).abs() < 1e-3);
            }
        }
    }
    assert!((ui.time_range.0 - mi.time_range.0).abs() < 0.01);
    assert!((ui.time_range.1 - mi.time_range.1).abs() < 0.01);

    let sel = Selection::default();
    let vm = ms_file.read(&sel).unwrap();
    let vu = uv.read(&sel).unwrap();
    assert_eq!(vu.stats, vm.stats);
    let (rm, ru) = (rows(&vm.chunks), rows(&vu.chunks));
    assert_eq!(rm.keys().collect::<Vec<_>>(), ru.keys().collect::<Vec<_>>());
    let (mut d_vis, mut d_w, mut d_uvw, mut d_uvw_rel, mut d_t) = (0f64, 0f64, 0f64, 0f64, 0f64);
    let mut compared = 0usize;
    for (spw, ur) in &ru {
        let mr = &rm[spw];
        assert_eq!(ur.len(), mr.len());
        // Rows matched by (a1, a2, nearest time): robust to a different row order.
        let mut by_pair: BTreeMap<(i32, i32), Vec<usize>> = BTreeMap::new();
        for (i, r) in mr.iter().enumerate() {
            by_pair.entry((r.1, r.2)).or_default().push(i);
        }
        let mut used = vec![false; mr.len()];
        for u in ur {
            let cands = by_pair
                .get(&(u.1, u.2))
                .unwrap_or_else(|| panic!("baseline {}-{} not in the MS", u.1, u.2));
            let &j = cands
                .iter()
                .min_by(|&&a, &&b| {
                    (mr[a].0 - u.0)
                        .abs()
                        .partial_cmp(&(mr[b].0 - u.0).abs())
                        .unwrap()
                })
                .unwrap();
            assert!(!used[j], "MS row {j} matched twice");
            used[j] = true;
            let m = &mr[j];
            d_t = d_t.max((m.0 - u.0).abs());
            for k in 0..3 {
                d_uvw = d_uvw.max((m.3[k] - u.3[k]).abs());
                d_uvw_rel = d_uvw_rel.max((m.3[k] - u.3[k]).abs() / m.3[k].abs().max(1.0));
            }
            for c in 0..u.4.len() {
                d_w = d_w.max((m.5[c] - u.5[c]).abs() as f64);
                if m.5[c] > 0.0 {
                    d_vis = d_vis.max((m.4[c] - u.4[c]).norm() as f64);
                    compared += 1;
                }
            }
        }
    }
    println!(
        "TDEM0003 UVFITS vs MS: {compared} samples; max |Δvis| {d_vis:e} Jy, max |Δweight| \
         {d_w:e}, max |Δuvw| {d_uvw:e} m (relative {d_uvw_rel:e}), max |Δtime| {d_t:e} s"
    );
    assert_eq!(compared, 87040);
    assert!(d_vis <= 1e-7, "{d_vis}");
    assert!(d_w == 0.0, "{d_w}");
    assert!(d_uvw_rel <= 1e-6, "{d_uvw_rel}");
    assert!(d_t < 0.01, "{d_t}");

    // The same rows in the same order too (both keep the file's order).
    let (m0, u0) = (&rm[&0], &ru[&0]);
    assert!(m0.iter().zip(u0).all(|(m, u)| (m.1, m.2) == (u.1, u.2)));

    // Selections behave as on the MS: channel range, small chunks, field by name.
    let sel = Selection {
        channels: Some((10, 20)),
        chunk_rows: 97,
        field: Some(FieldSelector::Name("j1008+0730".into())),
        spws: Some(vec![0]),
        ..Default::default()
    };
    let (cm, cu) = (ms_file.read(&sel).unwrap(), uv.read(&sel).unwrap());
    assert_eq!(cm.stats, cu.stats);
    assert_eq!(cm.chunks.len(), cu.chunks.len());
    for (a, b) in cm.chunks.iter().zip(&cu.chunks) {
        assert_eq!(a.freq.len(), 10);
        assert_eq!(a.antenna1, b.antenna1);
        assert_eq!(a.weight, b.weight);
    }
    drop(uv);
    assert_eq!(before, tree_hash(&uv_path), "reading changed the input");
}

#[test]
fn tdem0003_uvfits_selection_errors() {
    let uv = UvfitsFile::open(tdem_uvfits()).unwrap();
    let err = |sel: Selection| {
        let e = uv.read(&sel).unwrap_err();
        assert!(e.to_string().contains("vla_tdem0003.uvfits"), "{e}");
        e
    };
    let e = err(Selection {
        spws: Some(vec![1]),
        ..Default::default()
    });
    assert!(matches!(e, MsError::SpwOutOfRange { n_spw: 1, .. }), "{e}");
    let e = err(Selection {
        channels: Some((60, 70)),
        ..Default::default()
    });
    assert!(matches!(e, MsError::BadChannelRange { .. }), "{e}");
    let e = err(Selection {
        field: Some(FieldSelector::Id(1)),
        ..Default::default()
    });
    assert!(matches!(e, MsError::UnknownField { .. }), "{e}");
    let e = err(Selection {
        column: DataColumn::CorrectedData,
        ..Default::default()
    });
    assert!(matches!(e, MsError::MissingColumn { .. }), "{e}");
}

#[test]
fn eht_m87_reads() {
    let path = eht();
    let before = tree_hash(&path);
    let uv = VisFile::open(&path).unwrap();
    let info = uv.info();
    let mut names: Vec<&str> = info.antennas.iter().map(|a| a.name.as_str()).collect();
    println!("EHT stations: {names:?}, telescope {:?}", info.telescope);
    names.sort();
    assert_eq!(
        names,
        ["AA", "AP", "AZ", "JC", "LM", "PV", "SM", "SR"],
        "the AN table's 8 stations (SR: the SMA reference antenna)"
    );
    assert_eq!(info.fields.len(), 1);
    assert_eq!(info.fields[0].name, "M87");
    let d = info.fields[0].phase_dir;
    assert!((d.ra.to_degrees() - 187.7059307575226).abs() < 1e-9);
    assert!((d.dec.to_degrees() - 12.39112323919932).abs() < 1e-9);
    assert_eq!(info.n_rows, 8645);
    assert_eq!(info.spws.len(), 1);
    let f = info.spws[0].chan_freq[0];
    assert!((f - 227.0707e9).abs() < 1e6, "{f}");
    // 2017 April 6 is MJD 57849.
    let (t0, t1) = info.time_range;
    assert!(
        t0 / 86400.0 >= 57849.0 && t1 / 86400.0 < 57850.5,
        "{t0} {t1}"
    );

    let v = uv.read(&Selection::default()).unwrap();
    let (mut uv_max, mut n_rows) = (0f64, 0usize);
    for c in &v.chunks {
        n_rows += c.n_rows();
        for (r, u) in c.uvw.iter().enumerate() {
            if c.weight[r] > 0.0 {
                uv_max = uv_max.max(u[0].hypot(u[1]) * c.freq[0] / 299_792_458.0);
            }
        }
        assert!(c.antenna1.iter().chain(&c.antenna2).all(|&a| a < 8));
        assert!(c.weight.iter().all(|w| w.is_finite() && *w >= 0.0));
    }
    println!(
        "EHT M87: {} rows, {} usable of {} samples, {} autocorrelations, longest baseline {:.3} Gλ",
        n_rows,
        v.stats.used,
        v.stats.samples,
        v.stats.autocorrelations,
        uv_max / 1e9
    );
    assert_eq!(n_rows + v.stats.autocorrelations, 8645);
    assert!(v.stats.used > 8000, "{:?}", v.stats);
    assert!((8.0e9..8.7e9).contains(&uv_max), "{uv_max}");
    drop(uv);
    assert_eq!(before, tree_hash(&path), "reading changed the input");
}

/// A copy of `src` with the header cards `key = value` replaced (the primary header only).
fn patched(src: &Path, dir: &Path, cards: &[(&str, &str)]) -> PathBuf {
    let mut b = std::fs::read(src).unwrap();
    for (key, value) in cards {
        let card = format!("{key:<8}= {value:>20}");
        let card = format!("{card:<80}");
        let at = (0..b.len() / 80)
            .map(|i| i * 80)
            .find(|&o| b[o..o + 8] == *format!("{key:<8}").as_bytes())
            .unwrap_or_else(|| panic!("no card {key}"));
        b[at..at + 80].copy_from_slice(card.as_bytes());
    }
    let to = dir.join(format!("patched_{}.uvfits", cards[0].0));
    std::fs::write(&to, b).unwrap();
    to
}

/// Opens (and reads) `path` through [`VisFile`]; checks the error names the file and that
/// the file did not change.
fn fails(path: &Path) -> MsError {
    let before = tree_hash(path);
    let r = VisFile::open(path).and_then(|v| v.read(&Selection::default()).map(|_| ()));
    let e = r.expect_err("expected an error");
    assert_eq!(before, tree_hash(path), "{} changed", path.display());
    let msg = e.to_string();
    println!("{msg}");
    assert!(
        msg.contains(&path.display().to_string()),
        "the message does not name the file: {msg}"
    );
    e
}

#[test]
fn bad_uvfits_inputs() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let src = tdem_uvfits();
    let bytes = std::fs::read(&src).unwrap();

    // Cut in the middle of the random groups.
    let cut = d.join("cut.uvfits");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let e = fails(&cut);
    assert!(matches!(e, MsError::Truncated { .. }), "{e}");
    // Cut inside the primary header.
    let cut = d.join("cut_header.uvfits");
    std::fs::write(&cut, &bytes[..1000]).unwrap();
    let e = fails(&cut);
    assert!(matches!(e, MsError::Truncated { .. }), "{e}");
    // Cut inside the AN table: the file's tables are part of it.
    let cut = d.join("cut_table.uvfits");
    std::fs::write(&cut, &bytes[..bytes.len() - 3000]).unwrap();
    let e = fails(&cut);
    assert!(matches!(e, MsError::Truncated { .. }), "{e}");

    let text = d.join("notes.uvfits");
    std::fs::write(&text, b"these are not visibilities\n").unwrap();
    let e = fails(&text);
    assert!(matches!(e, MsError::NotVisibilities { .. }), "{e}");
    let empty = d.join("empty.uvfits");
    std::fs::write(&empty, b"").unwrap();
    let e = fails(&empty);
    assert!(matches!(e, MsError::NotVisibilities { .. }), "{e}");

    // A FITS image, not random groups.
    let mut img = String::new();
    for c in [
        "SIMPLE  =                    T",
        "BITPIX  =                  -32",
        "NAXIS   =                    2",
        "NAXIS1  =                    4",
        "NAXIS2  =                    4",
        "END",
    ] {
        img.push_str(&format!("{c:<80}"));
    }
    let mut img = img.into_bytes();
    img.resize(2880 * 2, 0);
    let image = d.join("image.fits");
    std::fs::write(&image, &img).unwrap();
    let e = fails(&image);
    assert!(matches!(e, MsError::NotRandomGroups { .. }), "{e}");

    let e = fails(&patched(&src, d, &[("BITPIX", "8")]));
    assert!(
        matches!(e, MsError::UnsupportedBitpix { bitpix: 8, .. }),
        "{e}"
    );
    let e = fails(&patched(&src, d, &[("CRVAL3", "-9.0")]));
    assert!(matches!(e, MsError::UnknownStokes { .. }), "{e}");
    let e = fails(&patched(&src, d, &[("CTYPE2", "'COMPLEY '")]));
    assert!(matches!(e, MsError::UnsupportedUvfits { .. }), "{e}");
    let e = fails(&patched(&eht(), d, &[("CTYPE4", "'FREX    '")]));
    assert!(
        matches!(e, MsError::MissingAxis { axis: "FREQ", .. }),
        "{e}"
    );
    let e = fails(&patched(&src, d, &[("PTYPE6", "'NOTBASEL'")]));
    assert!(
        matches!(
            e,
            MsError::MissingParameter {
                name: "BASELINE",
                ..
            }
        ),
        "{e}"
    );
    // Cross hands only (every Stokes axis element RL): no Stokes I.
    let e = fails(&patched(&src, d, &[("CRVAL3", "-3.0"), ("CDELT3", "0.0")]));
    assert!(matches!(e, MsError::UnsupportedCorrelations { .. }), "{e}");

    // A MS-only use of a UVFITS file says so.
    let e = VisFile::open(&src)
        .unwrap()
        .into_ms("simulate")
        .unwrap_err();
    assert!(matches!(e, MsError::NeedsMeasurementSet { .. }), "{e}");
}

// ---------------------------------------------------------------------------------------------
// Synthetic files for what the shipped files do not exercise: integer BITPIX with BSCALE,
// wavelengths, SUBARRAY/ANTENNA1/ANTENNA2, the large-antenna BASELINE coding, two IFs from the
// FQ table, sources from the SU table, DATE + _DATE, Stokes I, no weight on the COMPLEX axis.
// ---------------------------------------------------------------------------------------------

fn card(k: &str, v: &str) -> String {
    let c = format!("{k:<8}= {v:>20}");
    format!("{c:<80}")
}

fn s(v: &str) -> String {
    format!("'{v:<8}'")
}

/// Cards, END, padded with blanks to 2880 bytes.
fn header(cards: &[String]) -> Vec<u8> {
    let mut h: String = cards.concat();
    h.push_str(&format!("{:<80}", "END"));
    let mut b = h.into_bytes();
    b.resize(b.len().div_ceil(2880) * 2880, b' ');
    b
}

fn pad(mut b: Vec<u8>) -> Vec<u8> {
    b.resize(b.len().div_ceil(2880) * 2880, 0);
    b
}

/// A BINTABLE extension: columns (TTYPE, TFORM) and rows already encoded big-endian.
fn bintable(name: &str, cols: &[(&str, &str)], rows: &[Vec<u8>], extra: &[String]) -> Vec<u8> {
    let mut cards = vec![
        card("XTENSION", &s("BINTABLE")),
        card("BITPIX", "8"),
        card("NAXIS", "2"),
        card("NAXIS1", &rows[0].len().to_string()),
        card("NAXIS2", &rows.len().to_string()),
        card("PCOUNT", "0"),
        card("GCOUNT", "1"),
        card("TFIELDS", &cols.len().to_string()),
        card("EXTNAME", &format!("'{name}'")),
    ];
    for (i, (t, f)) in cols.iter().enumerate() {
        cards.push(card(&format!("TTYPE{}", i + 1), &format!("'{t}'")));
        cards.push(card(&format!("TFORM{}", i + 1), &s(f)));
    }
    cards.extend_from_slice(extra);
    let mut out = header(&cards);
    out.extend(pad(rows.concat()));
    out
}

fn text(v: &str, n: usize) -> Vec<u8> {
    let mut b = v.as_bytes().to_vec();
    b.resize(n, b' ');
    b
}

#[test]
fn synthetic_int16_two_ifs_sources_wavelengths() {
    // Axes: COMPLEX 3, STOKES 2 (RR LL), FREQ 3, IF 2, RA 1, DEC 1. BITPIX 16, BSCALE 0.5.
    let ptypes = [
        ("UU-L", 10.0, 0.0),
        ("VV-L", 10.0, 0.0),
        ("WW-L", 10.0, 0.0),
        ("DATE", 1.0, 2_458_000.5),
        ("_DATE", 10.0 / 86400.0, 0.0),
        ("SUBARRAY", 1.0, 0.0),
        ("ANTENNA1", 1.0, 0.0),
        ("ANTENNA2", 1.0, 0.0),
        ("SOURCE", 1.0, 0.0),
        ("FREQSEL", 1.0, 0.0),
        ("INTTIM", 1.0, 0.0),
    ];
    let mut cards = vec![
        card("SIMPLE", "T"),
        card("BITPIX", "16"),
        card("NAXIS", "7"),
        card("NAXIS1", "0"),
        card("NAXIS2", "3"),
        card("NAXIS3", "2"),
        card("NAXIS4", "3"),
        card("NAXIS5", "2"),
        card("NAXIS6", "1"),
        card("NAXIS7", "1"),
        card("EXTEND", "T"),
        card("GROUPS", "T"),
        card("PCOUNT", &ptypes.len().to_string()),
        card("GCOUNT", "3"),
        card("BSCALE", "0.5"),
        card("BZERO", "0.0"),
        card("OBJECT", &s("MULTI")),
        card("TELESCOP", &s("SYNTH")),
        card("EPOCH", "2000.0"),
    ];
    for (k, (ct, val, del)) in [
        ("COMPLEX", 1.0, 1.0),
        ("STOKES", -1.0, -1.0),
        ("FREQ", 1e9, 1e6),
        ("IF", 1.0, 1.0),
        ("RA---SIN", 10.0, 1.0),
        ("DEC--SIN", 20.0, 1.0),
    ]
    .iter()
    .enumerate()
    {
        let n = k + 2;
        cards.push(card(&format!("CTYPE{n}"), &s(ct)));
        cards.push(card(&format!("CRVAL{n}"), &format!("{val:E}")));
        cards.push(card(&format!("CDELT{n}"), &format!("{del:E}")));
        cards.push(card(&format!("CRPIX{n}"), "1.0"));
    }
    for (i, (p, sc, z)) in ptypes.iter().enumerate() {
        cards.push(card(&format!("PTYPE{}", i + 1), &s(p)));
        cards.push(card(&format!("PSCAL{}", i + 1), &format!("{sc:E}")));
        cards.push(card(&format!("PZERO{}", i + 1), &format!("{z:E}")));
    }
    let mut file = header(&cards);
    // Groups: (a1, a2, source): a cross-correlation of source 1, one of source 2, and an
    // autocorrelation of source 2.
    let groups = [(1i16, 2i16, 1i16), (2, 3, 2), (2, 2, 2)];
    let mut data = Vec::new();
    for (g, &(a1, a2, src)) in groups.iter().enumerate() {
        let params = [100, -50, 0, 0, g as i16, 1, a1, a2, src, 1, 10];
        for p in params {
            data.extend(p.to_be_bytes());
        }
        for i in 0..2i16 {
            for c in 0..3i16 {
                for st in 0..2i16 {
                    let re = (g as i16 + 1) * 10 + i * 3 + c;
                    // Group 0, IF 1, channel 2, LL: flagged (negative weight).
                    let w = if (g, i, c, st) == (0, 1, 2, 1) { -2 } else { 2 };
                    for v in [re, st, w] {
                        data.extend(v.to_be_bytes());
                    }
                }
            }
        }
    }
    file.extend(pad(data));
    let be = |v: f64| v.to_be_bytes().to_vec();
    let be32 = |v: f32| v.to_be_bytes().to_vec();
    file.extend(bintable(
        "AIPS FQ",
        &[
            ("FRQSEL", "1J"),
            ("IF FREQ", "2D"),
            ("CH WIDTH", "2E"),
            ("TOTAL BANDWIDTH", "2E"),
            ("SIDEBAND", "2J"),
        ],
        &[[
            1i32.to_be_bytes().to_vec(),
            be(0.0),
            be(5e6),
            be32(1e6),
            be32(-1e6),
            be32(3e6),
            be32(3e6),
            1i32.to_be_bytes().to_vec(),
            (-1i32).to_be_bytes().to_vec(),
        ]
        .concat()],
        &[card("NO_IF", "2")],
    ));
    let an_rows: Vec<Vec<u8>> = (1..=3i32)
        .map(|n| {
            [
                text(&format!("ST{n}"), 8),
                be(n as f64),
                be(2.0 * n as f64),
                be(3.0 * n as f64),
                n.to_be_bytes().to_vec(),
            ]
            .concat()
        })
        .collect();
    file.extend(bintable(
        "AIPS AN",
        &[("ANNAME", "8A"), ("STABXYZ", "3D"), ("NOSTA", "1J")],
        &an_rows,
        &[card("ARRAYX", "100.0")],
    ));
    let su_rows: Vec<Vec<u8>> = [(1i32, "SRC_A", 10.0), (2, "SRC_B", 30.0)]
        .iter()
        .map(|&(id, name, ra)| {
            [
                id.to_be_bytes().to_vec(),
                text(name, 16),
                be(ra),
                be(-5.0),
                be(2000.0),
            ]
            .concat()
        })
        .collect();
    file.extend(bintable(
        "AIPS SU",
        &[
            ("ID. NO.", "1J"),
            ("SOURCE", "16A"),
            ("RAEPO", "1D"),
            ("DECEPO", "1D"),
            ("EPOCH", "1D"),
        ],
        &su_rows,
        &[],
    ));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synth.uvfits");
    std::fs::write(&path, &file).unwrap();

    let uv = VisFile::open(&path).unwrap();
    let info = uv.info();
    assert_eq!(info.telescope, "SYNTH");
    assert_eq!(info.spws.len(), 2);
    assert_eq!(info.spws[0].chan_freq, vec![1e9, 1.001e9, 1.002e9]);
    assert_eq!(info.spws[1].chan_freq, vec![1.005e9, 1.004e9, 1.003e9]);
    assert_eq!(info.spws[1].ref_freq, 1.005e9);
    assert_eq!(
        info.fields
            .iter()
            .map(|f| f.name.as_str())
            .collect::<Vec<_>>(),
        ["SRC_A", "SRC_B"]
    );
    assert!((info.fields[1].phase_dir.ra.to_degrees() - 30.0).abs() < 1e-12);
    assert_eq!(uv.rows_per_field().unwrap(), vec![1, 2]);
    assert_eq!(info.antennas.len(), 3);
    assert_eq!(info.antennas[2].name, "ST3");
    assert_eq!(info.antennas[2].position, [103.0, 6.0, 9.0]);
    let t0 = 58_000.0 * 86400.0;
    assert_eq!(info.time_range, (t0, t0 + 20.0));

    // Field 0 by default: group 0, both IFs.
    let v = uv.read(&Selection::default()).unwrap();
    assert_eq!(v.chunks.len(), 2);
    let c = &v.chunks[1];
    assert_eq!((c.spw, c.antenna1[0], c.antenna2[0]), (1, 0, 1));
    assert_eq!(c.time[0], t0);
    // 1000 and −500 wavelengths at 1 GHz.
    let lambda = 299_792_458.0 / 1e9;
    assert!((c.uvw[0][0] - 1000.0 * lambda).abs() < 1e-9);
    assert!((c.uvw[0][1] + 500.0 * lambda).abs() < 1e-9);
    // I = (RR + LL) / 2 of (re, 0) and (re, 0.5); weight 2 min(1, 1); LL flagged → 0.
    for ch in 0..3 {
        let re = (10 + 3 + ch) as f32 * 0.5;
        assert_eq!(c.vis[ch], num_complex::Complex::new(re, 0.25));
    }
    assert_eq!(c.weight, vec![2.0, 2.0, 0.0]);
    assert_eq!(v.stats.used, 5);

    // Field by name: group 1; group 2 is an autocorrelation, counted once per IF.
    let sel = Selection {
        field: Some(FieldSelector::Name("src_b".into())),
        spws: Some(vec![1]),
        ..Default::default()
    };
    let v = uv.read(&sel).unwrap();
    assert_eq!((v.stats.rows, v.stats.autocorrelations), (1, 1));
    let c = &v.chunks[0];
    assert_eq!((c.antenna1[0], c.antenna2[0]), (1, 2));
    assert_eq!(c.time[0], t0 + 10.0);
    assert_eq!(c.vis[0].re, (20 + 3) as f32 * 0.5);
}

#[test]
fn synthetic_f64_stokes_i_large_antenna_numbers() {
    // Axes: COMPLEX 2 (no weight), STOKES 1 (I), FREQ 1, RA, DEC; no IF axis, no tables.
    let mut cards = vec![
        card("SIMPLE", "T"),
        card("BITPIX", "-64"),
        card("NAXIS", "6"),
        card("NAXIS1", "0"),
        card("NAXIS2", "2"),
        card("NAXIS3", "1"),
        card("NAXIS4", "1"),
        card("NAXIS5", "1"),
        card("NAXIS6", "1"),
        card("GROUPS", "T"),
        card("PCOUNT", "5"),
        card("GCOUNT", "2"),
        card("EQUINOX", "1950.0"),
    ];
    for (k, (ct, val)) in [
        ("COMPLEX", 1.0),
        ("STOKES", 1.0),
        ("FREQ", 2e9),
        ("RA", 1.0),
        ("DEC", 2.0),
    ]
    .iter()
    .enumerate()
    {
        let n = k + 2;
        cards.push(card(&format!("CTYPE{n}"), &s(ct)));
        cards.push(card(&format!("CRVAL{n}"), &format!("{val:E}")));
    }
    for (i, p) in ["UU---SIN", "VV---SIN", "WW---SIN", "BASELINE", "DATE"]
        .iter()
        .enumerate()
    {
        cards.push(card(&format!("PTYPE{}", i + 1), &s(p)));
    }
    let mut file = header(&cards);
    let mut data = Vec::new();
    // 2048 · 300 + 2 + 65536 (antennas 300 and 2) and 256 · 1 + 2 (antennas 1 and 2).
    for (g, bl) in [(0, 2048.0 * 300.0 + 2.0 + 65536.0), (1, 258.0)] {
        for v in [
            1e-6,
            2e-6,
            3e-6,
            bl,
            2_458_000.5 + g as f64 / 8.0,
            4.0,
            -1.0,
        ] {
            data.extend(f64::to_be_bytes(v));
        }
    }
    file.extend(pad(data));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("synth64.uvfits");
    std::fs::write(&path, &file).unwrap();
    let uv = UvfitsFile::open(&path).unwrap();
    assert_eq!(uv.info().polarizations, vec![vec![Correlation::Other(1)]]);
    assert_eq!(uv.info().fields[0].phase_dir.frame, ms_io::Frame::B1950);
    let v = uv.read(&Selection::default()).unwrap();
    let c = &v.chunks[0];
    assert_eq!(c.antenna1, vec![299, 0]);
    assert_eq!(c.antenna2, vec![1, 1]);
    assert_eq!(c.vis, vec![num_complex::Complex::new(4.0, -1.0); 2]);
    assert_eq!(c.weight, vec![1.0, 1.0]);
    assert_eq!(c.uvw[0], [299.792458, 2.0 * 299.792458, 3.0 * 299.792458]);
    assert_eq!(c.time[1] - c.time[0], 86400.0 / 8.0);
}
