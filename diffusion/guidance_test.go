package diffusion

import (
	"math"
	"testing"

	"kakusan/torch"
)

// oldGuided is sample.Schedule.Guided as it was, guidance and the v→ε
// conversion in one.
func oldGuided(s *Schedule, net Net, y *torch.Tensor, gamma float64, vPrediction bool) Predictor {
	return func(x *torch.Tensor, t int) *torch.Tensor {
		n := x.Size(0)
		ts := torch.Full([]int64{n}, float64(t), torch.Int64, x.Device())
		var out *torch.Tensor
		switch {
		case y == nil:
			out = net(x, ts, nil, nil)
		case gamma == 1:
			out = net(x, ts, y, nil)
		default:
			ones := torch.Ones([]int64{n}, x.Device())
			both := net(torch.Cat([]*torch.Tensor{x, x}, 0), torch.Cat([]*torch.Tensor{ts, ts}, 0),
				torch.Cat([]*torch.Tensor{y, y}, 0), torch.Cat([]*torch.Tensor{ones, torch.ZerosLike(ones)}, 0))
			cond, uncond := both.Narrow(0, 0, n), both.Narrow(0, n, n)
			out = uncond.Add(cond.Sub(uncond).MulScalar(gamma))
		}
		if vPrediction {
			ab := s.AlphaBar(t)
			out = out.MulScalar(math.Sqrt(ab)).Add(x.MulScalar(math.Sqrt(1 - ab)))
		}
		return out
	}
}

func TestGuidanceCombinesBothPasses(t *testing.T) {
	on(t, func() {
		// A "network" whose output is 1 + 2·keep: conditional 3, unconditional 1.
		var batches []int64
		net := func(x, ts, y, keep *torch.Tensor) *torch.Tensor {
			batches = append(batches, x.Size(0))
			k := torch.OnesLike(x)
			if keep != nil {
				k = keep.To(x.DType()).View(-1, 1, 1, 1).Expand(x.Shape()...)
			}
			return k.MulScalar(2).AddScalar(1)
		}
		x := torch.Zeros([]int64{4, 1, 2, 2})
		y := torch.FromSlice([]int64{0, 1, 2, 3}, nil)
		got := Guided(net, y, 3, 0)(x, 10)
		if v := got.Mean().Item(); math.Abs(v-(1+3*(3-1))) > 1e-6 {
			t.Errorf("guided eps %v, want 7", v)
		}
		if len(batches) != 1 || batches[0] != 8 {
			t.Errorf("forward batches %v: want one of 8 (both passes batched)", batches)
		}
		Guided(net, y, 1, 0)(x, 10)
		if len(batches) != 2 || batches[1] != 4 {
			t.Error("gamma 1 should take one conditional pass")
		}
		Guided(net, nil, 3, 0)(x, 10)
		if len(batches) != 3 || batches[2] != 4 {
			t.Error("no labels should take one unconditional pass")
		}
	})
}

func TestConditionalPassesTimestepsAndLabels(t *testing.T) {
	on(t, func() {
		x := torch.Zeros([]int64{3, 1, 2, 2})
		y := torch.FromSlice([]int64{4, 5, 6}, nil)
		for _, labels := range []*torch.Tensor{y, nil} {
			called := false
			net := func(xx, ts, yy, keep *torch.Tensor) *torch.Tensor {
				called = true
				if xx != x || yy != labels || keep != nil {
					t.Error("x, labels or keep not passed through")
				}
				if ts.DType() != torch.Int64 || ts.Dim() != 1 || ts.Size(0) != 3 || ts.Min().Item() != 17 || ts.Max().Item() != 17 {
					t.Errorf("timesteps %v", ts)
				}
				return xx
			}
			Conditional(net, labels)(x, 17)
			if !called {
				t.Error("net not called")
			}
		}
	})
}

func TestGuidedAsEpsIsBitIdenticalToTheOldGuided(t *testing.T) {
	s := ref(t)
	on(t, func() {
		torch.ManualSeed(6)
		x := torch.Randn([]int64{4, 1, 5, 5})
		y := torch.FromSlice([]int64{0, 3, 7, 9}, nil)
		for _, kind := range []Prediction{Eps, V} {
			for _, labels := range []*torch.Tensor{y, nil} {
				for _, gamma := range []float64{3, 1, 0, 7.5} {
					for _, tt := range []int{1, 37, 999, 1000} {
						got := s.AsEps(Guided(fakeNet, labels, gamma, 0), kind)(x, tt)
						want := oldGuided(s, fakeNet, labels, gamma, kind == V)(x, tt)
						if !identical(got, want) {
							t.Errorf("%s, labels %v, γ %g, t %d: differs from the old Guided", kind, labels != nil, gamma, tt)
						}
					}
				}
			}
		}
		// Guidance on raw x_0 outputs is guidance on ε, up to rounding.
		for _, tt := range []int{100, 600} {
			raw := s.AsEps(Guided(fakeNet, y, 3, 0), X0)(x, tt)
			c := s.AsEps(Conditional(fakeNet, y), X0)(x, tt)
			u := s.AsEps(Conditional(fakeNet, nil), X0)(x, tt)
			// fakeNet with no labels is the dropped-label pass.
			if want := u.Add(c.Sub(u).MulScalar(3)); !raw.AllClose(want, 1e-4, 1e-4) {
				t.Errorf("t=%d: x0 guidance differs from ε guidance by %v", tt, raw.Sub(want).Abs().Max().Item())
			}
		}
	})
}
