package unet

import (
	"kakusan/models/nn"
	"kakusan/torch"
)

// Cross-attention conditioning (ladder step 9), as Stable Diffusion's
// U-Net conditions on text: at the lower resolutions a SpatialTransformer
// lets every position of the feature map attend to the others
// (self-attention) and to a context of embedded prompt tokens
// (cross-attention), then passes it through a feed-forward layer. Names
// follow diffusers' Transformer2DModel with linear projections.

// LayerNorm is torch.nn.LayerNorm over the last dimension.
type LayerNorm struct{ W, B *torch.Tensor }

func newLayerNorm(m *nn.Module, name string, dim int64, dev torch.Device) *LayerNorm {
	return &LayerNorm{m.Param(name+".weight", torch.Ones([]int64{dim}, dev)), m.Param(name+".bias", torch.Zeros([]int64{dim}, dev))}
}

// Forward normalises x (..., dim).
func (l *LayerNorm) Forward(x *torch.Tensor) *torch.Tensor {
	return torch.LayerNorm(x, []int64{l.W.Size(0)}, l.W, l.B, 1e-5)
}

// MultiHeadAttention is diffusers' Attention: queries from x (B, N, dim),
// keys and values from ctx (B, M, ctxDim), or from x when ctx is nil;
// projections without bias, the output's with.
type MultiHeadAttention struct {
	q, k, v *nn.Linear
	out     *nn.Linear
	heads   int64
}

func newMultiHeadAttention(m *nn.Module, name string, dim, ctxDim, heads int64, dev torch.Device) *MultiHeadAttention {
	return &MultiHeadAttention{
		q:     nn.NewLinearNoBias(m, name+".to_q", dim, dim, dev),
		k:     nn.NewLinearNoBias(m, name+".to_k", ctxDim, dim, dev),
		v:     nn.NewLinearNoBias(m, name+".to_v", ctxDim, dim, dev),
		out:   nn.NewLinear(m, name+".to_out.0", dim, dim, dev),
		heads: heads,
	}
}

// Forward attends from x to ctx (x itself when nil).
func (a *MultiHeadAttention) Forward(x, ctx *torch.Tensor) *torch.Tensor {
	if ctx == nil {
		ctx = x
	}
	b, n, dim := x.Size(0), x.Size(1), x.Size(2)
	split := func(t *torch.Tensor) *torch.Tensor { // B, L, dim -> B, heads, L, dim/heads
		return t.View(b, t.Size(1), a.heads, dim/a.heads).Transpose(1, 2)
	}
	h := torch.ScaledDotProductAttention(split(a.q.Forward(x)), split(a.k.Forward(ctx)), split(a.v.Forward(ctx)), nil, false)
	return a.out.Forward(h.Transpose(1, 2).Reshape(b, n, dim))
}

// TransformerBlock is diffusers' BasicTransformerBlock: self-attention,
// cross-attention and a GEGLU feed-forward layer, each after a LayerNorm
// and added to its input.
type TransformerBlock struct {
	norm1, norm2, norm3 *LayerNorm
	attn1, attn2        *MultiHeadAttention
	ffIn, ffOut         *nn.Linear // GEGLU: ffIn makes 2·4·dim, half gating the other half
}

func newTransformerBlock(m *nn.Module, name string, dim, ctxDim, heads int64, dev torch.Device) *TransformerBlock {
	return &TransformerBlock{
		norm1: newLayerNorm(m, name+".norm1", dim, dev),
		attn1: newMultiHeadAttention(m, name+".attn1", dim, dim, heads, dev),
		norm2: newLayerNorm(m, name+".norm2", dim, dev),
		attn2: newMultiHeadAttention(m, name+".attn2", dim, ctxDim, heads, dev),
		norm3: newLayerNorm(m, name+".norm3", dim, dev),
		ffIn:  nn.NewLinear(m, name+".ff.net.0.proj", dim, 8*dim, dev),
		ffOut: nn.NewLinear(m, name+".ff.net.2", 4*dim, dim, dev),
	}
}

// Forward applies the block to x (B, N, dim) with the context ctx (B, M, ctxDim).
func (t *TransformerBlock) Forward(x, ctx *torch.Tensor) *torch.Tensor {
	x = x.Add(t.attn1.Forward(t.norm1.Forward(x), nil))
	x = x.Add(t.attn2.Forward(t.norm2.Forward(x), ctx))
	h := t.ffIn.Forward(t.norm3.Forward(x))
	half := h.Size(2) / 2
	return x.Add(t.ffOut.Forward(h.Narrow(2, 0, half).Mul(h.Narrow(2, half, half).Gelu())))
}

// SpatialTransformer runs a TransformerBlock over the positions of a
// feature map: x + proj_out(block(proj_in(norm(x)) as a sequence)).
// proj_out starts at zero, as Stable Diffusion's, so a new block starts as
// the identity.
type SpatialTransformer struct {
	norm            *nn.GroupNorm
	projIn, projOut *nn.Linear
	block           *TransformerBlock
}

func newSpatialTransformer(m *nn.Module, name string, ch, ctxDim, heads, groups int64, dev torch.Device) *SpatialTransformer {
	if ch%groups != 0 {
		groups = 1
	}
	s := &SpatialTransformer{
		norm:   nn.NewGroupNorm(m, name+".norm", groups, ch, dev),
		projIn: nn.NewLinear(m, name+".proj_in", ch, ch, dev),
		block:  newTransformerBlock(m, name+".transformer_blocks.0", ch, ctxDim, heads, dev),
	}
	s.projOut = nn.NewLinear(m, name+".proj_out", ch, ch, dev)
	torch.NoGrad(func() {
		s.projOut.W.Fill(0)
		s.projOut.B.Fill(0)
	})
	return s
}

// Forward applies the transformer to x (B, C, H, W) with the context ctx.
func (s *SpatialTransformer) Forward(x, ctx *torch.Tensor) *torch.Tensor {
	sh := x.Shape()
	b, c, hw := sh[0], sh[1], sh[2]*sh[3]
	h := s.norm.Forward(x).View(b, c, hw).Transpose(1, 2) // B, HW, C
	h = s.projOut.Forward(s.block.Forward(s.projIn.Forward(h), ctx))
	return x.Add(h.Transpose(1, 2).Reshape(b, c, sh[2], sh[3]).To(x.DType()))
}
