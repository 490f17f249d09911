package train

import (
	"os"
	"strconv"
	"testing"

	"kakusan/diffusion"
	"kakusan/models"
	"kakusan/sample"
	"kakusan/torch"
)

// The benchmarks time the real training step (train.Step: forward, loss,
// backward, clipping when configured, the optimizer; no moving average, as
// the shipped configs have none) of a model built from a shipped config, on random data of
// MNIST's geometry. Their peers: shared/bench/ref_unet.py for the U-Net
// (a training step of the conditional U-Net with 10% of labels dropped,
// and one guided sampling step, both passes in one batched forward) and
// scripts/bench_vae.py for the VAE. Sizes come from the environment so
// both sides run the same shapes:
//
//	BENCH_UNET_WIDTH (64), BENCH_UNET_BATCH (128), KAKUSAN_TEST_DEVICE (cpu),
//	BENCH_UNET_SAMPLE_BATCH (the sampling job's default on that device,
//	sample.DefaultBatch: 100 on the CPU, 500 on a GPU)
//
// The sampling batch follows the job's: on the CPU a batch of 500 makes
// every activation larger than glibc's largest mmap threshold (32 MiB), so
// each one is a fresh mapping the kernel zeroes page by page (2-3 million
// minor faults a run, 0.6-1.5 s a step), which the job never pays.
func envInt(k string, def int) int {
	if v, err := strconv.Atoi(os.Getenv(k)); err == nil && v > 0 {
		return v
	}
	return def
}

// mnist is the geometry the benchmarks' random data has.
var mnist = models.Geometry{C: 1, H: 28, W: 28, Classes: 10}

// benchModel builds config's model on the benchmark device
// (KAKUSAN_TEST_DEVICE) and runs f on the torch thread.
func benchModel(b *testing.B, config string, g models.Geometry, sets []string, f func(m models.Model, c *models.Config, dev torch.Device)) {
	devName := os.Getenv("KAKUSAN_TEST_DEVICE")
	if devName == "" {
		devName = "cpu"
	}
	c, err := models.LoadConfig(config, append(sets, "device="+devName))
	if err != nil {
		b.Fatal(err)
	}
	err = torch.Do(func() error {
		dev, err := torch.ParseDevice(c.Device)
		if err != nil {
			return err
		}
		torch.ManualSeed(0)
		m, err := models.New(c, g, dev)
		if err != nil {
			return err
		}
		defer models.Free(m)
		f(m, c, dev)
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
}

// benchStep times config's training step on random batches of the given
// size and geometry.
func benchStep(b *testing.B, config string, g models.Geometry, batch int, sets ...string) {
	benchModel(b, config, g, append(sets, "train.batch_size="+strconv.Itoa(batch)), func(m models.Model, c *models.Config, dev torch.Device) {
		opt := newOptimizer(c.Optimizer, m.Module().ParamTensors())
		defer opt.Free()
		eager, err := NewStep(&State{Model: m, Opt: opt}, c.Train.GradClip, c.Train.Precision)
		if err != nil {
			b.Fatal(err)
		}
		var step Stepper = eager
		if c.Train.CUDAGraph { // captured after its warm-up steps, below
			g, err := NewGraphed(eager, dev, os.Stderr)
			if err != nil {
				b.Fatal(err)
			}
			defer g.Free()
			step = g
		}
		run := func() {
			torch.Scoped(func() {
				x := torch.Rand(append([]int64{int64(batch)}, g.Shape()...), dev)
				y := torch.RandInt(0, int64(g.Classes), []int64{int64(batch)}, dev)
				step.Run(Batch{x, y}).Item() // one sync a step, as ref_unet.py's .item(); bench_vae.py runs on the CPU
			})
		}
		for range graphWarmup + 2 { // a graph's capture and first replay among them
			run()
		}
		b.ResetTimer()
		for range b.N {
			run()
		}
		b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "images/s")
	})
}

// unetMode is one of ref_unet.py's modes that has a kakusan counterpart,
// as config settings: bf16 autocast and the channels-last layout; on CUDA
// also TF32 matmuls and convolutions, and training steps replayed from a
// CUDA graph (train.cuda_graph), which have no ref_unet.py mode.
type unetMode struct {
	name, precision, channelsLast string
	graph                         bool
}

// unetModes are the modes benchmarked on the benchmark device.
func unetModes(training bool) []unetMode {
	modes := []unetMode{{"eager", "fp32", "false", false}, {"bf16", "bf16", "false", false}, {"cl", "fp32", "true", false}, {"bf16-cl", "bf16", "true", false}}
	if os.Getenv("KAKUSAN_TEST_DEVICE") != "cuda" {
		return modes
	}
	modes = append(modes, unetMode{"tf32", "tf32", "false", false}, unetMode{"tf32-cl", "tf32", "true", false})
	if training {
		modes = append(modes, unetMode{"eager-graph", "fp32", "false", true}, unetMode{"bf16-cl-graph", "bf16", "true", true})
	}
	return modes
}

// unetSets are the settings of a U-Net benchmark in one mode.
func unetSets(precisionKey string, m unetMode) []string {
	return []string{"unet.width=" + strconv.Itoa(envInt("BENCH_UNET_WIDTH", 64)), precisionKey + "=" + m.precision,
		"unet.channels_last=" + m.channelsLast, "train.cuda_graph=" + strconv.FormatBool(m.graph)}
}

func BenchmarkUNetTrainStep(b *testing.B) {
	for _, m := range unetModes(true) {
		b.Run(m.name, func(b *testing.B) {
			benchStep(b, "../configs/mnist_cond.yaml", mnist, envInt("BENCH_UNET_BATCH", 128), unetSets("train.precision", m)...)
		})
	}
}

// BenchmarkVAETrainStep is the reference VAE (784-200-20, batch 32, Adam).
func BenchmarkVAETrainStep(b *testing.B) {
	benchStep(b, "../configs/mnist_vae.yaml", mnist, 32)
}

// BenchmarkUNetSampleStep is one guided sampling step: the network's
// conditional and unconditional passes in one batched forward.
func BenchmarkUNetSampleStep(b *testing.B) {
	for _, m := range unetModes(false) {
		b.Run(m.name, func(b *testing.B) {
			benchSampleStep(b, "../configs/mnist_cond.yaml", mnist, unetSets("diffusion.sample_precision", m))
		})
	}
}

func benchSampleStep(b *testing.B, config string, g models.Geometry, sets []string) {
	benchModel(b, config, g, sets, func(m models.Model, c *models.Config, dev torch.Device) {
		n := envInt("BENCH_UNET_SAMPLE_BATCH", sample.DefaultBatch(dev))
		dm := m.(*diffusion.Model)
		dm.Net.SetTraining(false)
		torch.NoGrad(func() {
			z := torch.Randn(append([]int64{int64(n)}, g.Shape()...), dev).Keep()
			defer z.Free()
			y := torch.RandInt(0, int64(g.Classes), []int64{int64(n)}, dev).Keep()
			defer y.Free()
			pred, _ := dm.Predictor(y, models.GridSampling(c))
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
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "steps/s")
	})
}

// The CPU default (configs/mnist_cond_cpu.yaml, the README's first
// command: GroupNorm, SiLU, three levels, channels-last), BENCH_UNET_BATCH (128) for
// training and a guided step of BENCH_UNET_SAMPLE_BATCH images for
// sampling, in float32 and in bf16 autocast.
func BenchmarkCPUDefaultTrainStep(b *testing.B) {
	for _, p := range []string{"fp32", "bf16"} {
		b.Run(p, func(b *testing.B) {
			benchStep(b, "../configs/mnist_cond_cpu.yaml", mnist, envInt("BENCH_UNET_BATCH", 128), "train.precision="+p)
		})
	}
}

func BenchmarkCPUDefaultSampleStep(b *testing.B) {
	for _, p := range []string{"fp32", "bf16"} {
		b.Run(p, func(b *testing.B) {
			benchSampleStep(b, "../configs/mnist_cond_cpu.yaml", mnist, []string{"diffusion.sample_precision=" + p})
		})
	}
}

// emoji is the colour recipe's geometry: the emoji benchmark at 32×32.
var emoji = models.Geometry{C: 3, H: 32, W: 32, Classes: 9}

// The colour recipe (configs/emoji_cpu.yaml: the adm network of width 32,
// channels-last): a training step of batch 64 and a guided step of
// BENCH_UNET_SAMPLE_BATCH images, in float32 and bf16 autocast; the peer is
// scripts/bench_cpu_default.py --net colour.
func BenchmarkColourTrainStep(b *testing.B) {
	for _, p := range []string{"fp32", "bf16"} {
		b.Run(p, func(b *testing.B) {
			benchStep(b, "../configs/emoji_cpu.yaml", emoji, 64, "train.precision="+p)
		})
	}
}

func BenchmarkColourSampleStep(b *testing.B) {
	for _, p := range []string{"fp32", "bf16"} {
		b.Run(p, func(b *testing.B) {
			benchSampleStep(b, "../configs/emoji_cpu.yaml", emoji, []string{"diffusion.sample_precision=" + p})
		})
	}
}
