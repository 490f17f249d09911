package vae

import (
	"testing"

	"kakusan/torch"
)

// A VAE training step at the reference setup (784-200-20, batch 32, Adam),
// on random pixels. The peer is scripts/bench_vae.py, the same model and step
// in PyTorch; `make bench` runs both. Report images/s against the peer's.
func BenchmarkVAETrainStep(b *testing.B) {
	err := torch.Do(func() error {
		torch.ManualSeed(0)
		v := NewVAE(784, 200, 20, torch.CPU)
		defer v.Free()
		opt := torch.NewAdam(v.ParamTensors(), torch.AdamConfig{LR: 3e-4})
		defer opt.Free()
		step := func() {
			torch.Scoped(func() {
				loss := v.Loss(torch.Rand([]int64{32, 784}), nil)
				opt.ZeroGrad()
				loss.Backward()
				opt.Step()
			})
		}
		for range 10 {
			step()
		}
		b.ResetTimer()
		for range b.N {
			step()
		}
		b.ReportMetric(float64(32*b.N)/b.Elapsed().Seconds(), "images/s")
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}
