package torch

import (
	"math"
	"testing"
)

// reads fails the test when f changes HostReads by other than want.
func reads(t *testing.T, what string, want int64, f func()) {
	t.Helper()
	n := HostReads()
	f()
	if got := HostReads() - n; got != want {
		t.Errorf("%s: %d host reads, want %d", what, got, want)
	}
}

func TestHostReadsCounts(t *testing.T) {
	on(t, func() {
		ManualSeed(21)
		x := Randn([]int64{4, 3}, dev)
		reads(t, "Item", 1, func() { x.Sum().Item() })
		reads(t, "Values", 1, func() { Values[float32](x) })
		reads(t, "Float64s (a conversion, then a copy)", 1, func() { x.Float64s() })
		reads(t, "Bytes", 1, func() { x.Bytes() })

		w := Param(Randn([]int64{3, 2}, dev))
		defer w.Free()
		opt := NewAdam([]*Tensor{w}, AdamConfig{LR: 0.01})
		defer opt.Free()
		reads(t, "arithmetic, Backward and an Adam step", 0, func() {
			y := Matmul(x, w).Tanh().MulScalar(2).Add(OnesLike(x.Narrow(1, 0, 2)))
			loss := y.Square().Mean()
			opt.ZeroGrad()
			loss.Backward()
			opt.Step()
		})
		// The in-place updates of a step (EMA, buffers, schedules) take their
		// numbers from the host and read nothing back.
		e := ZerosLike(x)
		reads(t, "Fill, AddInPlace, LerpInPlace, MulScalarInPlace, CopyFrom, To", 0, func() {
			e.Fill(0.5).AddInPlace(x, 0.1).LerpInPlace(x, 0.01).MulScalarInPlace(0.9).CopyFrom(x)
			x.To(Float64)
			x.To(dev)
		})
		if CUDAAvailable() {
			g := Randn([]int64{4}, CUDA(0))
			reads(t, "To(CPU) from CUDA", 1, func() { g.To(CPU) })
			reads(t, "CopyFrom a CUDA tensor into a CPU one", 1, func() { Zeros([]int64{4}).CopyFrom(g) })
			reads(t, "CopyFrom a CPU tensor into a CUDA one", 0, func() { g.CopyFrom(Zeros([]int64{4})) })
		}
	})
}

// ClipGradNormTensor must clip as ClipGradNorm does, without reading the norm
// on the host.
func TestClipGradNormTensor(t *testing.T) {
	on(t, func() {
		ManualSeed(22)
		shapes := [][]int64{{5, 4}, {7}, {2, 3}}
		var init, coef []*Tensor
		for _, s := range shapes {
			init = append(init, Randn(s, dev))
			coef = append(coef, Randn(s, dev))
		}
		// params makes a fresh set whose gradients are coef (norm about 6).
		params := func() []*Tensor {
			var ps []*Tensor
			loss := Scalar(0, dev)
			for i, x := range init {
				p := Param(x.Clone())
				ps = append(ps, p)
				loss = loss.Add(p.Mul(coef[i]).Sum())
			}
			loss.Backward()
			return ps
		}
		for _, c := range []struct {
			max  float64
			clip bool
		}{{1, true}, {1e3, false}} {
			a, b := params(), params()
			want := ClipGradNorm(a, c.max)
			var norm *Tensor
			reads(t, "ClipGradNormTensor", 0, func() { norm = ClipGradNormTensor(b, c.max) })
			if norm.Dim() != 0 || norm.Device() != dev {
				t.Errorf("norm is %v, want a 0-d tensor on %v", norm, dev)
			}
			near(t, "norm", []float64{norm.Item()}, []float64{want}, 1e-6)
			if clipped := want > c.max; clipped != c.clip {
				t.Fatalf("max %g: norm %g, the case meant to clip=%v does not", c.max, want, c.clip)
			}
			for i := range a {
				near(t, "clipped gradient", b[i].Grad().Float64s(), a[i].Grad().Float64s(), 1e-6)
			}
			if c.clip {
				total := 0.0
				for _, p := range b {
					total += math.Pow(p.Grad().Norm(2, false).Item(), 2)
				}
				near(t, "norm after clipping", []float64{math.Sqrt(total)}, []float64{c.max}, 1e-5)
			}
			freeAll(a)
			freeAll(b)
		}
		if n := ClipGradNormTensor(nil, 1).Item(); n != 0 {
			t.Errorf("norm of no parameters %g", n)
		}
		p := Param(Ones([]int64{2}, dev))
		defer p.Free()
		if n := ClipGradNormTensor([]*Tensor{p}, 1); n.Item() != 0 || n.Device() != dev {
			t.Errorf("norm without gradients %v = %g, want 0 on %v", n, n.Item(), dev)
		}
	})
}

// Device-state Adam must follow default Adam (whose arithmetic stays as it
// was) to float32 rounding, with no host read in Step or SetLR.
func TestAdamDeviceStateMatchesDefault(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  AdamConfig
	}{
		{"adam", AdamConfig{LR: 0.01}},
		{"adam l2", AdamConfig{LR: 0.01, WeightDecay: 0.05}},
		{"adamw", AdamConfig{LR: 0.01, WeightDecay: 0.1, Decoupled: true}},
	} {
		on(t, func() {
			ManualSeed(23)
			ref := newMLP(2, 16, 3)
			m := &mlp{}
			for i, p := range ref.params() {
				*[]**Tensor{&m.w1, &m.b1, &m.w2, &m.b2}[i] = Param(p.Detach().Clone())
			}
			defer freeAll(ref.params())
			defer freeAll(m.params())
			x := Randn([]int64{32, 2}, dev)
			y := Randn([]int64{32, 3}, dev)
			train := func(net *mlp, opt *Adam) {
				for step := range 20 {
					Scoped(func() {
						if step == 10 {
							opt.SetLR(c.cfg.LR / 3)
						}
						loss := net.forward(x).Sub(y).Square().Mean()
						opt.ZeroGrad()
						loss.Backward()
						opt.Step()
					})
				}
			}
			def := NewAdam(ref.params(), c.cfg)
			defer def.Free()
			train(ref, def)

			opt := NewAdam(m.params(), c.cfg)
			defer opt.Free()
			opt.UseDeviceState()
			if opt.stepT.Dim() != 0 || opt.stepT.Device() != dev || opt.lrT.Dim() != 0 || opt.lrT.Device() != dev {
				t.Fatalf("%s: device state %v, %v, want 0-d tensors on %v", c.name, opt.stepT, opt.lrT, dev)
			}
			reads(t, c.name+": 20 device-state steps", 0, func() { train(m, opt) })
			for i, p := range m.params() {
				near(t, c.name+" parameter", p.Float64s(), ref.params()[i].Float64s(), 1e-5)
			}

			// SetLR fills the same tensor; State reports the device's count.
			lr := opt.lrT
			reads(t, c.name+": SetLR", 0, func() { opt.SetLR(0.5) })
			if opt.lrT != lr || lr.Item() != 0.5 {
				t.Errorf("%s: SetLR did not fill the learning-rate tensor in place", c.name)
			}
			state, step := opt.State()
			if _, want := def.State(); step != want || step != 20 {
				t.Errorf("%s: device-state step %d, default %d, want 20", c.name, step, want)
			}
			again := NewAdam(m.params(), c.cfg)
			defer again.Free()
			again.UseDeviceState()
			if err := again.LoadState(state, 7); err != nil {
				t.Fatal(err)
			}
			if _, s := again.State(); s != 7 || again.stepT.Item() != 7 {
				t.Errorf("%s: step after LoadState(…, 7) is %d (tensor %g)", c.name, s, again.stepT.Item())
			}
		})
	}
}
