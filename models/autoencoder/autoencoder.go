// Package autoencoder is the first half of ladder step 9: a convolutional
// autoencoder with a KL-regularised latent, as Stable Diffusion's VAE
// (Rombach et al. 2022, "AutoencoderKL"). It maps an image to a Gaussian
// over a latent of a few channels at a fraction of the resolution (MNIST:
// 4×7×7 for 1×28×28) and back; a diffusion model then works on the latents
// (diffusion's latent codec). Parameter names follow the equivalent PyTorch
// module (scripts/pt_models.py's AutoencoderKL, laid out as the latent
// diffusion repository's encoder.down.N.block.M...), so checkpoints load
// into it strictly and back.
package autoencoder

import (
	"errors"
	"fmt"

	"kakusan/models/nn"
	"kakusan/torch"
)

// Config shapes the autoencoder: the `autoencoder:` section of a config.
type Config struct {
	// Channels are the feature channels at each resolution, full first;
	// each level after the first halves the resolution (rounding up), so
	// three levels make 28×28 images 7×7 latents.
	Channels []int64 `yaml:"channels,flow"`
	Blocks   int64   `yaml:"blocks"`          // residual blocks per level
	Latent   int64   `yaml:"latent_channels"` // channels of the latent (Stable Diffusion: 4)
	Groups   int64   `yaml:"groups"`          // GroupNorm groups; must divide every level's channels
	// KLWeight multiplies KL(q(z|x) || N(0, I)) against the summed squared
	// error of the reconstruction (per image, pixels in [-1, 1]). Small, as
	// Stable Diffusion's 1e-6: the latent is to reconstruct well and stay
	// bounded, not to be a sampleable prior.
	KLWeight float64 `yaml:"kl_weight"`
}

// Defaults is the MNIST autoencoder: 16, 32 and 64 channels at 28, 14 and
// 7 pixels, one block each, a 4×7×7 latent.
func Defaults() *Config {
	return &Config{Channels: []int64{16, 32, 64}, Blocks: 1, Latent: 4, Groups: 8, KLWeight: 1e-4}
}

// Validate reports a section the autoencoder cannot be built from.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if len(c.Channels) < 1 || len(c.Channels) > 5 {
		bad("channels: want 1 to 5 levels, got %d", len(c.Channels))
	}
	if c.Groups < 1 || c.Groups > 1024 {
		bad("groups: must be between 1 and 1024, got %d", c.Groups)
	}
	for i, ch := range c.Channels {
		if ch < 1 || ch > 4096 {
			bad("channels[%d]: must be between 1 and 4096, got %d", i, ch)
		} else if c.Groups >= 1 && ch%c.Groups != 0 {
			bad("channels[%d]: %d is not a multiple of groups (%d)", i, ch, c.Groups)
		}
	}
	if c.Blocks < 1 || c.Blocks > 8 {
		bad("blocks: must be between 1 and 8, got %d", c.Blocks)
	}
	if c.Latent < 1 || c.Latent > 64 {
		bad("latent_channels: must be between 1 and 64, got %d", c.Latent)
	}
	if !(c.KLWeight >= 0 && c.KLWeight <= 1) {
		bad("kl_weight: must be in [0, 1], got %g", c.KLWeight)
	}
	if len(errs) == 0 && c.Params(4) > maxParams {
		bad("channels, blocks: %d parameters (for 4-channel images) is more than %d", c.Params(4), int64(maxParams))
	}
	return errors.Join(errs...)
}

// maxParams bounds an autoencoder's size (a GiB of float32 weights), so
// that a config or checkpoint cannot make the loader allocate without end.
const maxParams = 1 << 28

// Params is the number of parameters of the autoencoder for images of
// channels channels, counted from the config as New builds it.
func (c *Config) Params(channels int64) int64 {
	conv := func(in, out, k int64) int64 { return in*out*k*k + out }
	gn := func(ch int64) int64 { return 2 * ch }
	res := func(in, out int64) int64 {
		n := gn(in) + conv(in, out, 3) + gn(out) + conv(out, out, 3)
		if in != out {
			n += conv(in, out, 1)
		}
		return n
	}
	ch, l := c.Channels, c.Latent
	last := ch[len(ch)-1]
	n := conv(channels, ch[0], 3) + res(last, last) + gn(last) + conv(last, 2*l, 3) + conv(2*l, 2*l, 1) + // encoder
		conv(l, l, 1) + conv(l, last, 3) + res(last, last) + gn(ch[0]) + conv(ch[0], channels, 3) // decoder
	in := ch[0]
	for i, out := range ch {
		for range c.Blocks {
			n, in = n+res(in, out), out
		}
		if i < len(ch)-1 {
			n += conv(out, out, 3)
		}
	}
	in = last
	for i := len(ch) - 1; i >= 0; i-- {
		for range c.Blocks {
			n, in = n+res(in, ch[i]), ch[i]
		}
		if i > 0 {
			n += conv(in, in, 3)
		}
	}
	return n
}

// Sides are the feature maps' heights (or widths) at each level for an
// image side of n: each level halves the last, rounding up, as a stride-2
// convolution with padding 1 does.
func (c *Config) Sides(n int64) []int64 {
	s := []int64{n}
	for range len(c.Channels) - 1 {
		s = append(s, (s[len(s)-1]+1)/2)
	}
	return s
}

// ResBlock is the latent diffusion repository's ResnetBlock without the
// time embedding: x + conv2(silu(norm2(conv1(silu(norm1(x)))))), the
// shortcut a 1×1 convolution where the channel count changes.
type ResBlock struct {
	norm1, norm2 *nn.GroupNorm
	conv1, conv2 *nn.Conv2d
	shortcut     *nn.Conv2d // nil: identity
}

func newResBlock(m *nn.Module, name string, in, out, groups int64, dev torch.Device) *ResBlock {
	b := &ResBlock{
		norm1: nn.NewGroupNorm(m, name+".norm1", groups, in, dev),
		conv1: nn.NewConv2d(m, name+".conv1", in, out, 3, 1, dev),
		norm2: nn.NewGroupNorm(m, name+".norm2", groups, out, dev),
		conv2: nn.NewConv2d(m, name+".conv2", out, out, 3, 1, dev),
	}
	if in != out {
		b.shortcut = nn.NewConv2d(m, name+".nin_shortcut", in, out, 1, 0, dev)
	}
	return b
}

// Forward applies the block.
func (b *ResBlock) Forward(x *torch.Tensor) *torch.Tensor {
	h := b.conv1.Forward(b.norm1.ForwardAct(x, torch.ActSiLU))
	h = b.conv2.Forward(b.norm2.ForwardAct(h, torch.ActSiLU))
	if b.shortcut != nil {
		x = b.shortcut.Forward(x)
	}
	return x.Add(h)
}

// AutoencoderKL encodes images (B, C, H, W) in [0, 1] to a diagonal
// Gaussian over latents (B, Latent, h, w) and decodes latents back.
type AutoencoderKL struct {
	*nn.Module
	Cfg        Config
	C          int64   // image channels
	sidesH     []int64 // feature heights per level
	sidesW     []int64 // feature widths per level
	inConv     *nn.Conv2d
	down       [][]*ResBlock
	downsample []*nn.Conv2d // stride 2, after every level but the last
	encMid     *ResBlock
	encNorm    *nn.GroupNorm
	encOut     *nn.Conv2d // to 2·Latent: mean and log-variance
	quant      *nn.Conv2d // 1×1 on the moments
	postQuant  *nn.Conv2d // 1×1 on the latent
	decIn      *nn.Conv2d
	decMid     *ResBlock
	up         [][]*ResBlock
	upsample   []*nn.Conv2d // nearest ×2 then 3×3, into every level but the last; index = the level upsampled into
	decNorm    *nn.GroupNorm
	decOut     *nn.Conv2d
}

// New builds an autoencoder for images of c channels and h×w pixels on dev.
func New(cfg Config, c, h, w int64, dev torch.Device) (*AutoencoderKL, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if c < 1 || c > 4 || h < 1 || w < 1 || h > 4096 || w > 4096 {
		return nil, fmt.Errorf("%dx%dx%d images: want 1-4 channels and sides 1-4096", c, h, w)
	}
	m := nn.NewModule()
	a := &AutoencoderKL{Module: m, Cfg: cfg, C: c, sidesH: cfg.Sides(h), sidesW: cfg.Sides(w)}
	ch, g, levels := cfg.Channels, cfg.Groups, len(cfg.Channels)
	last := ch[levels-1]
	a.inConv = nn.NewConv2d(m, "encoder.conv_in", c, ch[0], 3, 1, dev)
	in := ch[0]
	for i := range levels {
		var blocks []*ResBlock
		for j := range cfg.Blocks {
			blocks = append(blocks, newResBlock(m, fmt.Sprintf("encoder.down.%d.block.%d", i, j), in, ch[i], g, dev))
			in = ch[i]
		}
		a.down = append(a.down, blocks)
		if i < levels-1 {
			d := nn.NewConv2d(m, fmt.Sprintf("encoder.down.%d.downsample.conv", i), in, in, 3, 1, dev)
			d.Opts.Stride = [2]int64{2, 2}
			a.downsample = append(a.downsample, d)
		}
	}
	a.encMid = newResBlock(m, "encoder.mid.block_1", last, last, g, dev)
	a.encNorm = nn.NewGroupNorm(m, "encoder.norm_out", g, last, dev)
	a.encOut = nn.NewConv2d(m, "encoder.conv_out", last, 2*cfg.Latent, 3, 1, dev)
	a.quant = nn.NewConv2d(m, "quant_conv", 2*cfg.Latent, 2*cfg.Latent, 1, 0, dev)
	a.postQuant = nn.NewConv2d(m, "post_quant_conv", cfg.Latent, cfg.Latent, 1, 0, dev)
	a.decIn = nn.NewConv2d(m, "decoder.conv_in", cfg.Latent, last, 3, 1, dev)
	a.decMid = newResBlock(m, "decoder.mid.block_1", last, last, g, dev)
	a.up = make([][]*ResBlock, levels)
	a.upsample = make([]*nn.Conv2d, levels)
	in = last
	for i := levels - 1; i >= 0; i-- {
		for j := range cfg.Blocks {
			a.up[i] = append(a.up[i], newResBlock(m, fmt.Sprintf("decoder.up.%d.block.%d", i, j), in, ch[i], g, dev))
			in = ch[i]
		}
		if i > 0 {
			a.upsample[i] = nn.NewConv2d(m, fmt.Sprintf("decoder.up.%d.upsample.conv", i), in, in, 3, 1, dev)
		}
	}
	a.decNorm = nn.NewGroupNorm(m, "decoder.norm_out", g, ch[0], dev)
	a.decOut = nn.NewConv2d(m, "decoder.conv_out", ch[0], c, 3, 1, dev)
	return a, nil
}

// ImageShape is one image's shape, (C, H, W).
func (a *AutoencoderKL) ImageShape() []int64 { return []int64{a.C, a.sidesH[0], a.sidesW[0]} }

// LatentShape is one latent's shape, (Latent, h, w).
func (a *AutoencoderKL) LatentShape() []int64 {
	n := len(a.sidesH) - 1
	return []int64{a.Cfg.Latent, a.sidesH[n], a.sidesW[n]}
}

// Encode returns the mean and log-variance of q(z|x) for images x in
// [0, 1] (centred to [-1, 1] inside); the log-variance is clamped to
// [-30, 20] as the latent diffusion repository clamps it.
func (a *AutoencoderKL) Encode(x *torch.Tensor) (mean, logvar *torch.Tensor) {
	h := a.inConv.Forward(x.MulScalar(2).SubScalar(1))
	for i, blocks := range a.down {
		for _, b := range blocks {
			h = b.Forward(h)
		}
		if i < len(a.downsample) {
			h = a.downsample[i].Forward(h)
		}
	}
	h = a.encOut.Forward(a.encNorm.ForwardAct(a.encMid.Forward(h), torch.ActSiLU))
	moments := a.quant.Forward(h)
	l := a.Cfg.Latent
	return moments.Narrow(1, 0, l), moments.Narrow(1, l, l).Clamp(-30, 20)
}

// Decode maps latents z (B, Latent, h, w) to images in [-1, 1] (not
// clamped); Reconstruct and the latent codec map them to [0, 1].
func (a *AutoencoderKL) Decode(z *torch.Tensor) *torch.Tensor {
	h := a.decMid.Forward(a.decIn.Forward(a.postQuant.Forward(z)))
	for i := len(a.up) - 1; i >= 0; i-- {
		for _, b := range a.up[i] {
			h = b.Forward(h)
		}
		if i > 0 {
			h = a.upsample[i].Forward(torch.UpsampleNearest(h, a.sidesH[i-1], a.sidesW[i-1]))
		}
	}
	return a.decOut.Forward(a.decNorm.ForwardAct(h, torch.ActSiLU))
}

// Loss is the negative ELBO up to constants, per image: the summed squared
// error of the reconstruction of a latent drawn from q(z|x), in [-1, 1],
// plus KLWeight·KL(q(z|x) || N(0, I)). eps fixes the draw (nil draws it).
func (a *AutoencoderKL) Loss(x, eps *torch.Tensor) *torch.Tensor {
	mean, logvar := a.Encode(x)
	std := logvar.MulScalar(0.5).Exp()
	if eps == nil {
		eps = torch.RandnLike(std)
	}
	rec := a.Decode(mean.Add(std.Mul(eps)))
	sq := torch.MSELoss(rec, x.MulScalar(2).SubScalar(1), torch.ReduceSum)
	kl := mean.Square().Add(logvar.Exp()).SubScalar(1).Sub(logvar).Sum().MulScalar(0.5)
	return sq.Add(kl.MulScalar(a.Cfg.KLWeight)).DivScalar(float64(x.Size(0)))
}

// Reconstruct encodes x to the mean of q(z|x) and decodes it, in [0, 1].
func (a *AutoencoderKL) Reconstruct(x *torch.Tensor) *torch.Tensor {
	mean, _ := a.Encode(x)
	return a.Decode(mean).AddScalar(1).DivScalar(2)
}
