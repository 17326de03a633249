//! Forward and training-step times of the score network, candle's stock kernels vs ours.
//!
//! `cargo bench --bench prior_compare -- [--config unet2m|default] [--batch N] [--impl ours|stock]
//! [--reps N] [--clock wall|thread]` prints one line per measurement:
//! `config=… batch=… impl=… params=… forward_s=… train_step_s=…` (medians).
//! `benches/run_prior_bench.sh` runs it beside `benches/prior_torch.py` (PyTorch, same network).
//! `RAYON_NUM_THREADS` sets candle's CPU threads. `--clock thread` times the CPU time of the
//! calling thread instead of wall time: with one thread (no worker pool) that is all the work
//! done, and hardly depends on what else the machine runs (Linux only).

use candle_core::{Device, Tensor};
use interf_image::prior::data::ImageStack;
use interf_image::prior::sde::{SdeConfig, VeSde};
use interf_image::prior::train::{random_batch, TrainConfig, Trainer};
use interf_image::prior::UNetConfig;
use rand::rngs::StdRng;
use rand::SeedableRng;

fn config(name: &str) -> UNetConfig {
    match name {
        // The 2.06 M-parameter U-Net of the performance issue.
        "unet2m" => UNetConfig {
            image_size: 64,
            nf: 32,
            ch_mult: vec![1, 2, 2, 2],
            num_res_blocks: 2,
            attn_resolutions: vec![],
            fourier_scale: 16.0,
        },
        // priors/default/config.json.
        "default" => UNetConfig::small(64),
        _ => panic!("unknown config {name} (unet2m|default)"),
    }
}

/// CPU time of the calling thread (s), from `/proc/thread-self/schedstat` (ns on the CPU).
fn thread_cpu_s() -> f64 {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat")
        .expect("--clock thread needs /proc/thread-self/schedstat (Linux)");
    let ns: u64 = s.split_whitespace().next().unwrap().parse().unwrap();
    ns as f64 * 1e-9
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let get = |k: &str, d: &str| -> String {
        args.iter()
            .position(|a| a == k)
            .and_then(|i| args.get(i + 1))
            .cloned()
            .unwrap_or_else(|| d.to_string())
    };
    let cname = get("--config", "unet2m");
    let batch: usize = get("--batch", "16").parse().unwrap();
    let imp = get("--impl", "ours");
    let reps: usize = get("--reps", "5").parse().unwrap();
    // For profilers: `--only forward` times forward passes alone.
    let only = get("--only", "");
    let start = std::time::Instant::now();
    let clock: Box<dyn Fn() -> f64> = match get("--clock", "wall").as_str() {
        "wall" => Box::new(move || start.elapsed().as_secs_f64()),
        "thread" => Box::new(thread_cpu_s),
        c => panic!("--clock wall|thread, not {c}"),
    };
    interf_image::prior::ops::set_stock_kernels(match imp.as_str() {
        "ours" => false,
        "stock" => true,
        _ => panic!("--impl ours|stock"),
    });
    let cfg = config(&cname);
    let n = cfg.image_size;
    let sde = SdeConfig::Ve(VeSde::new(1e-3, 30.0));
    let tc = TrainConfig {
        batch_size: batch,
        warmup_steps: 1,
        ..Default::default()
    };
    let dev = Device::Cpu;
    let mut tr = Trainer::new(&cfg, sde, tc, &dev).unwrap();
    let mut rng = StdRng::seed_from_u64(0);
    let data = ImageStack::new(
        8,
        n,
        n,
        (0..8 * n * n)
            .map(|i| ((i * 7) % 13) as f32 / 13.0)
            .collect(),
    );
    let x = random_batch(&data, batch, true, &mut rng, &dev).unwrap();
    let t = Tensor::full(0.5f32, batch, &dev).unwrap();
    if only == "forward" {
        for _ in 0..reps {
            let t0 = clock();
            let y = tr.net.forward(&x, &t).unwrap();
            let _ = y.sum_all().unwrap().to_scalar::<f32>().unwrap();
            println!("forward_s={:.4}", clock() - t0);
        }
        return;
    }
    if only == "backward" {
        // One graph, its backward again and again (for profilers).
        let loss =
            interf_image::prior::train::dsm_loss(&tr.net, &tr.sde, &x, 1e-5, &mut rng).unwrap();
        for _ in 0..reps {
            let t0 = clock();
            let _ = loss.backward().unwrap();
            println!("backward_s={:.4}", clock() - t0);
        }
        return;
    }
    if only == "phases" {
        // Where a training step goes: the loss's forward, its backward, the rest (clip,
        // AdamW, EMA) as the difference from a whole step.
        tr.train_step(&x).unwrap();
        let (mut f, mut b, mut s) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..reps {
            let t0 = clock();
            let loss =
                interf_image::prior::train::dsm_loss(&tr.net, &tr.sde, &x, 1e-5, &mut rng).unwrap();
            let t1 = clock();
            let _ = loss.backward().unwrap();
            let t2 = clock();
            tr.train_step(&x).unwrap();
            f.push(t1 - t0);
            b.push(t2 - t1);
            s.push(clock() - t2);
        }
        println!(
            "loss_forward_s={:.4} backward_s={:.4} train_step_s={:.4}",
            median(f),
            median(b),
            median(s)
        );
        return;
    }
    // Warm-up (allocator, rayon pool), then the timed repetitions.
    tr.train_step(&x).unwrap();
    let mut fwd = Vec::new();
    let mut step = Vec::new();
    for _ in 0..reps {
        let t0 = clock();
        let y = tr.net.forward(&x, &t).unwrap();
        let _ = y.sum_all().unwrap().to_scalar::<f32>().unwrap();
        fwd.push(clock() - t0);
        let t0 = clock();
        tr.train_step(&x).unwrap();
        step.push(clock() - t0);
    }
    println!(
        "config={cname} batch={batch} impl={imp} params={} forward_s={:.4} train_step_s={:.4}",
        tr.num_params(),
        median(fwd),
        median(step)
    );
}
