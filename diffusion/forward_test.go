package diffusion

import (
	"math"
	"testing"

	"kakusan/torch"
)

func TestForwardProcessMoments(t *testing.T) {
	s := ref(t)
	on(t, func() {
		defer s.Free()
		torch.ManualSeed(0)
		const n = 200000
		x0 := torch.Full([]int64{n, 1, 1, 1}, 0.7, torch.Float64)
		for _, tt := range []int{1, 100, 500, 1000} {
			ts := torch.Full([]int64{n}, float64(tt), torch.Int64)
			xt := s.QSample(x0, ts, torch.RandnLike(x0))
			ab := s.AlphaBar(tt)
			mean, std := xt.Mean().Item(), xt.Std(true, false).Item()
			if want := math.Sqrt(ab) * 0.7; math.Abs(mean-want) > 5*math.Sqrt(1-ab)/math.Sqrt(n)+1e-12 {
				t.Errorf("t=%d: mean %v, want %v", tt, mean, want)
			}
			if want := math.Sqrt(1 - ab); math.Abs(std-want) > 0.01*want+1e-9 {
				t.Errorf("t=%d: std %v, want %v", tt, std, want)
			}
		}
	})
}

// oldGatherAB is sample.Schedule.gatherAB before ᾱ was kept on the device:
// a host copy at every call.
func oldGatherAB(s *Schedule, t *torch.Tensor) *torch.Tensor {
	abar := torch.FromSlice(s.AlphaBars, nil, t.Device())
	return abar.IndexSelect(0, t.SubScalar(1)).View(-1, 1, 1, 1)
}

func oldQSample(s *Schedule, x0, t, eps *torch.Tensor) *torch.Tensor {
	ab := oldGatherAB(s, t).To(x0.DType())
	return x0.Mul(ab.Sqrt()).Add(eps.Mul(ab.RSubScalar(1).Sqrt()))
}

func oldVTarget(s *Schedule, x0, t, eps *torch.Tensor) *torch.Tensor {
	ab := oldGatherAB(s, t).To(x0.DType())
	return eps.Mul(ab.Sqrt()).Sub(x0.Mul(ab.RSubScalar(1).Sqrt()))
}

func TestForwardIsBitIdenticalToTheHostCopy(t *testing.T) {
	for _, s := range []*Schedule{ref(t), must(Cosine(1000))} {
		on(t, func() {
			defer s.Free()
			torch.ManualSeed(2)
			for _, dt := range []torch.DType{torch.Float32, torch.Float64} {
				x0 := torch.Rand([]int64{64, 1, 4, 4}, dt)
				eps := torch.Randn([]int64{64, 1, 4, 4}, dt)
				ts := torch.RandInt(1, int64(s.T)+1, []int64{64})
				ts = torch.Cat([]*torch.Tensor{ts, torch.FromSlice([]int64{1, int64(s.T)}, nil)}, 0)
				x0 = torch.Cat([]*torch.Tensor{x0, x0.Narrow(0, 0, 2)}, 0)
				eps = torch.Cat([]*torch.Tensor{eps, eps.Narrow(0, 0, 2)}, 0)
				if !identical(s.QSample(x0, ts, eps), oldQSample(s, x0, ts, eps)) {
					t.Errorf("%s: QSample differs from the host-copy version", dt)
				}
				if !identical(s.VTarget(x0, ts, eps), oldVTarget(s, x0, ts, eps)) {
					t.Errorf("%s: VTarget differs from the host-copy version", dt)
				}
			}
		})
	}
}

func must(s *Schedule, err error) *Schedule {
	if err != nil {
		panic(err)
	}
	return s
}

func TestAlphaBarTableIsKeptAndFreed(t *testing.T) {
	s := ref(t)
	on(t, func() {
		before := torch.LiveTensors()
		var first *torch.Tensor
		torch.Scoped(func() {
			first = s.alphaBars(torch.CPU)
			x0 := torch.Zeros([]int64{2, 1, 1, 1})
			s.QSample(x0, torch.FromSlice([]int64{1, 2}, nil), x0)
		})
		if first.Freed() {
			t.Fatal("the table died with the scope it was made in")
		}
		if got := torch.LiveTensors() - before; got != 1 {
			t.Errorf("%d tensors live after the scope, want the table alone", got)
		}
		torch.Scoped(func() {
			x0 := torch.Zeros([]int64{2, 1, 1, 1})
			s.VTarget(x0, torch.FromSlice([]int64{3, 4}, nil), x0)
		})
		if s.alphaBars(torch.CPU) != first || len(s.onDevice) != 1 {
			t.Error("the table was made again")
		}
		if v := first.Float64s(); len(v) != 1000 || v[0] != s.AlphaBars[0] || v[999] != s.AlphaBars[999] {
			t.Error("the table is not ᾱ")
		}
		s.Free()
		if !first.Freed() || len(s.onDevice) != 0 || torch.LiveTensors() != before {
			t.Error("Free left the table")
		}
		s.Free() // twice is fine
		// Usable again after Free.
		x0 := torch.Ones([]int64{1, 1, 1, 1}, torch.Float64)
		got := s.QSample(x0, torch.FromSlice([]int64{10}, nil), torch.ZerosLike(x0)).Item()
		if want := math.Sqrt(s.AlphaBar(10)); math.Abs(got-want) > 1e-15 {
			t.Errorf("after Free: %v, want %v", got, want)
		}
		s.Free()
	})
}
