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


class ResnetBlock(nn.Module):
    """The latent diffusion repository's ResnetBlock without a time embedding."""

    def __init__(self, cin, cout, groups):
        super().__init__()
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        h = self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))
        return (self.nin_shortcut(x) if hasattr(self, 'nin_shortcut') else x) + h


class AutoencoderKL(nn.Module):
    """The twin of models/autoencoder: Stable Diffusion's KL autoencoder in
    small (no attention, `blocks` residual blocks per level on both sides)."""

    def __init__(self, c=1, side=28, channels=(16, 32, 64), blocks=1, latent=4, groups=8):
        super().__init__()
        self.latent, self.sides = latent, [side]
        for _ in channels[1:]:
            self.sides.append((self.sides[-1] + 1) // 2)
        enc, dec = nn.Module(), nn.Module()
        enc.conv_in = nn.Conv2d(c, channels[0], 3, padding=1)
        enc.down, cin = nn.ModuleList(), channels[0]
        for i, ch in enumerate(channels):
            level = nn.Module()
            level.block = nn.ModuleList()
            for _ in range(blocks):
                level.block.append(ResnetBlock(cin, ch, groups))
                cin = ch
            if i < len(channels) - 1:
                level.downsample = nn.Module()
                level.downsample.conv = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
            enc.down.append(level)
        last = channels[-1]
        enc.mid = nn.Module()
        enc.mid.block_1 = ResnetBlock(last, last, groups)
        enc.norm_out, enc.conv_out = nn.GroupNorm(groups, last), nn.Conv2d(last, 2 * latent, 3, padding=1)
        self.quant_conv, self.post_quant_conv = nn.Conv2d(2 * latent, 2 * latent, 1), nn.Conv2d(latent, latent, 1)
        dec.conv_in = nn.Conv2d(latent, last, 3, padding=1)
        dec.mid = nn.Module()
        dec.mid.block_1 = ResnetBlock(last, last, groups)
        dec.up, cin = nn.ModuleList([nn.Module() for _ in channels]), last
        for i in reversed(range(len(channels))):
            dec.up[i].block = nn.ModuleList()
            for _ in range(blocks):
                dec.up[i].block.append(ResnetBlock(cin, channels[i], groups))
                cin = channels[i]
            if i > 0:
                dec.up[i].upsample = nn.Module()
                dec.up[i].upsample.conv = nn.Conv2d(cin, cin, 3, padding=1)
        dec.norm_out, dec.conv_out = nn.GroupNorm(groups, channels[0]), nn.Conv2d(channels[0], c, 3, padding=1)
        self.encoder, self.decoder = enc, dec

    def encode(self, x):
        """Mean and log-variance of q(z|x) for images in [0, 1]."""
        e = self.encoder
        h = e.conv_in(2 * x - 1)
        for level in e.down:
            for b in level.block:
                h = b(h)
            if hasattr(level, 'downsample'):
                h = level.downsample.conv(h)
        h = e.conv_out(F.silu(e.norm_out(e.mid.block_1(h))))
        mean, logvar = self.quant_conv(h).chunk(2, 1)
        return mean, logvar.clamp(-30, 20)

    def decode(self, z):
        """Images in [-1, 1] (not clamped)."""
        d = self.decoder
        h = d.mid.block_1(d.conv_in(self.post_quant_conv(z)))
        for i in reversed(range(len(d.up))):
            for b in d.up[i].block:
                h = b(h)
            if i > 0:
                h = d.up[i].upsample.conv(F.interpolate(h, size=(self.sides[i - 1],) * 2, mode='nearest'))
        return d.conv_out(F.silu(d.norm_out(h)))

    def reconstruct(self, x):
        return (self.decode(self.encode(x)[0]) + 1) / 2


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
    """Self-attention over a feature map's pixels: qkv's output channels are
    q, k and v, each heads x (c / heads)."""

    def __init__(self, c, groups, heads=1):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups if c % groups == 0 else 1, c)
        self.qkv, self.proj = nn.Conv2d(c, 3 * c, 1), nn.Conv2d(c, c, 1)

    def forward(self, x):
        b, c, h, w = x.shape
        d = c // self.heads
        q, k, v = self.qkv(self.norm(x)).view(b, 3, self.heads, d, h * w).permute(1, 0, 2, 4, 3)
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d), -1) @ v
        return x + self.proj(a.permute(0, 1, 3, 2).reshape(b, c, h, w))


class Attention2(nn.Module):
    """diffusers' Attention: multi-head, projections without bias."""

    def __init__(self, dim, ctx_dim, heads):
        super().__init__()
        self.heads = heads
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim, bias=False), nn.Linear(ctx_dim, dim, bias=False), nn.Linear(ctx_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])

    def forward(self, x, ctx=None):
        ctx = x if ctx is None else ctx
        b, n, d = x.shape
        split = lambda t: t.view(b, t.shape[1], self.heads, d // self.heads).transpose(1, 2)
        q, k, v = split(self.to_q(x)), split(self.to_k(ctx)), split(self.to_v(ctx))
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(d // self.heads), -1) @ v
        return self.to_out[0](a.transpose(1, 2).reshape(b, n, d))


class GEGLU(nn.Module):
    def __init__(self, dim, out):
        super().__init__()
        self.proj = nn.Linear(dim, 2 * out)

    def forward(self, x):
        a, gate = self.proj(x).chunk(2, -1)
        return a * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.net = nn.ModuleList([GEGLU(dim, 4 * dim), nn.Identity(), nn.Linear(4 * dim, dim)])

    def forward(self, x):
        return self.net[2](self.net[0](x))


class BasicTransformerBlock(nn.Module):
    def __init__(self, dim, ctx_dim, heads):
        super().__init__()
        self.norm1, self.attn1 = nn.LayerNorm(dim), Attention2(dim, dim, heads)
        self.norm2, self.attn2 = nn.LayerNorm(dim), Attention2(dim, ctx_dim, heads)
        self.norm3, self.ff = nn.LayerNorm(dim), FeedForward(dim)

    def forward(self, x, ctx):
        x = x + self.attn1(self.norm1(x))
        x = x + self.attn2(self.norm2(x), ctx)
        return x + self.ff(self.norm3(x))


class SpatialTransformer(nn.Module):
    """diffusers' Transformer2DModel with linear projections, one block."""

    def __init__(self, ch, ctx_dim, heads, groups):
        super().__init__()
        self.norm = nn.GroupNorm(groups if ch % groups == 0 else 1, ch)
        self.proj_in, self.proj_out = nn.Linear(ch, ch), nn.Linear(ch, ch)
        self.transformer_blocks = nn.ModuleList([BasicTransformerBlock(ch, ctx_dim, heads)])
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def forward(self, x, ctx):
        b, c, h, w = x.shape
        t = self.proj_in(self.norm(x).view(b, c, h * w).transpose(1, 2))
        t = self.proj_out(self.transformer_blocks[0](t, ctx))
        return x + t.transpose(1, 2).reshape(b, c, h, w)


class TextEmbedding(nn.Module):
    def __init__(self, vocab, context, dim):
        super().__init__()
        self.token_embedding, self.position_embedding = nn.Embedding(vocab, dim), nn.Embedding(context, dim)

    def forward(self, tokens):
        return self.token_embedding(tokens) + self.position_embedding.weight[None]


class UNet(nn.Module):
    """The twin of models/unet: UNet() is the book's conditional U-Net; with
    vocab > 0 it is conditioned on prompts of `context` tokens by
    cross-attention (SpatialTransformers from level transformer_from down)."""

    def __init__(self, channels=1, width=64, levels=2, emb=100, classes=10, norm='batch', groups=8,
                 act='relu', dropout=0.0, attention=False, residual=False,
                 vocab=0, context=3, context_dim=64, heads=4, transformer_from=1):
        super().__init__()
        self.emb, self.levels, self.vocab, self.transformer_from = emb, levels, vocab, transformer_from
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
        if vocab:
            self.text = TextEmbedding(vocab, context, context_dim)
            xf = lambda ch: SpatialTransformer(ch, context_dim, heads, groups)
            for i in range(transformer_from, levels):
                setattr(self, f'down{i + 1}_transformer', xf(w(i)))
                setattr(self, f'up{i + 1}_transformer', xf(w(i)))
            self.bot1_transformer = xf(w(levels))
        elif classes:
            self.label_emb = nn.Embedding(classes, emb)

    def forward(self, x, t, y=None, keep=None):
        v, ctx = pos_encoding(t, self.emb), None
        if self.vocab:
            y = torch.zeros(len(x), self.text.position_embedding.num_embeddings, dtype=torch.long) if y is None else y
            ctx = self.text(y if keep is None else y * keep.long()[:, None])
        elif y is not None and hasattr(self, 'label_emb'):
            e = self.label_emb(y)
            v = v + (e if keep is None else e * keep[:, None])
        attend = lambda name, h: getattr(self, name)(h, ctx) if hasattr(self, name) else h
        skips, h = [], x
        for i in range(self.levels):
            if i:
                h = F.max_pool2d(h, 2)
            h = attend(f'down{i + 1}_transformer', getattr(self, f'down{i + 1}')(h, v))
            skips.append(h)
        h = attend('bot1_transformer', self.bot1(F.max_pool2d(h, 2), v))
        if hasattr(self, 'attn'):
            h = self.attn(h)
        for i in reversed(range(self.levels)):
            h = F.interpolate(h, size=skips[i].shape[-2:], mode='bilinear', align_corners=False)
            h = attend(f'up{i + 1}_transformer', getattr(self, f'up{i + 1}')(torch.cat([h, skips[i]], 1), v))
        return self.out(h)



class ResBlock(nn.Module):
    """ADM's residual block with scale-shift (FiLM) conditioning."""

    def __init__(self, cin, cout, emb, groups, act, dropout):
        super().__init__()
        self.act, self.dropout = act, dropout
        self.norm1, self.conv1 = nn.GroupNorm(groups, cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout)
        self.norm2, self.conv2 = nn.GroupNorm(groups, cout), nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv2.weight)
        nn.init.zeros_(self.conv2.bias)
        if cin != cout:
            self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x, e):  # e: the embedding after the activation
        h = self.conv1(self.act(self.norm1(x)))
        scale, shift = self.emb(e)[:, :, None, None].chunk(2, 1)
        h = self.act(self.norm2(h) * (1 + scale) + shift)
        h = self.conv2(F.dropout(h, self.dropout, self.training))
        return h + (self.skip(x) if hasattr(self, 'skip') else x)


class ADMUNet(nn.Module):
    """The twin of models/unet's "adm" architecture (DDPM/ADM's U-Net, as
    diffusers' UNet2DModel): per-level channel multipliers, `blocks` residual
    blocks a level, self-attention on `attention_levels` and in the middle,
    FiLM conditioning on the time (and label) embedding."""

    def __init__(self, channels=3, width=32, channel_mult=(1, 2, 2), blocks=2, attention_levels=(1,),
                 head_channels=32, emb=128, classes=10, groups=8, act='silu', dropout=0.0):
        super().__init__()
        self.width, self.levels = width, len(channel_mult)
        self.act = F.silu if act == 'silu' else F.relu
        A = nn.SiLU if act == 'silu' else nn.ReLU
        self.time_embed = nn.Sequential(nn.Linear(width, emb), A(), nn.Linear(emb, emb))
        if classes:
            self.label_emb = nn.Embedding(classes, emb)
        self.conv_in = nn.Conv2d(channels, width, 3, padding=1)
        heads = lambda ch: ch // head_channels if ch % head_channels == 0 else 1

        def attn(ch):
            a = Attention(ch, groups, heads(ch))
            nn.init.zeros_(a.proj.weight)
            nn.init.zeros_(a.proj.bias)
            return a
        res = lambda cin, cout: ResBlock(cin, cout, emb, groups, self.act, dropout)
        chans, ch = [width], width
        self.down = nn.ModuleList()
        for l, m in enumerate(channel_mult):
            lv = nn.Module()
            lv.res, lv.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(blocks):
                lv.res.append(res(ch, width * m))
                ch = width * m
                lv.attn.append(attn(ch) if l in attention_levels else nn.Identity())
                chans.append(ch)
            if l < self.levels - 1:
                lv.down = nn.Conv2d(ch, ch, 3, stride=2, padding=1)
                chans.append(ch)
            self.down.append(lv)
        self.mid = nn.Module()
        self.mid.res1, self.mid.attn, self.mid.res2 = res(ch, ch), attn(ch), res(ch, ch)
        ups = {}
        for l in reversed(range(self.levels)):
            lv = nn.Module()
            lv.res, lv.attn = nn.ModuleList(), nn.ModuleList()
            for _ in range(blocks + 1):
                lv.res.append(res(ch + chans.pop(), width * channel_mult[l]))
                ch = width * channel_mult[l]
                lv.attn.append(attn(ch) if l in attention_levels else nn.Identity())
            if l > 0:
                lv.up = nn.Conv2d(ch, ch, 3, padding=1)
            ups[l] = lv
        self.up = nn.ModuleList([ups[l] for l in range(self.levels)])
        self.norm_out, self.conv_out = nn.GroupNorm(groups, ch), nn.Conv2d(ch, channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x, t, y=None, keep=None):
        e = self.time_embed(pos_encoding(t, self.width))
        if y is not None and hasattr(self, 'label_emb'):
            lab = self.label_emb(y)
            e = e + (lab if keep is None else lab * keep[:, None])
        e = self.act(e)
        h = self.conv_in(x)
        skips = [h]
        for lv in self.down:
            for r, a in zip(lv.res, lv.attn):
                h = a(r(h, e))
                skips.append(h)
            if hasattr(lv, 'down'):
                h = lv.down(h)
                skips.append(h)
        h = self.mid.res2(self.mid.attn(self.mid.res1(h, e)), e)
        for l in reversed(range(self.levels)):
            lv = self.up[l]
            for r, a in zip(lv.res, lv.attn):
                h = a(r(torch.cat([h, skips.pop()], 1), e))
            if hasattr(lv, 'up'):
                h = lv.up(F.interpolate(h, size=skips[-1].shape[-2:], mode='nearest'))
        return self.conv_out(self.act(self.norm_out(h)))
