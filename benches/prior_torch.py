#!/usr/bin/env python3
"""The score network of src/prior/model.rs in PyTorch, timed as benches/prior_compare.rs times ours.

Same architecture (the parameter count printed must equal the Rust side's): Gaussian Fourier
time embedding and a two-layer MLP, NCSN++-style residual blocks (GroupNorm+SiLU, 3x3 conv,
additive time conditioning, GroupNorm+SiLU, 3x3 conv, 1x1 skip when channels change,
skip_rescale 1/sqrt 2), single-head self-attention at the listed resolutions and always in
the middle, 2x2 average pooling down, nearest x2 + 3x3 conv up, skip concatenation on the
way up (one more block per level than down).

The training step is the same as Trainer::train_step: VE DSM loss, backward, global
gradient-norm clip at 1, AdamW, EMA of the weights.

usage: prior_torch.py --config unet2m|default --batch N [--reps N] [--threads 2] [--clock wall|thread]
prints: config=... batch=... impl=torch params=... forward_s=... train_step_s=...
"""

import argparse
import math
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    "unet2m": dict(image_size=64, nf=32, ch_mult=[1, 2, 2, 2], num_res_blocks=2, attn_resolutions=[]),
    "default": dict(image_size=64, nf=16, ch_mult=[1, 2, 4, 4], num_res_blocks=1, attn_resolutions=[16]),
}


def n_groups(c):
    for g in (32, 16, 8, 4, 2, 1):
        if c % g == 0 and c // g >= 4:
            return g
    return 1


def gn(c):
    return nn.GroupNorm(n_groups(c), c, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin, cout, td):
        super().__init__()
        self.norm0 = gn(cin)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb = nn.Linear(td, cout)
        self.norm1 = gn(cout)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else None

    def forward(self, x, temb):
        h = self.conv0(F.silu(self.norm0(x)))
        h = h + self.temb(temb)[:, :, None, None]
        h = self.conv1(F.silu(self.norm1(h)))
        s = self.skip(x) if self.skip is not None else x
        return (s + h) * (1.0 / math.sqrt(2.0))


class Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.norm = gn(c)
        self.q = nn.Linear(c, c)
        self.k = nn.Linear(c, c)
        self.v = nn.Linear(c, c)
        self.proj_out = nn.Linear(c, c)

    def forward(self, x):
        b, c, h, w = x.shape
        hs = self.norm(x).reshape(b, c, h * w).transpose(1, 2)
        q, k, v = self.q(hs), self.k(hs), self.v(hs)
        att = torch.softmax(q @ k.transpose(1, 2) * (1.0 / math.sqrt(c)), dim=-1)
        o = self.proj_out(att @ v).transpose(1, 2).reshape(b, c, h, w)
        return (x + o) * (1.0 / math.sqrt(2.0))


class Down(nn.Module):
    def forward(self, x):
        return F.avg_pool2d(x, 2)


class Up(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2, mode="nearest"))


class UNet(nn.Module):
    def __init__(self, image_size, nf, ch_mult, num_res_blocks, attn_resolutions, fourier_scale=16.0):
        super().__init__()
        td = 4 * nf
        # Fixed (untrained) frequencies, as FOURIER_NAME on the Rust side.
        self.register_buffer("fourier_w", torch.randn(nf) * fourier_scale)
        self.dense0 = nn.Linear(2 * nf, td)
        self.dense1 = nn.Linear(td, td)
        self.conv_in = nn.Conv2d(1, nf, 3, padding=1)
        nlev = len(ch_mult)
        self.down = nn.ModuleList()
        skip_ch = [nf]
        ch, res = nf, image_size
        for lvl, m in enumerate(ch_mult):
            cout = nf * m
            for _ in range(num_res_blocks):
                self.down.append(ResBlock(ch, cout, td))
                ch = cout
                if res in attn_resolutions:
                    self.down.append(Attention(ch))
                skip_ch.append(ch)
            if lvl + 1 < nlev:
                self.down.append(Down())
                res //= 2
                skip_ch.append(ch)
        self.mid = nn.ModuleList([ResBlock(ch, ch, td), Attention(ch), ResBlock(ch, ch, td)])
        self.up = nn.ModuleList()
        for lvl in reversed(range(nlev)):
            cout = nf * ch_mult[lvl]
            for _ in range(num_res_blocks + 1):
                s = skip_ch.pop()
                self.up.append(ResBlock(ch + s, cout, td))
                ch = cout
                if res in attn_resolutions:
                    self.up.append(Attention(ch))
            if lvl > 0:
                self.up.append(Up(ch))
                res *= 2
        assert not skip_ch
        self.norm_out = gn(ch)
        self.conv_out = nn.Conv2d(ch, 1, 3, padding=1)

    def forward(self, x, t):
        proj = t[:, None] * self.fourier_w[None, :] * (2.0 * math.pi)
        emb = torch.cat([torch.sin(proj), torch.cos(proj)], dim=-1)
        temb = F.silu(self.dense1(F.silu(self.dense0(emb))))
        h = self.conv_in(x)
        hs = [h]
        for layer in self.down:
            if isinstance(layer, ResBlock):
                h = layer(h, temb)
                hs.append(h)
            elif isinstance(layer, Attention):
                h = layer(h)
                hs[-1] = h
            else:
                h = layer(h)
                hs.append(h)
        h = self.mid[0](h, temb)
        h = self.mid[1](h)
        h = self.mid[2](h, temb)
        for layer in self.up:
            if isinstance(layer, ResBlock):
                h = layer(torch.cat([h, hs.pop()], dim=1), temb)
            else:
                h = layer(h)
        return self.conv_out(F.silu(self.norm_out(h)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--config", default="unet2m", choices=sorted(CONFIGS))
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--clock", default="wall", choices=["wall", "thread"])
    a = ap.parse_args()
    # thread: CPU time of this thread, which with --threads 1 runs everything (the autograd
    # engine runs CPU backward on the calling thread): the work done, whatever else the
    # machine is running.
    clock = time.perf_counter if a.clock == "wall" else time.thread_time
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    cfg = CONFIGS[a.config]
    net = UNet(**cfg)
    params = [p for p in net.parameters() if p.requires_grad]
    nparams = sum(p.numel() for p in params)
    opt = torch.optim.AdamW(params, lr=2e-4, weight_decay=0.0)
    ema = [p.detach().clone() for p in params]
    n = cfg["image_size"]
    x0 = torch.rand(a.batch, 1, n, n)
    sigma_min, sigma_max, t_eps = 1e-3, 30.0, 1e-5

    def train_step():
        t = torch.rand(a.batch) * (1.0 - t_eps) + t_eps
        z = torch.randn_like(x0)
        sg = (sigma_min * (sigma_max / sigma_min) ** t)[:, None, None, None]
        out = net(x0 + sg * z, t)
        loss = ((out + z) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        with torch.no_grad():
            torch._foreach_lerp_(ema, params, 1.0 - 0.999)
        return loss.item()

    t_eval = torch.full((a.batch,), 0.5)
    train_step()
    fwd, step = [], []
    for _ in range(a.reps):
        t0 = clock()
        with torch.no_grad():
            float(net(x0, t_eval).sum())
        fwd.append(clock() - t0)
        t0 = clock()
        train_step()
        step.append(clock() - t0)
    print(
        f"config={a.config} batch={a.batch} impl=torch params={nparams} "
        f"forward_s={statistics.median(fwd):.4f} train_step_s={statistics.median(step):.4f}"
    )


if __name__ == "__main__":
    main()
