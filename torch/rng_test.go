package torch

import (
	"maps"
	"slices"
	"strings"
	"testing"
)

func TestRNGStatesRestore(t *testing.T) {
	on(t, func() {
		ManualSeed(11)
		s := RNGStates()
		want := []string{"cpu"}
		if CUDAAvailable() {
			for i := range CUDADeviceCount() {
				want = append(want, CUDA(i).String())
			}
		}
		if got := slices.Sorted(maps.Keys(s)); !slices.Equal(got, want) {
			t.Fatalf("RNGStates keys %v, want %v", got, want)
		}
		a := Randn([]int64{8}).Float64s()
		if err := SetRNGStates(s); err != nil {
			t.Fatal(err)
		}
		near(t, "cpu draw after SetRNGStates", Randn([]int64{8}).Float64s(), a, 0)
	})
}

// A CUDA generator's state is its seed and Philox offset: restoring it must
// repeat the draws on the device.
func TestCUDARNGStatesRestore(t *testing.T) {
	if !CUDAAvailable() {
		t.Skip("CUDA is not available (CPU-only shim or no GPU): nothing to restore on a device")
	}
	on(t, func() {
		ManualSeed(12)
		Randn([]int64{3}, CUDA(0)) // move the offset off its start
		s := RNGStates()
		var first [][]float64
		for i := range CUDADeviceCount() {
			first = append(first, Randn([]int64{1000}, CUDA(i)).Float64s())
		}
		if err := SetRNGStates(s); err != nil {
			t.Fatal(err)
		}
		for i := range CUDADeviceCount() {
			near(t, CUDA(i).String()+" draw after SetRNGStates", Randn([]int64{1000}, CUDA(i)).Float64s(), first[i], 0)
		}
		// Only the given generators are restored: CUDA alone leaves the CPU's.
		cpu := Randn([]int64{4}).Float64s()
		if err := SetRNGStates(map[string]*Tensor{"cuda:0": s["cuda:0"]}); err != nil {
			t.Fatal(err)
		}
		if b := Randn([]int64{4}).Float64s(); slices.Equal(b, cpu) {
			t.Error("restoring cuda:0 alone rewound the CPU generator")
		}
	})
}

func TestSetRNGStatesErrors(t *testing.T) {
	on(t, func() {
		ManualSeed(13)
		s := RNGState()
		missing := "cuda:0"
		if CUDAAvailable() {
			missing = CUDA(CUDADeviceCount()).String()
		}
		for _, key := range []string{"gpu", "cuda", "cuda:-1", "cuda:01", missing} {
			Randn([]int64{4}) // advance, so a restore would show
			before := RNGState().Bytes()
			err := SetRNGStates(map[string]*Tensor{"cpu": s, key: s})
			if err == nil || !strings.Contains(err.Error(), `"`+key+`"`) {
				t.Errorf("SetRNGStates with key %q: error %v, want one naming the key", key, err)
			}
			if after := RNGState().Bytes(); string(after) != string(before) {
				t.Errorf("SetRNGStates with key %q restored the CPU state before failing", key)
			}
		}
		err := SetRNGStates(map[string]*Tensor{"cpu": Zeros([]int64{3}, Uint8)})
		if _, ok := err.(*Error); !ok || !strings.Contains(err.Error(), `"cpu"`) {
			t.Errorf("SetRNGStates with a bad state: error %v, want an *Error naming \"cpu\"", err)
		}
	})
}

// Without CUDA the shim's CUDA generator calls must fail with a message that
// says so, not crash or return garbage.
func TestCUDARNGStateWithoutCUDA(t *testing.T) {
	if CUDAAvailable() {
		t.Skip("CUDA is available: the CPU-only error path cannot be reached")
	}
	on(t, func() {
		for name, f := range map[string]func(){
			"get": func() { cudaRNGState(0) },
			"set": func() { setCUDARNGState(0, RNGState()) },
		} {
			err := Try(func() error { f(); return nil })
			if err == nil || !strings.Contains(err.Error(), "CUDA is not available") {
				t.Errorf("%s CUDA generator state without CUDA: error %v", name, err)
			}
		}
	})
}
