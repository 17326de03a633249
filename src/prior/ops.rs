//! A fused GroupNorm (+ optional SiLU) for the CPU, with its backward, and the switch between
//! this crate's CPU kernels and candle's stock ops.
//!
//! candle composes GroupNorm from about ten ops, each allocating and each with its own
//! backward; at 64² this and the activations dominated a training step. One pass per group
//! forward and two per group backward cut that several-fold. Other devices use the composed
//! version (`group_norm_ref`), which is also the reference in the tests.

use std::cell::Cell;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Storage, Tensor};

use super::fast_conv::{par_for, SharedOut};

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

fn contiguous<'a>(s: &'a CpuStorage, l: &Layout, what: &str) -> Result<&'a [f32]> {
    let v = match s {
        CpuStorage::F32(v) => v.as_slice(),
        _ => candle_core::bail!("fused group norm: {what} must be f32"),
    };
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&v[a..b]),
        None => candle_core::bail!("fused group norm: {what} must be contiguous"),
    }
}

fn sigmoid(v: f32) -> f32 {
    1.0 / (1.0 + (-v).exp())
}

/// Mean and 1/std of one group (two passes for accuracy).
fn stats(x: &[f32], eps: f64) -> (f32, f32) {
    let n = x.len() as f64;
    let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
    let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
    (mean as f32, (1.0 / (var + eps).sqrt()) as f32)
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
        let x = contiguous(s1, l1, "input")?;
        let gamma = contiguous(s2, l2, "weight")?;
        let beta = contiguous(s3, l3, "bias")?;
        let dims = l1.shape().dims();
        let c = dims[1];
        let hw: usize = dims[2..].iter().product();
        let cpg = c / self.groups;
        let chunk = cpg * hw;
        let mut y = vec![0f32; x.len()];
        let out = SharedOut::new(&mut y);
        par_for(x.len() / chunk, |i| {
            // SAFETY: chunk i of y, written by this call only.
            let yc = unsafe { out.slice(i * chunk, chunk) };
            let xc = &x[i * chunk..(i + 1) * chunk];
            let g = i % self.groups;
            let (mean, rstd) = stats(xc, self.eps);
            for k in 0..cpg {
                let ch = g * cpg + k;
                let (a, b) = (gamma[ch] * rstd, beta[ch] - mean * gamma[ch] * rstd);
                let (xs, ys) = (&xc[k * hw..(k + 1) * hw], &mut yc[k * hw..(k + 1) * hw]);
                if self.silu {
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
        });
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
        let (dx, dgamma, dbeta) = with_cpu_f32(x, |xv| {
            with_cpu_f32(gamma, |gv| {
                with_cpu_f32(beta, |bv| {
                    with_cpu_f32(&grad, |dyv| self.backward(xv, gv, bv, dyv, c, hw))
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
        let mut dx = vec![0f32; xv.len()];
        // Per chunk (one group of one image): its contributions to dγ and dβ, summed below in
        // a fixed order.
        let mut parts = vec![0f32; n_chunks * 2 * cpg];
        let (dx_out, parts_out) = (SharedOut::new(&mut dx), SharedOut::new(&mut parts));
        par_for(n_chunks, |i| {
            // SAFETY: chunk i of dx and of the partial sums, written by this call only.
            let (dxc, part) = unsafe {
                (
                    dx_out.slice(i * chunk, chunk),
                    parts_out.slice(i * 2 * cpg, 2 * cpg),
                )
            };
            let (dg, db) = part.split_at_mut(cpg);
            let xc = &xv[i * chunk..(i + 1) * chunk];
            let dyc = &dyv[i * chunk..(i + 1) * chunk];
            let g = i % self.groups;
            let (mean, rstd) = stats(xc, self.eps);
            // dn: gradient w.r.t. the affine output (through SiLU when fused), kept in dx.
            let (mut s1, mut s2) = (0f64, 0f64);
            for k in 0..cpg {
                let ch = g * cpg + k;
                let (ga, be) = (gv[ch], betav[ch]);
                let (mut sg, mut sb) = (0f32, 0f32);
                for j in k * hw..(k + 1) * hw {
                    let xh = (xc[j] - mean) * rstd;
                    let mut d = dyc[j];
                    if self.silu {
                        let n = xh * ga + be;
                        let s = sigmoid(n);
                        d *= s * (1.0 + n * (1.0 - s));
                    }
                    dxc[j] = d;
                    sg += d * xh;
                    sb += d;
                }
                dg[k] = sg;
                db[k] = sb;
                s1 += (sb * ga) as f64;
                s2 += (sg * ga) as f64;
            }
            let m1 = (s1 / chunk as f64) as f32;
            let m2 = (s2 / chunk as f64) as f32;
            for k in 0..cpg {
                let ga = gv[g * cpg + k];
                for j in k * hw..(k + 1) * hw {
                    let xh = (xc[j] - mean) * rstd;
                    dxc[j] = rstd * (dxc[j] * ga - m1 - xh * m2);
                }
            }
        });
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

/// Runs `f` on the contiguous f32 CPU data of `t`.
fn with_cpu_f32<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> Result<R> {
    let (s, l) = t.storage_and_layout();
    match &*s {
        Storage::Cpu(cs) => Ok(f(contiguous(cs, l, "tensor")?)),
        _ => candle_core::bail!("fused group norm: tensors must be on the CPU"),
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

    #[test]
    fn fused_matches_reference_forward_and_backward() {
        let dev = Device::Cpu;
        let n = 2 * 8 * 5 * 5;
        let xv: Vec<f32> = (0..n)
            .map(|i| ((i * 37 % 101) as f32 / 50.0 - 1.0) * 1.7)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(xv, (2, 8, 5, 5), &dev).unwrap()).unwrap();
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
        let w = Tensor::from_vec(w, (2, 8, 5, 5), &dev).unwrap();
        for silu in [false, true] {
            let a = group_norm(&x, &g, &b, 4, 1e-6, silu).unwrap();
            let r = group_norm_ref(&x, &g, &b, 4, 1e-6, silu).unwrap();
            let d = (&a - &r).unwrap().abs().unwrap().max_all().unwrap();
            assert!(d.to_scalar::<f32>().unwrap() < 1e-5);
            let ga = (a * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let gr = (r * &w).unwrap().sum_all().unwrap().backward().unwrap();
            for v in [x.as_tensor(), g.as_tensor(), b.as_tensor()] {
                let p = ga.get(v).unwrap();
                let q = gr.get(v).unwrap();
                let d = (p - q).unwrap().abs().unwrap().max_all().unwrap();
                assert!(d.to_scalar::<f32>().unwrap() < 1e-4, "silu={silu}");
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
        let a = contiguous(s1, l1, "scaled sum lhs")?;
        let b = contiguous(s2, l2, "scaled sum rhs")?;
        if l1.shape() != l2.shape() {
            candle_core::bail!(
                "scaled sum: shapes {:?} and {:?} differ",
                l1.shape(),
                l2.shape()
            );
        }
        let mut y = vec![0f32; a.len()];
        let piece = 1 << 14;
        let out = SharedOut::new(&mut y);
        par_for(a.len().div_ceil(piece), |j| {
            let (s, e) = (j * piece, ((j + 1) * piece).min(a.len()));
            // SAFETY: piece j of y, written by this call only.
            let yj = unsafe { out.slice(s, e - s) };
            for ((o, &u), &v) in yj.iter_mut().zip(&a[s..e]).zip(&b[s..e]) {
                *o = (u + v) * self.scale;
            }
        });
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
