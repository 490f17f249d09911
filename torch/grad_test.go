package torch

import (
	"math"
	"testing"
)

// gradcheck compares the gradient of sum(f(inputs) * r), for a fixed random
// r, with central finite differences, in float64.
func gradcheck(t *testing.T, name string, f func(in []*Tensor) *Tensor, inputs ...*Tensor) {
	t.Helper()
	Scoped(func() {
		for _, x := range inputs {
			x.SetRequiresGrad(true)
		}
		out := f(inputs)
		r := RandnLike(out)
		out.Mul(r).Sum().Backward()
		const h = 1e-6
		for i, x := range inputs {
			analytic := x.Grad().Float64s()
			vals := x.Float64s()
			shape := x.Shape()
			numeric := make([]float64, len(vals))
			NoGrad(func() {
				for j := range vals {
					at := func(d float64) float64 {
						v := append([]float64(nil), vals...)
						v[j] += d
						args := append([]*Tensor(nil), inputs...)
						args[i] = FromSlice(v, shape, dev)
						return f(args).Mul(r).Sum().Item()
					}
					numeric[j] = (at(h) - at(-h)) / (2 * h)
				}
			})
			for j := range numeric {
				if d := math.Abs(numeric[j] - analytic[j]); d > 1e-5*(1+math.Abs(numeric[j])) {
					t.Errorf("%s: input %d element %d: analytic %.8g, numeric %.8g", name, i, j, analytic[j], numeric[j])
					return
				}
			}
		}
	})
}

func TestGradcheck(t *testing.T) {
	on(t, func() {
		ManualSeed(7)
		rn := func(s ...int64) *Tensor { return Randn(s, Float64, dev) }
		gradcheck(t, "linear", func(in []*Tensor) *Tensor { return Linear(in[0], in[1], in[2]) }, rn(3, 4), rn(2, 4), rn(2))
		gradcheck(t, "conv2d", func(in []*Tensor) *Tensor {
			return Conv2d(in[0], in[1], in[2], Conv2dOpts{Padding: [2]int64{1, 1}, Stride: [2]int64{2, 1}})
		}, rn(2, 2, 5, 4), rn(3, 2, 3, 3), rn(3))
		gradcheck(t, "conv_transpose2d", func(in []*Tensor) *Tensor {
			return ConvTranspose2d(in[0], in[1], nil, Conv2dOpts{Stride: [2]int64{2, 2}, Padding: [2]int64{1, 1}, OutputPadding: [2]int64{1, 1}})
		}, rn(1, 2, 3, 3), rn(2, 3, 3, 3))
		gradcheck(t, "batch_norm train", func(in []*Tensor) *Tensor {
			return BatchNorm(in[0], in[1], in[2], nil, nil, true, 0.1, 1e-5)
		}, rn(4, 3, 2, 2), rn(3), rn(3))
		gradcheck(t, "group_norm", func(in []*Tensor) *Tensor { return GroupNorm(in[0], 2, in[1], in[2], 1e-5) }, rn(2, 4, 3, 3), rn(4), rn(4))
		gradcheck(t, "layer_norm", func(in []*Tensor) *Tensor { return LayerNorm(in[0], []int64{5}, in[1], in[2], 1e-5) }, rn(3, 5), rn(5), rn(5))
		gradcheck(t, "bilinear", func(in []*Tensor) *Tensor { return UpsampleBilinear(in[0], 6, 8, false) }, rn(1, 2, 3, 4))
		gradcheck(t, "nearest", func(in []*Tensor) *Tensor { return UpsampleNearest(in[0], 6, 8) }, rn(1, 2, 3, 4))
		gradcheck(t, "max_pool", func(in []*Tensor) *Tensor { return MaxPool2d(in[0], 2, 0, 0) }, rn(1, 2, 4, 4))
		gradcheck(t, "mse", func(in []*Tensor) *Tensor { return MSELoss(in[0], in[1], ReduceMean) }, rn(3, 4), rn(3, 4))
		gradcheck(t, "bce", func(in []*Tensor) *Tensor { return BCELoss(in[0].Sigmoid(), in[1].Sigmoid(), ReduceMean) }, rn(5), rn(5))
		gradcheck(t, "bce logits", func(in []*Tensor) *Tensor { return BCEWithLogitsLoss(in[0], in[1].Sigmoid(), ReduceSum) }, rn(5), rn(5))
		target := FromSlice([]int64{0, 2, 1}, nil, dev)
		gradcheck(t, "cross entropy", func(in []*Tensor) *Tensor { return CrossEntropyLoss(in[0], target, ReduceMean, 0.1) }, rn(3, 4))
		gradcheck(t, "embedding", func(in []*Tensor) *Tensor { return Embedding(in[0], target) }, rn(3, 2))
		gradcheck(t, "sdpa", func(in []*Tensor) *Tensor { return ScaledDotProductAttention(in[0], in[1], in[2], nil, false) }, rn(1, 3, 2), rn(1, 4, 2), rn(1, 4, 2))
		gradcheck(t, "activations", func(in []*Tensor) *Tensor {
			x := in[0]
			return Cat([]*Tensor{x.Silu(), x.Gelu(), x.Tanh(), x.Softplus(), x.Sigmoid(), x.Exp(), x.Sin()}, 0)
		}, rn(6))
	})
}

func TestBackwardAndGradAccess(t *testing.T) {
	on(t, func() {
		x := f64([]float64{1, 2, 3}).SetRequiresGrad(true)
		if !x.RequiresGrad() {
			t.Fatal("RequiresGrad false after SetRequiresGrad(true)")
		}
		if x.Grad() != nil {
			t.Fatal("fresh tensor has a gradient")
		}
		x.Square().Sum().Backward() // d/dx sum x² = 2x
		near(t, "grad", x.Grad().Float64s(), []float64{2, 4, 6}, 0)
		x.Square().Sum().Backward() // gradients accumulate
		near(t, "accumulated", x.Grad().Float64s(), []float64{4, 8, 12}, 0)
		x.ZeroGrad()
		near(t, "zeroed", x.Grad().Float64s(), []float64{0, 0, 0}, 0)
		x.ClearGrad()
		if x.Grad() != nil {
			t.Error("ClearGrad left a gradient")
		}
		NoGrad(func() {
			if GradEnabled() {
				t.Error("grad enabled inside NoGrad")
			}
			if x.MulScalar(2).RequiresGrad() {
				t.Error("op inside NoGrad records a graph")
			}
		})
		if !GradEnabled() {
			t.Error("NoGrad did not restore grad mode")
		}
		if x.Detach().RequiresGrad() {
			t.Error("Detach keeps requires_grad")
		}
	})
}
