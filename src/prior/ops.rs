//! A fused GroupNorm (+ optional SiLU) for the CPU, with its backward.
//!
//! candle composes GroupNorm from about ten ops, each allocating and each with its own
//! backward; at 64² this and the activations dominated a training step. One pass per group
//! forward and two per group backward cut that several-fold. Other devices use the composed
//! version (`group_norm_ref`), which is also the reference in the tests.

use std::cell::Cell;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Result, Shape, Tensor};
use rayon::prelude::*;

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
        y.par_chunks_mut(chunk)
            .zip(x.par_chunks(chunk))
            .enumerate()
            .for_each(|(i, (yc, xc))| {
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
        _beta: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = x.dims().to_vec();
        let c = dims[1];
        let hw: usize = dims[2..].iter().product();
        let cpg = c / self.groups;
        let chunk = cpg * hw;
        let xv: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let gv: Vec<f32> = gamma.to_vec1()?;
        let betav: Vec<f32> = _beta.to_vec1()?;
        let dyv: Vec<f32> = grad.contiguous()?.flatten_all()?.to_vec1()?;
        let mut dx = vec![0f32; xv.len()];
        // Per chunk: dx and this chunk's per-channel contributions to dγ and dβ.
        let partial: Vec<(usize, Vec<f32>, Vec<f32>)> = dx
            .par_chunks_mut(chunk)
            .zip(xv.par_chunks(chunk).zip(dyv.par_chunks(chunk)))
            .enumerate()
            .map(|(i, (dxc, (xc, dyc)))| {
                let g = i % self.groups;
                let (mean, rstd) = stats(xc, self.eps);
                let mut dg = vec![0f32; cpg];
                let mut db = vec![0f32; cpg];
                // dn: gradient w.r.t. the affine output (through SiLU when fused).
                let mut dn = vec![0f32; chunk];
                let (mut s1, mut s2) = (0f64, 0f64);
                for k in 0..cpg {
                    let ch = g * cpg + k;
                    let (ga, be) = (gv[ch], betav[ch]);
                    for j in k * hw..(k + 1) * hw {
                        let xh = (xc[j] - mean) * rstd;
                        let mut d = dyc[j];
                        if self.silu {
                            let n = xh * ga + be;
                            let s = sigmoid(n);
                            d *= s * (1.0 + n * (1.0 - s));
                        }
                        dn[j] = d;
                        dg[k] += d * xh;
                        db[k] += d;
                        let dxh = d * ga;
                        s1 += dxh as f64;
                        s2 += (dxh * xh) as f64;
                    }
                }
                let m1 = (s1 / chunk as f64) as f32;
                let m2 = (s2 / chunk as f64) as f32;
                for k in 0..cpg {
                    let ga = gv[g * cpg + k];
                    for j in k * hw..(k + 1) * hw {
                        let xh = (xc[j] - mean) * rstd;
                        dxc[j] = rstd * (dn[j] * ga - m1 - xh * m2);
                    }
                }
                (g, dg, db)
            })
            .collect();
        let mut dgamma = vec![0f32; c];
        let mut dbeta = vec![0f32; c];
        for (g, dg, db) in partial {
            for k in 0..cpg {
                dgamma[g * cpg + k] += dg[k];
                dbeta[g * cpg + k] += db[k];
            }
        }
        let dev = x.device();
        Ok((
            Some(Tensor::from_vec(dx, dims, dev)?),
            Some(Tensor::from_vec(dgamma, c, dev)?),
            Some(Tensor::from_vec(dbeta, c, dev)?),
        ))
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

/// im2col for a k×k convolution with stride 1 and zero padding k/2:
/// (B, C, H, W) → (B, C·k², H·W), column order (c, ky, kx) as in a (O, C, k, k) weight.
///
/// One pass instead of padding, k² narrowed views and a stack: the backward of those views
/// in candle pads each gradient back to full size and adds it, k² times per convolution.
struct Im2Col {
    k: usize,
}

/// Also appends a row of ones per batch element, so that a convolution's bias folds into
/// its GEMM (a broadcast add and its reduction were a tenth of a training step).
fn im2col_cpu(x: &[f32], b: usize, c: usize, h: usize, w: usize, k: usize) -> Vec<f32> {
    let p = (k / 2) as isize;
    let hw = h * w;
    let per_b = (c * k * k + 1) * hw;
    let mut out = vec![0f32; b * per_b];
    out.par_chunks_mut(per_b).enumerate().for_each(|(bi, ob)| {
        let (cols, ones) = ob.split_at_mut(c * k * k * hw);
        ones.fill(1.0);
        cols.par_chunks_mut(k * k * hw)
            .enumerate()
            .for_each(|(ci, o)| {
                let bc = bi * c + ci;
                let src = &x[bc * hw..(bc + 1) * hw];
                for ky in 0..k {
                    for kx in 0..k {
                        let dst = &mut o[(ky * k + kx) * hw..(ky * k + kx + 1) * hw];
                        let dy = ky as isize - p;
                        let dx = kx as isize - p;
                        let x0 = (-dx).max(0) as usize;
                        let x1 = (w as isize - dx).min(w as isize).max(0) as usize;
                        for y in 0..h {
                            let sy = y as isize + dy;
                            if sy < 0 || sy >= h as isize || x1 <= x0 {
                                continue;
                            }
                            let srow = &src[sy as usize * w..(sy as usize + 1) * w];
                            let drow = &mut dst[y * w..(y + 1) * w];
                            let sx0 = (x0 as isize + dx) as usize;
                            drow[x0..x1].copy_from_slice(&srow[sx0..sx0 + (x1 - x0)]);
                        }
                    }
                }
            });
    });
    out
}

/// The adjoint of [`im2col_cpu`]: sums columns back onto the image.
fn col2im_cpu(g: &[f32], b: usize, c: usize, h: usize, w: usize, k: usize) -> Vec<f32> {
    let p = (k / 2) as isize;
    let hw = h * w;
    let mut out = vec![0f32; b * c * hw];
    let per_b = (c * k * k + 1) * hw;
    out.par_chunks_mut(hw).enumerate().for_each(|(bc, dst)| {
        let base = (bc / c) * per_b + (bc % c) * k * k * hw;
        let src = &g[base..base + k * k * hw];
        for ky in 0..k {
            for kx in 0..k {
                let col = &src[(ky * k + kx) * hw..(ky * k + kx + 1) * hw];
                let dy = ky as isize - p;
                let dx = kx as isize - p;
                let x0 = (-dx).max(0) as usize;
                let x1 = (w as isize - dx).min(w as isize).max(0) as usize;
                for y in 0..h {
                    let sy = y as isize + dy;
                    if sy < 0 || sy >= h as isize || x1 <= x0 {
                        continue;
                    }
                    let drow = &mut dst[sy as usize * w..(sy as usize + 1) * w];
                    let crow = &col[y * w..(y + 1) * w];
                    let sx0 = (x0 as isize + dx) as usize;
                    for (d, s) in drow[sx0..sx0 + (x1 - x0)].iter_mut().zip(&crow[x0..x1]) {
                        *d += s;
                    }
                }
            }
        }
    });
    out
}

impl candle_core::CustomOp1 for Im2Col {
    fn name(&self) -> &'static str {
        "im2col"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> Result<(CpuStorage, Shape)> {
        let x = contiguous(s, l, "im2col input")?;
        let (b, c, h, w) = l.shape().dims4()?;
        let out = im2col_cpu(x, b, c, h, w, self.k);
        Ok((
            CpuStorage::F32(out),
            Shape::from((b, c * self.k * self.k + 1, h * w)),
        ))
    }
    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad: &Tensor) -> Result<Option<Tensor>> {
        let (b, c, h, w) = arg.dims4()?;
        let g: Vec<f32> = grad.contiguous()?.flatten_all()?.to_vec1()?;
        let dx = col2im_cpu(&g, b, c, h, w, self.k);
        Ok(Some(Tensor::from_vec(dx, (b, c, h, w), arg.device())?))
    }
}

/// Columns of a k×k, stride-1, "same"-padded convolution plus a row of ones (for the bias):
/// (B, C, H, W) → (B, C·k² + 1, H·W).
pub fn im2col(x: &Tensor, k: usize) -> Result<Tensor> {
    if x.device().is_cpu() && x.dtype() == DType::F32 {
        x.contiguous()?.apply_op1(Im2Col { k })
    } else {
        im2col_ref(x, k)
    }
}

/// The same from candle's basic ops (any device; reference for tests).
pub fn im2col_ref(x: &Tensor, k: usize) -> Result<Tensor> {
    let (b, c, h, w) = x.dims4()?;
    let p = k / 2;
    let xp = x.pad_with_zeros(2, p, p)?.pad_with_zeros(3, p, p)?;
    let mut views = Vec::with_capacity(k * k);
    for ky in 0..k {
        for kx in 0..k {
            views.push(xp.narrow(2, ky, h)?.narrow(3, kx, w)?);
        }
    }
    let cols = Tensor::stack(&views, 2)?.reshape((b, c * k * k, h * w))?;
    let ones = Tensor::ones((b, 1, h * w), x.dtype(), x.device())?;
    Tensor::cat(&[&cols, &ones], 1)
}

#[cfg(test)]
mod im2col_tests {
    use super::*;
    use candle_core::{Device, Var};

    #[test]
    fn im2col_matches_reference_and_conv2d() {
        let dev = Device::Cpu;
        let (b, c, h, w) = (2, 3, 5, 4);
        let xv: Vec<f32> = (0..b * c * h * w)
            .map(|i| ((i * 37 % 23) as f32) / 7.0 - 1.0)
            .collect();
        let x = Var::from_tensor(&Tensor::from_vec(xv, (b, c, h, w), &dev).unwrap()).unwrap();
        let a = im2col(&x, 3).unwrap();
        let r = im2col_ref(&x, 3).unwrap();
        assert_eq!(
            a.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            r.flatten_all().unwrap().to_vec1::<f32>().unwrap()
        );
        let wv: Vec<f32> = (0..a.elem_count())
            .map(|i| ((i * 11 % 17) as f32) / 5.0)
            .collect();
        let wt = Tensor::from_vec(wv, a.shape(), &dev).unwrap();
        let ga = (a * &wt).unwrap().sum_all().unwrap().backward().unwrap();
        let gr = (r * &wt).unwrap().sum_all().unwrap().backward().unwrap();
        let d = (ga.get(&x).unwrap() - gr.get(&x).unwrap())
            .unwrap()
            .abs()
            .unwrap()
            .max_all()
            .unwrap()
            .to_scalar::<f32>()
            .unwrap();
        assert!(d < 1e-4);
        // A convolution through the columns equals candle's conv2d.
        let kv: Vec<f32> = (0..4 * c * 9)
            .map(|i| ((i * 5 % 13) as f32) / 6.0 - 1.0)
            .collect();
        let kern = Tensor::from_vec(kv, (4, c, 3, 3), &dev).unwrap();
        let bias = Tensor::new(&[0.5f32, -1.0, 0.25, 2.0], &dev).unwrap();
        let wb = Tensor::cat(
            &[
                kern.reshape((4, c * 9)).unwrap(),
                bias.reshape((4, 1)).unwrap(),
            ],
            1,
        )
        .unwrap();
        let y = wb
            .broadcast_left(b)
            .unwrap()
            .matmul(&im2col(&x, 3).unwrap())
            .unwrap()
            .reshape((b, 4, h, w))
            .unwrap();
        let y2 = x
            .conv2d(&kern, 1, 1, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, 4, 1, 1)).unwrap())
            .unwrap();
        let d = (y - y2).unwrap().abs().unwrap().max_all().unwrap();
        assert!(d.to_scalar::<f32>().unwrap() < 1e-4);
    }
}
