"""The PyTorch twins of kakusan's Go models, with the same state_dict names,
and a minimal safetensors codec (Debian's PyTorch 1.13 ships none), for
interop tests and benchmark peers."""
import json, math, struct
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

    def loss(self, x, kl_weight=1.0):
        # The book's step07 loss: L1 + L2 with no 1/2 on the KL term
        # (kl_weight 0.5 gives the textbook KL divergence).
        mu, sigma = self.encoder(x)
        z = mu + sigma * torch.randn_like(sigma)
        rec = F.mse_loss(self.decoder(z), x, reduction='sum')
        kl = kl_weight * torch.sum(sigma ** 2 + mu ** 2 - 1 - torch.log(sigma ** 2))
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


def pos_encoding(t, dim):
    i = torch.arange(dim, device=t.device)
    arg = t.float()[:, None] / torch.exp(i / dim * math.log(10000))[None]
    v = torch.empty(len(t), dim, device=t.device)
    v[:, 0::2], v[:, 1::2] = arg[:, 0::2].sin(), arg[:, 1::2].cos()
    return v


class ConvBlock(nn.Module):
    def __init__(self, cin, cout, emb, norm='batch', groups=8, act='relu', dropout=0.0, residual=False):
        super().__init__()
        self.residual = residual
        if residual and cin != cout:
            self.skip = nn.Conv2d(cin, cout, 1)
        Norm = (lambda c: nn.BatchNorm2d(c)) if norm == 'batch' else (lambda c: nn.GroupNorm(groups, c))
        Act = nn.ReLU if act == 'relu' else nn.SiLU
        layers = [nn.Conv2d(cin, cout, 3, padding=1), Norm(cout), Act()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        layers += [nn.Conv2d(cout, cout, 3, padding=1), Norm(cout), Act()]
        self.convs = nn.Sequential(*layers)
        self.mlp = nn.Sequential(nn.Linear(emb, cin), nn.ReLU(), nn.Linear(cin, cin))

    def forward(self, x, v):
        h = self.convs(x + self.mlp(v)[:, :, None, None])
        if self.residual:
            h = h + (self.skip(x) if hasattr(self, 'skip') else x)
        return h


class Attention(nn.Module):
    def __init__(self, c, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups if c % groups == 0 else 1, c)
        self.qkv, self.proj = nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).view(b, 3, c, h * w).permute(1, 0, 3, 2)
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(c), -1) @ v
        return x + self.proj(a.transpose(1, 2).reshape(b, c, h, w))


class UNet(nn.Module):
    """The twin of models/unet: UNet() is the book's conditional U-Net."""

    def __init__(self, channels=1, width=64, levels=2, emb=100, classes=10, norm='batch', groups=8,
                 act='relu', dropout=0.0, attention=False, residual=False):
        super().__init__()
        self.emb, self.levels = emb, levels
        kw = dict(norm=norm, groups=groups, act=act, dropout=dropout, residual=residual)
        w = lambda l: width << l
        cin = channels
        for i in range(levels):
            setattr(self, f'down{i + 1}', ConvBlock(cin, w(i), emb, **kw))
            cin = w(i)
        self.bot1 = ConvBlock(cin, w(levels), emb, **kw)
        if attention:
            self.attn = Attention(w(levels), groups)
        for i in reversed(range(levels)):
            setattr(self, f'up{i + 1}', ConvBlock(w(i + 1) + w(i), w(i), emb, **kw))
        self.out = nn.Conv2d(width, channels, 1)
        if classes:
            self.label_emb = nn.Embedding(classes, emb)

    def forward(self, x, t, y=None, keep=None):
        v = pos_encoding(t, self.emb)
        if y is not None and hasattr(self, 'label_emb'):
            e = self.label_emb(y)
            v = v + (e if keep is None else e * keep[:, None])
        skips, h = [], x
        for i in range(self.levels):
            if i:
                h = F.max_pool2d(h, 2)
            h = getattr(self, f'down{i + 1}')(h, v)
            skips.append(h)
        h = self.bot1(F.max_pool2d(h, 2), v)
        if hasattr(self, 'attn'):
            h = self.attn(h)
        for i in reversed(range(self.levels)):
            h = F.interpolate(h, size=skips[i].shape[-2:], mode='bilinear', align_corners=False)
            h = getattr(self, f'up{i + 1}')(torch.cat([h, skips[i]], 1), v)
        return self.out(h)

