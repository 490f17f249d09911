package torch

import "testing"

// Per-op overhead: a one-element add through Go (cgo call, handle, scope
// bookkeeping) against the same add in a C++ loop inside the shim.
// Report BenchmarkAddGo / BenchmarkAddCpp.
func BenchmarkAddGo(b *testing.B) {
	on(b, func() {
		x, y := Ones([]int64{1}, dev).Keep(), Ones([]int64{1}, dev).Keep()
		defer x.Free()
		defer y.Free()
		b.ResetTimer()
		for i := 0; i < b.N; i += 1000 {
			Scoped(func() {
				for j := 0; j < 1000 && i+j < b.N; j++ {
					x.Add(y)
				}
			})
		}
		syncDevice()
	})
}

func BenchmarkAddCpp(b *testing.B) {
	on(b, func() {
		x, y := Ones([]int64{1}, dev), Ones([]int64{1}, dev)
		b.ResetTimer()
		benchAddLoop(x, y, b.N)
		syncDevice()
	})
}

// A training step of a small CNN (two convs, batch norm, pooling, a linear
// head, cross entropy, Adam) on a batch of 64 MNIST-sized images. The peer is
// scripts/bench_convnet.py, the same network in PyTorch; `make bench` runs both.
func BenchmarkConvNetStep(b *testing.B) {
	on(b, func() {
		ManualSeed(0)
		net := newConvNet(dev)
		defer net.free()
		opt := NewAdam(net.params(), AdamConfig{LR: 1e-3})
		defer opt.Free()
		for range 3 {
			net.trainStep(opt, 64, dev)
		}
		syncDevice()
		b.ResetTimer()
		for range b.N {
			net.trainStep(opt, 64, dev)
		}
		syncDevice()
		b.ReportMetric(float64(64*b.N)/b.Elapsed().Seconds(), "images/s")
	})
}

func syncDevice() {
	if dev.Type == CUDADevice {
		Synchronize()
	}
}
