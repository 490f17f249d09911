"""Peer for BenchmarkVAETrainStep: the reference VAE (784-200-20) trained
with Adam on batches of 32 random images, in PyTorch on the same libtorch.

  /usr/bin/python3 scripts/bench_vae.py [--steps 2000]
"""
import argparse, json, os, statistics, sys, time
import torch


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pt_models import VAE  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--steps', type=int, default=2000)
    a = p.parse_args()
    torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    m = VAE()
    opt = torch.optim.Adam(m.parameters(), lr=3e-4)
    times = []
    for i in range(10 + a.steps):
        t0 = time.perf_counter()
        loss = m.loss(torch.rand(32, 784))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= 10:
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    print(json.dumps({'impl': 'pytorch', 'bench': 'vae_train_step', 'torch': torch.__version__,
                      'threads': torch.get_num_threads(), 'batch': 32, 'ms_per_step': round(ms, 4),
                      'images_per_s': round(32 / ms * 1e3, 1)}))


if __name__ == '__main__':
    main()
