#!/usr/bin/env python3
"""sdpa_check.py: PyTorch's own fused attention on this CPU against the
formula softmax(q kᵀ/√d) v in float64, at the shapes and strides kakusan's
networks attend with. scripts/test_torch2.sh runs it in the libtorch 2.6
image and puts its verdict in the summary.

kakusan's shim computes attention on the CPU with the formula on every
libtorch (torch/csrc/nn.cpp) and keeps libtorch's fused kernel for CUDA:
this script says whether the fused CPU kernel would have been right here.
It prints one line per case and exits 1 when any case is off by more than
its dtype allows (float32 1e-4, bfloat16 0.05, relative to the largest
value), 0 otherwise.
"""
import sys

import torch
import torch.nn.functional as F


def leaf_shape(kind, b, heads, d, n):
    """The tensor the network's q, k and v are views of."""
    c = heads * d
    return {"unet-nchw": (b, 3 * c, n), "unet-nhwc": (b, n, 3 * c)}.get(kind, (3, b, n, c))


def views(kind, leaf, b, heads, d, n):
    """q, k, v as views of leaf, laid out as the network makes them: the
    U-Net's qkv convolution output (B,3C,H,W or its channels-last memory)
    as B,heads,HW,d, or the transformer's B,L,dim as B,heads,L,d."""
    if kind == "unet-nchw":
        qkv = leaf.view(b, 3, heads, d, n).permute(1, 0, 2, 4, 3)
    elif kind == "unet-nhwc":
        qkv = leaf.view(b, n, 3, heads, d).permute(2, 0, 3, 1, 4)
    else:
        qkv = leaf.view(3, b, n, heads, d).transpose(2, 3)
    return qkv[0], qkv[1], qkv[2]


def formula(q, k, v):
    s = q @ k.transpose(-2, -1) / q.shape[-1] ** 0.5
    return torch.softmax(s, -1) @ v


def case(kind, b, heads, d, n, dtype):
    """Relative errors of the fused kernel's output and input gradient."""
    torch.manual_seed(0)
    base = torch.randn(leaf_shape(kind, b, heads, d, n), dtype=torch.float64)
    leaf = base.to(dtype).requires_grad_()
    out = F.scaled_dot_product_attention(*views(kind, leaf, b, heads, d, n))
    up = torch.randn(out.shape, dtype=torch.float64)
    out.backward(up.to(dtype))
    ref_leaf = leaf.detach().double().requires_grad_()
    ref = formula(*views(kind, ref_leaf, b, heads, d, n))
    ref.backward(up)
    fwd = ((out.double() - ref).abs().max() / ref.abs().max()).item()
    bwd = ((leaf.grad.double() - ref_leaf.grad).abs().max() / ref_leaf.grad.abs().max()).item()
    return fwd, bwd


def main():
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    tol = {torch.float32: 1e-4, torch.bfloat16: 0.05}
    bad = total = 0
    for kind in ("unet-nchw", "unet-nhwc", "transformer"):
        for b, heads, d, n in ((8, 1, 64, 49), (4, 4, 16, 64), (4, 2, 64, 256), (2, 8, 8, 1024)):
            for dtype in (torch.float32, torch.bfloat16):
                fwd, bwd = case(kind, b, heads, d, n, dtype)
                ok = fwd < tol[dtype] and bwd < tol[dtype]
                bad += not ok
                total += 1
                name = str(dtype).removeprefix("torch.")
                print(f"{'ok ' if ok else 'BAD'} {kind:11} B={b} heads={heads} d={d} L={n} {name:8} "
                      f"forward {fwd:.2e} backward {bwd:.2e}")
    head = f"sdpa_check: PyTorch {torch.__version__}'s fused CPU attention"
    print(f"{head}: {bad} of {total} cases off the formula" if bad else
          f"{head} matches the formula in all {total} cases (the shim uses the formula on the CPU)")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
