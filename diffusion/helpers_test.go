package diffusion

import (
	"bytes"
	"slices"
	"testing"

	"kakusan/torch"
	"kakusan/torch/torchtest"
)

var on = torchtest.Run

// ref is the reference schedule: linear, 1e-4 to 0.02, T = 1000.
func ref(t *testing.T) *Schedule {
	t.Helper()
	s, err := Linear(1000, 1e-4, 0.02)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// identical reports whether a and b have the same dtype, shape and bits.
func identical(a, b *torch.Tensor) bool {
	return a.DType() == b.DType() && slices.Equal(a.Shape(), b.Shape()) && bytes.Equal(a.Bytes(), b.Bytes())
}

// fakeNet is a small deterministic "network" of torch ops that reads x, t,
// the labels and the keep mask: sin(0.9 x + 0.001 t + keep·(0.25 y + 0.1)).
func fakeNet(x, ts, y, keep *torch.Tensor) *torch.Tensor {
	out := x.MulScalar(0.9).Add(ts.To(x.DType()).View(-1, 1, 1, 1).MulScalar(1e-3))
	if y != nil {
		l := y.To(x.DType()).View(-1, 1, 1, 1).MulScalar(0.25).AddScalar(0.1)
		if keep != nil {
			l = l.Mul(keep.To(x.DType()).View(-1, 1, 1, 1))
		}
		out = out.Add(l)
	}
	return out.Sin()
}
