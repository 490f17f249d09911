// Package unet is the noise-predicting U-Net of the diffusion rungs (ladder
// steps 7 and 8): the reference network of Deep Learning from Scratch 5,
// with options for a stronger one. Parameter names follow the equivalent
// PyTorch module (scripts/pt_models.py's UNet), so checkpoints load into it
// with strict matching, and its state dicts load here.
package unet

import (
	"errors"
	"fmt"
	"math"

	"kakusan/models/nn"
	"kakusan/torch"
)

// Config shapes the network; it is the `unet:` section of a diffusion
// config. Channels and Classes come from the data, not the YAML.
type Config struct {
	// Arch is the architecture: "book", the book's network (one block per
	// level, widths doubling, attention at most at the bottleneck), or
	// "adm", DDPM/ADM's (diffusers' UNet2DModel: ChannelMult, Blocks
	// residual blocks a level, attention on AttentionLevels, FiLM
	// conditioning; adm.go), for colour images.
	Arch     string `yaml:"arch"`
	Channels int64  `yaml:"-"`       // image channels: the data's
	Width    int64  `yaml:"width"`   // channels of the first level; each level doubles them (book) or multiplies them by channel_mult (adm) (reference 64)
	Levels   int64  `yaml:"levels"`  // book: down blocks (and up blocks), 2 in the reference; adm: resolutions, the image's side and each half of it
	EmbDim   int64  `yaml:"emb_dim"` // time (and label) embedding size (reference 100; adm: 4×width, as ADM)
	// ChannelMult is adm's width multiplier per level, one per level
	// (empty: 1 at the first level, 2 below it).
	ChannelMult []int64 `yaml:"channel_mult,flow"`
	// Blocks is adm's number of residual blocks a level on the way down
	// (one more on the way up, as ADM).
	Blocks int64 `yaml:"blocks"`
	// AttentionLevels are the levels (0: the image's side, 1: half of it,
	// ...) where adm's blocks are followed by self-attention; the middle
	// always has it. ADM attends at 16×16 and 8×8.
	AttentionLevels []int64 `yaml:"attention_levels,flow"`
	// HeadChannels is the channels of each of adm's attention heads (a
	// level of C channels has C/head_channels heads; one head when it does
	// not divide C).
	HeadChannels int64   `yaml:"head_channels"`
	Classes      int64   `yaml:"-"`         // label classes, the data's; 0 for an unconditional model
	Norm         string  `yaml:"norm"`      // "batch" (reference) or "group"
	Groups       int64   `yaml:"groups"`    // groups of GroupNorm
	Act          string  `yaml:"act"`       // "relu" (reference) or "silu"
	Dropout      float64 `yaml:"dropout"`   // after each block's first activation; 0 = none
	Attention    bool    `yaml:"attention"` // a self-attention block after the bottleneck
	// Residual adds each block's input, through a 1×1 convolution where
	// the channel count changes, to its output (as a ResNet block does).
	Residual bool `yaml:"residual"`
	// ChannelsLast lays convolution weights and activations out NHWC
	// (torch.channels_last), the layout oneDNN's and cuDNN's fastest
	// convolutions use; values and checkpoints are the same either way.
	ChannelsLast bool `yaml:"channels_last"`
	// Cross-attention conditioning on prompts (ladder step 9): with Vocab
	// words (set by the model from its prompt vocabulary) the network embeds
	// a prompt's tokens into a context of ContextDim-wide vectors, and a
	// SpatialTransformer of Heads heads after each block from level
	// TransformerFrom down (0: every level, the bottleneck always) attends
	// to it, in place of the label embedding.

	ContextDim      int64 `yaml:"context_dim"`      // prompts: width of the embedded prompt tokens
	Heads           int64 `yaml:"heads"`            // prompts: attention heads of each transformer block
	TransformerFrom int64 `yaml:"transformer_from"` // prompts: the first level with transformer blocks (0: every level; the bottleneck always has one)
	Vocab           int64 `yaml:"-"`
	Context         int64 `yaml:"-"` // tokens per prompt
}

// Defaults is the reference network's section, before the data fills in
// channels and classes.
func Defaults() *Config {
	return &Config{Arch: "book", Width: 64, Levels: 2, EmbDim: 100, Norm: "batch", Groups: 8, Act: "relu", ContextDim: 64, Heads: 4, TransformerFrom: 1,
		Blocks: 2, HeadChannels: 32}
}

// Validate reports a section the network cannot be built from, a line
// "key: problem" for each.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Arch != "" && c.Arch != "book" && c.Arch != "adm" {
		bad("arch: must be book or adm, got %q", c.Arch)
	}
	if c.Arch == "adm" {
		c.validateADM(bad)
	}
	if c.Width < 1 || c.Width > 4096 {
		bad("width: must be between 1 and 4096, got %d", c.Width)
	}
	if c.Levels < 1 || c.Levels > 4 {
		bad("levels: must be between 1 and 4, got %d", c.Levels)
	}
	if c.EmbDim < 2 || c.EmbDim > 1<<14 || c.EmbDim%2 != 0 {
		bad("emb_dim: must be even and between 2 and 16384, got %d", c.EmbDim)
	}
	if c.Norm != "batch" && c.Norm != "group" {
		bad("norm: must be batch or group, got %q", c.Norm)
	}
	if c.Norm == "group" && (c.Groups < 1 || c.Width%c.Groups != 0) && c.Arch != "adm" {
		bad("groups: must divide width (%d), got %d", c.Width, c.Groups)
	}
	if c.Act != "relu" && c.Act != "silu" {
		bad("act: must be relu or silu, got %q", c.Act)
	}
	if c.ContextDim < 0 || c.ContextDim > 4096 {
		bad("context_dim: must be between 1 and 4096, got %d", c.ContextDim)
	}
	if c.Heads < 0 || c.Heads > 256 {
		bad("heads: must be between 1 and 256, got %d", c.Heads)
	}
	if c.TransformerFrom < 0 || c.TransformerFrom > c.Levels {
		bad("transformer_from: must be a level from 0 to levels (%d), got %d", c.Levels, c.TransformerFrom)
	}
	if !(c.Dropout >= 0 && c.Dropout < 1) {
		bad("dropout: must be in [0, 1), got %g", c.Dropout)
	}
	if len(errs) == 0 {
		c.checkSize(bad) // before anything is built: a config or checkpoint cannot ask for gigabytes
	}
	return errors.Join(errs...)
}

// validateADM checks what only adm reads.
func (c *Config) validateADM(bad func(string, ...any)) {
	if c.Levels < 1 || c.Levels > 6 {
		bad("levels: adm takes 1 to 6 levels, got %d", c.Levels)
		return
	}
	if n := len(c.ChannelMult); n > 0 && int64(n) != c.Levels {
		bad("channel_mult: one multiplier per level: %d for levels %d", n, c.Levels)
		return
	}
	if c.Norm != "group" {
		bad("norm: adm normalises with group norm, got %q", c.Norm)
	}
	if c.Blocks < 1 || c.Blocks > 8 {
		bad("blocks: must be between 1 and 8, got %d", c.Blocks)
	}
	if c.HeadChannels < 1 || c.HeadChannels > 4096 {
		bad("head_channels: must be between 1 and 4096, got %d", c.HeadChannels)
	}
	for l := range c.Levels {
		m := c.mult(l)
		if m < 1 || m > 64 || c.Width*m > 1<<14 {
			bad("channel_mult: level %d's multiplier must be between 1 and 64 (and width×multiplier at most 16384), got %d", l, m)
		} else if c.Groups < 1 || (c.Width*m)%c.Groups != 0 {
			bad("groups: must divide every level's channels; %d does not divide level %d's %d", c.Groups, l, c.Width*m)
		}
	}
	for _, l := range c.AttentionLevels {
		if l < 0 || l >= c.Levels {
			bad("attention_levels: %d is not a level (0 to %d)", l, c.Levels-1)
		}
	}
}

func (c Config) act() torch.Act {
	if c.Act == "silu" {
		return torch.ActSiLU
	}
	return torch.ActReLU
}

// PosEncoding is the sinusoidal embedding of timesteps t (B, any dtype) of
// size dim: element i is sin(t / 10000^(i/dim)) for even i, cos(...) for odd i.
func PosEncoding(t *torch.Tensor, dim int64) *torch.Tensor {
	dev := t.Device()
	i := torch.Arange(0, float64(dim), 1, dev)
	arg := t.To(torch.Float32).View(-1, 1).Div(i.MulScalar(math.Log(10000)/float64(dim)).Exp().View(1, -1))
	even := i.Remainder(torch.Scalar(2, dev)).EqScalar(0).View(1, -1)
	return torch.Where(even, arg.Sin(), arg.Cos())
}

// ConvBlock is the reference block: x + mlp(v) broadcast over H×W, then
// (Conv3×3, Norm, Act) twice; with Config.Residual, plus skip(x).
type ConvBlock struct {
	cfg          Config
	m            *nn.Module
	conv1, conv2 *nn.Conv2d
	norm1, norm2 nn.Norm
	mlp1, mlp2   *nn.Linear
	skip         *nn.Conv2d // 1×1, when residual and in != out; nil: identity
}

func newConvBlock(m *nn.Module, name string, in, out int64, c Config, dev torch.Device) *ConvBlock {
	b := &ConvBlock{cfg: c, m: m}
	// Indices inside "convs" follow the PyTorch Sequential: conv, norm, act,
	// [dropout,] conv, norm, act.
	second := int64(3)
	if c.Dropout > 0 {
		second = 4
	}
	norm := func(idx, ch int64) nn.Norm {
		n := fmt.Sprintf("%s.convs.%d", name, idx)
		if c.Norm == "group" {
			return nn.NewGroupNorm(m, n, c.Groups, ch, dev)
		}
		return nn.NewBatchNorm2d(m, n, ch, dev)
	}
	b.conv1 = nn.NewConv2d(m, name+".convs.0", in, out, 3, 1, dev)
	b.norm1 = norm(1, out)
	b.conv2 = nn.NewConv2d(m, fmt.Sprintf("%s.convs.%d", name, second), out, out, 3, 1, dev)
	b.norm2 = norm(second+1, out)
	b.mlp1 = nn.NewLinear(m, name+".mlp.0", c.EmbDim, in, dev)
	b.mlp2 = nn.NewLinear(m, name+".mlp.2", in, in, dev)
	if c.Residual && in != out {
		b.skip = nn.NewConv2d(m, name+".skip", in, out, 1, 0, dev)
	}
	return b
}

// embedding is the block's projection of the embedding v (B, emb) to its
// input channels (B, in), in dtype: bfloat16 under autocast while the
// input image may be float32, and one dtype, or the add broadcasts through
// a slow mixed loop.
func (b *ConvBlock) embedding(v *torch.Tensor, dtype torch.DType) *torch.Tensor {
	return b.mlp2.Forward(b.mlp1.Forward(v).Relu()).To(dtype)
}

// Forward applies the block to x (B, in, H, W) with the embedding v (B, emb).
func (b *ConvBlock) Forward(x, v *torch.Tensor) *torch.Tensor {
	return b.body(x.Add(b.embedding(v, x.DType()).Unsqueeze(-1).Unsqueeze(-1)), x)
}

// ForwardUp applies an up block to cat([upsample(h), skip], 1), the
// upsampling to the skip's size, the concatenation and the embedding's
// add in one op (torch.UpsampleCat: one pass over the block's largest
// tensor each way instead of three).
func (b *ConvBlock) ForwardUp(h, skip, v *torch.Tensor) *torch.Tensor {
	if b.cfg.Residual { // the shortcut takes the input without the embedding
		return b.Forward(torch.UpsampleCat(h, skip, nil), v)
	}
	return b.body(torch.UpsampleCat(h, skip, b.embedding(v, skip.DType())), nil)
}

// body is the block after the embedding's add: x is its input with the
// embedding added, in without it (for the residual shortcut).
func (b *ConvBlock) body(x, in *torch.Tensor) *torch.Tensor {
	h := nn.ConvNormAct(x, b.conv1, b.norm1, b.cfg.act())
	if b.cfg.Dropout > 0 {
		h = torch.Dropout(h, b.cfg.Dropout, b.m.Training())
	}
	h = nn.ConvNormAct(h, b.conv2, b.norm2, b.cfg.act())
	switch {
	case b.skip != nil:
		return h.Add(b.skip.Forward(in))
	case b.cfg.Residual:
		return h.Add(in)
	}
	return h
}

// Attention is multi-head self-attention over the pixels of a feature map,
// with a residual connection: the qkv convolution's output channels are
// q, k and v, each heads × (channels/heads).
type Attention struct {
	norm      *nn.GroupNorm
	qkv, proj *nn.Conv2d
	heads     int64
}

func newAttention(m *nn.Module, name string, ch, groups, heads int64, dev torch.Device) *Attention {
	if ch%groups != 0 {
		groups = 1
	}
	return &Attention{nn.NewGroupNorm(m, name+".norm", groups, ch, dev), nn.NewConv2d(m, name+".qkv", ch, 3*ch, 1, 0, dev), nn.NewConv2d(m, name+".proj", ch, ch, 1, 0, dev), heads}
}

// Forward is x + proj(attention(norm(x))).
func (a *Attention) Forward(x *torch.Tensor) *torch.Tensor {
	s := x.Shape()
	b, c, hw := s[0], s[1], s[2]*s[3]
	qkv := a.qkv.Forward(a.norm.Forward(x)).View(b, 3, a.heads, c/a.heads, hw).Permute(1, 0, 2, 4, 3) // 3, B, heads, HW, C/heads
	h := torch.ScaledDotProductAttention(qkv.Index(torch.At(0)), qkv.Index(torch.At(1)), qkv.Index(torch.At(2)), nil, false) // B, heads, HW, C/heads
	// The heads back into channels, in x's layout: a channels-last x gets a
	// channels-last input for proj (an NCHW one made oneDNN reorder it).
	if x.IsContiguousAs(torch.ChannelsLast) {
		return x.Add(a.proj.Forward(h.Permute(0, 2, 1, 3).Reshape(b, s[2], s[3], c).Permute(0, 3, 1, 2)))
	}
	return x.Add(a.proj.Forward(h.Permute(0, 1, 3, 2).Reshape(b, c, s[2], s[3])))
}

// UNet predicts the noise (or v) in x_t.
type UNet struct {
	*nn.Module
	Cfg      Config
	downs    []*ConvBlock
	bot      *ConvBlock
	attn     *Attention
	ups      []*ConvBlock
	out      *nn.Conv2d
	labelEmb *nn.Embedding
	adm      *adm // the adm architecture's layers; nil for the book's
	// Prompt conditioning: token and position embeddings, and a
	// transformer after each block from level TransformerFrom down (nil above).
	tokenEmb, posEmb *nn.Embedding
	downX, upX       []*SpatialTransformer
	botX             *SpatialTransformer
}

// New builds a U-Net on dev.
func New(c Config, dev torch.Device) (*UNet, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if c.Channels < 1 || c.Channels > 64 || c.Classes < 0 || c.Classes > 1<<16 {
		return nil, fmt.Errorf("%d channels and %d classes: want 1-64 channels and 0-65536 classes", c.Channels, c.Classes)
	}
	if c.Vocab < 0 || c.Vocab > 1<<16 || (c.Vocab > 0 && (c.Context < 1 || c.Context > 256)) {
		return nil, fmt.Errorf("a vocabulary of %d words and prompts of %d tokens: want at most 65536 words and 1-256 tokens", c.Vocab, c.Context)
	}
	if c.Vocab > 0 && (c.ContextDim < 1 || c.Heads < 1) {
		return nil, fmt.Errorf("context_dim and heads: a network conditioned on prompts needs both, got %d and %d", c.ContextDim, c.Heads)
	}
	if c.Vocab > 0 && (c.Width<<c.TransformerFrom)%c.Heads != 0 {
		return nil, fmt.Errorf("heads: %d heads must divide the transformers' channels (%d from level %d)", c.Heads, c.Width<<c.TransformerFrom, c.TransformerFrom)
	}
	if c.Arch == "adm" && c.Vocab > 0 {
		return nil, fmt.Errorf("arch: adm takes labels, not prompts (yet): use arch book for a prompted model")
	}
	m := nn.NewModule()
	u := &UNet{Module: m, Cfg: c}
	if c.Arch == "adm" {
		u.adm = newADM(m, c, dev)
		if c.Classes > 0 {
			u.labelEmb = nn.NewEmbedding(m, "label_emb", c.Classes, c.EmbDim, dev)
		}
		u.channelsLast()
		return u, nil
	}
	width := func(level int64) int64 { return c.Width << level } // level 0 = first
	in := c.Channels
	for i := range c.Levels {
		u.downs = append(u.downs, newConvBlock(m, fmt.Sprintf("down%d", i+1), in, width(i), c, dev))
		in = width(i)
	}
	u.bot = newConvBlock(m, "bot1", in, width(c.Levels), c, dev)
	if c.Attention {
		u.attn = newAttention(m, "attn", width(c.Levels), c.Groups, 1, dev)
	}
	u.ups = make([]*ConvBlock, c.Levels)
	for i := c.Levels - 1; i >= 0; i-- {
		u.ups[i] = newConvBlock(m, fmt.Sprintf("up%d", i+1), width(i+1)+width(i), width(i), c, dev)
	}
	u.out = nn.NewConv2d(m, "out", c.Width, c.Channels, 1, 0, dev)
	switch {
	case c.Vocab > 0:
		u.prompted(m, dev)
	case c.Classes > 0:
		u.labelEmb = nn.NewEmbedding(m, "label_emb", c.Classes, c.EmbDim, dev)
	}
	u.channelsLast()
	return u, nil
}

// channelsLast lays the convolution weights out NHWC when asked.
func (u *UNet) channelsLast() {
	if u.Cfg.ChannelsLast {
		for _, p := range u.ParamTensors() {
			p.SetMemoryFormat(torch.ChannelsLast) // the convolution weights; others are not 4-d
		}
	}
}

// FLOPs is the network's floating-point operations for one forward pass
// of an image of h×w pixels (a multiply-add counts two; convolutions,
// linear layers and attention's matrix products), 0 where it is not
// counted (the book's architecture).
func (u *UNet) FLOPs(h, w int64) int64 {
	if u.adm == nil {
		return 0
	}
	return u.admFLOPs(h, w)
}

// prompted adds the prompt conditioning: the text embeddings, and a
// transformer after every block from level TransformerFrom down.
func (u *UNet) prompted(m *nn.Module, dev torch.Device) {
	c := u.Cfg
	u.tokenEmb = nn.NewEmbedding(m, "text.token_embedding", c.Vocab, c.ContextDim, dev)
	u.posEmb = nn.NewEmbedding(m, "text.position_embedding", c.Context, c.ContextDim, dev)
	width := func(level int64) int64 { return c.Width << level }
	xf := func(name string, ch int64) *SpatialTransformer {
		return newSpatialTransformer(m, name+"_transformer", ch, c.ContextDim, c.Heads, c.Groups, dev)
	}
	u.downX, u.upX = make([]*SpatialTransformer, c.Levels), make([]*SpatialTransformer, c.Levels)
	for i := c.TransformerFrom; i < c.Levels; i++ {
		u.downX[i] = xf(fmt.Sprintf("down%d", i+1), width(i))
	}
	u.botX = xf("bot1", width(c.Levels))
	for i := c.Levels - 1; i >= c.TransformerFrom; i-- {
		u.upX[i] = xf(fmt.Sprintf("up%d", i+1), width(i))
	}
}

// Prompted reports whether the network is conditioned on prompts.
func (u *UNet) Prompted() bool { return u.tokenEmb != nil }

// context embeds prompts y (B, Context) of int64 tokens, each replaced by
// the empty prompt (all 0) where keep is 0; y nil is the empty prompt.
func (u *UNet) context(y, keep *torch.Tensor, b int64, dev torch.Device) *torch.Tensor {
	if y == nil {
		y = torch.Zeros([]int64{b, u.Cfg.Context}, torch.Int64, dev)
	} else if keep != nil {
		y = y.Mul(keep.To(torch.Int64).View(-1, 1))
	}
	pos := torch.Arange(0, float64(u.Cfg.Context), 1, dev).To(torch.Int64)
	return u.tokenEmb.Forward(y).Add(u.posEmb.Forward(pos).Unsqueeze(0))
}

// label is the label embedding of y (B) with the dropped labels' rows
// (keep 0) zeroed; nil for a network without labels or when y is nil.
func (u *UNet) label(y, keep *torch.Tensor) *torch.Tensor {
	if u.labelEmb == nil || y == nil {
		return nil
	}
	e := u.labelEmb.Forward(y)
	if keep != nil {
		e = e.Mul(keep.To(e.DType()).View(-1, 1))
	}
	return e
}

// Forward predicts for x (B, C, H, W) at timesteps t (B). For a conditional
// network y holds int64 labels and keep is 1 where the label is used and 0
// where it is dropped (nil keeps every label); y nil drops them all. For a
// prompted network y holds prompts, (B, Context) tokens, dropped alike.
func (u *UNet) Forward(x, t, y, keep *torch.Tensor) *torch.Tensor {
	if u.adm != nil {
		return u.adm.forward(u, x, PosEncoding(t, u.Cfg.Width), u.label(y, keep))
	}
	v := PosEncoding(t, u.Cfg.EmbDim)
	var ctx *torch.Tensor
	if u.Prompted() {
		ctx = u.context(y, keep, x.Size(0), x.Device())
	}
	attend := func(s *SpatialTransformer, h *torch.Tensor) *torch.Tensor {
		if s == nil {
			return h
		}
		return s.Forward(h, ctx)
	}
	if e := u.label(y, keep); e != nil {
		v = v.Add(e)
	}
	// Each block runs in its own scope, so its temporaries are freed as
	// soon as it returns (autograd keeps what backward needs): the
	// allocator then reuses warm memory instead of mapping fresh pages for
	// every intermediate of the whole pass, which made a CPU forward several
	// times slower than PyTorch's (docs/performance.md).
	h := x
	if u.Cfg.ChannelsLast {
		h = x.ContiguousAs(torch.ChannelsLast)
	}
	skips := make([]*torch.Tensor, len(u.downs))
	for i, d := range u.downs {
		in := h
		h = torch.ScopedValue(func() *torch.Tensor {
			if i > 0 {
				in = torch.MaxPool2d(in, 2, 0, 0)
			}
			if u.downX != nil {
				return attend(u.downX[i], d.Forward(in, v))
			}
			return d.Forward(in, v)
		})
		skips[i] = h
	}
	h = torch.ScopedValue(func() *torch.Tensor {
		h := attend(u.botX, u.bot.Forward(torch.MaxPool2d(h, 2, 0, 0), v))
		if u.attn != nil {
			h = u.attn.Forward(h)
		}
		return h
	})
	for i := len(u.ups) - 1; i >= 0; i-- {
		h = torch.ScopedValue(func() *torch.Tensor {
			h := u.ups[i].ForwardUp(h, skips[i], v)
			if u.upX != nil {
				return attend(u.upX[i], h)
			}
			return h
		})
	}
	return u.out.Forward(h)
}
