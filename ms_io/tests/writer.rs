//! The writer: simulated copies of the committed Measurement Sets, read back with the reader.

mod common;

use common::{ms, temp_copy, tree_hash};
use ms_io::{
    create_like, simulate_like, MeasurementSet, MsError, MsWriter, Selection, StokesModel,
    VisChunkMeta, Visibilities,
};
use num_complex::Complex;

fn constant(
    value: Complex<f64>,
    sigma: f64,
) -> impl FnMut(&VisChunkMeta) -> Result<StokesModel, MsError> {
    move |m| {
        Ok(StokesModel {
            vis: vec![value; m.n_rows() * m.n_chan()],
            sigma,
        })
    }
}

fn read_all(path: &std::path::Path, sel: &Selection) -> Visibilities {
    MeasurementSet::open(path).unwrap().read(sel).unwrap()
}

fn used(v: &Visibilities) -> Vec<(Complex<f32>, f32)> {
    v.chunks
        .iter()
        .flat_map(|c| c.vis.iter().zip(&c.weight))
        .filter(|(_, &w)| w > 0.0)
        .map(|(&x, &w)| (x, w))
        .collect()
}

#[test]
fn constant_one_jansky_without_noise() {
    let src = ms("vla_3c273_xband.ms");
    let before = tree_hash(&src);
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("sim.ms");
    let mut calls = 0;
    let stats = simulate_like(&src, &dst, &Selection::default(), 0, |m: &VisChunkMeta| {
        calls += 1;
        assert_eq!(m.freq, vec![8085000000.0]);
        assert_eq!(m.uvw.len(), m.n_rows());
        constant(Complex::new(1.0, 0.0), 0.0)(m)
    })
    .unwrap();
    assert!(calls >= 1);
    assert_eq!(stats.rows, 7669);
    assert_eq!(stats.simulated_rows, 7669);
    assert_eq!(stats.simulated_samples, 7669);
    assert_eq!(stats.flagged_out_rows, 0);
    assert_eq!(tree_hash(&src), before, "the input changed");
    // No temporary copy is left beside the output.
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1);

    let orig = read_all(&src, &Selection::default());
    let sim = read_all(&dst, &Selection::default());
    // Flags come from the input: the same samples are usable.
    assert_eq!(sim.stats, orig.stats);
    assert_eq!(sim.stats.used, 6040);
    for (a, b) in orig.chunks.iter().zip(&sim.chunks) {
        assert_eq!(a.uvw, b.uvw);
        assert_eq!(a.time, b.time);
        assert_eq!(a.antenna1, b.antenna1);
        for (wa, wb) in a.weight.iter().zip(&b.weight) {
            assert_eq!(*wa > 0.0, *wb > 0.0);
        }
    }
    for (x, w) in used(&sim) {
        assert!((x - Complex::new(1.0, 0.0)).norm() < 1e-6, "{x}");
        // Noiseless: WEIGHT = 1 on RR and LL, so the Stokes I weight is 2·min(1, 1).
        assert_eq!(w, 2.0);
    }
    let info = MeasurementSet::open(&dst).unwrap().info().clone();
    assert_eq!(info.columns, orig_info(&src).columns);
    assert_eq!(
        info.fields[0].phase_dir,
        orig_info(&src).fields[0].phase_dir
    );
}

fn orig_info(p: &std::path::Path) -> ms_io::MsInfo {
    MeasurementSet::open(p).unwrap().info().clone()
}

#[test]
fn noise_has_the_requested_sigma_and_weights() {
    let src = ms("vla_3c273_xband.ms");
    let dir = tempfile::tempdir().unwrap();
    let sigma = 0.5;
    let run = |name: &str, seed: u64, chunk_rows: usize| {
        let dst = dir.path().join(name);
        let sel = Selection {
            chunk_rows,
            ..Default::default()
        };
        simulate_like(
            &src,
            &dst,
            &sel,
            seed,
            constant(Complex::new(2.0, -1.0), sigma),
        )
        .unwrap();
        read_all(&dst, &Selection::default())
    };
    let a = run("a.ms", 7, 0);
    let s = used(&a);
    let n = s.len() as f64;
    let (mut sr, mut si, mut sr2, mut si2) = (0.0, 0.0, 0.0, 0.0);
    for (x, w) in &s {
        // w = 2·min(1/σ_c²) with σ_c = √2 σ: exactly 1/σ².
        assert!((*w as f64 - 1.0 / (sigma * sigma)).abs() < 1e-5, "{w}");
        let (r, i) = (x.re as f64 - 2.0, x.im as f64 + 1.0);
        sr += r;
        si += i;
        sr2 += r * r;
        si2 += i * i;
    }
    for (s1, s2) in [(sr, sr2), (si, si2)] {
        let mean = s1 / n;
        let std = (s2 / n - mean * mean).sqrt();
        assert!((std / sigma - 1.0).abs() < 0.05, "std {std}");
        assert!(mean.abs() < 4.0 * sigma / n.sqrt(), "mean {mean}");
    }
    // Same seed, other chunking: identical data. Other seed: different data.
    let b = run("b.ms", 7, 1000);
    let c = run("c.ms", 8, 0);
    let vis = |v: &Visibilities| -> Vec<Complex<f32>> {
        v.chunks.iter().flat_map(|c| c.vis.clone()).collect()
    };
    assert_eq!(vis(&a), vis(&b));
    assert_ne!(vis(&a), vis(&c));
    // Byte-identical main-table files for the same seed and chunking.
    let a2 = run("a2.ms", 7, 0);
    assert_eq!(vis(&a), vis(&a2));
}

#[test]
fn channel_range_and_other_rows_are_flagged() {
    // 64 channels, RR RL LR LL.
    let src = ms("vla_tdem0003.ms");
    let before = tree_hash(&src);
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("sim.ms");
    let sel = Selection {
        channels: Some((10, 20)),
        ..Default::default()
    };
    simulate_like(&src, &dst, &sel, 0, constant(Complex::new(0.5, 0.25), 0.0)).unwrap();
    assert_eq!(tree_hash(&src), before);

    let inside = read_all(&dst, &sel);
    assert!(inside.stats.used > 0);
    for (x, _) in used(&inside) {
        assert!((x - Complex::new(0.5, 0.25)).norm() < 1e-6, "{x}");
    }
    let all = read_all(&dst, &Selection::default());
    for c in &all.chunks {
        for r in 0..c.n_rows() {
            for ch in 0..c.n_chan() {
                let (x, w) = (c.vis[r * 64 + ch], c.weight[r * 64 + ch]);
                if !(10..20).contains(&ch) {
                    assert_eq!(w, 0.0);
                    assert_eq!(x, Complex::new(0.0, 0.0));
                }
            }
        }
    }
}

#[test]
fn refuses_existing_output_and_output_inside_input() {
    let (_g, src) = temp_copy("vla_3c273_xband.ms");
    let before = tree_hash(&src);
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("exists.ms");
    std::fs::create_dir(&dst).unwrap();
    let e = simulate_like(
        &src,
        &dst,
        &Selection::default(),
        0,
        constant(1.0.into(), 0.0),
    );
    assert!(matches!(e, Err(MsError::OutputExists { .. })), "{e:?}");
    let e = create_like(&src, &dst);
    assert!(matches!(e, Err(MsError::OutputExists { .. })), "{e:?}");
    // Existing output left alone.
    assert_eq!(std::fs::read_dir(&dst).unwrap().count(), 0);

    for inner in [src.join("sim.ms"), src.join("ANTENNA").join("x.ms")] {
        let e = create_like(&src, &inner);
        assert!(matches!(e, Err(MsError::OutputInsideInput { .. })), "{e:?}");
        let e = simulate_like(
            &src,
            &inner,
            &Selection::default(),
            0,
            constant(1.0.into(), 0.0),
        );
        assert!(matches!(e, Err(MsError::OutputInsideInput { .. })), "{e:?}");
    }
    // Also through a path that names the input differently.
    let weird = src.join("..").join(src.file_name().unwrap()).join("sim.ms");
    let e = create_like(&src, &weird);
    assert!(matches!(e, Err(MsError::OutputInsideInput { .. })), "{e:?}");
    assert_eq!(tree_hash(&src), before);

    let e = create_like(&dir.path().join("missing.ms"), &dir.path().join("new.ms"));
    assert!(matches!(e, Err(MsError::NotFound { .. })), "{e:?}");
    assert!(!dir.path().join("new.ms").exists());
}

#[test]
fn bad_model_is_an_error_and_leaves_nothing_behind() {
    let src = ms("vla_3c273_xband.ms");
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("sim.ms");
    let e = simulate_like(&src, &dst, &Selection::default(), 0, |_m: &VisChunkMeta| {
        Ok::<_, MsError>(StokesModel {
            vis: vec![Complex::new(1.0, 0.0); 3],
            sigma: 0.0,
        })
    });
    assert!(matches!(e, Err(MsError::BadModel { .. })), "{e:?}");
    let e = simulate_like(
        &src,
        &dst,
        &Selection::default(),
        0,
        constant(f64::NAN.into(), 0.0),
    );
    assert!(matches!(e, Err(MsError::BadModel { .. })), "{e:?}");
    let e = simulate_like(
        &src,
        &dst,
        &Selection::default(),
        0,
        constant(1.0.into(), -1.0),
    );
    assert!(matches!(e, Err(MsError::BadModel { .. })), "{e:?}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

#[test]
fn writer_by_hand_on_a_copy() {
    let dir = tempfile::tempdir().unwrap();
    let dst = dir.path().join("copy.ms");
    create_like(&ms("alma_x5707_1bl.ms"), &dst).unwrap();
    let mut w = MsWriter::open(&dst).unwrap();
    let n_chan = w.info().spws[0].chan_freq.len();
    // Its only rows are of field 2: field 0 selects nothing (the default would move to 2).
    let field0 = Selection {
        field: Some(ms_io::FieldSelector::Id(0)),
        ..Default::default()
    };
    let e = w.write_stokes_i(&field0, 3, constant(1.0.into(), 0.0));
    assert!(matches!(e, Err(MsError::NoRows { .. })), "{e:?}");
    let sel = Selection {
        field: Some(ms_io::FieldSelector::Id(2)),
        ..Default::default()
    };
    let stats = w
        .write_stokes_i(&sel, 3, constant(Complex::new(0.0, 1.0), 0.0))
        .unwrap();
    w.finish().unwrap();
    assert_eq!(stats.flagged_out_rows, 0);
    assert_eq!(stats.simulated_samples, stats.simulated_rows * n_chan);
    let v = read_all(&dst, &sel);
    for (x, _) in used(&v) {
        assert!((x - Complex::new(0.0, 1.0)).norm() < 1e-6, "{x}");
    }
    assert!(MsWriter::open(dir.path().join("nope.ms")).is_err());
}
