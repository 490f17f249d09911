package torch

import (
	"math"
	"os"
	"testing"
)

// dev is the device the tests run on: KAKUSAN_TEST_DEVICE (default cpu), so
// scripts/gpu_check.sh runs the same suite on CUDA.
var dev = func() Device {
	s := os.Getenv("KAKUSAN_TEST_DEVICE")
	if s == "" {
		return CPU
	}
	d, err := ParseDevice(s)
	if err != nil {
		panic(err)
	}
	return d
}()

// on runs f on the torch thread and fails the test with any torch error.
func on(t testing.TB, f func()) {
	t.Helper()
	if err := Do(func() error { f(); return nil }); err != nil {
		t.Fatal(err)
	}
}

func f64(vals []float64, shape ...int64) *Tensor {
	if len(shape) == 0 {
		shape = nil
	}
	return FromSlice(vals, shape, dev)
}

func near(t testing.TB, what string, got, want []float64, tol float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.IsNaN(got[i]) || math.Abs(got[i]-want[i]) > tol*(1+math.Abs(want[i])) {
			t.Fatalf("%s[%d] = %.10g, want %.10g (all: %v)", what, i, got[i], want[i], got)
		}
	}
}
