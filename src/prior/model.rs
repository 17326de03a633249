//! NCSN++-style U-Net score network for single-channel images (candle).
//!
//! The network predicts `σ(t)·∇ log p_t(x)` (≈ −z for x_t = μ x₀ + σ z); dividing by σ(t) gives
//! the score. This normalisation keeps the output O(1) at every noise level.

use candle_core::{DType, Module, Result, Tensor, D};
use candle_nn::{Linear, VarBuilder};
use serde::{Deserialize, Serialize};

/// Architecture of the score network; stored in `config.json` of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNetConfig {
    /// Side of the square input images (32 … 256; divisible by 2^(levels − 1)).
    pub image_size: usize,
    /// Channels at the finest level.
    pub nf: usize,
    /// Channel multiplier of each resolution level (finest first).
    pub ch_mult: Vec<usize>,
    /// Residual blocks per level on the way down (the way up has one more, as in NCSN++).
    pub num_res_blocks: usize,
    /// Resolutions (image sides) at which self-attention follows the residual blocks.
    pub attn_resolutions: Vec<usize>,
    /// Standard deviation of the fixed Gaussian Fourier frequencies of the time embedding.
    pub fourier_scale: f64,
}

impl UNetConfig {
    /// Sized to train on two CPU cores in about two hours at 64² (≈0.6 M parameters).
    pub fn small(image_size: usize) -> Self {
        Self {
            image_size,
            nf: 16,
            ch_mult: vec![1, 2, 4, 4],
            num_res_blocks: 1,
            attn_resolutions: vec![image_size / 4],
            fourier_scale: 16.0,
        }
    }
    /// A GPU-sized model (tens of millions of parameters), closer to NCSN++ proper.
    pub fn large(image_size: usize) -> Self {
        Self {
            image_size,
            nf: 64,
            ch_mult: vec![1, 2, 2, 2, 2],
            num_res_blocks: 2,
            attn_resolutions: vec![16],
            fourier_scale: 16.0,
        }
    }
    /// A very small network for tests (runs in milliseconds at 16² – 32²).
    pub fn tiny(image_size: usize) -> Self {
        Self {
            image_size,
            nf: 8,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![],
            fourier_scale: 16.0,
        }
    }
    pub fn preset(name: &str, image_size: usize) -> Option<Self> {
        match name {
            "tiny" => Some(Self::tiny(image_size)),
            "small" => Some(Self::small(image_size)),
            "large" => Some(Self::large(image_size)),
            _ => None,
        }
    }
    pub fn temb_dim(&self) -> usize {
        4 * self.nf
    }
    /// Checks that the levels divide the image size evenly.
    pub fn validate(&self) -> std::result::Result<(), String> {
        if self.ch_mult.is_empty() || self.nf == 0 || self.num_res_blocks == 0 {
            return Err("nf, ch_mult and num_res_blocks must be non-empty/positive".into());
        }
        let f = 1usize << (self.ch_mult.len() - 1);
        if self.image_size < 8 || !self.image_size.is_multiple_of(f) {
            return Err(format!(
                "image size {} is not divisible by 2^(levels-1) = {f}",
                self.image_size
            ));
        }
        Ok(())
    }

    /// A conservative estimate of the peak bytes of the activations of one pass of the network
    /// on `batch` images (f32), before anything is allocated, so that a batch too large for
    /// the memory is refused with a message instead of an abort. `backward`: the pass also
    /// takes a gradient through the network (DPS, training), which keeps every intermediate of
    /// the graph alive and then as many gradients.
    ///
    /// Forward only: the skip connections of every level stay alive until the way up, plus the
    /// working tensors of one residual block at the widest level (concatenated input,
    /// normalisations, convolutions, skip, sum: about 9 tensors of the level's width) and of one
    /// attention layer (q, k, v, output: 6 tensors of the width, and the (HW)² attention
    /// matrix and its softmax). The convolutions' columns are built in small per-thread bands
    /// and do not count. Backward: each residual block (2·blocks + 1 per level, down and up)
    /// keeps about 8 tensors of the level's width, each attention layer 8 and 3 matrices, all
    /// counted twice (values and gradients). Weights are not included.
    pub fn activation_bytes(&self, batch: usize, backward: bool) -> f64 {
        let nrb = self.num_res_blocks as f64;
        let mut skips = (self.nf * self.image_size * self.image_size) as f64;
        let mut working = 0.0f64;
        let mut graph = 2.0 * skips;
        let levels = self.ch_mult.len();
        for (l, m) in self.ch_mult.iter().enumerate() {
            let r = (self.image_size >> l) as f64;
            let width = (self.nf * m) as f64 * r * r;
            let attn = if self.attn_resolutions.contains(&(self.image_size >> l)) || l + 1 == levels
            {
                // The middle block always attends, at the coarsest level.
                6.0 * width + 2.0 * r.powi(4)
            } else {
                0.0
            };
            skips += (nrb + 1.0) * width;
            working = working.max(9.0 * width).max(attn);
            let blocks = 2.0 * nrb + 1.0 + if l + 1 == levels { 2.0 } else { 0.0 };
            let attn_layers = if attn > 0.0 { blocks } else { 0.0 };
            graph += blocks * 8.0 * width + attn_layers * (8.0 * width + 3.0 * r.powi(4));
            graph += 2.0 * width; // the resampling between levels
        }
        // Forward ×2: candle's copies (contiguous, broadcasts) and the blocks the allocator
        // keeps; measured on the built-in prior (64², batch 1 → 32, debug build), the RSS
        // grew by 4.4 MB per image forward (estimate 7.1) and 22 MB per image with the
        // backward pass (estimate 36).
        let floats = if backward {
            2.0 * graph
        } else {
            2.0 * (skips + working)
        };
        4.0 * batch as f64 * floats
    }
}

fn n_groups(c: usize) -> usize {
    [32, 16, 8, 4, 2, 1]
        .into_iter()
        .find(|g| c.is_multiple_of(*g) && c / g >= 4)
        .unwrap_or(1)
}

/// GroupNorm with the parameter names of `candle_nn::group_norm`, computed by the fused op.
#[derive(Debug, Clone)]
struct GroupNorm {
    weight: Tensor,
    bias: Tensor,
    groups: usize,
}

impl GroupNorm {
    /// Normalise then SiLU (every use but attention's).
    fn forward_silu(&self, x: &Tensor) -> Result<Tensor> {
        super::ops::group_norm(x, &self.weight, &self.bias, self.groups, 1e-6, true)
    }
}

impl Module for GroupNorm {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        super::ops::group_norm(x, &self.weight, &self.bias, self.groups, 1e-6, false)
    }
}

fn group_norm(c: usize, vb: VarBuilder) -> Result<GroupNorm> {
    Ok(GroupNorm {
        weight: vb.get(c, "weight")?,
        bias: vb.get(c, "bias")?,
        groups: n_groups(c),
    })
}

/// A plain convolution; the weights live here (not in `candle_nn::Conv2d`) so that the
/// implementation of the convolution can change without touching checkpoints.
#[derive(Debug, Clone)]
struct Conv {
    w: Tensor,
    b: Tensor,
}

impl Conv {
    fn new(cin: usize, cout: usize, k: usize, vb: VarBuilder) -> Result<Self> {
        let w = vb.get((cout, cin, k, k), "weight")?;
        let b = vb.get(cout, "bias")?;
        Ok(Self { w, b })
    }
}

impl Module for Conv {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let k = self.w.dim(3)?;
        if super::ops::stock_kernels() {
            return super::fast_conv::conv2d_ref(x, &self.w, &self.b, k / 2);
        }
        // im2col + GEMM forward and backward; candle's conv2d input gradient is a naive
        // conv_transpose2d loop (10× the forward time here).
        super::fast_conv::conv2d(x, &self.w, &self.b, k / 2)
    }
}

impl Conv {
    /// The convolution plus a per-image bias `extra` (B, O): added inside the convolution's
    /// own bias rather than as a broadcast over the whole output.
    fn forward_plus(&self, x: &Tensor, extra: &Tensor) -> Result<Tensor> {
        let k = self.w.dim(3)?;
        if super::ops::stock_kernels() {
            return self
                .forward(x)?
                .broadcast_add(&extra.unsqueeze(2)?.unsqueeze(3)?);
        }
        let b = self.b.unsqueeze(0)?.broadcast_add(extra)?;
        super::fast_conv::conv2d(x, &self.w, &b, k / 2)
    }
}

#[derive(Debug, Clone)]
struct ResBlock {
    norm0: GroupNorm,
    conv0: Conv,
    temb: Linear,
    norm1: GroupNorm,
    conv1: Conv,
    skip: Option<Conv>,
}

impl ResBlock {
    fn new(cin: usize, cout: usize, temb_dim: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm0: group_norm(cin, vb.pp("norm0"))?,
            conv0: Conv::new(cin, cout, 3, vb.pp("conv0"))?,
            temb: candle_nn::linear(temb_dim, cout, vb.pp("temb"))?,
            norm1: group_norm(cout, vb.pp("norm1"))?,
            conv1: Conv::new(cout, cout, 3, vb.pp("conv1"))?,
            skip: if cin != cout {
                Some(Conv::new(cin, cout, 1, vb.pp("skip"))?)
            } else {
                None
            },
        })
    }

    fn forward(&self, x: &Tensor, temb: &Tensor) -> Result<Tensor> {
        let h = self.norm0.forward_silu(x)?;
        let h = self.conv0.forward_plus(&h, &self.temb.forward(temb)?)?;
        let h = self.norm1.forward_silu(&h)?;
        let h = self.conv1.forward(&h)?;
        let s = match &self.skip {
            Some(c) => c.forward(x)?,
            None => x.clone(),
        };
        // NCSN++'s skip_rescale keeps activations at unit variance through deep stacks.
        super::ops::scaled_sum(&s, &h, std::f64::consts::FRAC_1_SQRT_2)
    }
}

#[derive(Debug, Clone)]
struct Attention {
    norm: GroupNorm,
    q: Linear,
    k: Linear,
    v: Linear,
    proj_out: Linear,
}

impl Attention {
    fn new(c: usize, vb: VarBuilder) -> Result<Self> {
        Ok(Self {
            norm: group_norm(c, vb.pp("norm"))?,
            q: candle_nn::linear(c, c, vb.pp("q"))?,
            k: candle_nn::linear(c, c, vb.pp("k"))?,
            v: candle_nn::linear(c, c, vb.pp("v"))?,
            proj_out: candle_nn::linear(c, c, vb.pp("proj_out"))?,
        })
    }
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (b, c, h, w) = x.dims4()?;
        let hs = self
            .norm
            .forward(x)?
            .reshape((b, c, h * w))?
            .transpose(1, 2)?
            .contiguous()?;
        let q = self.q.forward(&hs)?;
        let k = self.k.forward(&hs)?;
        let v = self.v.forward(&hs)?;
        let att = (q.matmul(&k.t()?)? * (1.0 / (c as f64).sqrt()))?;
        let att = candle_nn::ops::softmax_last_dim(&att)?;
        let o = self.proj_out.forward(&att.matmul(&v)?)?;
        let o = o.transpose(1, 2)?.reshape((b, c, h, w))?;
        super::ops::scaled_sum(x, &o, std::f64::consts::FRAC_1_SQRT_2)
    }
}

enum Layer {
    Res(ResBlock),
    Attn(Attention),
    Down,
    Up(Conv),
}

/// The score network.
pub struct UNet {
    cfg: UNetConfig,
    fourier_w: Tensor,
    temb0: Linear,
    temb1: Linear,
    conv_in: Conv,
    down: Vec<Layer>,
    mid: Vec<Layer>,
    up: Vec<Layer>,
    norm_out: GroupNorm,
    conv_out: Conv,
}

/// Name of the fixed (non-trained) Fourier frequencies.
pub const FOURIER_NAME: &str = "temb.fourier.w";

impl UNet {
    pub fn new(cfg: &UNetConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate().map_err(candle_core::Error::msg)?;
        let nf = cfg.nf;
        let td = cfg.temb_dim();
        let fourier_w = vb.get(nf, FOURIER_NAME)?;
        let temb0 = candle_nn::linear(fourier_w.dim(0)? * 2, td, vb.pp("temb.dense0"))?;
        let temb1 = candle_nn::linear(td, td, vb.pp("temb.dense1"))?;
        let conv_in = Conv::new(1, nf, 3, vb.pp("conv_in"))?;

        let nlev = cfg.ch_mult.len();
        let mut down = Vec::new();
        let mut skip_ch = vec![nf];
        let mut ch = nf;
        let mut res = cfg.image_size;
        let vd = vb.pp("down");
        for (lvl, m) in cfg.ch_mult.iter().enumerate() {
            let cout = nf * m;
            for i in 0..cfg.num_res_blocks {
                down.push(Layer::Res(ResBlock::new(
                    ch,
                    cout,
                    td,
                    vd.pp(format!("{lvl}.res{i}")),
                )?));
                ch = cout;
                if cfg.attn_resolutions.contains(&res) {
                    down.push(Layer::Attn(Attention::new(
                        ch,
                        vd.pp(format!("{lvl}.attn{i}")),
                    )?));
                }
                skip_ch.push(ch);
            }
            if lvl + 1 < nlev {
                down.push(Layer::Down);
                res /= 2;
                skip_ch.push(ch);
            }
        }
        let vm = vb.pp("mid");
        let mid = vec![
            Layer::Res(ResBlock::new(ch, ch, td, vm.pp("res0"))?),
            Layer::Attn(Attention::new(ch, vm.pp("attn"))?),
            Layer::Res(ResBlock::new(ch, ch, td, vm.pp("res1"))?),
        ];
        let mut up = Vec::new();
        let vu = vb.pp("up");
        for lvl in (0..nlev).rev() {
            let cout = nf * cfg.ch_mult[lvl];
            for i in 0..=cfg.num_res_blocks {
                let s = skip_ch.pop().expect("skip channel bookkeeping");
                up.push(Layer::Res(ResBlock::new(
                    ch + s,
                    cout,
                    td,
                    vu.pp(format!("{lvl}.res{i}")),
                )?));
                ch = cout;
                if cfg.attn_resolutions.contains(&res) {
                    up.push(Layer::Attn(Attention::new(
                        ch,
                        vu.pp(format!("{lvl}.attn{i}")),
                    )?));
                }
            }
            if lvl > 0 {
                up.push(Layer::Up(Conv::new(ch, ch, 3, vu.pp(format!("{lvl}.up")))?));
                res *= 2;
            }
        }
        debug_assert!(skip_ch.is_empty());
        let norm_out = group_norm(ch, vb.pp("norm_out"))?;
        let conv_out = Conv::new(ch, 1, 3, vb.pp("conv_out"))?;
        Ok(Self {
            cfg: cfg.clone(),
            fourier_w,
            temb0,
            temb1,
            conv_in,
            down,
            mid,
            up,
            norm_out,
            conv_out,
        })
    }

    pub fn config(&self) -> &UNetConfig {
        &self.cfg
    }

    /// Gaussian Fourier features of t, then a two-layer MLP.
    fn time_embedding(&self, t: &Tensor) -> Result<Tensor> {
        let t = t.to_dtype(self.fourier_w.dtype())?.reshape(((), 1))?;
        let proj = t
            .broadcast_mul(&self.fourier_w.unsqueeze(0)?)?
            .affine(2.0 * std::f64::consts::PI, 0.0)?;
        let emb = Tensor::cat(&[proj.sin()?, proj.cos()?], D::Minus1)?;
        let h = candle_nn::ops::silu(&self.temb0.forward(&emb)?)?;
        self.temb1.forward(&h)
    }

    /// `x`: (B, 1, H, W); `t`: (B,) diffusion times in [0, 1]. Returns σ(t)·score, (B, 1, H, W).
    pub fn forward(&self, x: &Tensor, t: &Tensor) -> Result<Tensor> {
        let (_, c, h, w) = x.dims4()?;
        if c != 1 || h != self.cfg.image_size || w != self.cfg.image_size {
            candle_core::bail!(
                "score network expects (B, 1, {s}, {s}) input, got {:?}",
                x.dims(),
                s = self.cfg.image_size
            );
        }
        let temb = candle_nn::ops::silu(&self.time_embedding(t)?)?;
        let mut hs = vec![self.conv_in.forward(x)?];
        let mut h = hs[0].clone();
        for layer in &self.down {
            match layer {
                Layer::Res(r) => {
                    h = r.forward(&h, &temb)?;
                    hs.push(h.clone());
                }
                Layer::Attn(a) => {
                    h = a.forward(&h)?;
                    *hs.last_mut().unwrap() = h.clone();
                }
                Layer::Down => {
                    h = super::resample::avg_pool2(&h)?;
                    hs.push(h.clone());
                }
                Layer::Up(_) => unreachable!(),
            }
        }
        for layer in &self.mid {
            h = match layer {
                Layer::Res(r) => r.forward(&h, &temb)?,
                Layer::Attn(a) => a.forward(&h)?,
                _ => unreachable!(),
            };
        }
        for layer in &self.up {
            h = match layer {
                Layer::Res(r) => {
                    let s = hs.pop().expect("skip bookkeeping");
                    r.forward(&super::concat::cat_channels(&h, &s)?, &temb)?
                }
                Layer::Attn(a) => a.forward(&h)?,
                Layer::Up(c) => c.forward(&super::resample::upsample2(&h)?)?,
                Layer::Down => unreachable!(),
            };
        }
        let h = self.norm_out.forward_silu(&h)?;
        self.conv_out.forward(&h)
    }
}

/// Deterministic initialisation from a seeded RNG (candle's CPU RNG cannot be seeded).
///
/// Weights: Kaiming-normal on fan-in; the last convolution of every residual branch, the
/// attention output and the network output start at zero so that the untrained network is the
/// identity on its skip paths and predicts 0 (DSM loss = 1 per pixel).
pub fn init_weights(varmap: &candle_nn::VarMap, cfg: &UNetConfig, seed: u64) -> Result<()> {
    use rand::SeedableRng;
    use rand_distr::{Distribution, Normal};
    let data = varmap.data().lock().unwrap();
    let mut names: Vec<&String> = data.keys().collect();
    names.sort();
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    for name in names {
        let var = &data[name];
        let shape = var.shape().clone();
        let n = shape.elem_count();
        let dims = shape.dims();
        let values: Vec<f32> = if name == FOURIER_NAME {
            let d = Normal::new(0.0, cfg.fourier_scale).unwrap();
            (0..n).map(|_| d.sample(&mut rng) as f32).collect()
        } else if name.ends_with(".bias") {
            vec![0.0; n]
        } else if dims.len() == 1 {
            vec![1.0; n]
        } else if name.ends_with("conv1.weight")
            || name.ends_with("proj_out.weight")
            || name == "conv_out.weight"
        {
            vec![0.0; n]
        } else {
            let fan_in: usize = dims[1..].iter().product();
            let d = Normal::new(0.0, (2.0 / fan_in as f64).sqrt()).unwrap();
            (0..n).map(|_| d.sample(&mut rng) as f32).collect()
        };
        let t = Tensor::from_vec(values, shape, var.device())?.to_dtype(var.dtype())?;
        var.set(&t)?;
    }
    Ok(())
}

/// Builds a freshly initialised network and the VarMap that owns its weights.
pub fn new_unet(
    cfg: &UNetConfig,
    seed: u64,
    device: &candle_core::Device,
) -> Result<(UNet, candle_nn::VarMap)> {
    let varmap = candle_nn::VarMap::new();
    let vb = VarBuilder::from_varmap(&varmap, DType::F32, device);
    let net = UNet::new(cfg, vb)?;
    init_weights(&varmap, cfg, seed)?;
    Ok((net, varmap))
}

/// Number of trained parameters (the fixed Fourier frequencies excluded).
pub fn num_params(varmap: &candle_nn::VarMap) -> usize {
    varmap
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(k, _)| k.as_str() != FOURIER_NAME)
        .map(|(_, v)| v.elem_count())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn activation_estimate_scales_with_the_batch() {
        let cfg = UNetConfig::small(64);
        let one = cfg.activation_bytes(1, false);
        // Measured RSS of the built-in prior (this config): 4.4 MB per image forward,
        // 22 MB with the backward pass; the estimate must not be below, nor absurdly above.
        assert!((4.4e6..44e6).contains(&one), "{one}");
        let back = cfg.activation_bytes(1, true);
        assert!((22e6..220e6).contains(&back), "{back}");
        assert_eq!(cfg.activation_bytes(16, false), 16.0 * one);
        assert!(UNetConfig::small(128).activation_bytes(1, false) > 4.0 * one);
    }

    #[test]
    fn shapes_and_param_counts() {
        for (cfg, s) in [
            (UNetConfig::tiny(16), 16usize),
            (UNetConfig::small(32), 32),
            (UNetConfig::small(64), 64),
        ] {
            let (net, vm) = new_unet(&cfg, 0, &Device::Cpu).unwrap();
            let x = Tensor::zeros((2, 1, s, s), DType::F32, &Device::Cpu).unwrap();
            let t = Tensor::new(&[0.1f32, 0.9], &Device::Cpu).unwrap();
            let y = net.forward(&x, &t).unwrap();
            assert_eq!(y.dims(), &[2, 1, s, s]);
            let p = num_params(&vm);
            assert!(p > 1000);
            if s == 64 {
                assert!(
                    (400_000..1_200_000).contains(&p),
                    "small(64) has {p} params"
                );
            }
        }
        assert!(UNetConfig::small(60).validate().is_err());
    }

    /// Every weight random (init_weights zeroes some, which would hide their paths).
    fn randomise(vm: &candle_nn::VarMap, seed: u64) {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
        let data = vm.data().lock().unwrap();
        let mut names: Vec<&String> = data.keys().collect();
        names.sort();
        for name in names {
            let v = &data[name];
            let fan: usize = v.dims()[1..].iter().product::<usize>().max(1);
            let a = (3.0 / fan as f32).sqrt();
            let vals: Vec<f32> = (0..v.elem_count())
                .map(|_| rng.random_range(-a..a))
                .collect();
            v.set(&Tensor::from_vec(vals, v.shape(), &Device::Cpu).unwrap())
                .unwrap();
        }
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let d = (a - b).unwrap().abs().unwrap().max_all().unwrap();
        let s = b.abs().unwrap().max_all().unwrap();
        d.to_scalar::<f32>().unwrap() / s.to_scalar::<f32>().unwrap().max(1e-30)
    }

    /// The CPU kernels (fast_conv, fused group norm, scaled sums) against candle's stock ops:
    /// outputs within 1e-5 and every weight's and the input's gradient within 1e-4.
    #[test]
    fn fast_kernels_match_stock_network() {
        let cfg = UNetConfig {
            image_size: 16,
            nf: 8,
            ch_mult: vec![1, 2],
            num_res_blocks: 1,
            attn_resolutions: vec![8],
            fourier_scale: 16.0,
        };
        let dev = Device::Cpu;
        let (net, vm) = new_unet(&cfg, 0, &dev).unwrap();
        randomise(&vm, 5);
        let xv: Vec<f32> = (0..3 * 256)
            .map(|i| ((i * 37 % 101) as f32) / 50.0 - 1.0)
            .collect();
        let x = candle_core::Var::from_vec(xv, (3, 1, 16, 16), &dev).unwrap();
        let t = Tensor::new(&[0.05f32, 0.5, 0.95], &dev).unwrap();
        let rv: Vec<f32> = (0..3 * 256).map(|i| (i as f32 * 0.37).cos()).collect();
        let r = Tensor::from_vec(rv, (3, 1, 16, 16), &dev).unwrap();
        let run = |stock: bool| {
            crate::prior::ops::set_stock_kernels(stock);
            let y = net.forward(&x, &t).unwrap();
            let g = (&y * &r).unwrap().sum_all().unwrap().backward().unwrap();
            crate::prior::ops::set_stock_kernels(false);
            (y, g)
        };
        let (y, g) = run(false);
        let (ys, gs) = run(true);
        let e = max_rel(&y, &ys);
        assert!(e < 1e-5, "output: {e}");
        let data = vm.data().lock().unwrap();
        let mut vars: Vec<(&String, &candle_core::Var)> = data.iter().collect();
        vars.sort_by_key(|v| v.0);
        let fourier = vars.iter().position(|v| v.0 == FOURIER_NAME).unwrap();
        vars.remove(fourier);
        for (name, v) in vars
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_tensor()))
            .chain([("x", x.as_tensor())])
        {
            // (Attention's key bias gets none from candle on either path: it cancels in the
            // softmax.)
            let (gf, gr) = match (g.get(v), gs.get(v)) {
                (Some(a), Some(b)) => (a, b),
                (None, None) => continue,
                (a, b) => panic!("{name}: gradient {} vs {}", a.is_some(), b.is_some()),
            };
            let e = max_rel(gf, gr);
            assert!(e < 1e-4, "gradient of {name}: {e}");
        }
    }

    /// The shipped prior gives the same scores through either path.
    #[test]
    fn default_prior_fast_matches_stock() {
        let dev = Device::Cpu;
        let m = crate::prior::default_prior(&dev).unwrap();
        let n = m.image_size();
        let xv: Vec<f32> = (0..2 * n * n)
            .map(|i| ((i * 7919 % 1009) as f32) / 500.0 - 1.0)
            .collect();
        let x = Tensor::from_vec(xv, (2, 1, n, n), &dev).unwrap();
        let t = Tensor::new(&[0.02f32, 0.6], &dev).unwrap();
        let y = m.forward(&x, &t).unwrap();
        crate::prior::ops::set_stock_kernels(true);
        let ys = m.forward(&x, &t).unwrap();
        crate::prior::ops::set_stock_kernels(false);
        let e = max_rel(&y, &ys);
        assert!(e < 1e-5, "{e}");
    }

    #[test]
    fn seeded_init_is_deterministic() {
        let cfg = UNetConfig::tiny(16);
        let (_, a) = new_unet(&cfg, 3, &Device::Cpu).unwrap();
        let (_, b) = new_unet(&cfg, 3, &Device::Cpu).unwrap();
        let (da, db) = (a.data().lock().unwrap(), b.data().lock().unwrap());
        for (k, v) in da.iter() {
            let x: Vec<f32> = v.flatten_all().unwrap().to_vec1().unwrap();
            let y: Vec<f32> = db[k].flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(x, y, "{k}");
        }
    }
}
