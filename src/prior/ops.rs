//! A fused GroupNorm (+ optional SiLU) for the CPU, with its backward, and the switch between
//! this crate's CPU kernels and candle's stock ops.
//!
//! candle composes GroupNorm from about ten ops, each allocating and each with its own
//! backward; at 64² this and the activations dominated a training step. One pass per group
//! forward and two per group backward cut that several-fold. Other devices use the composed
//! version (`group_norm_ref`), which is also the reference in the tests.

use std::cell::Cell;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};

use super::fast_conv::{f32_data, par_new, with_cpu_f32, SharedOut};
use super::simd::{lane_sum, multiversion, sigmoid};

thread_local! {
    static STOCK: Cell<bool> = const { Cell::new(false) };
}

/// Routes the network's convolutions and group norms, when built on this thread, through
/// candle's stock ops instead of this crate's CPU kernels (off by default). For benchmarks and
/// tests that compare the two paths; per thread so that parallel tests cannot see each other's.
pub fn set_stock_kernels(on: bool) {
    STOCK.with(|s| s.set(on));
}

/// Whether [`set_stock_kernels`] is on for this thread.
pub fn stock_kernels() -> bool {
    STOCK.with(|s| s.get())
}

struct GroupNormOp {
    groups: usize,
    eps: f64,
    silu: bool,
}

/// Mean and 1/std of one group (two passes for accuracy).
#[inline(always)]
fn stats(x: &[f32], eps: f64) -> (f32, f32) {
    let n = x.len() as f64;
    let mean = (lane_sum(x.len(), |i| x[i]) / n) as f32;
    let var = lane_sum(x.len(), |i| (x[i] - mean) * (x[i] - mean)) / n;
    (mean, (1.0 / (var + eps).sqrt()) as f32)
}

multiversion! {
    /// One group of one image: `y = silu?(γ (x − μ)/σ + β)`, channels of `hw` values.
    fn gn_forward_chunk(
        xc: &[f32],
        yc: &mut [f32],
        gamma: &[f32],
        beta: &[f32],
        hw: usize,
        eps: f64,
        silu: bool,
    ) {
        let (mean, rstd) = stats(xc, eps);
        for (k, (xs, ys)) in xc.chunks(hw).zip(yc.chunks_mut(hw)).enumerate() {
            let a = gamma[k] * rstd;
            let b = beta[k] - mean * a;
            if silu {
                for (o, &v) in ys.iter_mut().zip(xs) {
                    let n = v * a + b;
                    *o = n * sigmoid(n);
                }
            } else {
                for (o, &v) in ys.iter_mut().zip(xs) {
                    *o = v * a + b;
                }
            }
        }
    }
}

multiversion! {
    /// The backward of [`gn_forward_chunk`]: `dx` of the group, and each channel's
    /// contributions to dγ and dβ.
    fn gn_backward_chunk(
        xc: &[f32],
        dyc: &[f32],
        dxc: &mut [f32],
        dg: &mut [f32],
        db: &mut [f32],
        gamma: &[f32],
        beta: &[f32],
        hw: usize,
        eps: f64,
        silu: bool,
    ) {
        let (mean, rstd) = stats(xc, eps);
        // dn: gradient w.r.t. the affine output (through SiLU when fused), kept in dx.
        let (mut s1, mut s2) = (0f64, 0f64);
        for k in 0..gamma.len() {
            let (xs, dys) = (&xc[k * hw..(k + 1) * hw], &dyc[k * hw..(k + 1) * hw]);
            let dxs = &mut dxc[k * hw..(k + 1) * hw];
            let (ga, be) = (gamma[k], beta[k]);
            if silu {
                for ((d, &x), &dy) in dxs.iter_mut().zip(xs).zip(dys) {
                    let n = (x - mean) * rstd * ga + be;
                    let s = sigmoid(n);
                    *d = dy * (s * (1.0 + n * (1.0 - s)));
                }
            } else {
                dxs.copy_from_slice(dys);
            }
            let dxs = &*dxs;
            let sb = lane_sum(hw, |j| dxs[j]);
            let sg = lane_sum(hw, |j| dxs[j] * ((xs[j] - mean) * rstd));
            dg[k] = sg as f32;
            db[k] = sb as f32;
            s1 += sb * ga as f64;
            s2 += sg * ga as f64;
        }
        let m1 = (s1 / dxc.len() as f64) as f32;
        let m2 = (s2 / dxc.len() as f64) as f32;
        for k in 0..gamma.len() {
            let ga = gamma[k];
            let xs = &xc[k * hw..(k + 1) * hw];
            for (d, &x) in dxc[k * hw..(k + 1) * hw].iter_mut().zip(xs) {
                let xh = (x - mean) * rstd;
                *d = rstd * (*d * ga - m1 - xh * m2);
            }
        }
    }
}

impl CustomOp3 for GroupNormOp {
    fn name(&self) -> &'static str {
        "fused-group-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let x = f32_data(s1, l1, "group norm: input")?;
        let gamma = f32_data(s2, l2, "group norm: weight")?;
        let beta = f32_data(s3, l3, "group norm: bias")?;
        let dims = l1.shape().dims();
        let c = dims[1];
        let hw: usize = dims[2..].iter().product();
        let cpg = c / self.groups;
        let chunk = cpg * hw;
        let (groups, eps, silu) = (self.groups, self.eps, self.silu);
        let group = |i: usize, yc: &mut [f32]| {
            let ch = (i % groups) * cpg..(i % groups + 1) * cpg;
            let xc = &x[i * chunk..(i + 1) * chunk];
            gn_forward_chunk(xc, yc, &gamma[ch.clone()], &beta[ch], hw, eps, silu);
        };
        // SAFETY: gn_forward_chunk writes all of its output.
        let y = unsafe { par_new(x.len(), x.len() / chunk, group) };
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        gamma: &Tensor,
        beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = x.dims().to_vec();
        let c = dims[1];
        let hw: usize = dims[2..].iter().product();
        let grad = grad.contiguous()?;
        let (dx, dgamma, dbeta) = with_cpu_f32(x, "group norm: input", |xv| {
            with_cpu_f32(gamma, "group norm: weight", |gv| {
                with_cpu_f32(beta, "group norm: bias", |bv| {
                    with_cpu_f32(&grad, "group norm: output gradient", |dyv| {
                        self.backward(xv, gv, bv, dyv, c, hw)
                    })
                })
            })
        })????;
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, dims, dev)?),
            Some(Tensor::from_vec(dgamma, c, dev)?),
            Some(Tensor::from_vec(dbeta, c, dev)?),
        ))
    }
}

impl GroupNormOp {
    /// dx, dγ, dβ from x, γ, β and dy (contiguous, C channels).
    fn backward(
        &self,
        xv: &[f32],
        gv: &[f32],
        betav: &[f32],
        dyv: &[f32],
        c: usize,
        hw: usize,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let cpg = c / self.groups;
        let chunk = cpg * hw;
        let n_chunks = xv.len() / chunk;
        // Per chunk (one group of one image): its contributions to dγ and dβ, summed below in
        // a fixed order.
        let mut parts = vec![0f32; n_chunks * 2 * cpg];
        let parts_out = SharedOut::new(&mut parts);
        let (groups, eps, silu) = (self.groups, self.eps, self.silu);
        let group = |i: usize, dxc: &mut [f32]| {
            // SAFETY: chunk i of the partial sums, written by this call only.
            let part = unsafe { parts_out.slice(i * 2 * cpg, 2 * cpg) };
            let (dg, db) = part.split_at_mut(cpg);
            let ch = (i % groups) * cpg..(i % groups + 1) * cpg;
            let (xc, dyc) = (
                &xv[i * chunk..(i + 1) * chunk],
                &dyv[i * chunk..(i + 1) * chunk],
            );
            gn_backward_chunk(
                xc,
                dyc,
                dxc,
                dg,
                db,
                &gv[ch.clone()],
                &betav[ch],
                hw,
                eps,
                silu,
            );
        };
        // SAFETY: gn_backward_chunk writes dx before reading it.
        let dx = unsafe { par_new(xv.len(), n_chunks, group) };
        let mut dgamma = vec![0f32; c];
        let mut dbeta = vec![0f32; c];
        for (i, part) in parts.chunks(2 * cpg).enumerate() {
            let g = i % self.groups;
            for k in 0..cpg {
                dgamma[g * cpg + k] += part[k];
                dbeta[g * cpg + k] += part[cpg + k];
            }
        }
        (dx, dgamma, dbeta)
    }
}

/// GroupNorm over (B, C, …) with per-channel affine, optionally followed by SiLU.
pub fn group_norm(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 && !stock_kernels() {
        x.contiguous()?
            .apply_op3(gamma, beta, GroupNormOp { groups, eps, silu })
    } else {
        group_norm_ref(x, gamma, beta, groups, eps, silu)
    }
}

/// The same computation from candle's basic ops (any device; reference for tests).
pub fn group_norm_ref(
    x: &Tensor,
    gamma: &Tensor,
    beta: &Tensor,
    groups: usize,
    eps: f64,
    silu: bool,
) -> Result<Tensor> {
    let dims = x.dims().to_vec();
    let (b, c) = (dims[0], dims[1]);
    let xg = x.reshape((b, groups, ()))?;
    let mean = xg.mean_keepdim(2)?;
    let xc = xg.broadcast_sub(&mean)?;
    let var = xc.sqr()?.mean_keepdim(2)?;
    let xh = xc
        .broadcast_div(&(var + eps)?.sqrt()?)?
        .reshape(dims.clone())?;
    let mut shape = vec![1usize; dims.len()];
    shape[1] = c;
    let y = xh
        .broadcast_mul(&gamma.reshape(shape.clone())?)?
        .broadcast_add(&beta.reshape(shape)?)?;
    if silu {
        candle_nn::ops::silu(&y)
    } else {
        Ok(y)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let s = b.abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap() / s.to_scalar::<f32>().unwrap().max(1e-30)
    }

    /// Forward and all three gradients against the composed stock ops, on a small group and
    /// on groups longer than a summation block (several blocks and a remainder).
    #[test]
    fn fused_matches_reference_forward_and_backward() {
        let dev = Device::Cpu;
        for (shape, groups) in [((2, 8, 5, 5), 4), ((2, 8, 40, 41), 2)] {
            let n = shape.0 * shape.1 * shape.2 * shape.3;
            let xv: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 1.7 + 0.3)
                .collect();
            let x = Var::from_tensor(&Tensor::from_vec(xv, shape, &dev).unwrap()).unwrap();
            let g = Var::from_tensor(
                &Tensor::new(&[1.0f32, 0.5, -0.3, 2.0, 1.1, 0.9, 0.7, 1.3], &dev).unwrap(),
            )
            .unwrap();
            let b = Var::from_tensor(
                &Tensor::new(&[0.1f32, -0.2, 0.3, 0.0, 0.5, -0.5, 0.2, 0.05], &dev).unwrap(),
            )
            .unwrap();
            let w: Vec<f32> = (0..n)
                .map(|i| ((i * 13 % 29) as f32 - 14.0) / 10.0)
                .collect();
            let w = Tensor::from_vec(w, shape, &dev).unwrap();
            for silu in [false, true] {
                let a = group_norm(&x, &g, &b, groups, 1e-6, silu).unwrap();
                let r = group_norm_ref(&x, &g, &b, groups, 1e-6, silu).unwrap();
                let e = max_rel(&a, &r);
                assert!(e < 1e-5, "{shape:?} silu={silu}: forward {e}");
                let ga = (a * &w).unwrap().sum_all().unwrap().backward().unwrap();
                let gr = (r * &w).unwrap().sum_all().unwrap().backward().unwrap();
                for v in [x.as_tensor(), g.as_tensor(), b.as_tensor()] {
                    let e = max_rel(ga.get(v).unwrap(), gr.get(v).unwrap());
                    assert!(e < 1e-4, "{shape:?} silu={silu}: gradient {e}");
                }
            }
        }
    }

    /// The input gradient against central differences of the loss Σ w⊙GN(x) evaluated in
    /// f64 (step 1e-3: truncation error ~1e-7 of the gradient scale).
    #[test]
    fn fused_gradient_matches_finite_differences() {
        let dev = Device::Cpu;
        let shape = (2, 8, 6, 7);
        let n = 2 * 8 * 6 * 7;
        let xv: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 1.7)
            .collect();
        let gamma = Tensor::new(&[1.0f32, 0.5, -0.3, 2.0, 1.1, 0.9, 0.7, 1.3], &dev).unwrap();
        let beta = Tensor::new(&[0.1f32, -0.2, 0.3, 0.0, 0.5, -0.5, 0.2, 0.05], &dev).unwrap();
        let w: Vec<f32> = (0..n).map(|i| (i as f32 * 0.71).sin()).collect();
        let w = Tensor::from_vec(w, shape, &dev).unwrap();
        let x = Var::from_tensor(&Tensor::from_vec(xv.clone(), shape, &dev).unwrap()).unwrap();
        for silu in [false, true] {
            let y = group_norm(&x, &gamma, &beta, 4, 1e-6, silu).unwrap();
            let gx: Vec<f32> = (y * &w)
                .unwrap()
                .sum_all()
                .unwrap()
                .backward()
                .unwrap()
                .get(&x)
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let scale = gx.iter().fold(0f32, |m, v| m.max(v.abs()));
            let f64_of = |t: &Tensor| t.to_dtype(DType::F64).unwrap();
            let loss = |v: &[f64]| -> f64 {
                let x = Tensor::from_vec(v.to_vec(), shape, &dev).unwrap();
                let y = group_norm_ref(&x, &f64_of(&gamma), &f64_of(&beta), 4, 1e-6, silu);
                (y.unwrap() * f64_of(&w))
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f64>()
                    .unwrap()
            };
            let base: Vec<f64> = xv.iter().map(|&v| v as f64).collect();
            for i in (0..n).step_by(29).chain([n - 1]) {
                let (mut p, mut m) = (base.clone(), base.clone());
                p[i] += 1e-3;
                m[i] -= 1e-3;
                let fd = ((loss(&p) - loss(&m)) / 2e-3) as f32;
                assert!(
                    (fd - gx[i]).abs() <= 1e-4 * scale,
                    "silu={silu} index {i}: fd {fd} vs {}",
                    gx[i]
                );
            }
        }
    }
}

/// `(a + b)·scale` in one pass (a residual join), with its backward.
struct ScaledSum {
    scale: f32,
}

impl candle_core::CustomOp2 for ScaledSum {
    fn name(&self) -> &'static str {
        "scaled-sum"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        let a = f32_data(s1, l1, "scaled sum: lhs")?;
        let b = f32_data(s2, l2, "scaled sum: rhs")?;
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "scaled sum: shapes {:?} and {:?} differ",
                l1.shape(),
                l2.shape()
            );
        }
        let piece = 1 << 14;
        let n = a.len();
        let scale = self.scale;
        // Whole pieces in parallel, the remainder here.
        let whole = n / piece * piece;
        // SAFETY: every element of each piece is written.
        let mut y = unsafe {
            par_new(whole, (whole / piece).max(1), |j, yj| {
                let r = j * yj.len()..(j + 1) * yj.len();
                scaled_sum_into(&a[r.clone()], &b[r], yj, scale);
            })
        };
        y.extend(
            a[whole..]
                .iter()
                .zip(&b[whole..])
                .map(|(&u, &v)| (u + v) * scale),
        );
        Ok((CpuStorage::F32(y), l1.shape().clone()))
    }

    fn bwd(
        &self,
        _a: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>)> {
        let g = grad.affine(self.scale as f64, 0.0)?;
        Ok((Some(g.clone()), Some(g)))
    }
}

multiversion! {
    fn scaled_sum_into(a: &[f32], b: &[f32], y: &mut [f32], scale: f32) {
        for ((o, &u), &v) in y.iter_mut().zip(a).zip(b) {
            *o = (u + v) * scale;
        }
    }
}

/// `(a + b)·scale`: one op on the CPU (f32), candle's add and affine elsewhere.
pub fn scaled_sum(a: &Tensor, b: &Tensor, scale: f64) -> Result<Tensor> {
    if a.device().is_cpu() && a.dtype() == DType::F32 && !stock_kernels() {
        a.contiguous()?.apply_op2(
            &b.contiguous()?,
            ScaledSum {
                scale: scale as f32,
            },
        )
    } else {
        (a + b)? * scale
    }
}

#[cfg(test)]
mod scaled_sum_tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn scaled_sum_matches_add_and_scale() {
        let dev = Device::Cpu;
        let n = 3 * 5 * 7 * 11 * 13;
        let a: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        let b: Vec<f32> = (0..n).map(|i| ((i * 13 % 29) as f32) / 10.0).collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (3, 5, 7, 143), &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::from_vec(b, (3, 5, 7, 143), &dev).unwrap()).unwrap();
        let w = (a.as_tensor().detach() * 0.5).unwrap().cos().unwrap();
        let y = scaled_sum(&a, &b, 0.7).unwrap();
        let r = ((a.as_tensor() + b.as_tensor()).unwrap() * 0.7).unwrap();
        let d = (&y - &r).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
        let g = (y * &w).unwrap().sum_all().unwrap().backward().unwrap();
        let w07 = (&w * 0.7).unwrap();
        for v in [&a, &b] {
            let d = (g.get(v).unwrap() - &w07)
                .unwrap()
                .abs()
                .unwrap()
                .max_all()
                .unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-6);
        }
    }
}
