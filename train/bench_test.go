package train

import (
	"os"
	"strconv"
	"testing"

	"kakusan/torch"
)

// The U-Net benchmarks mirror shared/bench/ref_unet.py (the peer): a
// training step of the conditional U-Net (random pixels, random labels with
// 10% dropped, t uniform in 1..T, Adam) and one guided sampling step (the
// conditional and unconditional passes in one batched forward). Sizes come
// from the environment so both sides run the same shapes:
//
//	BENCH_UNET_WIDTH (64), BENCH_UNET_BATCH (128), BENCH_UNET_SAMPLE_BATCH (500),
//	KAKUSAN_TEST_DEVICE (cpu)
func benchModel(b *testing.B, f func(m *DiffusionModel, dev torch.Device)) {
	env := func(k string, def int) string {
		if v := os.Getenv(k); v != "" {
			return v
		}
		return strconv.Itoa(def)
	}
	devName := os.Getenv("KAKUSAN_TEST_DEVICE")
	if devName == "" {
		devName = "cpu"
	}
	c, err := LoadConfig("../configs/mnist_cond.yaml", []string{"device=" + devName, "unet.width=" + env("BENCH_UNET_WIDTH", 64),
		"train.batch_size=" + env("BENCH_UNET_BATCH", 128), "samples=" + env("BENCH_UNET_SAMPLE_BATCH", 500)})
	if err != nil {
		b.Fatal(err)
	}
	err = torch.Do(func() error {
		dev, err := torch.ParseDevice(c.Device)
		if err != nil {
			return err
		}
		torch.ManualSeed(0)
		m, err := newDiffusion(c, dev)
		if err != nil {
			return err
		}
		defer m.Module().Free()
		f(m, dev)
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "steps/s")
}

func BenchmarkUNetTrainStep(b *testing.B) {
	benchModel(b, func(m *DiffusionModel, dev torch.Device) {
		batch, _ := strconv.Atoi(os.Getenv("BENCH_UNET_BATCH"))
		if batch == 0 {
			batch = 128
		}
		opt := torch.NewAdam(m.Module().ParamTensors(), torch.AdamConfig{LR: 1e-3})
		defer opt.Free()
		step := func() {
			torch.Scoped(func() {
				x := torch.Rand([]int64{int64(batch), 1, 28, 28}, dev)
				y := torch.RandInt(0, 10, []int64{int64(batch)}, dev)
				loss := m.Loss(x, y)
				opt.ZeroGrad()
				loss.Backward()
				opt.Step()
				loss.Item() // the peer syncs on .item() each step too
			})
		}
		for range 3 {
			step()
		}
		b.ResetTimer()
		for range b.N {
			step()
		}
		b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "images/s")
	})
}

func BenchmarkUNetSampleStep(b *testing.B) {
	benchModel(b, func(m *DiffusionModel, dev torch.Device) {
		n, _ := strconv.Atoi(os.Getenv("BENCH_UNET_SAMPLE_BATCH"))
		if n == 0 {
			n = 500
		}
		m.Net.SetTraining(false)
		torch.NoGrad(func() {
			z := torch.Randn([]int64{int64(n), 1, 28, 28}, dev).Keep()
			defer z.Free()
			y := torch.RandInt(0, 10, []int64{int64(n)}, dev).Keep()
			defer y.Free()
			pred := m.Sched.Guided(m.Net.Forward, y, 3, false)
			step := func() {
				torch.Scoped(func() {
					z.AddInPlace(pred(z, 500), -0.001)
					if dev.Type == torch.CUDADevice {
						torch.Synchronize()
					}
				})
			}
			for range 3 {
				step()
			}
			b.ResetTimer()
			for range b.N {
				step()
			}
		})
	})
}
