package torch

import (
	"fmt"
	"math"
	"strings"
	"testing"
)

// groupNormRef is act(GroupNorm(x)) written out in float64 from primitive
// ops, the definition the shim's fused kernels are checked against: mean
// and biased variance over each image's group of channels, then the affine
// per channel.
func groupNormRef(x *Tensor, groups int64, w, b *Tensor, eps float64, act Act) *Tensor {
	s := x.Shape()
	g := x.Reshape(s[0], groups, -1)
	mean := g.MeanDims(true, 2)
	c := g.Sub(mean)
	v := c.Square().MeanDims(true, 2)
	y := c.Div(v.AddScalar(eps).Sqrt()).Reshape(s...)
	aff := make([]int64, len(s))
	for i := range aff {
		aff[i] = 1
	}
	aff[1] = s[1]
	if w != nil {
		y = y.Mul(w.View(aff...))
	}
	if b != nil {
		y = y.Add(b.View(aff...))
	}
	return act.Apply(y)
}

// TestGroupNormActMatchesDefinition checks the fused group normalisation,
// forward and all three gradients, against the float64 definition, for
// float32 and bfloat16 activations in both layouts, odd spatial sizes
// (NCHW rows that are no multiple of the kernels' lanes), 3-d input, one
// group, a group per channel, no affine, and each activation.
func TestGroupNormActMatchesDefinition(t *testing.T) {
	cases := []struct {
		shape  []int64
		groups int64
		cl     bool
		affine bool
	}{
		{[]int64{3, 8, 5, 7}, 2, false, true},
		{[]int64{3, 8, 5, 7}, 2, true, true},
		{[]int64{2, 16, 6, 6}, 8, true, true},
		{[]int64{2, 6, 9, 4}, 1, false, true},
		{[]int64{2, 6, 9, 4}, 6, true, true},
		{[]int64{4, 4, 3, 3}, 2, true, false},
		{[]int64{3, 4, 11}, 2, false, true},
		{[]int64{1, 32, 28, 28}, 8, true, true},
		// The networks' sizes, batches that split across threads.
		{[]int64{16, 32, 28, 28}, 8, false, true},
		{[]int64{16, 64, 14, 14}, 32, true, true},
	}
	on(t, func() {
		ManualSeed(3)
		for _, c := range cases {
			eachDTypeAct(func(dt DType, act Act, name string) {
				name = fmt.Sprintf("%v groups %d cl %v affine %v %s", c.shape, c.groups, c.cl, c.affine, name)
				checkGroupNormAct(t, name, c.shape, c.groups, c.cl, c.affine, dt, act)
			})
		}
	})
}

// eachDTypeAct calls f in a scope of its own for float32 and bfloat16
// with each activation, and their names.
func eachDTypeAct(f func(dt DType, act Act, name string)) {
	acts := []struct {
		name string
		a    Act
	}{{"none", ActNone}, {"relu", ActReLU}, {"silu", ActSiLU}}
	for _, dt := range []DType{Float32, BFloat16} {
		for _, a := range acts {
			Scoped(func() { f(dt, a.a, fmt.Sprintf("%v %s", dt, a.name)) })
		}
	}
}

func checkGroupNormAct(t *testing.T, name string, shape []int64, groups int64, cl, affine bool, dt DType, act Act) {
	t.Helper()
	ch := shape[1]
	x := normInput(shape, dt, cl)
	var w, b *Tensor
	if affine {
		w, b = Randn([]int64{ch}, dev), Randn([]int64{ch}, dev)
		w.SetRequiresGrad(true)
		b.SetRequiresGrad(true)
	}
	y := GroupNormAct(x, groups, w, b, 1e-5, act)
	r := backwardNorm(t, name, y, dt, cl)

	// The reference sees the input as the kernel did (rounded to dt).
	xd := x.Detach().To(Float64)
	xd.SetRequiresGrad(true)
	var wd, bd *Tensor
	if affine {
		wd, bd = w.Detach().To(Float64), b.Detach().To(Float64)
		wd.SetRequiresGrad(true)
		bd.SetRequiresGrad(true)
	}
	yd := groupNormRef(xd, groups, wd, bd, 1e-5, act)
	yd.Mul(r.To(Float64)).Sum().Backward()

	// bf16 results are rounded to 8 bits of mantissa; gradients are sums
	// of such terms, so they get a scale-relative bound.
	tol := 2e-5
	if dt == BFloat16 {
		tol = 1e-2
	}
	closeTo(t, name+" forward", y.To(Float64).Float64s(), yd.Float64s(), tol)
	closeTo(t, name+" dx", x.Grad().To(Float64).Float64s(), xd.Grad().Float64s(), tol)
	if affine {
		closeTo(t, name+" dw", w.Grad().To(Float64).Float64s(), wd.Grad().Float64s(), tol)
		closeTo(t, name+" db", b.Grad().To(Float64).Float64s(), bd.Grad().Float64s(), tol)
	}
}

// normInput is an input for a fused norm's test in dt and layout, with its
// gradient required, and an offset mean, as convolution outputs have: the
// variance must not come from a cancelling E[x²] - E[x]².
func normInput(shape []int64, dt DType, cl bool) *Tensor {
	x := Randn(shape, dev).MulScalar(3).AddScalar(20).To(dt)
	if cl {
		x = x.ContiguousAs(ChannelsLast)
	}
	x.SetRequiresGrad(true)
	return x
}

// backwardNorm checks that a fused norm's result y kept the input's dtype
// and layout, and backpropagates the sum of y·r for a random r, returned.
func backwardNorm(t *testing.T, name string, y *Tensor, dt DType, cl bool) *Tensor {
	t.Helper()
	if y.DType() != dt {
		t.Fatalf("%s: result dtype %v, want the input's", name, y.DType())
	}
	if cl && !y.IsContiguousAs(ChannelsLast) {
		t.Fatalf("%s: result is not channels-last", name)
	}
	r := RandnLike(y.Detach().To(Float32))
	y.To(Float32).Mul(r).Sum().Backward()
	return r
}

// closeTo fails when any |got - want| exceeds tol times the largest |want|
// (the scale of the values: single elements of a gradient may sit near 0).
func closeTo(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	scale := 0.0
	for _, v := range want {
		scale = math.Max(scale, math.Abs(v))
	}
	for i := range got {
		if d := math.Abs(got[i] - want[i]); math.IsNaN(got[i]) || d > tol*math.Max(scale, 1e-30) {
			t.Fatalf("%s[%d] = %.8g, want %.8g (scale %.3g)", what, i, got[i], want[i], scale)
		}
	}
}

// TestGroupNormActNonFinite: a NaN or an infinity in an image's group
// makes that group's outputs NaN and leaves the other groups and images
// alone, as the definition does; the fused kernels do not hide it.
func TestGroupNormActNonFinite(t *testing.T) {
	on(t, func() {
		for _, dt := range []DType{Float32, BFloat16} {
			for _, bad := range []float64{math.NaN(), math.Inf(1)} {
				x := Randn([]int64{2, 4, 3, 3}, dev)
				v := x.Float64s()
				v[5] = bad // image 0, channel 0 (group 0)
				x = FromSlice(v, []int64{2, 4, 3, 3}, dev).To(Float32).To(dt).ContiguousAs(ChannelsLast)
				y := GroupNormAct(x, 2, nil, nil, 1e-5, ActSiLU).To(Float64).Float64s()
				for i, got := range y {
					img, c := i/36, (i%36)/9
					if wantNaN := img == 0 && c < 2; wantNaN != math.IsNaN(got) {
						t.Fatalf("%v with %v at [0,0,1,2]: output %d (image %d, channel %d) = %g", dt, bad, i, img, c, got)
					}
				}
			}
		}
	})
}

// TestNormActErrors: shapes and arguments the fused norms cannot take are
// errors naming the op, not crashes.
func TestNormActErrors(t *testing.T) {
	cases := []struct {
		name string
		f    func()
		want string
	}{
		{"groups not dividing channels", func() { GroupNorm(Zeros([]int64{2, 6, 3, 3}, dev), 4, nil, nil, 1e-5) }, "groups must divide"},
		{"no groups", func() { GroupNorm(Zeros([]int64{2, 6, 3, 3}, dev), 0, nil, nil, 1e-5) }, "groups must divide"},
		{"1-d input", func() { GroupNorm(Zeros([]int64{6}, dev), 2, nil, nil, 1e-5) }, "groups must divide"},
		{"unknown activation", func() { GroupNormAct(Zeros([]int64{2, 6, 3, 3}, dev), 2, nil, nil, 1e-5, Act(9)) }, "unknown activation"},
		{"negative eps", func() { GroupNorm(Zeros([]int64{2, 6, 3, 3}, dev), 2, nil, nil, -1) }, "eps"},
		{"weight of the wrong size", func() { GroupNorm(Zeros([]int64{2, 6, 3, 3}, dev), 2, Ones([]int64{5}, dev), nil, 1e-5) }, "GroupNorm"},
		{"mul without add", func() {
			GroupNormFiLM(Zeros([]int64{2, 6, 3, 3}, dev), 2, nil, nil, Ones([]int64{2, 6}, dev), nil, 1e-5, ActSiLU)
		}, "mul and add must both be given"},
		{"mul of another batch", func() {
			GroupNormFiLM(Zeros([]int64{2, 6, 3, 3}, dev), 2, nil, nil, Ones([]int64{3, 6}, dev), Ones([]int64{3, 6}, dev), 1e-5, ActSiLU)
		}, "shaped (batch, channels) [2, 6]"},
		{"add per channel only", func() {
			GroupNormFiLM(Zeros([]int64{2, 6, 3, 3}, dev), 2, nil, nil, Ones([]int64{2, 6}, dev), Ones([]int64{6}, dev), 1e-5, ActSiLU)
		}, "mul and add must both be given"},
		{"integer mul", func() {
			GroupNormFiLM(Zeros([]int64{2, 6, 3, 3}, dev), 2, nil, nil, Ones([]int64{2, 6}, Int64, dev), Ones([]int64{2, 6}, dev), 1e-5, ActSiLU)
		}, "floating point"},
		{"batch norm: unknown activation", func() {
			BatchNormAct(Zeros([]int64{2, 6, 3, 3}, dev), nil, nil, nil, nil, true, 0.1, 1e-5, Act(7))
		}, "unknown activation"},
		{"batch norm: one value a channel", func() {
			BatchNormAct(Zeros([]int64{1, 6}, dev), nil, nil, Zeros([]int64{6}, dev), Ones([]int64{6}, dev), true, 0.1, 1e-5, ActReLU)
		}, "more than 1 value per channel"},
		{"batch norm: running statistics of the wrong size", func() {
			BatchNormAct(Zeros([]int64{4, 6, 3, 3}, dev), nil, nil, Zeros([]int64{5}, dev), Ones([]int64{5}, dev), true, 0.1, 1e-5, ActReLU)
		}, "BatchNorm"},
	}
	for _, c := range cases {
		err := Do(func() error { return Try(func() error { c.f(); return nil }) })
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one containing %q", c.name, err, c.want)
		}
	}
}

// batchNormRef is act(BatchNorm(x)) in training written out in float64
// from primitive ops: mean and biased variance per channel over the batch
// and every position, then the affine; it also returns the batch mean and
// the unbiased variance the running statistics move towards.
func batchNormRef(x, w, b *Tensor, eps float64, act Act) (y, mean, uvar *Tensor) {
	s := x.Shape()
	dims := []int64{0}
	for d := int64(2); d < int64(len(s)); d++ {
		dims = append(dims, d)
	}
	aff := make([]int64, len(s))
	for i := range aff {
		aff[i] = 1
	}
	aff[1] = s[1]
	m := x.MeanDims(true, dims...)
	c := x.Sub(m)
	v := c.Square().MeanDims(true, dims...)
	n := float64(x.Numel() / s[1])
	y = c.Div(v.AddScalar(eps).Sqrt()).Mul(w.View(aff...)).Add(b.View(aff...))
	return act.Apply(y), m.View(-1), v.View(-1).MulScalar(n / (n - 1))
}

// TestBatchNormActMatchesDefinition checks the fused batch normalisation
// in training, forward, running statistics and all three gradients,
// against the float64 definition, for float32 and bfloat16 activations in
// both layouts, (N, C) and (N, C, L) inputs, positions that are no
// multiple of the kernels' lanes, the book network's sizes (batches whose
// rows split across threads), and each activation.
func TestBatchNormActMatchesDefinition(t *testing.T) {
	cases := []struct {
		shape []int64
		cl    bool
	}{
		{[]int64{3, 8, 5, 7}, false},
		{[]int64{3, 8, 5, 7}, true},
		{[]int64{2, 6, 9, 4}, true},
		{[]int64{5, 6}, false},
		{[]int64{3, 4, 11}, false},
		{[]int64{2, 1, 3, 3}, false},
		{[]int64{32, 16, 28, 28}, true},
		{[]int64{32, 32, 14, 14}, false},
		{[]int64{32, 64, 7, 7}, true},
	}
	on(t, func() {
		ManualSeed(4)
		for _, c := range cases {
			eachDTypeAct(func(dt DType, act Act, name string) {
				checkBatchNormAct(t, fmt.Sprintf("%v cl %v %s", c.shape, c.cl, name), c.shape, c.cl, dt, act)
			})
		}
	})
}

func checkBatchNormAct(t *testing.T, name string, shape []int64, cl bool, dt DType, act Act) {
	t.Helper()
	ch := shape[1]
	x := normInput(shape, dt, cl)
	w, b := Randn([]int64{ch}, dev), Randn([]int64{ch}, dev)
	rm, rv := Randn([]int64{ch}, dev), Rand([]int64{ch}, dev).AddScalar(0.5)
	rm0, rv0 := rm.Float64s(), rv.Float64s()
	w.SetRequiresGrad(true)
	b.SetRequiresGrad(true)
	y := BatchNormAct(x, w, b, rm, rv, true, 0.1, 1e-5, act)
	r := backwardNorm(t, name, y, dt, cl)

	xd := x.Detach().To(Float64) // as the kernel saw it (rounded to dt)
	wd, bd := w.Detach().To(Float64), b.Detach().To(Float64)
	for _, p := range []*Tensor{xd, wd, bd} {
		p.SetRequiresGrad(true)
	}
	yd, mean, uvar := batchNormRef(xd, wd, bd, 1e-5, act)
	// The kernel's dy is y's gradient in y's dtype: r rounded to dt.
	yd.Mul(r.To(dt).To(Float64)).Sum().Backward()

	tol := 2e-5
	if dt == BFloat16 {
		tol = 1e-2 // results rounded to 8 bits of mantissa
	}
	closeTo(t, name+" forward", y.To(Float64).Float64s(), yd.Float64s(), tol)
	closeTo(t, name+" dx", x.Grad().To(Float64).Float64s(), xd.Grad().Float64s(), tol)
	closeTo(t, name+" dw", w.Grad().To(Float64).Float64s(), wd.Grad().Float64s(), tol)
	closeTo(t, name+" db", b.Grad().To(Float64).Float64s(), bd.Grad().Float64s(), tol)
	wantM, wantV := mean.Float64s(), uvar.Float64s()
	for c := range wantM {
		wantM[c] = 0.9*rm0[c] + 0.1*wantM[c]
		wantV[c] = 0.9*rv0[c] + 0.1*wantV[c]
	}
	closeTo(t, name+" running mean", rm.Float64s(), wantM, 1e-6)
	closeTo(t, name+" running var", rv.Float64s(), wantV, 1e-6)
}

// TestBatchNormActOutsideTheKernels: evaluation, no running statistics
// and float64 take libtorch's batch norm and the activation, and give
// what the definition gives.
func TestBatchNormActOutsideTheKernels(t *testing.T) {
	on(t, func() {
		x := Randn([]int64{4, 3, 5, 5}, dev).To(Float64)
		w, b := Randn([]int64{3}, dev).To(Float64), Randn([]int64{3}, dev).To(Float64)
		want, _, _ := batchNormRef(x, w, b, 1e-5, ActReLU)
		closeTo(t, "float64 without running statistics", BatchNormAct(x, w, b, nil, nil, true, 0.1, 1e-5, ActReLU).Float64s(), want.Float64s(), 1e-12)
		rm, rv := Randn([]int64{3}, dev), Rand([]int64{3}, dev).AddScalar(0.5)
		xf := x.To(Float32)
		aff := []int64{1, 3, 1, 1}
		ref := xf.Sub(rm.View(aff...)).Div(rv.AddScalar(1e-5).Sqrt().View(aff...)).Mul(w.To(Float32).View(aff...)).Add(b.To(Float32).View(aff...)).Silu()
		got := BatchNormAct(xf, w.To(Float32), b.To(Float32), rm, rv, false, 0.1, 1e-5, ActSiLU)
		closeTo(t, "evaluation", got.To(Float64).Float64s(), ref.To(Float64).Float64s(), 1e-5)
	})
}

// TestActApplyInPlace: each activation in place writes what Apply returns,
// into the tensor it was given, in float32 and bfloat16 and channels-last.
func TestActApplyInPlace(t *testing.T) {
	on(t, func() {
		eachDTypeAct(func(dt DType, act Act, name string) {
			x := Randn([]int64{3, 4, 5, 5}, dev).MulScalar(3).To(dt).ContiguousAs(ChannelsLast)
			want := act.Apply(x).To(Float64).Float64s()
			if y := act.ApplyInPlace(x); y != x {
				t.Fatalf("%s: ApplyInPlace returned another tensor", name)
			}
			closeTo(t, name, x.To(Float64).Float64s(), want, 0)
			if !x.IsContiguousAs(ChannelsLast) {
				t.Fatalf("%s: the layout changed", name)
			}
		})
	})
}

// TestGroupNormFiLMMatchesDefinition checks act(GroupNorm(x)·mul + add),
// mul and add per image and channel, forward and all five gradients,
// against the float64 definition: the fused kernels in float32 and
// bfloat16, both layouts, each activation, and libtorch's ops for float64
// (the path CUDA takes), with mul and add given as column slices of one
// tensor, as the colour network's embedding gives them (non-contiguous).
func TestGroupNormFiLMMatchesDefinition(t *testing.T) {
	cases := []struct {
		shape  []int64
		groups int64
		cl     bool
	}{
		{[]int64{3, 8, 5, 7}, 2, false},
		{[]int64{3, 8, 5, 7}, 4, true},
		{[]int64{16, 64, 16, 16}, 8, true},
	}
	on(t, func() {
		ManualSeed(5)
		for _, c := range cases {
			eachDTypeAct(func(dt DType, act Act, name string) {
				checkGroupNormFiLM(t, fmt.Sprintf("%v groups %d cl %v %s", c.shape, c.groups, c.cl, name), c.shape, c.groups, c.cl, dt, act)
			})
		}
		Scoped(func() {
			checkGroupNormFiLM(t, "float64 (libtorch's ops)", []int64{2, 4, 3, 3}, 2, false, Float64, ActSiLU)
		})
	})
}

func checkGroupNormFiLM(t *testing.T, name string, shape []int64, groups int64, cl bool, dt DType, act Act) {
	t.Helper()
	n, ch := shape[0], shape[1]
	x := normInput(shape, dt, cl)
	w, b := Randn([]int64{ch}, dev), Randn([]int64{ch}, dev)
	ss := Randn([]int64{n, 2 * ch}, dev).To(dt)
	for _, p := range []*Tensor{w, b, ss} {
		p.SetRequiresGrad(true)
	}
	// Slices only: arithmetic in dt would round mul differently from the
	// reference's float64.
	mul, add := ss.Narrow(1, 0, ch), ss.Narrow(1, ch, ch)
	y := GroupNormFiLM(x, groups, w, b, mul, add, 1e-5, act)
	r := backwardNorm(t, name, y, dt, cl)

	xd, wd, bd, ssd := x.Detach().To(Float64), w.Detach().To(Float64), b.Detach().To(Float64), ss.Detach().To(Float64)
	for _, p := range []*Tensor{xd, wd, bd, ssd} {
		p.SetRequiresGrad(true)
	}
	aff := []int64{n, ch, 1, 1}
	yd := groupNormRef(xd, groups, wd, bd, 1e-5, ActNone).Mul(ssd.Narrow(1, 0, ch).View(aff...)).Add(ssd.Narrow(1, ch, ch).View(aff...))
	act.Apply(yd).Mul(r.To(dt).To(Float64)).Sum().Backward()

	tol := 2e-5
	if dt == BFloat16 {
		tol = 1e-2
	}
	closeTo(t, name+" forward", y.To(Float64).Float64s(), act.Apply(yd).Float64s(), tol)
	closeTo(t, name+" dx", x.Grad().To(Float64).Float64s(), xd.Grad().Float64s(), tol)
	closeTo(t, name+" dw", w.Grad().To(Float64).Float64s(), wd.Grad().Float64s(), tol)
	closeTo(t, name+" db", b.Grad().To(Float64).Float64s(), bd.Grad().Float64s(), tol)
	closeTo(t, name+" dmul, dadd", ss.Grad().To(Float64).Float64s(), ssd.Grad().Float64s(), tol)
}
