package unet

import (
	"fmt"

	"kakusan/models/nn"
	"kakusan/torch"
)

// The "adm" architecture: the U-Net of DDPM and of Dhariwal and Nichol's
// ADM ("Diffusion Models Beat GANs", the network of guided-diffusion), as
// diffusers' UNet2DModel builds it, for colour images of 32 to 64 pixels.
// Per level (Levels of them, level l at 1/2^l of the image's side) it has
// Width×ChannelMult[l] channels and Blocks residual blocks, each followed by
// multi-head self-attention on the levels in AttentionLevels; a stride-2
// convolution goes down a level, nearest-neighbour upsampling and a
// convolution go up; the middle is a residual block, attention and another
// residual block. Every residual block is GroupNorm, activation, 3×3
// convolution, then GroupNorm whose output the time (and label) embedding
// scales and shifts (FiLM: h·(1+scale)+shift, ADM's use_scale_shift_norm),
// activation, dropout, 3×3 convolution, plus the input through a 1×1
// convolution where the channel count changes. The embedding is the
// timestep's sinusoidal encoding (Width wide) through Linear, activation,
// Linear to EmbDim, plus the label's learned EmbDim-wide vector. The layers
// that end a residual branch (each block's second convolution, attention's
// output projection, the output convolution) start at zero, as in ADM, so
// the fresh network is the identity on its skips.
//
// Parameter names are those of scripts/pt_models.py's ADMUNet.

// resBlock is one residual block.
type resBlock struct {
	cfg          Config
	m            *nn.Module
	norm1, norm2 *nn.GroupNorm
	conv1, conv2 *nn.Conv2d
	emb          *nn.Linear // embedding -> scale and shift (2×out)
	skip         *nn.Conv2d // 1×1 when in != out
}

func newResBlock(m *nn.Module, name string, in, out int64, c Config, dev torch.Device) *resBlock {
	b := &resBlock{cfg: c, m: m}
	b.norm1 = nn.NewGroupNorm(m, name+".norm1", c.Groups, in, dev)
	b.conv1 = nn.NewConv2d(m, name+".conv1", in, out, 3, 1, dev)
	b.emb = nn.NewLinear(m, name+".emb", c.EmbDim, 2*out, dev)
	b.norm2 = nn.NewGroupNorm(m, name+".norm2", c.Groups, out, dev)
	b.conv2 = nn.NewConv2d(m, name+".conv2", out, out, 3, 1, dev)
	zero(b.conv2.W, b.conv2.B)
	if in != out {
		b.skip = nn.NewConv2d(m, name+".skip", in, out, 1, 0, dev)
	}
	return b
}

// zero sets the tensors to zero (a fresh branch's last layer).
func zero(ts ...*torch.Tensor) {
	torch.NoGrad(func() {
		for _, t := range ts {
			t.MulScalarInPlace(0)
		}
	})
}

// Forward applies the block to x with e, the activated embedding (B, EmbDim).
func (b *resBlock) Forward(x, e *torch.Tensor) *torch.Tensor {
	act := b.cfg.act()
	h := b.conv1.Forward(b.norm1.ForwardAct(x, act))
	ss := b.emb.Forward(e).To(h.DType())
	out := h.Size(1)
	// act(norm2(h)·(1 + scale) + shift) in one pass.
	h = b.norm2.ForwardFiLM(h, ss.Narrow(1, 0, out).AddScalar(1), ss.Narrow(1, out, out), act)
	if b.cfg.Dropout > 0 {
		h = torch.Dropout(h, b.cfg.Dropout, b.m.Training())
	}
	h = b.conv2.Forward(h)
	if b.skip != nil {
		return h.Add(b.skip.Forward(x))
	}
	return h.Add(x)
}

// admLevel is one level of the down or up path.
type admLevel struct {
	res    []*resBlock
	attn   []*Attention // nil entries: no attention after that block
	resize *nn.Conv2d   // down: the stride-2 convolution; up: the convolution after upsampling; nil at the ends
}

// adm is the network's layers; UNet.Forward runs them when Cfg.Arch is
// "adm".
type adm struct {
	timeEmb1, timeEmb2 *nn.Linear
	convIn, convOut    *nn.Conv2d
	normOut            *nn.GroupNorm
	downs, ups         []admLevel
	mid1, mid2         *resBlock
	midAttn            *Attention
}

// heads is the number of attention heads at ch channels.
func (c Config) heads(ch int64) int64 {
	if c.HeadChannels <= 0 || ch%c.HeadChannels != 0 {
		return 1
	}
	return ch / c.HeadChannels
}

// mult is level l's channel multiplier: ChannelMult's, or 1 at level 0 and
// 2 below it when ChannelMult is empty.
func (c Config) mult(l int64) int64 {
	if len(c.ChannelMult) > 0 {
		return c.ChannelMult[l]
	}
	return min(l+1, 2)
}

// attends reports whether level l has attention after its blocks.
func (c Config) attends(l int64) bool {
	for _, a := range c.AttentionLevels {
		if a == l {
			return true
		}
	}
	return false
}

func newADM(m *nn.Module, c Config, dev torch.Device) *adm {
	a := &adm{}
	a.timeEmb1 = nn.NewLinear(m, "time_embed.0", c.Width, c.EmbDim, dev)
	a.timeEmb2 = nn.NewLinear(m, "time_embed.2", c.EmbDim, c.EmbDim, dev)
	a.convIn = nn.NewConv2d(m, "conv_in", c.Channels, c.Width, 3, 1, dev)
	attn := func(name string, ch int64) *Attention {
		at := newAttention(m, name, ch, c.Groups, c.heads(ch), dev)
		zero(at.proj.W, at.proj.B)
		return at
	}
	chans := []int64{c.Width}
	ch := c.Width
	for l := range c.Levels {
		var lv admLevel
		out := c.Width * c.mult(l)
		for j := range c.Blocks {
			lv.res = append(lv.res, newResBlock(m, fmt.Sprintf("down.%d.res.%d", l, j), ch, out, c, dev))
			ch = out
			var at *Attention
			if c.attends(l) {
				at = attn(fmt.Sprintf("down.%d.attn.%d", l, j), ch)
			}
			lv.attn = append(lv.attn, at)
			chans = append(chans, ch)
		}
		if l < c.Levels-1 {
			lv.resize = nn.NewConv2d(m, fmt.Sprintf("down.%d.down", l), ch, ch, 3, 1, dev)
			lv.resize.Opts.Stride = [2]int64{2, 2}
			chans = append(chans, ch)
		}
		a.downs = append(a.downs, lv)
	}
	a.mid1 = newResBlock(m, "mid.res1", ch, ch, c, dev)
	a.midAttn = attn("mid.attn", ch)
	a.mid2 = newResBlock(m, "mid.res2", ch, ch, c, dev)
	a.ups = make([]admLevel, c.Levels)
	for l := c.Levels - 1; l >= 0; l-- {
		var lv admLevel
		out := c.Width * c.mult(l)
		for j := range c.Blocks + 1 {
			skip := chans[len(chans)-1]
			chans = chans[:len(chans)-1]
			lv.res = append(lv.res, newResBlock(m, fmt.Sprintf("up.%d.res.%d", l, j), ch+skip, out, c, dev))
			ch = out
			var at *Attention
			if c.attends(l) {
				at = attn(fmt.Sprintf("up.%d.attn.%d", l, j), ch)
			}
			lv.attn = append(lv.attn, at)
		}
		if l > 0 {
			lv.resize = nn.NewConv2d(m, fmt.Sprintf("up.%d.up", l), ch, ch, 3, 1, dev)
		}
		a.ups[l] = lv
	}
	a.normOut = nn.NewGroupNorm(m, "norm_out", c.Groups, ch, dev)
	a.convOut = nn.NewConv2d(m, "conv_out", ch, c.Channels, 3, 1, dev)
	zero(a.convOut.W, a.convOut.B)
	return a
}

// forward predicts for x (B, C, H, W) with the embedding v (B, Width), the
// label's vector already added when lab is non-nil.
func (a *adm) forward(u *UNet, x, v, lab *torch.Tensor) *torch.Tensor {
	act := u.Cfg.act()
	e := a.timeEmb2.Forward(act.Apply(a.timeEmb1.Forward(v)))
	if lab != nil {
		e = e.Add(lab)
	}
	e = act.Apply(e) // each block's embedding projection starts with the activation
	h := x
	if u.Cfg.ChannelsLast {
		h = x.ContiguousAs(torch.ChannelsLast)
	}
	// Each block in its own scope, as the book's network (see Forward).
	block := func(f func() *torch.Tensor) *torch.Tensor { return torch.ScopedValue(f) }
	h = block(func() *torch.Tensor { return a.convIn.Forward(h) })
	skips := []*torch.Tensor{h}
	for _, lv := range a.downs {
		for j, r := range lv.res {
			h = block(func() *torch.Tensor { return attendMaybe(lv.attn[j], r.Forward(h, e)) })
			skips = append(skips, h)
		}
		if lv.resize != nil {
			h = block(func() *torch.Tensor { return lv.resize.Forward(h) })
			skips = append(skips, h)
		}
	}
	h = block(func() *torch.Tensor { return a.mid2.Forward(a.midAttn.Forward(a.mid1.Forward(h, e)), e) })
	for l := len(a.ups) - 1; l >= 0; l-- {
		lv := a.ups[l]
		for j, r := range lv.res {
			s := skips[len(skips)-1]
			skips = skips[:len(skips)-1]
			h = block(func() *torch.Tensor {
				return attendMaybe(lv.attn[j], r.Forward(torch.Cat([]*torch.Tensor{h, s}, 1), e))
			})
		}
		if lv.resize != nil {
			next := skips[len(skips)-1] // the size to go up to: odd sides round up on the way down
			h = block(func() *torch.Tensor { return lv.resize.Forward(torch.UpsampleNearest(h, next.Size(2), next.Size(3))) })
		}
	}
	return block(func() *torch.Tensor { return a.convOut.Forward(a.normOut.ForwardAct(h, act)) })
}

func attendMaybe(a *Attention, h *torch.Tensor) *torch.Tensor {
	if a == nil {
		return h
	}
	return a.Forward(h)
}

// admFLOPs is the network's floating-point operations for one image of
// h×w pixels (a multiply-add counts two): convolutions, linear layers and
// attention's two matrix products; normalisations and activations left out.
func (u *UNet) admFLOPs(h, w int64) int64 {
	c, a := u.Cfg, u.adm
	var macs int64
	side := func(s int64, l int64) int64 {
		for range l {
			s = (s + 1) / 2
		}
		return s
	}
	pix := func(l int64) int64 { return side(h, l) * side(w, l) }
	conv := func(cv *nn.Conv2d, l int64) {
		s := cv.W.Shape()
		macs += s[0] * s[1] * s[2] * s[3] * pix(l)
	}
	res := func(r *resBlock, l int64) {
		conv(r.conv1, l)
		conv(r.conv2, l)
		if r.skip != nil {
			conv(r.skip, l)
		}
		s := r.emb.W.Shape()
		macs += s[0] * s[1]
	}
	attn := func(at *Attention, l int64) {
		if at == nil {
			return
		}
		conv(at.qkv, l)
		conv(at.proj, l)
		ch := at.proj.W.Shape()[0]
		macs += 2 * pix(l) * pix(l) * ch
	}
	macs += c.Width*c.EmbDim + c.EmbDim*c.EmbDim
	conv(a.convIn, 0)
	for l, lv := range a.downs {
		for j, r := range lv.res {
			res(r, int64(l))
			attn(lv.attn[j], int64(l))
		}
		if lv.resize != nil {
			conv(lv.resize, int64(l)+1)
		}
	}
	mid := int64(len(a.downs) - 1)
	res(a.mid1, mid)
	attn(a.midAttn, mid)
	res(a.mid2, mid)
	for l, lv := range a.ups {
		for j, r := range lv.res {
			res(r, int64(l))
			attn(lv.attn[j], int64(l))
		}
		if lv.resize != nil {
			conv(lv.resize, int64(l)-1)
		}
	}
	conv(a.convOut, 0)
	return 2 * macs
}
