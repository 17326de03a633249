//! Training infrastructure of `prior train`: the held-out validation split (deterministic,
//! disjoint, recorded in config.json, checked on --resume), the validation DSM loss beside the
//! training loss in loss.csv, random shifts, and `prior stats --split val`. Tiny network,
//! 16² images, a handful of steps: seconds on a CPU.

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use interf_image::prior::data::{
    self, validation_split, write_npy_f32, Dataset, ImageStack, NormKind, Preprocess, Resample,
};
use interf_image::prior::sde::{SdeConfig, VeSde};
use interf_image::prior::train::{
    random_batch_shifted, read_loss_csv, read_split, train, TrainConfig, Trainer, ValidationSet,
    LOSS_CSV_HEADER,
};
use interf_image::prior::UNetConfig;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const N: usize = 16;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_interf-image"))
}

/// `count` random discs on an N×N grid (seeded).
fn discs(count: usize, seed: u64) -> ImageStack {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut data = Vec::with_capacity(count * N * N);
    for _ in 0..count {
        let r: f64 = rng.random_range(2.0..5.0);
        let cx: f64 = rng.random_range(r..N as f64 - r);
        let cy: f64 = rng.random_range(r..N as f64 - r);
        let a: f32 = rng.random_range(0.5..1.0);
        for y in 0..N {
            for x in 0..N {
                let d = ((x as f64 + 0.5 - cx).powi(2) + (y as f64 + 0.5 - cy).powi(2)).sqrt();
                data.push(if d < r { a } else { 0.0 });
            }
        }
    }
    ImageStack::new(count, N, N, data)
}

fn dataset(count: usize) -> Dataset {
    let pp = Preprocess {
        size: N,
        crop: None,
        resample: Resample::Area,
        norm: NormKind::PerImagePeak,
    };
    data::prepare(&discs(count, 1), &pp, Path::new("discs.npy")).unwrap()
}

fn sde() -> SdeConfig {
    SdeConfig::Ve(VeSde::new(1e-2, 8.0))
}

fn config(steps: usize, val_fraction: f64) -> TrainConfig {
    TrainConfig {
        batch_size: 4,
        learning_rate: 1e-3,
        warmup_steps: 2,
        max_steps: steps,
        log_every: 2,
        checkpoint_every: 3,
        val_fraction,
        shift_px: 2,
        ..Default::default()
    }
}

fn run(ds: &Dataset, tc: TrainConfig, out: &Path, resume: bool) -> Result<(), String> {
    train(
        ds,
        &UNetConfig::tiny(N),
        sde(),
        tc,
        out,
        resume,
        &Device::Cpu,
        &interf_image::observe::Quiet,
    )
    .map(|_| ())
    .map_err(|e| e.to_string())
}

fn config_json(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

#[test]
fn split_is_deterministic_disjoint_and_independent_of_the_training_seed() {
    let a = validation_split(40, 0.25, 0).unwrap();
    assert_eq!(a, validation_split(40, 0.25, 0).unwrap());
    assert_eq!(a.val_indices.len(), 10);
    let train_idx = a.train_indices();
    assert_eq!(train_idx.len(), 30);
    assert!(train_idx.iter().all(|i| !a.val_indices.contains(i)));
    assert_ne!(
        a.val_indices,
        validation_split(40, 0.25, 1).unwrap().val_indices
    );

    // Recorded in config.json, the same whatever --seed: the split seed alone decides.
    let ds = dataset(40);
    let mut recorded = Vec::new();
    for seed in [0, 7] {
        let dir = tempfile::tempdir().unwrap();
        let tc = TrainConfig {
            seed,
            ..config(2, 0.25)
        };
        run(&ds, tc, dir.path(), false).unwrap();
        let s = read_split(dir.path()).unwrap().expect("split recorded");
        assert_eq!(s, a);
        let j = config_json(dir.path());
        assert_eq!(j["training"]["split"]["n_images"], 40);
        assert_eq!(j["training"]["split"]["fraction"], 0.25);
        assert_eq!(j["training"]["split"]["seed"], 0);
        assert_eq!(j["training"]["shift_px"], 2);
        assert!(j["training"]["val_loss"].as_f64().unwrap().is_finite());
        // The checkpoint still loads with the extra keys.
        interf_image::prior::ScoreModel::load(dir.path(), &Device::Cpu).unwrap();
        recorded.push(s);
    }
    assert_eq!(recorded[0], recorded[1]);
}

#[test]
fn resume_refuses_another_split() {
    let ds = dataset(40);
    let dir = tempfile::tempdir().unwrap();
    run(&ds, config(3, 0.25), dir.path(), false).unwrap();

    let e = run(&ds, config(5, 0.1), dir.path(), true).unwrap_err();
    assert!(
        e.contains("--val-fraction 0.25") && e.contains("--val-fraction 0.1"),
        "{e}"
    );
    let e = run(&ds, config(5, 0.0), dir.path(), true).unwrap_err();
    assert!(e.contains("--val-fraction 0.25"), "{e}");
    let other_seed = TrainConfig {
        split_seed: 3,
        ..config(5, 0.25)
    };
    let e = run(&ds, other_seed, dir.path(), true).unwrap_err();
    assert!(
        e.contains("--split-seed 0") && e.contains("--split-seed 3"),
        "{e}"
    );
    let e = run(&dataset(41), config(5, 0.25), dir.path(), true).unwrap_err();
    assert!(e.contains("40") && e.contains("41"), "{e}");
    // Nothing was trained by the refused runs; the matching one continues.
    assert_eq!(config_json(dir.path())["training"]["steps"], 3);
    run(&ds, config(5, 0.25), dir.path(), true).unwrap();
    assert_eq!(config_json(dir.path())["training"]["steps"], 5);

    // A checkpoint that records no split (trained on every image) resumes only without one.
    let path = dir.path().join("config.json");
    let mut j = config_json(dir.path());
    j["training"].as_object_mut().unwrap().remove("split");
    std::fs::write(&path, serde_json::to_string_pretty(&j).unwrap()).unwrap();
    let e = run(&ds, config(6, 0.25), dir.path(), true).unwrap_err();
    assert!(e.contains("no validation split"), "{e}");
    run(&ds, config(6, 0.0), dir.path(), true).unwrap();
    let s = read_split(dir.path()).unwrap().unwrap();
    assert!(s.val_indices.is_empty() && s.fraction == 0.0);
}

#[test]
fn loss_csv_has_validation_loss_at_checkpoints() {
    let ds = dataset(24);
    let dir = tempfile::tempdir().unwrap();
    // Checkpoints at 3, 6 and 7 (the end); log rows at 2, 4, 6 and at every checkpoint.
    run(&ds, config(7, 0.25), dir.path(), false).unwrap();
    let text = std::fs::read_to_string(dir.path().join("loss.csv")).unwrap();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some(LOSS_CSV_HEADER));
    let rows: Vec<Vec<String>> = lines
        .map(|l| l.split(',').map(str::to_string).collect())
        .collect();
    let steps: Vec<&str> = rows.iter().map(|r| r[0].as_str()).collect();
    assert_eq!(steps, ["2", "3", "4", "6", "7"], "{text}");
    for r in &rows {
        assert_eq!(r.len(), 5, "{text}");
        assert!(r[1].parse::<f64>().unwrap().is_finite());
        let at_checkpoint = ["3", "6", "7"].contains(&r[0].as_str());
        if at_checkpoint {
            let v: f64 = r[4].parse().unwrap();
            assert!(v.is_finite() && v > 0.0, "{text}");
        } else {
            assert_eq!(r[4], "", "{text}");
        }
    }
    let (train_pts, val_pts) = read_loss_csv(&text);
    assert_eq!((train_pts.len(), val_pts.len()), (5, 3));
    assert!(dir.path().join("loss.png").exists());
    let last_val: f64 = rows.last().unwrap()[4].parse().unwrap();
    let recorded = config_json(dir.path())["training"]["val_loss"]
        .as_f64()
        .unwrap();
    assert!(
        (recorded - last_val).abs() < 1e-5,
        "{recorded} vs {last_val}"
    );

    // An old four-column loss.csv gets the column on resume; its rows stay readable.
    let old = "step,loss,lr,images_per_s\n2,0.9,1e-3,10\n";
    std::fs::write(dir.path().join("loss.csv"), old).unwrap();
    run(&ds, config(9, 0.25), dir.path(), true).unwrap();
    let text = std::fs::read_to_string(dir.path().join("loss.csv")).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], LOSS_CSV_HEADER);
    assert_eq!(lines[1], "2,0.9,1e-3,10,");
    let (_, val_pts) = read_loss_csv(&text);
    // Steps 8 (a log row) and 9 (a checkpoint, and the end): one validation value.
    assert_eq!(val_pts.len(), 1, "{text}");
    assert_eq!(val_pts[0].0, 9.0);
}

#[test]
fn shifts_keep_the_shape_and_stay_in_range() {
    // One bright pixel at the centre of an odd-sized image: the dihedral symmetries keep it
    // there, so where it lands is the shift.
    let n = 9;
    let mut img = vec![0f32; n * n];
    img[4 * n + 4] = 1.0;
    let stack = ImageStack::new(1, n, n, img);
    let mut rng = StdRng::seed_from_u64(5);
    let mut seen = std::collections::HashSet::new();
    for _ in 0..20 {
        let b = random_batch_shifted(&stack, 8, true, 2, &mut rng, &Device::Cpu).unwrap();
        assert_eq!(b.dims(), &[8, 1, n, n]);
        let v: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
        for im in v.chunks(n * n) {
            let at = im.iter().position(|&p| p == 1.0).expect("pixel kept");
            assert_eq!(im.iter().filter(|&&p| p != 0.0).count(), 1);
            let (dy, dx) = (at as i64 / n as i64 - 4, at as i64 % n as i64 - 4);
            assert!(dy.abs() <= 2 && dx.abs() <= 2, "shift ({dy}, {dx})");
            seen.insert((dy, dx));
        }
    }
    // All 25 shifts occur in 160 draws (each has probability 1/25).
    assert_eq!(seen.len(), 25, "{seen:?}");
    // No augmentation: no shift either.
    let b = random_batch_shifted(&stack, 4, false, 2, &mut rng, &Device::Cpu).unwrap();
    let v: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert!(v.chunks(n * n).all(|im| im[4 * n + 4] == 1.0));
}

#[test]
fn validation_loss_with_fixed_draws_is_reproducible() {
    let ds = dataset(12);
    let dev = Device::Cpu;
    let mut tr = Trainer::new(&UNetConfig::tiny(N), sde(), config(0, 0.0), &dev).unwrap();
    let mut rng = StdRng::seed_from_u64(2);
    for _ in 0..3 {
        let x = random_batch_shifted(&ds.images, 4, true, 2, &mut rng, &dev).unwrap();
        tr.train_step(&x).unwrap();
    }
    // Batches of 5 over 12 images: the uneven last batch must weigh in correctly too.
    let v1 = ValidationSet::new(&ds.images, 1e-5, 0, 5, &dev).unwrap();
    let a = tr.validation_loss(&v1).unwrap();
    let b = tr.validation_loss(&v1).unwrap();
    assert_eq!(a.to_bits(), b.to_bits(), "{a} vs {b}");
    // Rebuilt from the same seed (a resumed run), in one batch: the same draws.
    let v2 = ValidationSet::new(&ds.images, 1e-5, 0, 12, &dev).unwrap();
    let c = tr.validation_loss(&v2).unwrap();
    assert!((a - c).abs() < 1e-6 * a, "{a} vs {c}");
    let v3 = ValidationSet::new(&ds.images, 1e-5, 1, 5, &dev).unwrap();
    let d = tr.validation_loss(&v3).unwrap();
    assert!(a.is_finite() && d.is_finite() && a != d, "{a} {d}");
    // Training moves the weights, and the fixed draws see it.
    for _ in 0..3 {
        let x = random_batch_shifted(&ds.images, 4, true, 2, &mut rng, &dev).unwrap();
        tr.train_step(&x).unwrap();
    }
    assert_ne!(tr.validation_loss(&v1).unwrap(), a);
}

#[test]
fn cli_train_then_stats_on_the_validation_split() {
    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("discs.npy");
    write_npy_f32(&npy, &discs(20, 3)).unwrap();
    let prior = dir.path().join("prior");
    let train_args = |frac: &str, steps: &str| {
        let mut c = bin();
        c.args(["prior", "train", "--data"])
            .arg(&npy)
            .args([
                "--size", "16", "--preset", "tiny", "--batch", "4", "--steps", steps,
            ])
            .args([
                "--checkpoint-every",
                "2",
                "--val-fraction",
                frac,
                "--quiet",
                "--out",
            ])
            .arg(&prior);
        c
    };
    let o = train_args("0.2", "2").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("16 training, 4 validation images"), "{err}");
    assert!(err.contains("validation DSM loss"), "{err}");

    let o = train_args("0.3", "4").arg("--resume").output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "resumed with another split: {err}");
    assert!(err.contains("--val-fraction 0.2"), "{err}");

    let stats = |prior: &Path, out: &str| {
        bin()
            .args(["prior", "stats", "--prior"])
            .arg(prior)
            .arg("--data")
            .arg(&npy)
            .args(["--n", "8", "--steps", "2", "--batch", "8", "--split", "val"])
            .args(["--quiet", "--out"])
            .arg(dir.path().join(out))
            .output()
            .unwrap()
    };
    let o = stats(&prior, "stats");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let j: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dir.path().join("stats/stats.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(j["split"], "val");
    assert_eq!(j["reference_images"], 4);

    // validate on the same split: the truths are exactly the held-out images.
    let o = bin()
        .args(["validate", "--like"])
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/vla_3c273_xband.ms"))
        .arg("--truths")
        .arg(&npy)
        .arg("--prior")
        .arg(&prior)
        .args([
            "--split",
            "val",
            "--n",
            "10",
            "--samples",
            "2",
            "--steps",
            "2",
        ])
        .args([
            "--noise",
            "0.05",
            "--no-clean",
            "--allow-poor-fit",
            "--name",
        ])
        .arg(dir.path().join("v"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("v-validate.json")).unwrap())
            .unwrap();
    let mut used: Vec<u64> = v["truth_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    used.sort_unstable();
    let mut held: Vec<u64> = config_json(&prior)["training"]["split"]["val_indices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i.as_u64().unwrap())
        .collect();
    held.sort_unstable();
    assert_eq!(used, held, "validate's truths are not the held-out images");
    assert_eq!(v["per_truth"].as_array().unwrap().len(), 4);

    // A prior that records no split: a clear error, and nothing compared.
    let cfg = prior.join("config.json");
    let mut c: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    c["training"].as_object_mut().unwrap().remove("split");
    std::fs::write(&cfg, serde_json::to_string(&c).unwrap()).unwrap();
    let o = stats(&prior, "stats2");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    assert!(err.contains("no validation split"), "{err}");
    assert!(!dir.path().join("stats2/stats.json").exists());
}
