package torch

import (
	"fmt"
	"math"
	"reflect"
	"testing"
)

// elementwiseCase is an operation and its closed form.
type elementwiseCase struct {
	name string
	f    func(*Tensor) *Tensor
	want func(float64) float64
}

func elementwiseCases() []elementwiseCase {
	sig := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	return []elementwiseCase{
		{"exp", (*Tensor).Exp, math.Exp},
		{"sin", (*Tensor).Sin, math.Sin},
		{"cos", (*Tensor).Cos, math.Cos},
		{"abs", (*Tensor).Abs, math.Abs},
		{"neg", (*Tensor).Neg, func(x float64) float64 { return -x }},
		{"square", (*Tensor).Square, func(x float64) float64 { return x * x }},
		{"relu", (*Tensor).Relu, func(x float64) float64 { return math.Max(x, 0) }},
		{"sigmoid", (*Tensor).Sigmoid, sig},
		{"silu", (*Tensor).Silu, func(x float64) float64 { return x * sig(x) }},
		{"gelu", (*Tensor).Gelu, func(x float64) float64 { return 0.5 * x * (1 + math.Erf(x/math.Sqrt2)) }},
		{"tanh", (*Tensor).Tanh, math.Tanh},
		{"softplus", (*Tensor).Softplus, func(x float64) float64 { return math.Log1p(math.Exp(x)) }},
		{"log(abs)", func(x *Tensor) *Tensor { return x.Abs().Log() }, func(x float64) float64 { return math.Log(math.Abs(x)) }},
		{"sqrt(abs)", func(x *Tensor) *Tensor { return x.Abs().Sqrt() }, func(x float64) float64 { return math.Sqrt(math.Abs(x)) }},
		{"pow 3", func(x *Tensor) *Tensor { return x.PowScalar(3) }, func(x float64) float64 { return x * x * x }},
		{"clamp", func(x *Tensor) *Tensor { return x.Clamp(-1, 2) }, func(x float64) float64 { return math.Min(math.Max(x, -1), 2) }},
		{"clamp low only", func(x *Tensor) *Tensor { return x.Clamp(0, math.Inf(1)) }, func(x float64) float64 { return math.Max(x, 0) }},
		{"2x+1", func(x *Tensor) *Tensor { return x.MulScalar(2).AddScalar(1) }, func(x float64) float64 { return 2*x + 1 }},
		{"1-x", func(x *Tensor) *Tensor { return x.RSubScalar(1) }, func(x float64) float64 { return 1 - x }},
		{"6/x", func(x *Tensor) *Tensor { return x.RDivScalar(6) }, func(x float64) float64 { return 6 / x }},
		{"x*x-x/x", func(x *Tensor) *Tensor { return x.Mul(x).Sub(x.Div(x)) }, func(x float64) float64 { return x*x - 1 }},
		{"x^x(abs)", func(x *Tensor) *Tensor { a := x.Abs(); return a.Pow(a) }, func(x float64) float64 { return math.Pow(math.Abs(x), math.Abs(x)) }},
		{"where x>0", func(x *Tensor) *Tensor { return Where(x.GtScalar(0), x, x.MulScalar(10)) }, func(x float64) float64 {
			if x > 0 {
				return x
			}
			return 10 * x
		}},
	}
}

func TestElementwiseClosedForms(t *testing.T) {
	xs := []float64{-2, -0.5, 0.25, 1, 3}
	on(t, func() {
		x := f64(xs)
		for _, c := range elementwiseCases() {
			got := c.f(x).Float64s()
			want := make([]float64, len(xs))
			for i, v := range xs {
				want[i] = c.want(v)
			}
			near(t, c.name, got, want, 1e-12)
		}
	})
}

// TestElementwiseVectorisedFloat32 runs the closed-form cases on 2,000
// float32 values, enough for libtorch's vectorised loops (and their
// instruction-set variants) rather than the scalar tails five values take,
// and sin and cos over the time embedding's arguments (up to 1,000).
func TestElementwiseVectorisedFloat32(t *testing.T) {
	var xs, args []float64
	for i := 0; i < 2000; i++ {
		if x := -4 + 8*float64(i)/1999; math.Abs(x) > 0.1 { // away from 0, where log and 6/x blow up
			xs = append(xs, x)
		}
		args = append(args, 1000*float64(i)/1999)
	}
	check := func(name string, f func(*Tensor) *Tensor, want func(float64) float64, vals []float64, tol float64) {
		x := f64(vals).To(Float32)
		in := x.To(Float64).Float64s() // the float32-rounded inputs
		got := f(x).To(Float64).Float64s()
		for i, v := range in {
			w := want(v)
			if d := math.Abs(got[i] - w); !(d <= tol*math.Max(1, math.Abs(w))) {
				t.Errorf("%s(%g) in float32 = %g, want %g", name, v, got[i], w)
				return
			}
		}
	}
	on(t, func() {
		for _, c := range elementwiseCases() {
			check(c.name, c.f, c.want, xs, 1e-5)
		}
		check("sin of time-embedding arguments", (*Tensor).Sin, math.Sin, args, 1e-5)
		check("cos of time-embedding arguments", (*Tensor).Cos, math.Cos, args, 1e-5)
	})
}

func TestReductionsAndShapes(t *testing.T) {
	on(t, func() {
		x := f64([]float64{1, 2, 3, 4, 5, 6}, 2, 3)
		near(t, "sum", []float64{x.Sum().Item()}, []float64{21}, 0)
		near(t, "mean", []float64{x.Mean().Item()}, []float64{3.5}, 0)
		near(t, "max", []float64{x.Max().Item()}, []float64{6}, 0)
		near(t, "sum dim0", x.SumDims(false, 0).Float64s(), []float64{5, 7, 9}, 0)
		near(t, "mean dim1", x.MeanDims(false, 1).Float64s(), []float64{2, 5}, 0)
		near(t, "max dim1", x.MaxDims(false, 1).Float64s(), []float64{3, 6}, 0)
		if got := x.Argmax(1, false).Int64s(); !reflect.DeepEqual(got, []int64{2, 2}) {
			t.Errorf("argmax = %v", got)
		}
		lse := math.Log(math.Exp(1) + math.Exp(2) + math.Exp(3))
		near(t, "logsumexp", x.LogSumExp(false, 1).Float64s(), []float64{lse, lse + 3}, 1e-12)
		near(t, "var", x.Var(true, false, 1).Float64s(), []float64{1, 1}, 1e-12)
		near(t, "std biased", []float64{x.Std(false, false).Item()}, []float64{math.Sqrt(35.0 / 12)}, 1e-12)
		near(t, "norm", []float64{x.Norm(2, false).Item()}, []float64{math.Sqrt(91)}, 1e-12)
		if got := x.SumDims(true, 1).Shape(); !reflect.DeepEqual(got, []int64{2, 1}) {
			t.Errorf("keepdim shape %v", got)
		}

		if got := x.Transpose(0, 1).Contiguous().Float64s(); !reflect.DeepEqual(got, []float64{1, 4, 2, 5, 3, 6}) {
			t.Errorf("transpose %v", got)
		}
		if got := x.Permute(1, 0).Reshape(-1).Float64s(); !reflect.DeepEqual(got, []float64{1, 4, 2, 5, 3, 6}) {
			t.Errorf("permute %v", got)
		}
		if got := x.Flip(1).Float64s(); !reflect.DeepEqual(got, []float64{3, 2, 1, 6, 5, 4}) {
			t.Errorf("flip %v", got)
		}
		if got := x.Flip(0, 1).Float64s(); !reflect.DeepEqual(got, []float64{6, 5, 4, 3, 2, 1}) {
			t.Errorf("flip both %v", got)
		}
		if got := x.View(3, 2).Shape(); !reflect.DeepEqual(got, []int64{3, 2}) {
			t.Errorf("view %v", got)
		}
		if got := x.Unsqueeze(0).Shape(); !reflect.DeepEqual(got, []int64{1, 2, 3}) {
			t.Errorf("unsqueeze %v", got)
		}
		if got := x.Unsqueeze(0).Squeeze().Shape(); !reflect.DeepEqual(got, []int64{2, 3}) {
			t.Errorf("squeeze %v", got)
		}
		if got := Cat([]*Tensor{x, x}, 0).Shape(); !reflect.DeepEqual(got, []int64{4, 3}) {
			t.Errorf("cat %v", got)
		}
		if got := Stack([]*Tensor{x, x}, 1).Shape(); !reflect.DeepEqual(got, []int64{2, 2, 3}) {
			t.Errorf("stack %v", got)
		}
		if got := x.Narrow(1, 1, 2).Contiguous().Float64s(); !reflect.DeepEqual(got, []float64{2, 3, 5, 6}) {
			t.Errorf("narrow %v", got)
		}
		if got := x.Expand(2, 2, 3).Shape(); !reflect.DeepEqual(got, []int64{2, 2, 3}) {
			t.Errorf("expand %v", got)
		}
		if got := x.Repeat(1, 2).Float64s(); !reflect.DeepEqual(got, []float64{1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6}) {
			t.Errorf("repeat %v", got)
		}
		if got := x.Flatten(0, -1).Shape(); !reflect.DeepEqual(got, []int64{6}) {
			t.Errorf("flatten %v", got)
		}
	})
}

func TestIndexing(t *testing.T) {
	on(t, func() {
		x := f64([]float64{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}, 3, 4)
		cases := []struct {
			name  string
			got   *Tensor
			shape []int64
			want  []float64
		}{
			{"x[1]", x.Index(At(1)), []int64{4}, []float64{4, 5, 6, 7}},
			{"x[-1, 1:3]", x.Index(At(-1), Slice(1, 3, 1)), []int64{2}, []float64{9, 10}},
			{"x[:, ::2]", x.Index(All, Slice(Open, Open, 2)), []int64{3, 2}, []float64{0, 2, 4, 6, 8, 10}},
			{"x[..., 3]", x.Index(Ellipsis, At(3)), []int64{3}, []float64{3, 7, 11}},
			{"x[None, 0]", x.Index(NewAxis, At(0)), []int64{1, 4}, []float64{0, 1, 2, 3}},
			{"x[[2,0]]", x.Index(Tensors(FromSlice([]int64{2, 0}, nil, dev))), []int64{2, 4}, []float64{8, 9, 10, 11, 0, 1, 2, 3}},
			{"x[x>8]", x.Index(Tensors(x.GtScalar(8))), []int64{3}, []float64{9, 10, 11}},
			{"gather", x.Gather(1, FromSlice([]int64{3, 0, 1}, []int64{3, 1}, dev)), []int64{3, 1}, []float64{3, 4, 9}},
			{"index_select", x.IndexSelect(1, FromSlice([]int64{1}, nil, dev)), []int64{3, 1}, []float64{1, 5, 9}},
			{"masked_fill", x.MaskedFill(x.LtScalar(10), 0).Index(At(2)), []int64{4}, []float64{0, 0, 10, 11}},
		}
		for _, c := range cases {
			if s := c.got.Shape(); !reflect.DeepEqual(s, c.shape) {
				t.Errorf("%s: shape %v, want %v", c.name, s, c.shape)
				continue
			}
			near(t, c.name, c.got.Float64s(), c.want, 0)
		}
		y := x.Clone()
		y.IndexPut(Scalar(-1, Float64, dev), Tensors(y.GtScalar(9)))
		y.IndexPut(f64([]float64{7, 7}), At(0), Slice(0, 2, 1))
		near(t, "index_put", y.Float64s(), []float64{7, 7, 2, 3, 4, 5, 6, 7, 8, 9, -1, -1}, 0)
		oh := FromSlice([]int64{2, 0}, nil, dev).OneHot(3).Int64s()
		if !reflect.DeepEqual(oh, []int64{0, 0, 1, 1, 0, 0}) {
			t.Errorf("one_hot %v", oh)
		}
	})
}

func TestCreationAndDTypes(t *testing.T) {
	on(t, func() {
		near(t, "arange", Arange(0, 1, 0.25, Float64, dev).Float64s(), []float64{0, 0.25, 0.5, 0.75}, 0)
		near(t, "linspace", Linspace(-1, 1, 5, Float64, dev).Float64s(), []float64{-1, -0.5, 0, 0.5, 1}, 1e-15)
		near(t, "full", Full([]int64{2}, 3.5, dev).Float64s(), []float64{3.5, 3.5}, 0)
		near(t, "ones", Ones([]int64{3}, dev).Float64s(), []float64{1, 1, 1}, 0)
		near(t, "zeros_like", ZerosLike(Ones([]int64{2}, dev)).Float64s(), []float64{0, 0}, 0)
		for _, d := range []DType{Float32, Float64, BFloat16, Float16, Int64, Int32, Uint8, Bool} {
			x := Ones([]int64{2, 2}, d, dev)
			if x.DType() != d {
				t.Errorf("Ones(%s) has dtype %s", d, x.DType())
			}
			if x.Device() != dev {
				t.Errorf("Ones on %s is on %s", dev, x.Device())
			}
			if n := len(x.Bytes()); n != 4*d.Size() {
				t.Errorf("%s: %d bytes", d, n)
			}
		}
		// bf16 keeps 8 bits of mantissa: 1 + 2^-8 rounds to 1, 1 + 2^-7 survives.
		b := FromSlice([]float32{1 + 1.0/256, 1 + 1.0/128}, nil, BFloat16, dev).Float64s()
		near(t, "bf16 rounding", b, []float64{1, 1 + 1.0/128}, 0)
		u := FromSlice([]uint8{0, 200, 255}, nil, dev).Float64s()
		near(t, "uint8", u, []float64{0, 200, 255}, 0)

		ManualSeed(42)
		a := Randn([]int64{1000}, Float64, dev).Float64s()
		ManualSeed(42)
		b2 := Randn([]int64{1000}, Float64, dev).Float64s()
		if !reflect.DeepEqual(a, b2) {
			t.Error("ManualSeed does not reproduce randn")
		}
		r := Rand([]int64{100000}, Float64, dev)
		if m := r.Mean().Item(); math.Abs(m-0.5) > 0.01 {
			t.Errorf("rand mean %v", m)
		}
		if v := r.Var(true, false).Item(); math.Abs(v-1.0/12) > 0.005 {
			t.Errorf("rand var %v", v)
		}
		n := Randn([]int64{100000}, Float64, dev)
		if m, s := n.Mean().Item(), n.Std(true, false).Item(); math.Abs(m) > 0.02 || math.Abs(s-1) > 0.02 {
			t.Errorf("randn mean %v std %v", m, s)
		}
		ri := RandInt(3, 7, []int64{1000}, dev)
		if lo, hi := ri.Min().Item(), ri.Max().Item(); lo != 3 || hi != 6 {
			t.Errorf("randint range [%v, %v]", lo, hi)
		}
		if ri.DType() != Int64 {
			t.Errorf("randint dtype %s", ri.DType())
		}
	})
}

func TestNNOpsValues(t *testing.T) {
	on(t, func() {
		// Conv2d with a 2x2 all-ones kernel sums each window.
		x := f64([]float64{1, 2, 3, 4, 5, 6, 7, 8, 9}, 1, 1, 3, 3)
		w := Ones([]int64{1, 1, 2, 2}, Float64, dev)
		near(t, "conv2d", Conv2d(x, w, nil, Conv2dOpts{}).Float64s(), []float64{12, 16, 24, 28}, 0)
		near(t, "conv2d pad", Conv2d(x, w, f64([]float64{1}), Conv2dOpts{Padding: [2]int64{1, 1}, Stride: [2]int64{2, 2}}).Float64s(), []float64{2, 6, 12, 29}, 0)
		// A transposed conv with a 1x1 kernel and stride 2 spreads the input out.
		ct := ConvTranspose2d(f64([]float64{1, 2, 3, 4}, 1, 1, 2, 2), Ones([]int64{1, 1, 1, 1}, Float64, dev), nil, Conv2dOpts{Stride: [2]int64{2, 2}})
		if s := ct.Shape(); !reflect.DeepEqual(s, []int64{1, 1, 3, 3}) {
			t.Errorf("conv_transpose2d shape %v", s)
		}
		near(t, "conv_transpose2d values", ct.Float64s(), []float64{1, 0, 2, 0, 0, 0, 3, 0, 4}, 0)
		near(t, "max_pool", MaxPool2d(x, 2, 1, 0).Float64s(), []float64{5, 6, 8, 9}, 0)
		near(t, "avg_pool", AvgPool2d(x, 2, 1, 0).Float64s(), []float64{3, 4, 6, 7}, 0)
		y := f64([]float64{1, 2, 3, 4}, 1, 1, 2, 2)
		near(t, "nearest", UpsampleNearest(y, 4, 4).Float64s(), []float64{1, 1, 2, 2, 1, 1, 2, 2, 3, 3, 4, 4, 3, 3, 4, 4}, 0)
		// Bilinear, align_corners=false, x2: PyTorch's values for [[1,2],[3,4]].
		near(t, "bilinear", UpsampleBilinear(y, 4, 4, false).Float64s(), []float64{
			1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5, 2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4}, 1e-12)
		near(t, "bilinear aligned", UpsampleBilinear(y, 3, 3, true).Float64s(), []float64{1, 1.5, 2, 2, 2.5, 3, 3, 3.5, 4}, 1e-12)

		// Linear: x wᵀ + b.
		lx := f64([]float64{1, 2}, 1, 2)
		lw := f64([]float64{1, 0, 2, 3, -1, 1}, 3, 2)
		near(t, "linear", Linear(lx, lw, f64([]float64{0.5, 0, -1})).Float64s(), []float64{1.5, 8, 0}, 0)
		near(t, "matmul", Matmul(lx, lw.Transpose(0, 1)).Float64s(), []float64{1, 8, 1}, 0)

		// Normalisations of [1..4] per channel: mean 2.5, biased var 1.25.
		z := f64([]float64{1, 2, 3, 4}, 4, 1)
		inv := 1 / math.Sqrt(1.25+1e-5)
		want := []float64{-1.5 * inv, -0.5 * inv, 0.5 * inv, 1.5 * inv}
		rm, rv := Zeros([]int64{1}, Float64, dev), Ones([]int64{1}, Float64, dev)
		near(t, "batch_norm train", BatchNorm(z, nil, nil, rm, rv, true, 0.1, 1e-5).Float64s(), want, 1e-12)
		// Running stats: 0.9*0 + 0.1*2.5 and 0.9*1 + 0.1*(unbiased var 5/3).
		near(t, "running mean", rm.Float64s(), []float64{0.25}, 1e-12)
		near(t, "running var", rv.Float64s(), []float64{0.9 + 0.1*5.0/3}, 1e-12)
		near(t, "batch_norm eval", BatchNorm(z, nil, nil, rm, rv, false, 0.1, 1e-5).Float64s(), []float64{
			(1 - 0.25) / math.Sqrt(0.9+0.5/3+1e-5), (2 - 0.25) / math.Sqrt(0.9+0.5/3+1e-5),
			(3 - 0.25) / math.Sqrt(0.9+0.5/3+1e-5), (4 - 0.25) / math.Sqrt(0.9+0.5/3+1e-5)}, 1e-12)
		near(t, "layer_norm", LayerNorm(z.View(1, 4), []int64{4}, nil, nil, 1e-5).Float64s(), want, 1e-12)
		near(t, "group_norm", GroupNorm(z.View(1, 4, 1), 1, nil, nil, 1e-5).Float64s(), want, 1e-12)

		emb := Embedding(lw, FromSlice([]int64{2, 0}, nil, dev))
		near(t, "embedding", emb.Float64s(), []float64{-1, 1, 1, 0}, 0)
		sm := Softmax(f64([]float64{0, math.Log(3)}), 0).Float64s()
		near(t, "softmax", sm, []float64{0.25, 0.75}, 1e-12)
		near(t, "log_softmax", LogSoftmax(f64([]float64{0, math.Log(3)}), 0).Float64s(), []float64{math.Log(0.25), math.Log(0.75)}, 1e-12)
		d := Dropout(Ones([]int64{10000}, Float64, dev), 0.5, true)
		if m := d.Mean().Item(); math.Abs(m-1) > 0.05 {
			t.Errorf("dropout keeps the mean: %v", m)
		}
		near(t, "dropout eval", Dropout(z, 0.5, false).Float64s(), []float64{1, 2, 3, 4}, 0)
	})
}

func TestLossesClosedForm(t *testing.T) {
	on(t, func() {
		a, b := f64([]float64{1, 2, 3}), f64([]float64{1, 0, 0})
		near(t, "mse mean", []float64{MSELoss(a, b, ReduceMean).Item()}, []float64{13.0 / 3}, 1e-12)
		near(t, "mse sum", []float64{MSELoss(a, b, ReduceSum).Item()}, []float64{13}, 1e-12)
		p, y := f64([]float64{0.9, 0.2}), f64([]float64{1, 0})
		bce := -(math.Log(0.9) + math.Log(0.8)) / 2
		near(t, "bce", []float64{BCELoss(p, y, ReduceMean).Item()}, []float64{bce}, 1e-12)
		logit := func(p float64) float64 { return math.Log(p / (1 - p)) }
		near(t, "bce logits", []float64{BCEWithLogitsLoss(f64([]float64{logit(0.9), logit(0.2)}), y, ReduceMean).Item()}, []float64{bce}, 1e-12)
		logits := f64([]float64{1, 2, 3, 1, 1, 1}, 2, 3)
		target := FromSlice([]int64{2, 0}, nil, dev)
		ce := ((math.Log(math.Exp(1)+math.Exp(2)+math.Exp(3)) - 3) + math.Log(3)) / 2
		near(t, "cross entropy", []float64{CrossEntropyLoss(logits, target, ReduceMean, 0).Item()}, []float64{ce}, 1e-12)
	})
}

func TestAttentionMatchesFormula(t *testing.T) {
	on(t, func() {
		ManualSeed(1)
		q, k, v := Randn([]int64{2, 3, 5, 4}, Float64, dev), Randn([]int64{2, 3, 6, 4}, Float64, dev), Randn([]int64{2, 3, 6, 4}, Float64, dev)
		want := Matmul(Softmax(Matmul(q, k.Transpose(-2, -1)).DivScalar(2), -1), v)
		got := ScaledDotProductAttention(q, k, v, nil, false)
		near(t, "sdpa", got.Float64s(), want.Float64s(), 1e-10)
		// Causal with square q/k: the first query sees only the first key.
		kq := k.Narrow(2, 0, 5)
		c := ScaledDotProductAttention(q, kq, v.Narrow(2, 0, 5), nil, true)
		near(t, "causal row 0", c.Index(Ellipsis, At(0), All).Float64s(), v.Index(Ellipsis, At(0), All).Float64s(), 1e-10)
	})
}

// TestAttentionAtNetworkShapes checks attention in float32 and bfloat16,
// forward and backward, against the formula in float64, on q, k and v laid
// out as the networks make them: views of the U-Net's qkv convolution
// output (NCHW, whose views have a strided last dimension, and
// channels-last) and the transformer's B,L,heads,d views, at the pixel
// counts of the shipped networks' attention (7×7, 8×8, 16×16) and a
// 32×32 one. The reference is the formula in float64 from products and a
// softmax; the relative error bounds are each dtype's.
func TestAttentionAtNetworkShapes(t *testing.T) {
	layouts := []struct {
		name string
		leaf func(b, c, n int64) []int64
		qkv  func(x *Tensor, b, heads, d, n int64) *Tensor // 3, B, heads, n, d
	}{
		{"unet-nchw", func(b, c, n int64) []int64 { return []int64{b, 3 * c, n} },
			func(x *Tensor, b, heads, d, n int64) *Tensor { return x.View(b, 3, heads, d, n).Permute(1, 0, 2, 4, 3) }},
		{"unet-nhwc", func(b, c, n int64) []int64 { return []int64{b, n, 3 * c} },
			func(x *Tensor, b, heads, d, n int64) *Tensor { return x.View(b, n, 3, heads, d).Permute(2, 0, 3, 1, 4) }},
		{"transformer", func(b, c, n int64) []int64 { return []int64{3, b, n, c} },
			func(x *Tensor, b, heads, d, n int64) *Tensor { return x.View(3, b, n, heads, d).Transpose(2, 3) }},
	}
	shapes := [][4]int64{{8, 1, 64, 49}, {4, 4, 16, 64}, {4, 2, 32, 256}, {1, 2, 8, 1024}} // B, heads, d, pixels
	on(t, func() {
		for _, l := range layouts {
			for _, sh := range shapes {
				b, heads, d, n := sh[0], sh[1], sh[2], sh[3]
				ManualSeed(1)
				base := Randn(l.leaf(b, heads*d, n), Float64, dev)
				up := Randn([]int64{b, heads, n, d}, Float64, dev)
				formula := func(q, k, v *Tensor) *Tensor {
					return Matmul(Softmax(Matmul(q, k.Transpose(-2, -1)).DivScalar(math.Sqrt(float64(d))), -1), v)
				}
				attend := func(dt DType, f func(q, k, v *Tensor) *Tensor) (out, grad *Tensor) {
					x := base.To(dt).Detach().SetRequiresGrad(true)
					qkv := l.qkv(x, b, heads, d, n)
					out = f(qkv.Index(At(0)), qkv.Index(At(1)), qkv.Index(At(2)))
					out.BackwardWith(up.To(dt), false)
					return out.Detach().To(Float64), x.Grad().To(Float64)
				}
				sdpa := func(q, k, v *Tensor) *Tensor { return ScaledDotProductAttention(q, k, v, nil, false) }
				wantOut, wantGrad := attend(Float64, formula)
				for dt, tol := range map[DType]float64{Float64: 1e-10, Float32: 1e-5, BFloat16: 0.03} {
					out, grad := attend(dt, sdpa)
					if e := relErr(out, wantOut); !(e < tol) {
						t.Errorf("%s B=%d heads=%d d=%d pixels=%d %s: output off by %.3g of its largest value, want < %g", l.name, b, heads, d, n, dt, e, tol)
					}
					if e := relErr(grad, wantGrad); !(e < tol) {
						t.Errorf("%s B=%d heads=%d d=%d pixels=%d %s: input gradient off by %.3g, want < %g", l.name, b, heads, d, n, dt, e, tol)
					}
				}
			}
		}
	})
}

// TestConvAtNetworkShapes checks float32 convolutions, the networks' 3×3
// and 1×1 (attention's qkv and projection) at their channel counts, image
// sizes and batch sizes, NCHW and channels-last, with and without autograd
// (libtorch picks oneDNN or its own im2col kernels by shape), against
// the same convolution in float64: output, input and weight gradients.
func TestConvAtNetworkShapes(t *testing.T) {
	cases := [][5]int64{ // batch, in, out, kernel, size
		{1, 1, 8, 3, 28}, {2, 8, 16, 3, 14}, {16, 16, 32, 3, 7}, {2, 32, 96, 1, 7}, {16, 32, 32, 1, 7}, {4, 64, 64, 3, 16}, {1, 64, 192, 1, 16},
	}
	on(t, func() {
		for _, c := range cases {
			n, cin, cout, k, hw := c[0], c[1], c[2], c[3], c[4]
			ManualSeed(2)
			x64, w64, b64 := Randn([]int64{n, cin, hw, hw}, Float64, dev), Randn([]int64{cout, cin, k, k}, Float64, dev), Randn([]int64{cout}, Float64, dev)
			up := Randn([]int64{n, cout, hw, hw}, Float64, dev)
			opts := Conv2dOpts{Padding: [2]int64{k / 2, k / 2}}
			conv := func(dt DType, cl, grad bool) (out, dx, dw *Tensor) {
				x, w := x64.To(dt).Detach(), w64.To(dt).Detach()
				if cl {
					x, w = x.ContiguousAs(ChannelsLast), w.ContiguousAs(ChannelsLast)
				}
				if !grad {
					NoGrad(func() { out = Conv2d(x, w, b64.To(dt), opts) })
					return out.To(Float64), nil, nil
				}
				x.SetRequiresGrad(true)
				w.SetRequiresGrad(true)
				out = Conv2d(x, w, b64.To(dt), opts)
				out.BackwardWith(up.To(dt), false)
				return out.Detach().To(Float64), x.Grad().To(Float64), w.Grad().To(Float64)
			}
			wantOut, wantDx, wantDw := conv(Float64, false, true)
			for _, cl := range []bool{false, true} {
				for _, grad := range []bool{false, true} {
					out, dx, dw := conv(Float32, cl, grad)
					errs := map[string]float64{"output": relErr(out, wantOut)}
					if grad {
						errs["input gradient"], errs["weight gradient"] = relErr(dx, wantDx), relErr(dw, wantDw)
					}
					for what, e := range errs {
						if !(e < 1e-4) {
							t.Errorf("conv %dx%d, %d->%d channels, batch %d, %dx%d images, channels-last %v, autograd %v: float32 %s off by %.3g of its largest value", k, k, cin, cout, n, hw, hw, cl, grad, what, e)
						}
					}
				}
			}
		}
	})
}

// TestMaxPoolAtNetworkShapes checks 2×2 max pooling, the book U-Net's
// down-sampling, at its sizes and a batch that splits across threads, NCHW
// and channels-last, float32 and bfloat16, with and without autograd,
// against the maxima computed here, and its gradient: each window's
// upstream gradient lands on the window's largest input.
func TestMaxPoolAtNetworkShapes(t *testing.T) {
	on(t, func() {
		for _, sh := range [][3]int64{{16, 8, 28}, {16, 32, 14}, {3, 16, 7}} {
			n, c, hw := sh[0], sh[1], sh[2]
			ho := hw / 2
			ManualSeed(4)
			base := Randn([]int64{n, c, hw, hw}, Float64, dev)
			for _, dt := range []DType{Float32, BFloat16} {
				xs := base.To(dt).To(Float64).Float64s() // the values the kernel sees
				want := make([]float64, n*c*ho*ho)
				arg := make([]int, len(want))
				for i := range want {
					p, oy, ox := int64(i)/(ho*ho), int64(i)/ho%ho, int64(i)%ho
					want[i] = math.Inf(-1)
					for dy := int64(0); dy < 2; dy++ {
						for dx := int64(0); dx < 2; dx++ {
							j := int(p*hw*hw + (2*oy+dy)*hw + 2*ox + dx)
							if xs[j] > want[i] {
								want[i], arg[i] = xs[j], j
							}
						}
					}
				}
				for _, cl := range []bool{false, true} {
					for _, grad := range []bool{false, true} {
						name := fmt.Sprintf("max pool %v %v channels-last %v autograd %v", sh, dt, cl, grad)
						x := base.To(dt).Detach()
						if cl {
							x = x.ContiguousAs(ChannelsLast)
						}
						x.SetRequiresGrad(grad)
						var y *Tensor
						if grad {
							y = MaxPool2d(x, 2, 0, 0)
						} else {
							NoGrad(func() { y = MaxPool2d(x, 2, 0, 0) })
						}
						near(t, name, y.To(Float64).Contiguous().Float64s(), want, 0)
						if !grad {
							continue
						}
						up := Randn([]int64{n, c, ho, ho}, Float64, dev).To(dt)
						y.BackwardWith(up, false)
						g, u := x.Grad().To(Float64).Contiguous().Float64s(), up.To(Float64).Float64s()
						wantG := make([]float64, len(g))
						for i, j := range arg {
							wantG[j] += u[i]
						}
						near(t, name+" gradient", g, wantG, 0)
					}
				}
			}
		}
	})
}

// relErr is got's largest difference from want relative to want's largest
// magnitude.
func relErr(got, want *Tensor) float64 {
	return got.Sub(want).Abs().Max().Item() / want.Abs().Max().Item()
}

func TestRandnRowsDependOnTheirSeedOnly(t *testing.T) {
	on(t, func() {
		a := RandnRows([]uint64{1, 2, 3}, []int64{2, 4})
		b := RandnRows([]uint64{9, 2}, []int64{2, 4})
		if s := a.Shape(); !reflect.DeepEqual(s, []int64{3, 2, 4}) {
			t.Fatalf("shape %v", s)
		}
		if !a.Index(At(1)).AllClose(b.Index(At(1)), 0, 0) {
			t.Error("row with seed 2 differs between batches")
		}
		if a.Index(At(0)).AllClose(a.Index(At(2)), 0, 0) {
			t.Error("rows with different seeds agree")
		}
		n := RandnRows(make([]uint64, 1), []int64{100000}, Float64)
		if m, s := n.Mean().Item(), n.Std(true, false).Item(); math.Abs(m) > 0.02 || math.Abs(s-1) > 0.02 {
			t.Errorf("mean %v std %v", m, s)
		}
	})
}

func TestIntegerTensorsStayIntegral(t *testing.T) {
	on(t, func() {
		i := FromSlice([]int64{3, 4}, nil, dev)
		if d := i.SubScalar(1).DType(); d != Int64 {
			t.Errorf("int64 - 1 is %s", d)
		}
		if d := i.MulScalar(0.5).DType(); d != Float32 {
			t.Errorf("int64 * 0.5 is %s", d)
		}
		near(t, "int64 * 0.5", i.MulScalar(0.5).Float64s(), []float64{1.5, 2}, 0)
	})
}

func TestKthValue(t *testing.T) {
	on(t, func() {
		x := f64([]float64{5, 1, 4, 2, 9, 7}, 2, 3)
		near(t, "2nd smallest per row", x.KthValue(2, 1, false).Float64s(), []float64{4, 7}, 0)
	})
}
