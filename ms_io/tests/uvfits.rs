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
