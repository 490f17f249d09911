"""Peer for torch's BenchmarkConvNetStep: the same small CNN and training step
in PyTorch, timed per step (median), so `make bench` compares like with like.

  python3 scripts/bench_convnet.py [--device cpu|cuda] [--steps 50]
"""
import argparse, json, os, statistics, time
import torch, torch.nn as nn, torch.nn.functional as F


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 7 * 7, 10)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.c1(x)), 2)
        h = F.max_pool2d(F.relu(self.bn(self.c2(h))), 2)
        return self.fc(h.flatten(1))


def main():
    p = argparse.ArgumentParser()
    p.add_argument('--device', default='cpu')
    p.add_argument('--steps', type=int, default=50)
    p.add_argument('--batch', type=int, default=64)
    a = p.parse_args()
    dev = torch.device(a.device)
    if dev.type == 'cpu':
        torch.set_num_threads(os.cpu_count())
    torch.manual_seed(0)
    net = ConvNet().to(dev)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)

    def step():
        x = torch.randn(a.batch, 1, 28, 28, device=dev)
        y = torch.randint(0, 10, (a.batch,), device=dev)
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    times = []
    for i in range(3 + a.steps):
        if dev.type == 'cuda':
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        step()
        if dev.type == 'cuda':
            torch.cuda.synchronize()
        if i >= 3:
            times.append(time.perf_counter() - t0)
    ms = statistics.median(times) * 1e3
    print(json.dumps({'impl': 'pytorch', 'bench': 'convnet_step', 'device': str(dev),
                      'torch': torch.__version__, 'threads': torch.get_num_threads(),
                      'batch': a.batch, 'ms_per_step': round(ms, 3),
                      'images_per_s': round(a.batch / ms * 1e3, 1)}))


if __name__ == '__main__':
    main()
