package torch

import (
	"os"
	"testing"
)

// On a GPU machine scripts/gpu_check.sh sets KAKUSAN_EXPECT_CUDA=1: a CUDA
// build that cannot see its GPU (say, torch_cuda dropped by --as-needed)
// must fail here rather than quietly run on the CPU.
func TestCUDAAvailableWhenExpected(t *testing.T) {
	if os.Getenv("KAKUSAN_EXPECT_CUDA") != "1" {
		t.Skip("KAKUSAN_EXPECT_CUDA not set")
	}
	if !CUDAAvailable() {
		t.Fatal("CUDA expected but torch.CUDAAvailable() is false")
	}
	on(t, func() {
		x := Randn([]int64{64, 64}, CUDA(0))
		y := Matmul(x, x).To(CPU)
		want := Matmul(x.To(CPU), x.To(CPU))
		if !y.AllClose(want, 1e-3, 1e-3) {
			t.Error("CUDA matmul disagrees with the CPU")
		}
		Synchronize()
	})
	t.Logf("libtorch %s, %d CUDA device(s)", Version(), CUDADeviceCount())
}
