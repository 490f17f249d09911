package unet

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// MaxParams bounds a U-Net's size (a GiB of float32 weights, and five
// more in training: gradients, Adam's two moments, the moving average), so
// that a config or a checkpoint's embedded config cannot make New
// allocate without end: unet.width 4096 grew to 5.5 GB before libtorch's
// allocation failed. The largest shipped network has under 40 million.
const MaxParams = 1 << 28

// Params is the number of parameters New makes for c, counted from the
// config alone (Channels, Classes, Vocab and Context as set), so that a
// network too big is refused before any tensor is made.
func (c Config) Params() int64 {
	if c.Arch == "adm" {
		return c.admParams() + c.embeddingParams()
	}
	return c.bookParams() + c.embeddingParams()
}

// embeddingParams is the label embedding's parameters, or the prompt
// embeddings' (tokens and positions).
func (c Config) embeddingParams() int64 {
	if c.Vocab > 0 {
		return (c.Vocab + c.Context) * c.ContextDim
	}
	if c.Classes > 0 {
		return c.Classes * c.EmbDim
	}
	return 0
}

func conv(in, out, k int64) int64 { return in*out*k*k + out }
func linear(in, out int64) int64  { return in*out + out }
func norm(ch int64) int64         { return 2 * ch } // batch or group norm's weight and bias

// attentionParams is Attention's: norm, qkv and output projection.
func attentionParams(ch int64) int64 { return norm(ch) + conv(ch, 3*ch, 1) + conv(ch, ch, 1) }

// transformerParams is a SpatialTransformer's of ch channels attending to
// a context of ctx.
func transformerParams(ch, ctx int64) int64 {
	block := 3*norm(ch) + // norm1-3
		3*ch*ch + linear(ch, ch) + // self-attention: q, k, v without bias, out
		ch*ch + 2*ctx*ch + linear(ch, ch) + // cross-attention
		linear(ch, 8*ch) + linear(4*ch, ch) // GEGLU feed-forward
	return norm(ch) + 2*linear(ch, ch) + block
}

func (c Config) bookParams() int64 {
	block := func(in, out int64) int64 {
		n := conv(in, out, 3) + norm(out) + conv(out, out, 3) + norm(out) + linear(c.EmbDim, in) + linear(in, in)
		if c.Residual && in != out {
			n += conv(in, out, 1)
		}
		return n
	}
	width := func(l int64) int64 { return c.Width << l }
	n := block(width(c.Levels-1), width(c.Levels)) + conv(c.Width, c.Channels, 1) // bottleneck, output
	in := c.Channels
	for i := range c.Levels {
		n += block(in, width(i)) + block(width(i+1)+width(i), width(i)) // down, up
		in = width(i)
	}
	if c.Attention {
		n += attentionParams(width(c.Levels))
	}
	if c.Vocab > 0 {
		n += transformerParams(width(c.Levels), c.ContextDim)
		for i := c.TransformerFrom; i < c.Levels; i++ {
			n += 2 * transformerParams(width(i), c.ContextDim)
		}
	}
	return n
}

func (c Config) admParams() int64 {
	res := func(in, out int64) int64 {
		n := norm(in) + conv(in, out, 3) + linear(c.EmbDim, 2*out) + norm(out) + conv(out, out, 3)
		if in != out {
			n += conv(in, out, 1)
		}
		return n
	}
	n := linear(c.Width, c.EmbDim) + linear(c.EmbDim, c.EmbDim) + conv(c.Channels, c.Width, 3)
	chans := []int64{c.Width}
	ch := c.Width
	for l := range c.Levels {
		out := c.Width * c.mult(l)
		for range c.Blocks {
			n, ch = n+res(ch, out), out
			if c.attends(l) {
				n += attentionParams(ch)
			}
			chans = append(chans, ch)
		}
		if l < c.Levels-1 {
			n += conv(ch, ch, 3)
			chans = append(chans, ch)
		}
	}
	n += 2*res(ch, ch) + attentionParams(ch)
	for l := c.Levels - 1; l >= 0; l-- {
		out := c.Width * c.mult(l)
		for range c.Blocks + 1 {
			skip := chans[len(chans)-1]
			chans = chans[:len(chans)-1]
			n, ch = n+res(ch+skip, out), out
			if c.attends(l) {
				n += attentionParams(ch)
			}
		}
		if l > 0 {
			n += conv(ch, ch, 3)
		}
	}
	return n + norm(ch) + conv(ch, c.Channels, 3)
}

// checkSize reports a network of more than MaxParams parameters, naming
// the keys that size it and the figures; the key it starts with is the
// embedding's when the embeddings are most of it. Channels 0 (a config
// not yet given its data) counts 4.
func (c Config) checkSize(bad func(string, ...any)) {
	if c.Channels == 0 {
		c.Channels = 4
	}
	n, emb := c.Params(), c.embeddingParams()
	if n <= MaxParams {
		return
	}
	type kv struct {
		key string
		val any
	}
	var keys []kv
	if c.Arch == "adm" {
		keys = []kv{{"width", c.Width}, {"channel_mult", c.multipliers()}, {"blocks", c.Blocks}, {"levels", c.Levels}, {"attention_levels", c.AttentionLevels}, {"emb_dim", c.EmbDim}}
	} else {
		keys = []kv{{"width", c.Width}, {"levels", c.Levels}, {"emb_dim", c.EmbDim}}
	}
	lead := 0 // the key the message starts with: width, or the embedding's when it is most of the network
	switch {
	case c.Vocab > 0:
		keys = append(keys, kv{"context_dim", c.ContextDim}, kv{"prompt words", c.Vocab})
		if 2*emb > n {
			lead = len(keys) - 2
		}
	case c.Classes > 0:
		keys = append(keys, kv{"classes (the data's)", c.Classes})
		if 2*emb > n {
			lead = slices.IndexFunc(keys, func(k kv) bool { return k.key == "emb_dim" })
		}
	}
	var with []string
	for i, k := range keys {
		if i != lead {
			with = append(with, fmt.Sprintf("%s %v", k.key, k.val))
		}
	}
	bad("%s: %v (with %s) makes a network of %d parameters (%.3g GiB of float32 weights), more than the %d (%g GiB) a U-Net may have",
		keys[lead].key, keys[lead].val, strings.Join(with, ", "), n, float64(n)*4/(1<<30), int64(MaxParams), float64(MaxParams)*4/(1<<30))
}

// multipliers are adm's channel multipliers per level.
func (c Config) multipliers() []int64 {
	m := make([]int64, c.Levels)
	for l := range c.Levels {
		m[l] = c.mult(l)
	}
	return m
}

// ActivationBytes is a rough estimate of the memory a training step's
// forward pass keeps for the backward pass, for batch images of h×w
// pixels in float32: each block's feature maps (a handful per block at
// its level's resolution) and attention's weights (heads × pixels² per
// image). It is rough, for refusing a batch that cannot fit before it is
// tried: for configs/mnist_cond_cpu.yaml's network it says 1,026 MiB for
// 768 images of 28x28, and the training's peak memory (fp32) grew
// 861 MiB from batch 256 to batch 1024.
// Computed in float64, it saturates at math.MaxInt64.
func (c Config) ActivationBytes(batch, h, w int64) int64 {
	pix := func(l int64) float64 { // pixels at level l: each level halves the sides
		ph, pw := h, w
		for range l {
			ph, pw = max((ph+1)/2, 1), max((pw+1)/2, 1)
		}
		return float64(ph * pw)
	}
	var per float64 // floats per image
	attn := func(ch, heads, l int64) { per += 6*float64(ch)*pix(l) + float64(heads)*pix(l)*pix(l) }
	if c.Arch == "adm" {
		res := func(in, out, l int64) { per += float64(2*in+8*out) * pix(l) }
		per += float64(c.Width) * pix(0)
		ch := c.Width
		for l := range c.Levels {
			out := c.Width * c.mult(l)
			for range c.Blocks {
				res(ch, out, l)
				ch = out
				if c.attends(l) {
					attn(ch, c.heads(ch), l)
				}
			}
			per += float64(ch) * pix(l+1) // the downsampling convolution
		}
		mid := c.Levels - 1
		res(ch, ch, mid)
		attn(ch, c.heads(ch), mid)
		res(ch, ch, mid)
		for l := c.Levels - 1; l >= 0; l-- {
			out := c.Width * c.mult(l)
			for range c.Blocks + 1 {
				res(2*ch, out, l) // the input concatenates a skip of about as many channels
				ch = out
				if c.attends(l) {
					attn(ch, c.heads(ch), l)
				}
			}
			per += 2 * float64(ch) * pix(l) // upsampling and its convolution
		}
		per += 3 * float64(ch) * pix(0)
	} else {
		block := func(in, out, l int64) { per += float64(in+6*out) * pix(l) }
		width := func(l int64) int64 { return c.Width << l }
		in := c.Channels
		for l := range c.Levels {
			block(in, width(l), l)
			block(width(l+1)+width(l), width(l), l)
			in = width(l)
			if c.Vocab > 0 && l >= c.TransformerFrom {
				attn(4*width(l), 2*max(c.Heads, 1), l) // self- and cross-attention and the feed-forward layer, twice
			}
		}
		block(width(c.Levels-1), width(c.Levels), c.Levels)
		if c.Attention {
			attn(width(c.Levels), 1, c.Levels)
		}
		if c.Vocab > 0 {
			attn(2*width(c.Levels), max(c.Heads, 1), c.Levels)
		}
	}
	per += 3 * float64(max(c.Channels, 1)) * pix(0) // the noisy input, the noise and the prediction
	if b := float64(batch) * per * 4; b < math.MaxInt64 {
		return int64(b)
	}
	return math.MaxInt64
}
