package torch

import (
	"slices"
	"strings"
	"testing"
)

func TestCaptureGraph(t *testing.T) {
	if dev.Type != CUDADevice || !CUDAGraphsAvailable() {
		on(t, func() {
			_, err := CaptureGraph(dev, func() {})
			if err == nil || !strings.Contains(err.Error(), "CUDA") {
				t.Errorf("capture on %v: err = %v, want a CUDA error", dev, err)
			}
		})
		t.Skip("CUDA graph replay needs KAKUSAN_TEST_DEVICE=cuda and a shim with CUDA graphs (scripts/gpu_check.sh)")
	}
	on(t, func() {
		x := Full([]int64{4}, 1, dev).Keep()
		defer x.Free()
		var noise *Tensor
		g, err := CaptureGraph(dev, func() {
			x.MulScalarInPlace(2)
			noise = Randn([]int64{3}, dev).Keep()
		})
		if err != nil {
			t.Fatal(err)
		}
		defer g.Free()
		defer noise.Free()
		if got := x.Float64s(); got[0] != 1 {
			t.Fatalf("capture ran the work: x = %v", got)
		}
		g.Replay()
		first := noise.Float64s()
		g.Replay()
		if got := x.Float64s(); got[0] != 4 {
			t.Fatalf("two replays of x *= 2: x = %v, want 4", got)
		}
		if slices.Equal(first, noise.Float64s()) {
			t.Fatal("two replays drew the same noise")
		}
		// A failing op inside the capture ends it and comes back as an error.
		if _, err := CaptureGraph(dev, func() { Matmul(x, Ones([]int64{3, 3}, dev)) }); err == nil {
			t.Fatal("a shape error inside a capture came back as no error")
		}
	})
}
