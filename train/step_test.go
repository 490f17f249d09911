package train

import (
	"math"
	"os"
	"path/filepath"
	"testing"

	"kakusan/models"
	"kakusan/torch"
)

// TestStepReadsNothingBack runs training steps of the diffusion model with
// every option that once read from the device (batch-mode label dropping,
// gradient clipping, a moving average) and of the classifier, and counts
// the shim's host reads: a step makes none, so it never waits for the
// device and a CUDA graph can capture it.
func TestStepReadsNothingBack(t *testing.T) {
	cases := map[string]*models.Config{
		"diffusion":  diffusionConfig(t, "diffusion.cond_drop_mode=batch", "train.grad_clip=0.5", "train.ema_decay=0.9", "train.ema_warmup=true"),
		"vae":        neuralConfig(t, "vae", "train.grad_clip=1", "optimizer.name=adamw", "optimizer.weight_decay=0.01"),
		"classifier": neuralConfig(t, "classifier", "train.grad_clip=1"),
	}
	for name, c := range cases {
		err := torch.Do(func() error {
			dev, err := torch.ParseDevice(os.Getenv("KAKUSAN_TEST_DEVICE")) // "" is auto; the GPU check sets cuda
			if err != nil {
				return err
			}
			m, err := models.New(c, mnist, dev)
			if err != nil {
				return err
			}
			defer models.Free(m)
			avg, err := models.New(c, mnist, dev)
			if err != nil {
				return err
			}
			defer models.Free(avg)
			opt := newOptimizer(c.Optimizer, m.Module().ParamTensors())
			defer opt.Free()
			step, err := NewStep(&State{Model: m, Opt: opt, EMA: &EMA{Avg: avg, Decay: c.Train.EMADecay, Warmup: c.Train.EMAWarmup}}, c.Train.GradClip, c.Train.Precision)
			if err != nil {
				return err
			}
			x := torch.Rand([]int64{16, 1, 28, 28}, dev).Keep()
			y := torch.RandInt(0, 10, []int64{16}, dev).Keep()
			defer x.Free()
			defer y.Free()
			sum := torch.Zeros([]int64{}, dev).Keep()
			defer sum.Free()
			before := torch.HostReads()
			for range 5 {
				torch.Scoped(func() {
					step.SetLR(1e-3)
					sum.AddInPlace(step.Run(Batch{x, y}), 1)
				})
			}
			if n := torch.HostReads() - before; n != 0 {
				t.Errorf("%s: %d host reads in 5 steps, want 0", name, n)
			}
			if l := sum.Item(); !(l > 0) {
				t.Errorf("%s: summed loss %v", name, l)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
	}
}

// TestStepSeams checks that what plugs into the step runs where it must: a
// gradient synchronisation sees the gradients after the backward pass and
// before clipping, and an unknown precision is refused.
func TestStepSeams(t *testing.T) {
	c := neuralConfig(t, "vae", "train.grad_clip=1e-6")
	err := torch.Do(func() error {
		m, err := models.New(c, mnist, torch.CPU)
		if err != nil {
			return err
		}
		defer models.Free(m)
		opt := newOptimizer(c.Optimizer, m.Module().ParamTensors())
		defer opt.Free()
		if _, err := NewStep(&State{Model: m, Opt: opt}, 0, "bf17"); err == nil {
			t.Error("an unknown precision was accepted")
		}
		if s, err := NewStep(&State{Model: m, Opt: opt}, 0, ""); err != nil || s.Precision != torch.FP32 {
			t.Errorf("an empty precision is %q (%v), want fp32", s.Precision, err)
		}
		step, err := NewStep(&State{Model: m, Opt: opt}, c.Train.GradClip, "fp32")
		if err != nil {
			return err
		}
		var norm float64
		step.Sync = func(ps []*torch.Tensor) {
			for _, p := range ps {
				norm += p.Grad().Square().Sum().Item()
			}
		}
		step.Run(Batch{torch.Rand([]int64{8, 1, 28, 28}), torch.Zeros([]int64{8}, torch.Int64)})
		if !(norm > 1e-6) {
			t.Errorf("the sync hook saw gradients of squared norm %g: it ran after clipping to 1e-6, or before the backward pass", norm)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestResumeReproducesOnCUDA is the CPU test's promise on a GPU: a resumed
// run's losses equal the uninterrupted run's, which needs the CUDA
// generators' states in the checkpoint, and grids (drawn at step 20 in the
// uninterrupted run, after the checkpoint the resumed run starts from)
// that leave the CUDA stream alone. cuDNN's backward kernels may sum in
// another order from run to run, so losses must agree to 1e-4, not
// bit for bit; other noise would move them by percents.
func TestResumeReproducesOnCUDA(t *testing.T) {
	ok := false
	torch.Do(func() error { ok = torch.CUDAAvailable(); return nil })
	if !ok {
		t.Skip("no CUDA device (or a CPU-only shim): the CUDA generators' states cannot be checked here")
	}
	dir := t.TempDir()
	sets := []string{"device=cuda", "train.epochs=1", "train.checkpoint_every=20", "train.sample_every=20", "diffusion.cond_drop_mode=batch"}
	rf, err := Train(diffusionConfig(t, sets...), Options{Out: filepath.Join(dir, "full")})
	if err != nil {
		t.Fatal(err)
	}
	rp, err := Train(diffusionConfig(t, append(sets, "train.max_steps=20")...), Options{Out: filepath.Join(dir, "part")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Train(diffusionConfig(t, sets...), Options{Resume: rp.Dir}); err != nil {
		t.Fatal(err)
	}
	a, b := readMetrics(t, rf.Dir), readMetrics(t, rp.Dir)
	losses := func(ms []metric) map[int]float64 {
		out := map[int]float64{}
		for _, m := range ms {
			if m.Loss != nil {
				out[m.Step] = *m.Loss
			}
		}
		return out
	}
	la, lb := losses(a), losses(b)
	if len(la) == 0 || len(la) != len(lb) {
		t.Fatalf("%d and %d loss lines", len(la), len(lb))
	}
	for step, l := range la {
		if math.Abs(lb[step]-l) > 1e-4*math.Abs(l) {
			t.Errorf("step %d: loss %v uninterrupted, %v resumed", step, l, lb[step])
		}
	}
}

// TestEMAAveragesNormStatistics follows a batch-norm U-Net's moving average
// over steps by hand: every floating-point buffer (running mean and
// variance) of the average is d·avg + (1-d)·live after each update, as its
// weights are, and the integer batch counters are the live ones.
func TestEMAAveragesNormStatistics(t *testing.T) {
	c := diffusionConfig(t, "unet.norm=batch", "train.ema_decay=0.8")
	err := torch.Do(func() error {
		m, err := models.New(c, mnist, torch.CPU)
		if err != nil {
			return err
		}
		defer models.Free(m)
		avg, err := models.New(c, mnist, torch.CPU)
		if err != nil {
			return err
		}
		defer models.Free(avg)
		if err := avg.Module().Load(m.Module().StateDict()); err != nil {
			return err
		}
		opt := newOptimizer(c.Optimizer, m.Module().ParamTensors())
		defer opt.Free()
		const d = 0.8
		step, err := NewStep(&State{Model: m, Opt: opt, EMA: &EMA{Avg: avg, Decay: d}}, 0, "fp32")
		if err != nil {
			return err
		}
		want := map[string][]float64{} // the average each float buffer must hold
		for _, b := range m.Module().Buffers() {
			if b.T.DType().IsFloat() {
				want[b.Name] = b.T.To(torch.Float64).Float64s()
			}
		}
		if len(want) == 0 {
			t.Fatal("a batch-norm U-Net has no floating-point buffers")
		}
		for range 4 {
			torch.Scoped(func() {
				step.Run(Batch{torch.Rand([]int64{16, 1, 28, 28}), torch.RandInt(0, 10, []int64{16})})
				for _, b := range m.Module().Buffers() {
					if w, ok := want[b.Name]; ok {
						for i, v := range b.T.To(torch.Float64).Float64s() {
							w[i] = d*w[i] + (1-d)*v
						}
					}
				}
			})
		}
		live := map[string]*torch.Tensor{}
		for _, b := range m.Module().Buffers() {
			live[b.Name] = b.T
		}
		moved := false
		for _, b := range avg.Module().Buffers() {
			torch.Scoped(func() {
				got := b.T.To(torch.Float64).Float64s()
				w, ok := want[b.Name]
				if !ok { // an integer counter: copied
					if l := live[b.Name].To(torch.Float64).Float64s(); got[0] != l[0] {
						t.Errorf("%s = %v, want the live %v", b.Name, got[0], l[0])
					}
					return
				}
				for i := range got {
					if math.Abs(got[i]-w[i]) > 1e-5*(1+math.Abs(w[i])) {
						t.Errorf("%s[%d] = %.7g, want the average %.7g", b.Name, i, got[i], w[i])
						return
					}
				}
				l := live[b.Name].To(torch.Float64).Float64s()
				for i := range got {
					moved = moved || math.Abs(got[i]-l[i]) > 1e-4
				}
			})
		}
		if !moved {
			t.Error("the average's statistics equal the live ones: nothing was averaged")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
