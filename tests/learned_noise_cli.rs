//! `interf-image noise train` end to end: tiles, rms normalisation recorded in the checkpoint,
//! the checkpoint loads as a noise model; bad input fails cleanly and writes nothing.

use std::path::Path;
use std::process::Command;

use candle_core::Device;
use interf_image::likelihood::LearnedNoiseLikelihood;
use interf_image::operator::ForwardOperator;
use interf_image::prior::data::{write_npy_f32, ImageStack};
use interf_image::prior::{Normalisation, ScoreModel};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_interf-image"))
}

struct Identity(usize);

impl ForwardOperator for Identity {
    fn image_shape(&self) -> [usize; 2] {
        [self.0, self.0]
    }
    fn data_len(&self) -> usize {
        self.0 * self.0
    }
    fn forward(&self, x: &[f32], y: &mut [f32]) {
        y.copy_from_slice(x);
    }
    fn adjoint(&self, r: &[f32], x: &mut [f32]) {
        x.copy_from_slice(r);
    }
    fn diag_aat(&self) -> Vec<f32> {
        vec![1.0; self.data_len()]
    }
}

#[test]
fn noise_train_tiles_normalises_and_loads() {
    let dir = tempfile::tempdir().unwrap();
    let (n, h, w) = (3, 40, 36);
    let mut rng = StdRng::seed_from_u64(1);
    let data: Vec<f32> = (0..n * h * w)
        .map(|_| 2.0 * rng.sample::<f32, _>(StandardNormal))
        .collect();
    let npy = dir.path().join("noise.npy");
    write_npy_f32(&npy, &ImageStack::new(n, h, w, data.clone())).unwrap();
    let out = dir.path().join("model");
    let o = bin()
        .args(["noise", "train", "--noise-cutouts"])
        .arg(&npy)
        .args([
            "--size", "16", "--preset", "tiny", "--steps", "3", "--batch", "4", "--quiet", "--out",
        ])
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 2×2 tiles of 16² per image: rows and columns 0..32 are used, the rest left out.
    let mut ss = 0.0f64;
    for i in 0..n {
        for y in 0..32 {
            for x in 0..32 {
                ss += (data[i * h * w + y * w + x] as f64).powi(2);
            }
        }
    }
    let want = (ss / (n * 32 * 32) as f64).sqrt();
    let model = ScoreModel::load(&out, &Device::Cpu).unwrap();
    match model.config().normalisation {
        Normalisation::NoiseRms { rms } => {
            assert!((rms / want - 1.0).abs() < 1e-6, "rms {rms} vs {want}")
        }
        other => panic!("normalisation {other:?}"),
    }
    assert_eq!(model.config().training.n_images, 12);
    assert_eq!(model.image_size(), 16);
    // The checkpoint is usable as a likelihood on 16² data (and tiles 32² data).
    LearnedNoiseLikelihood::new(Identity(32), vec![0.0; 1024], [32, 32], model).unwrap();
}

#[test]
fn noise_train_rejects_bad_input_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("model");
    let run = |input: &Path| {
        bin()
            .args(["noise", "train", "--noise-cutouts"])
            .arg(input)
            .args(["--size", "16", "--preset", "tiny", "--steps", "2", "--out"])
            .arg(&out)
            .output()
            .unwrap()
    };
    let missing = dir.path().join("missing.npy");
    let o = run(&missing);
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("missing.npy"));
    assert!(!out.exists());

    let small = dir.path().join("small.npy");
    write_npy_f32(&small, &ImageStack::new(2, 8, 8, vec![1.0; 128])).unwrap();
    let o = run(&small);
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("small.npy") && e.contains("16"), "{e}");
    assert!(!out.exists());
}
