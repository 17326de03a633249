//! Checkpoints: bit-for-bit round trip, in-memory loading, clear errors on bad files.

use std::path::Path;

use candle_core::{DType, Device, Tensor};
use interf_image::prior::checkpoint::{
    save_checkpoint, CheckpointConfig, TrainingInfo, FORMAT_VERSION,
};
use interf_image::prior::data::Normalisation;
use interf_image::prior::sde::{SdeConfig, VeSde};
use interf_image::prior::train::{random_batch, TrainConfig, Trainer};
use interf_image::prior::{data::ImageStack, PriorError, ScoreModel, UNetConfig};
use rand::rngs::StdRng;
use rand::SeedableRng;

fn trained(dir: &Path) -> (Trainer, CheckpointConfig) {
    let n = 16;
    let cfg = UNetConfig::tiny(n);
    let sde = SdeConfig::Ve(VeSde::new(1e-2, 5.0));
    let mut tr = Trainer::new(&cfg, sde, TrainConfig::default(), &Device::Cpu).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let data = ImageStack::new(
        4,
        n,
        n,
        (0..4 * n * n)
            .map(|i| ((i * 7) % 13) as f32 / 13.0)
            .collect(),
    );
    for _ in 0..5 {
        let x = random_batch(&data, 4, true, &mut rng, &Device::Cpu).unwrap();
        tr.train_step(&x).unwrap();
    }
    let cc = CheckpointConfig {
        format_version: FORMAT_VERSION,
        network: cfg.clone(),
        sde,
        image_size: n,
        t_eps: 1e-5,
        normalisation: Normalisation::PerImagePeak { typical_peak: 3.5 },
        training: TrainingInfo {
            data: "synthetic".into(),
            steps: tr.step,
            ..Default::default()
        },
    };
    save_checkpoint(dir, &cc, &tr.ema_weights()).unwrap();
    (tr, cc)
}

fn probe() -> Tensor {
    let v: Vec<f32> = (0..3 * 256)
        .map(|i| ((i * 31) % 17) as f32 / 17.0)
        .collect();
    Tensor::from_vec(v, (3, 1, 16, 16), &Device::Cpu).unwrap()
}

#[test]
fn round_trip_is_bit_for_bit() {
    let dir = tempfile::tempdir().unwrap();
    let (tr, cc) = trained(dir.path());
    let vb = candle_nn::VarBuilder::from_tensors(tr.ema_weights(), DType::F32, &Device::Cpu);
    let net = interf_image::prior::UNet::new(&cc.network, vb).unwrap();
    let mem = ScoreModel::from_parts(net, cc.clone(), Device::Cpu);
    let disk = ScoreModel::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(disk.config(), &cc);
    let cfg_bytes = std::fs::read(dir.path().join("config.json")).unwrap();
    let w_bytes = std::fs::read(dir.path().join("weights.safetensors")).unwrap();
    let bytes = ScoreModel::from_bytes(&cfg_bytes, &w_bytes, &Device::Cpu).unwrap();
    let x = probe();
    for t in [1e-3, 0.5, 1.0] {
        let a: Vec<f32> = mem
            .score(&x, t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let b: Vec<f32> = disk
            .score(&x, t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let c: Vec<f32> = bytes
            .score(&x, t)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert!(a.iter().zip(&b).all(|(p, q)| p.to_bits() == q.to_bits()));
        assert!(a.iter().zip(&c).all(|(p, q)| p.to_bits() == q.to_bits()));
        assert!(a.iter().any(|v| *v != 0.0));
    }
}

#[test]
fn resume_restores_weights() {
    let dir = tempfile::tempdir().unwrap();
    let (tr, _) = trained(dir.path());
    tr.save_state(dir.path()).unwrap();
    let mut tr2 = Trainer::new(
        &tr.net_config,
        tr.sde,
        TrainConfig {
            seed: 42,
            ..Default::default()
        },
        &Device::Cpu,
    )
    .unwrap();
    tr2.load_state(dir.path()).unwrap();
    assert_eq!(tr2.step, tr.step);
    let t = Tensor::new(&[0.3f32, 0.6, 0.9], &Device::Cpu).unwrap();
    let a: Vec<f32> = tr
        .net
        .forward(&probe(), &t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    let b: Vec<f32> = tr2
        .net
        .forward(&probe(), &t)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert_eq!(a, b);
}

#[test]
fn bad_files_give_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (_, cc) = trained(dir.path());
    let wpath = dir.path().join("weights.safetensors");
    let cpath = dir.path().join("config.json");
    let good_w = std::fs::read(&wpath).unwrap();
    let good_c = std::fs::read(&cpath).unwrap();

    // Truncated weights.
    std::fs::write(&wpath, &good_w[..good_w.len() / 2]).unwrap();
    let e = ScoreModel::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(e, PriorError::Weights { .. }), "{e}");
    assert!(e.to_string().contains("weights.safetensors"), "{e}");

    // Garbage weights.
    std::fs::write(&wpath, b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!").unwrap();
    let e = ScoreModel::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(e, PriorError::Weights { .. }), "{e}");
    std::fs::write(&wpath, &good_w).unwrap();

    // A config describing another network.
    let mut other = cc.clone();
    other.network.nf = 16;
    std::fs::write(&cpath, serde_json::to_vec(&other).unwrap()).unwrap();
    let e = ScoreModel::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(e, PriorError::Mismatch { .. }), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("weights.safetensors") && msg.contains("config.json"),
        "{msg}"
    );

    let mut other = cc.clone();
    other.network.ch_mult = vec![1, 2, 2];
    std::fs::write(&cpath, serde_json::to_vec(&other).unwrap()).unwrap();
    let e = ScoreModel::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(e, PriorError::Mismatch { .. }), "{e}");

    // Invalid JSON and a missing file.
    std::fs::write(&cpath, b"{ not json").unwrap();
    let e = ScoreModel::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(e, PriorError::Config { .. }), "{e}");
    assert!(e.to_string().contains("config.json"));
    std::fs::write(&cpath, &good_c).unwrap();
    std::fs::remove_file(&wpath).unwrap();
    let e = ScoreModel::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(matches!(e, PriorError::Io { .. }), "{e}");
    assert!(e.to_string().contains("weights.safetensors"));

    // NaN weights.
    let mut m = candle_core::safetensors::load_buffer(&good_w, &Device::Cpu).unwrap();
    let k = m.keys().next().unwrap().clone();
    let t = m[&k].clone();
    let nan = Tensor::full(f32::NAN, t.shape(), &Device::Cpu).unwrap();
    m.insert(k, nan);
    candle_core::safetensors::save(&m, &wpath).unwrap();
    let e = ScoreModel::load(dir.path(), &Device::Cpu).unwrap_err();
    assert!(e.to_string().contains("NaN"), "{e}");
}

#[test]
fn embedded_default_prior_loads_and_scores() {
    let m = interf_image::prior::default_prior(&Device::Cpu).unwrap();
    let n = m.image_size();
    assert_eq!(n, 64);
    assert!(m.config().training.steps > 0);
    let x = Tensor::zeros((1, 1, n, n), DType::F32, &Device::Cpu).unwrap();
    let s: Vec<f32> = m
        .score(&x, 0.5)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
    assert!(s.iter().all(|v| v.is_finite()));
}
