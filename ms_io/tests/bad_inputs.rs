//! Broken or wrong inputs give a typed error that names the path and the problem, never a
//! panic, and the input is byte-identical afterwards.

mod common;

use std::path::Path;

use common::{ms, temp_copy, tree_hash};
use ms_io::{DataColumn, FieldSelector, MeasurementSet, MsError, Selection};
use rubbl_casatables::{Table, TableOpenMode};

/// Runs `f` on `path` and checks that the input did not change; returns the error message.
fn unchanged<T: std::fmt::Debug>(
    path: &Path,
    f: impl FnOnce(&Path) -> Result<T, MsError>,
) -> MsError {
    let before = tree_hash(path);
    let err = f(path).expect_err("expected an error");
    assert_eq!(before, tree_hash(path), "{} changed", path.display());
    let msg = err.to_string();
    let shown = path.display().to_string();
    assert!(
        msg.contains(&shown),
        "message does not name the path: {msg}"
    );
    err
}

fn read_with(sel: Selection) -> impl FnOnce(&Path) -> Result<ms_io::Visibilities, MsError> {
    move |p| MeasurementSet::open(p)?.read(&sel)
}

#[test]
fn missing_path() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("nope.ms");
    let e = unchanged(&p, |p| MeasurementSet::open(p));
    assert!(matches!(e, MsError::NotFound { .. }), "{e}");
}

#[test]
fn plain_file() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("file.ms");
    std::fs::write(&p, b"not a table").unwrap();
    let e = unchanged(&p, |p| MeasurementSet::open(p));
    assert!(matches!(e, MsError::NotADirectory { .. }), "{e}");
}

#[test]
fn empty_dir() {
    let dir = tempfile::tempdir().unwrap();
    let e = unchanged(dir.path(), |p| MeasurementSet::open(p));
    assert!(matches!(e, MsError::NotATable { .. }), "{e}");
}

#[test]
fn garbage_table_dat() {
    let (_d, p) = temp_copy("alma_x5707_1bl.ms");
    std::fs::write(p.join("table.dat"), b"garbage, not casacore").unwrap();
    let e = unchanged(&p, |p| MeasurementSet::open(p));
    assert!(matches!(e, MsError::NotATable { .. }), "{e}");
}

#[test]
fn a_table_that_is_not_an_ms() {
    let p = ms("vla_3c273_xband.ms").join("SPECTRAL_WINDOW");
    let e = unchanged(&p, |p| MeasurementSet::open(p));
    assert!(matches!(e, MsError::NotAMeasurementSet { .. }), "{e}");
}

#[test]
fn spectral_window_removed() {
    let (_d, p) = temp_copy("vla_3c273_xband.ms");
    std::fs::remove_dir_all(p.join("SPECTRAL_WINDOW")).unwrap();
    let e = unchanged(&p, |p| MeasurementSet::open(p));
    assert!(matches!(e, MsError::NotAMeasurementSet { .. }), "{e}");
    assert!(e.to_string().contains("SPECTRAL_WINDOW"), "{e}");
}

#[test]
fn unknown_field_name_lists_the_fields() {
    let p = ms("alma_x5707_1bl.ms");
    let e = unchanged(
        &p,
        read_with(Selection {
            field: Some(FieldSelector::Name("M87".into())),
            ..Default::default()
        }),
    );
    assert!(matches!(e, MsError::UnknownField { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("M87") && msg.contains("2: GAMA567624"),
        "{msg}"
    );
}

#[test]
fn unknown_field_id() {
    let p = ms("vla_3c273_xband.ms");
    let sel = Selection {
        field: Some(FieldSelector::Id(5)),
        ..Default::default()
    };
    let e = unchanged(&p, |p| MeasurementSet::open(p)?.resolve_field(&sel));
    assert!(matches!(e, MsError::UnknownField { .. }), "{e}");
    assert!(e.to_string().contains("3C273"), "{e}");
}

#[test]
fn spw_out_of_range() {
    let p = ms("vla_tdem0003.ms");
    let e = unchanged(
        &p,
        read_with(Selection {
            spws: Some(vec![0, 3]),
            ..Default::default()
        }),
    );
    assert!(
        matches!(
            e,
            MsError::SpwOutOfRange {
                spw: 3,
                n_spw: 1,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn channel_range_out_of_bounds_or_empty() {
    let p = ms("vla_tdem0003.ms");
    for (range, why) in [
        ((60, 65), "out of bounds"),
        ((10, 10), "empty"),
        ((9, 3), "empty"),
    ] {
        let e = unchanged(
            &p,
            read_with(Selection {
                channels: Some(range),
                ..Default::default()
            }),
        );
        assert!(
            matches!(e, MsError::BadChannelRange { n_chan: 64, .. }),
            "{e}"
        );
        assert!(e.to_string().contains(why), "{e}");
    }
}

#[test]
fn corrected_data_absent() {
    let p = ms("vla_3c273_xband.ms");
    let e = unchanged(
        &p,
        read_with(Selection {
            column: DataColumn::CorrectedData,
            ..Default::default()
        }),
    );
    assert!(matches!(e, MsError::MissingColumn { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("CORRECTED_DATA") && msg.contains("\"DATA\""),
        "{msg}"
    );
    // chunks() checks the selection up front too.
    let m = MeasurementSet::open(&p).unwrap();
    assert!(m
        .chunks(&Selection {
            column: DataColumn::ModelData,
            ..Default::default()
        })
        .is_err());
}

#[test]
fn everything_flagged() {
    let (_d, p) = temp_copy("vla_tdem0003.ms");
    {
        let mut t = Table::open(&p, TableOpenMode::ReadWrite).unwrap();
        let all = rubbl_core::ndarray::Array2::from_elem((64, 4), true);
        for row in 0..t.n_rows() {
            t.put_cell("FLAG", row, &all).unwrap();
        }
    }
    let e = unchanged(&p, read_with(Selection::default()));
    assert!(
        matches!(e, MsError::AllFlagged { samples: 87040, .. }),
        "{e}"
    );
    // The chunks are still there, with weight exactly 0.
    let m = MeasurementSet::open(&p).unwrap();
    let n: usize = m
        .chunks(&Selection::default())
        .unwrap()
        .map(|c| {
            let c = c.unwrap();
            assert!(c.weight.iter().all(|&w| w == 0.0));
            c.weight.len()
        })
        .sum();
    assert_eq!(n, 87040);
}

#[test]
fn every_row_flagged() {
    let (_d, p) = temp_copy("vla_3c273_xband.ms");
    {
        let mut t = Table::open(&p, TableOpenMode::ReadWrite).unwrap();
        for row in 0..t.n_rows() {
            t.put_cell("FLAG_ROW", row, &true).unwrap();
        }
    }
    let e = unchanged(&p, read_with(Selection::default()));
    assert!(matches!(e, MsError::AllFlagged { .. }), "{e}");
}

#[test]
fn cross_hands_only() {
    let (_d, p) = temp_copy("vla_3c273_xband.ms");
    {
        let mut t = Table::open(p.join("POLARIZATION"), TableOpenMode::ReadWrite).unwrap();
        // RL, LR, RL, LR: no parallel hand.
        t.put_cell("CORR_TYPE", 0, &vec![6i32, 7, 6, 7]).unwrap();
    }
    let e = unchanged(&p, read_with(Selection::default()));
    assert!(matches!(e, MsError::UnsupportedCorrelations { .. }), "{e}");
    assert!(e.to_string().contains("RL"), "{e}");
}

#[test]
fn data_desc_id_out_of_range() {
    let (_d, p) = temp_copy("vla_3c273_xband.ms");
    {
        let mut t = Table::open(&p, TableOpenMode::ReadWrite).unwrap();
        t.put_cell("DATA_DESC_ID", 1234, &7i32).unwrap();
    }
    let e = unchanged(&p, read_with(Selection::default()));
    assert!(
        matches!(
            e,
            MsError::BadIndex {
                row: 1234,
                what: "DATA_DESC_ID",
                value: 7,
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn field_id_negative() {
    let (_d, p) = temp_copy("vla_3c273_xband.ms");
    {
        let mut t = Table::open(&p, TableOpenMode::ReadWrite).unwrap();
        t.put_cell("FIELD_ID", 3, &-1i32).unwrap();
    }
    let e = unchanged(&p, read_with(Selection::default()));
    assert!(
        matches!(
            e,
            MsError::BadIndex {
                what: "FIELD_ID",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn polarization_id_out_of_range() {
    let (_d, p) = temp_copy("vla_3c273_xband.ms");
    {
        let mut t = Table::open(p.join("DATA_DESCRIPTION"), TableOpenMode::ReadWrite).unwrap();
        t.put_cell("POLARIZATION_ID", 0, &9i32).unwrap();
    }
    let e = unchanged(&p, |p| MeasurementSet::open(p));
    assert!(
        matches!(
            e,
            MsError::BadIndex {
                what: "POLARIZATION_ID",
                ..
            }
        ),
        "{e}"
    );
}

#[test]
fn no_rows_for_the_field() {
    // Field 0 of the ALMA fixture has no rows (its data are in field 2): asked for explicitly,
    // an error that says where the data are.
    let p = ms("alma_x5707_1bl.ms");
    let e = unchanged(
        &p,
        read_with(Selection {
            field: Some(FieldSelector::Id(0)),
            ..Default::default()
        }),
    );
    assert!(matches!(e, MsError::NoRows { .. }), "{e}");
    assert!(e.to_string().contains("rows of fields [2]"), "{e}");
}

#[test]
fn default_field_is_the_one_with_data() {
    // By default, field 0 unless it holds no rows; then the first field that does.
    let ms = MeasurementSet::open(ms("alma_x5707_1bl.ms")).unwrap();
    assert_eq!(ms.resolve_field(&Selection::default()).unwrap(), 2);
    assert_eq!(ms.rows_per_field().unwrap(), vec![0, 0, 40]);
    let v = ms.read(&Selection::default()).unwrap();
    assert_eq!(v.stats.rows, 40);
    assert_eq!(v.field.name, "GAMA567624");
}
