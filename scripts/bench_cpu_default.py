"""Peer for train's BenchmarkCPUDefault{Train,Sample}Step: the CPU default's
network (configs/mnist_cond_cpu.yaml: the U-Net of width 16, three levels,
GroupNorm, SiLU, channels-last) as its PyTorch twin (scripts/pt_models.py),
or with --net colour for BenchmarkColour{Train,Sample}Step the colour
recipe's (configs/emoji_cpu.yaml: ADMUNet of width 32 on 3x32x32 images of
nine classes, batch 64),
timed the way shared/bench/ref_unet.py times the reference network: a
training step of batch 128 (Adam, 10% of labels dropped) and one guided
sampling step (both passes in one batched forward), medians after warm-up.

  python3 scripts/bench_cpu_default.py [--steps 10] [--modes fp32-cl,bf16-cl]

Modes: fp32 or bf16 (autocast), each with -cl (channels-last) or not, and
compile- before them for torch.compile (PyTorch 2.x), e.g. compile-bf16-cl.
Libtorch 1.13's CPU GroupNorm refuses a bfloat16 input with float32
affine parameters, so under bf16 the twin's norms take their input in
float32, as CUDA autocast would give it to them (kakusan's shim does the
same). One JSON line per mode.
"""
import argparse, json, math, os, statistics, sys, time

import torch, torch.nn as nn, torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pt_models import ADMUNet, UNet  # noqa: E402


class FloatGroupNorm(nn.GroupNorm):
    def forward(self, x):
        return F.group_norm(x.float(), self.num_groups, self.weight, self.bias, self.eps)


def run(mode, a):
    parts = set(mode.split('-'))
    if parts - {'fp32', 'bf16', 'cl', 'compile'}:
        raise SystemExit(f'unknown mode {mode!r}')
    torch.manual_seed(0)
    fmt = torch.channels_last if 'cl' in parts else torch.contiguous_format
    bf16 = 'bf16' in parts
    if bf16:
        nn.GroupNorm.forward = FloatGroupNorm.forward
    if a.net == 'colour':
        model = ADMUNet(channels=3, width=32, channel_mult=(1, 2, 2), blocks=1, attention_levels=(2,), head_channels=32,
                        emb=128, classes=9, groups=8)
        C, S, K = 3, 32, 9
    else:
        model = UNet(width=a.width, levels=3, norm='group', act='silu')
        C, S, K = 1, 28, 10
    model = model.to(memory_format=fmt)
    # compile: torch.compile (inductor; PyTorch 2.x) of the same network,
    # for training and sampling alike; its warm-up steps pay the compiles.
    fwd = torch.compile(model) if 'compile' in parts else model
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    ac = torch.autocast('cpu', dtype=torch.bfloat16, enabled=bf16)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000), 0)
    B = a.batch

    def train_step():
        x0 = torch.rand(B, C, S, S).contiguous(memory_format=fmt) * 2 - 1
        y = torch.randint(0, K, (B,))
        keep = (torch.rand(B) > 0.1).float()
        t = torch.randint(0, 1000, (B,))
        ab = abar[t][:, None, None, None]
        noise = torch.randn_like(x0)
        v = ab.sqrt() * noise - (1 - ab).sqrt() * x0
        with ac:
            out = fwd(ab.sqrt() * x0 + (1 - ab).sqrt() * noise, t, y, keep)
        loss = F.mse_loss(out.float(), v)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss

    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        train_step().item()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
    model.eval()
    n = a.sample_batch
    z = torch.randn(n, C, S, S).contiguous(memory_format=fmt)
    y = torch.randint(0, K, (n,))
    keep = torch.cat([torch.ones(n), torch.zeros(n)])
    stimes = []
    with torch.inference_mode():
        for i in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            t = torch.full((2 * n,), 500)
            with ac:
                e = fwd(torch.cat([z, z]), t, torch.cat([y, y]), keep).float()
            z = z - 0.001 * (e[n:] + 1.5 * (e[:n] - e[n:]))
            if i >= a.warmup:
                stimes.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    return {'impl': 'pytorch', 'mode': mode, 'torch': torch.__version__, 'threads': torch.get_num_threads(),
            'net': a.net, 'batch': B, 'width': a.width, 'train_ms_per_step': round(ms, 3),
            'train_images_per_s': round(B / ms * 1e3, 1),
            'sample_ms_per_step': round(statistics.median(stimes) * 1e3, 3), 'sample_batch': n}


if __name__ == '__main__':
    p = argparse.ArgumentParser()
    p.add_argument('--modes', default='fp32-cl,bf16-cl')
    p.add_argument('--steps', type=int, default=10)
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--batch', type=int, default=128)
    p.add_argument('--sample-batch', type=int, default=100)
    p.add_argument('--width', type=int, default=16)
    p.add_argument('--net', default='default', choices=['default', 'colour'])
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    gn = nn.GroupNorm.forward
    for mode in a.modes.split(','):
        nn.GroupNorm.forward = gn
        print(json.dumps(run(mode, a)), flush=True)
