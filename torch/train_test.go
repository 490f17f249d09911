package torch

import (
	"math"
	"path/filepath"
	"slices"
	"testing"
)

// mlp is a two-layer perceptron for the tests.
type mlp struct{ w1, b1, w2, b2 *Tensor }

func newMLP(in, hidden, out int64) *mlp {
	init := func(s ...int64) *Tensor {
		return Param(Randn(s, dev).MulScalar(1 / math.Sqrt(float64(s[len(s)-1]))))
	}
	return &mlp{init(hidden, in), Param(Zeros([]int64{hidden}, dev)), init(out, hidden), Param(Zeros([]int64{out}, dev))}
}

func (m *mlp) forward(x *Tensor) *Tensor {
	return Linear(Linear(x, m.w1, m.b1).Tanh(), m.w2, m.b2)
}

func (m *mlp) params() []*Tensor { return []*Tensor{m.w1, m.b1, m.w2, m.b2} }

func TestMLPLearnsSine(t *testing.T) {
	on(t, func() {
		ManualSeed(0)
		m := newMLP(1, 32, 1)
		defer freeAll(m.params())
		opt := NewAdam(m.params(), AdamConfig{LR: 0.01})
		defer opt.Free()
		x := Linspace(-3, 3, 256, dev).View(-1, 1)
		y := x.Sin()
		var first, last float64
		for step := range 1500 {
			Scoped(func() {
				loss := MSELoss(m.forward(x), y, ReduceMean)
				opt.ZeroGrad()
				loss.Backward()
				opt.Step()
				if step == 0 {
					first = loss.Item()
				}
				last = loss.Item()
			})
		}
		if last > 2e-3 || last > first/50 {
			t.Errorf("loss %.4g -> %.4g, want below 2e-3 and 50x lower", first, last)
		}
	})
}

func TestAdamFirstStepClosedForm(t *testing.T) {
	// After one step m̂ = g and v̂ = g², so p -= lr * g / (|g| + eps).
	on(t, func() {
		p := Param(f64([]float64{1, -2, 3}))
		defer p.Free()
		opt := NewAdam([]*Tensor{p}, AdamConfig{LR: 0.1, Eps: 1e-8})
		defer opt.Free()
		p.Mul(f64([]float64{2, -0.5, 0})).Sum().Backward() // g = [2, -0.5, 0]
		opt.Step()
		near(t, "adam", p.Float64s(), []float64{1 - 0.1, -2 + 0.1, 3}, 1e-7)

		// AdamW with decay shrinks the weights by lr*wd before the update.
		q := Param(f64([]float64{1}))
		defer q.Free()
		w := NewAdamW([]*Tensor{q}, AdamConfig{LR: 0.1, WeightDecay: 0.5})
		defer w.Free()
		q.MulScalar(3).Sum().Backward()
		w.Step()
		near(t, "adamw", q.Float64s(), []float64{1*(1-0.05) - 0.1}, 1e-7)
	})
}

func TestSGDMomentumClosedForm(t *testing.T) {
	on(t, func() {
		p := Param(f64([]float64{1}))
		defer p.Free()
		opt := NewSGD([]*Tensor{p}, SGDConfig{LR: 0.1, Momentum: 0.9})
		defer opt.Free()
		for range 2 {
			opt.ZeroGrad()
			p.MulScalar(2).Sum().Backward() // g = 2 every step
			opt.Step()
		}
		// buf1 = 2, p = 0.8; buf2 = 0.9*2 + 2 = 3.8, p = 0.8 - 0.38.
		near(t, "sgd", p.Float64s(), []float64{0.42}, 1e-12)
	})
}

func TestClipGradNorm(t *testing.T) {
	on(t, func() {
		a, b := Param(f64([]float64{0, 0})), Param(f64([]float64{0}))
		defer a.Free()
		defer b.Free()
		a.Mul(f64([]float64{3, 0})).Sum().Add(b.MulScalar(4).Sum()).Backward() // grads [3,0] and [4]: norm 5
		if n := ClipGradNorm([]*Tensor{a, b}, 1); math.Abs(n-5) > 1e-12 {
			t.Errorf("norm %v, want 5", n)
		}
		near(t, "clipped a", a.Grad().Float64s(), []float64{0.6, 0}, 1e-6)
		near(t, "clipped b", b.Grad().Float64s(), []float64{0.8}, 1e-6)
	})
}

func TestOptimizerStateRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "opt.safetensors")
	on(t, func() {
		ManualSeed(3)
		train := func(m *mlp, opt Optimizer, steps int) float64 {
			x := Randn([]int64{16, 2}, dev)
			var l float64
			for range steps {
				Scoped(func() {
					loss := m.forward(x).Square().Mean()
					opt.ZeroGrad()
					loss.Backward()
					opt.Step()
					l = loss.Item()
				})
			}
			return l
		}
		m := newMLP(2, 8, 1)
		opt := NewAdam(m.params(), AdamConfig{LR: 0.01})
		train(m, opt, 5)
		state, step := opt.State()
		if err := SaveFile(path, state, nil); err != nil {
			t.Fatal(err)
		}
		loaded, _, err := LoadFile(path, dev)
		if err != nil {
			t.Fatal(err)
		}
		opt2 := NewAdam(m.params(), AdamConfig{LR: 0.01})
		if err := opt2.LoadState(loaded, step); err != nil {
			t.Fatal(err)
		}
		s2, step2 := opt2.State()
		if step2 != 5 {
			t.Errorf("step %d", step2)
		}
		for k, v := range state {
			if !v.AllClose(s2[k], 0, 0) {
				t.Errorf("%s differs after round trip", k)
			}
		}
		delete(loaded, "exp_avg.1")
		if err := opt2.LoadState(loaded, step); err == nil {
			t.Error("LoadState with a missing tensor succeeded")
		}
		opt.Free()
		opt2.Free()
		freeAll(m.params())
	})
}

func TestSafetensorsRoundTrip(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.safetensors")
	on(t, func() {
		in := map[string]*Tensor{}
		for _, d := range []DType{Float32, Float64, BFloat16, Float16, Int64, Int32, Uint8, Bool} {
			in[d.String()] = Randn([]int64{3, 2}, dev).MulScalar(3).To(d)
		}
		if err := SaveFile(path, in, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
		out, meta, err := LoadFile(path, dev)
		if err != nil {
			t.Fatal(err)
		}
		if meta["format"] != "pt" {
			t.Errorf("metadata %v", meta)
		}
		for name, x := range in {
			y := out[name]
			if y.DType() != x.DType() || !slices.Equal(y.Shape(), x.Shape()) || string(y.Bytes()) != string(x.Bytes()) {
				t.Errorf("%s changed: %v vs %v", name, x, y)
			}
		}
	})
}

func TestRNGStateRestores(t *testing.T) {
	on(t, func() {
		ManualSeed(5)
		s := RNGState()
		a := Randn([]int64{8}).Float64s()
		SetRNGState(s)
		b := Randn([]int64{8}).Float64s()
		near(t, "restored rng", b, a, 0)
	})
}
