"""Writes models/unet/testdata/*.safetensors: small U-Nets (width 8 and 4) with fixed
random weights and batch-norm statistics, an input batch, and the PyTorch
module's outputs in eval and train mode. models/unet's tests load the
weights into the Go U-Net and must reproduce the outputs.

  /usr/bin/python3 scripts/make_unet_fixture.py     (Debian's python3-torch)
"""
import os, sys
import torch
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from pt_models import ADMUNet, UNet, save_safetensors

FIXTURES = {
    # The reference architecture at width 8.
    'unet_reference_w8': dict(width=8),
    # Every option: three levels (28 -> 14 -> 7 -> 3 and back by size),
    # GroupNorm, SiLU, dropout (off in eval) and attention, at width 4.
    'unet_options_w4': dict(width=4, levels=3, norm='group', groups=2, act='silu', dropout=0.1, attention=True),
    # Residual blocks (1x1 skips: every block changes its channel count) with
    # BatchNorm, so the train-mode output is checked too.
    'unet_residual_w4': dict(width=4, residual=True),
    # Prompt conditioning (ladder step 9): token and position embeddings and
    # a SpatialTransformer (self-, cross-attention, GEGLU) after every block.
    'unet_prompt_w4': dict(width=4, levels=3, norm='group', groups=2, act='silu', vocab=15, context_dim=8, heads=2, transformer_from=0),
    # The colour network (arch adm) on 3x10x10 images: three levels (10 -> 5
    # -> 3, odd sides rounded up on the way down and matched on the way up),
    # two residual blocks a level, two-head attention at level 1 and in the
    # middle, dropout (off in eval).
    'unet_adm_w8': dict(adm=True, channels=3, width=8, channel_mult=(1, 2, 2), blocks=2, attention_levels=(1,),
                        head_channels=8, emb=32, classes=10, groups=4, dropout=0.1),
}

out_dir = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'models', 'unet', 'testdata')
os.makedirs(out_dir, exist_ok=True)
for name, kw in FIXTURES.items():
    torch.manual_seed(0)
    kw = dict(kw)
    adm = kw.pop('adm', False)
    m = ADMUNet(**kw) if adm else UNet(**kw)
    c, side = kw.get('channels', 1), 10 if adm else 28
    with torch.no_grad():  # non-trivial running statistics and embeddings
        for p in m.parameters():
            p.add_(0.05 * torch.randn_like(p))
        m.train()
        cond = lambda n: torch.randint(0, kw['vocab'], (n, 3)) if kw.get('vocab') else torch.randint(0, 10, (n,))
        for _ in range(3):
            m(torch.rand(6, c, side, side), torch.randint(1, 1001, (6,)), cond(6))
    x = torch.randn(4, c, side, side)
    t = torch.tensor([1, 250, 640, 1000])
    y = cond(4) if kw.get('vocab') else torch.tensor([3, 0, 9, 5])
    keep = torch.tensor([1.0, 0.0, 1.0, 1.0])
    tensors = {'input.x': x, 'input.t': t, 'input.y': y, 'input.keep': keep}
    tensors.update({'model.' + k: v.clone() for k, v in m.state_dict().items()})
    m.eval()
    with torch.no_grad():
        tensors['output.eval'] = m(x, t, y, keep)
    if kw.get('dropout', 0) == 0:
        m.train()
        with torch.no_grad():
            tensors['output.train'] = m(x, t, y, keep)
    save_safetensors(os.path.join(out_dir, name + '.safetensors'), tensors, {'config': repr(dict(kw, adm=True) if adm else kw), 'torch': torch.__version__})
    print(name, sum(p.numel() for p in m.parameters()), 'parameters')
