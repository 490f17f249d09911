"""The PyTorch twins of kakusan's Go models, with the same state_dict names,
and a minimal safetensors codec (Debian's PyTorch 1.13 ships none), for
interop tests and benchmark peers."""
import json, struct
import numpy as np
import torch, torch.nn as nn, torch.nn.functional as F


class Encoder(nn.Module):
    def __init__(self, d, h, z):
        super().__init__()
        self.linear, self.linear_mu, self.linear_logvar = nn.Linear(d, h), nn.Linear(h, z), nn.Linear(h, z)

    def forward(self, x):
        h = F.relu(self.linear(x))
        return self.linear_mu(h), torch.exp(0.5 * self.linear_logvar(h))


class Decoder(nn.Module):
    def __init__(self, z, h, d, sigmoid=True):
        super().__init__()
        self.linear1, self.linear2, self.sigmoid = nn.Linear(z, h), nn.Linear(h, d), sigmoid

    def forward(self, z):
        y = self.linear2(F.relu(self.linear1(z)))
        return torch.sigmoid(y) if self.sigmoid else y


class VAE(nn.Module):
    def __init__(self, d=784, h=200, z=20):
        super().__init__()
        self.encoder, self.decoder = Encoder(d, h, z), Decoder(z, h, d)

    def loss(self, x):
        mu, sigma = self.encoder(x)
        z = mu + sigma * torch.randn_like(sigma)
        rec = F.mse_loss(self.decoder(z), x, reduction='sum')
        kl = 0.5 * torch.sum(sigma ** 2 + mu ** 2 - 1 - torch.log(sigma ** 2))
        return (rec + kl) / len(x)

    def reconstruct(self, x):
        return self.decoder(self.encoder(x)[0])


class HVAE(nn.Module):
    def __init__(self, d=784, h=100, z=20):
        super().__init__()
        self.encoder1, self.encoder2 = Encoder(d, h, z), Encoder(z, h, z)
        self.decoder1, self.decoder2 = Decoder(z, h, d), Decoder(z, h, z, sigmoid=False)

    def reconstruct(self, x):
        return self.decoder1(self.encoder1(x)[0])


DTYPES = {'F32': (np.float32, torch.float32), 'F64': (np.float64, torch.float64),
          'I64': (np.int64, torch.int64), 'U8': (np.uint8, torch.uint8)}


def load_safetensors(path):
    b = open(path, 'rb').read()
    n = struct.unpack('<Q', b[:8])[0]
    header = json.loads(b[8:8 + n])
    meta = header.pop('__metadata__', {})
    data = b[8 + n:]
    out = {}
    for name, e in header.items():
        if e['dtype'] not in DTYPES:
            continue
        s, t = e['data_offsets']
        arr = np.frombuffer(data[s:t], dtype=DTYPES[e['dtype']][0]).reshape(e['shape'])
        out[name] = torch.from_numpy(arr.copy())
    return out, meta


def save_safetensors(path, tensors, meta=None):
    header, chunks, off = {}, [], 0
    names = {v[1]: k for k, v in DTYPES.items()}
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous().cpu()
        raw = t.numpy().tobytes()
        header[name] = {'dtype': names[t.dtype], 'shape': list(t.shape), 'data_offsets': [off, off + len(raw)]}
        chunks.append(raw)
        off += len(raw)
    if meta:
        header['__metadata__'] = meta
    h = json.dumps(header).encode()
    h += b' ' * (-len(h) % 8)
    with open(path, 'wb') as f:
        f.write(struct.pack('<Q', len(h)) + h + b''.join(chunks))
