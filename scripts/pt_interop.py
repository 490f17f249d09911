"""Checks that kakusan checkpoints and PyTorch state dicts load into each
other. Run by train's TestPyTorchInterop with Debian's python3-torch:

  pt_interop.py MODEL GO_CKPT INPUT OUT_DIR

It loads GO_CKPT (a kakusan checkpoint) into the PyTorch twin with strict
matching, once the optimizer and generator entries are dropped, and writes
OUT_DIR/from_go.safetensors: the twin's reconstruction of INPUT's "x". Then
it seeds a fresh twin, saves its state_dict as OUT_DIR/pytorch.safetensors
and its reconstruction of x as OUT_DIR/pytorch_out.safetensors, for the Go
side to load and compare.
"""
import sys
import torch
sys.path.insert(0, __file__.rsplit('/', 1)[0])
from pt_models import VAE, HVAE, AutoencoderKL, load_safetensors, save_safetensors

kind, ckpt, inp, out = sys.argv[1:5]
make = {'vae': VAE, 'hvae': HVAE, 'autoencoder': AutoencoderKL}[kind]
sd, meta = load_safetensors(ckpt)
assert meta['kakusan.model'] == kind, meta['kakusan.model']
sd = {k: v for k, v in sd.items() if not k.startswith(('optimizer.', 'rng.'))}
x = load_safetensors(inp)[0]['x']
m = make()
m.load_state_dict(sd, strict=True)
with torch.no_grad():
    save_safetensors(out + '/from_go.safetensors', {'y': m.reconstruct(x)})
torch.manual_seed(7)
p = make()
save_safetensors(out + '/pytorch.safetensors', p.state_dict())
with torch.no_grad():
    save_safetensors(out + '/pytorch_out.safetensors', {'y': p.reconstruct(x)})
print('ok')
