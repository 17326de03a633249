//! One DSM training step and one score evaluation of the default-size (small) network at 64².
//!
//! `RAYON_NUM_THREADS` sets candle's CPU threads; compare runs on an otherwise idle machine.

use candle_core::{Device, Tensor};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use interf_image::prior::data::ImageStack;
use interf_image::prior::sde::{SdeConfig, VeSde};
use interf_image::prior::train::{random_batch, TrainConfig, Trainer};
use interf_image::prior::UNetConfig;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn setup(batch: usize) -> (Trainer, Tensor) {
    let n = 64;
    let cfg = UNetConfig::small(n);
    let sde = SdeConfig::Ve(VeSde::new(1e-3, 30.0));
    let tc = TrainConfig {
        batch_size: batch,
        ..Default::default()
    };
    let tr = Trainer::new(&cfg, sde, tc, &Device::Cpu).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let data = ImageStack::new(
        8,
        n,
        n,
        (0..8 * n * n)
            .map(|i| ((i * 7) % 13) as f32 / 13.0)
            .collect(),
    );
    let x = random_batch(&data, batch, true, &mut rng, &Device::Cpu).unwrap();
    (tr, x)
}

fn bench_prior(c: &mut Criterion) {
    let mut g = c.benchmark_group("prior_64");
    g.sample_size(10);
    for batch in [16usize, 64] {
        let (mut tr, x) = setup(batch);
        g.bench_with_input(BenchmarkId::new("train_step", batch), &batch, |b, _| {
            b.iter(|| tr.train_step(&x).unwrap())
        });
        let t = Tensor::full(0.5f32, batch, &Device::Cpu).unwrap();
        g.bench_with_input(BenchmarkId::new("score_eval", batch), &batch, |b, _| {
            b.iter(|| tr.net.forward(&x, &t).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, bench_prior);
criterion_main!(benches);
