//! Gridding (`ms2dirty`) and degridding (`dirty2ms`) on a synthetic VLA-like coverage:
//! 27 antennas on a Y (B configuration), 8 h of earth rotation at δ = +40°, 16 channels
//! over 1.0-1.5 GHz, about 1 M samples, a 1024² image at a third of the finest fringe.

use criterion::{criterion_group, criterion_main, Criterion};
use interf_image::operator::{dirty2ms, ms2dirty, ImageGeometry, NufftOptions, WMode};
use num_complex::Complex;
use std::hint::black_box;

const C: f64 = 299_792_458.0;

fn vla_like(n_times: usize, n_chan: usize) -> (Vec<[f64; 3]>, Vec<f64>) {
    let lat = 34.08f64.to_radians();
    let dec = 40.0f64.to_radians();
    let mut ant = Vec::new();
    for az in [5.0f64, 125.0, 245.0] {
        let az = az.to_radians();
        for i in 1..=9 {
            let r = 5000.0 * (i as f64 / 9.0).powf(1.716);
            let (e, n) = (r * az.sin(), r * az.cos());
            // Local east/north (flat ground) to equatorial X (H = 0), Y (east), Z (pole).
            ant.push([-lat.sin() * n, e, lat.cos() * n]);
        }
    }
    let mut uvw = Vec::new();
    for t in 0..n_times {
        let h = (-4.0 + 8.0 * t as f64 / (n_times - 1) as f64) * std::f64::consts::PI / 12.0;
        let (sh, ch) = h.sin_cos();
        for a in 0..ant.len() {
            for b in a + 1..ant.len() {
                let l = [
                    ant[a][0] - ant[b][0],
                    ant[a][1] - ant[b][1],
                    ant[a][2] - ant[b][2],
                ];
                uvw.push([
                    sh * l[0] + ch * l[1],
                    -dec.sin() * ch * l[0] + dec.sin() * sh * l[1] + dec.cos() * l[2],
                    dec.cos() * ch * l[0] - dec.cos() * sh * l[1] + dec.sin() * l[2],
                ]);
            }
        }
    }
    let freq = (0..n_chan)
        .map(|c| 1.0e9 + 0.5e9 * c as f64 / (n_chan - 1) as f64)
        .collect();
    (uvw, freq)
}

fn bench(c: &mut Criterion) {
    let (uvw, freq) = vla_like(180, 16);
    let n = uvw.len() * freq.len();
    let umax = uvw.iter().map(|r| r[0].hypot(r[1])).fold(0.0, f64::max) * 1.5e9 / C;
    let pix = 1.0 / (3.0 * umax);
    let geom = ImageGeometry::new(1024, 1024, pix, pix).unwrap();
    let vis: Vec<Complex<f32>> = (0..n)
        .map(|i| Complex::new((i as f32 * 0.37).sin(), (i as f32 * 0.11).cos()))
        .collect();
    let weight = vec![1.0f32; n];
    let image: Vec<f64> = (0..geom.len())
        .map(|i| ((i * 7919) % 1000) as f64 / 1000.0)
        .collect();
    let mut g = c.benchmark_group(format!("nufft_{}k_vis_1024", n / 1000));
    g.sample_size(10);
    for eps in [1e-4, 1e-6] {
        for (name, mode) in [("w", WMode::Auto), ("no_w", WMode::Off)] {
            let opts = NufftOptions {
                epsilon: eps,
                w_mode: mode,
            };
            g.bench_function(format!("ms2dirty_eps{eps:e}_{name}"), |b| {
                b.iter(|| black_box(ms2dirty(&geom, &uvw, &freq, &vis, &weight, &opts).unwrap()))
            });
            g.bench_function(format!("dirty2ms_eps{eps:e}_{name}"), |b| {
                b.iter(|| black_box(dirty2ms(&geom, &uvw, &freq, &image, &opts).unwrap()))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
