package train

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kakusan/models"
	"kakusan/torch"
)

// shortRun trains diffusionConfig with sets for one epoch of 640 images,
// logging every 2 steps; it returns the run's folder, the logged losses
// and the log.
func shortRun(t *testing.T, sets ...string) (dir string, losses []float64, log string) {
	t.Helper()
	var b strings.Builder
	dir = filepath.Join(t.TempDir(), "run")
	c := diffusionConfig(t, append([]string{"data.subset=640", "train.epochs=1", "train.log_every=2"}, sets...)...)
	if _, err := Train(c, Options{Out: dir, Log: &b}); err != nil {
		t.Fatal(err)
	}
	for _, m := range readMetrics(t, dir) {
		if m.Loss != nil {
			losses = append(losses, *m.Loss)
		}
	}
	return dir, losses, b.String()
}

// On the CPU train.cuda_graph says once that it trains eagerly, and does:
// the same losses as without it.
func TestCUDAGraphFallsBackOnTheCPU(t *testing.T) {
	_, eager, _ := shortRun(t)
	_, graphed, log := shortRun(t, "train.cuda_graph=true")
	if n := strings.Count(log, "train.cuda_graph: the CPU has no CUDA graphs; training with eager steps"); n != 1 {
		t.Errorf("the fallback was announced %d times:\n%s", n, log)
	}
	if len(eager) < 2 || !slices.Equal(eager, graphed) {
		t.Errorf("losses eager %v, with cuda_graph on the CPU %v", eager, graphed)
	}
	for _, bad := range [][]string{{"optimizer.name=sgd"}, {"train.ema_decay=0.99", "train.ema_warmup=true"}} {
		c := diffusionConfig(t, append(bad, "train.cuda_graph=true", "train.max_steps=1")...)
		_, err := Train(c, Options{Out: filepath.Join(t.TempDir(), "bad")})
		if err == nil || !strings.Contains(err.Error(), "train.cuda_graph") {
			t.Errorf("%v: err = %v, want a train.cuda_graph error", bad, err)
		}
	}
}

// On CUDA (scripts/gpu_check.sh) the graphed step trains: the loss falls,
// replays of one batch draw new noise, and the weights move as eager steps
// move them.
func TestCUDAGraphStepTrains(t *testing.T) {
	if os.Getenv("KAKUSAN_TEST_DEVICE") != "cuda" || !torch.CUDAGraphsAvailable() {
		t.Skip("needs KAKUSAN_TEST_DEVICE=cuda and a shim with CUDA graphs (scripts/gpu_check.sh)")
	}
	c := diffusionConfig(t, "device=cuda")
	err := torch.Do(func() error {
		torch.ManualSeed(0)
		m, err := models.New(c, mnist, torch.CUDA(0))
		if err != nil {
			return err
		}
		defer models.Free(m)
		opt := newOptimizer(c.Optimizer, m.Module().ParamTensors())
		defer opt.Free()
		s, err := NewStep(&State{Model: m, Opt: opt}, 1, "fp32")
		if err != nil {
			return err
		}
		g, err := NewGraphed(s, torch.CUDA(0), os.Stderr)
		if err != nil {
			return err
		}
		defer g.Free()
		x := torch.Rand([]int64{64, 1, 28, 28}, torch.CUDA(0)).Keep()
		y := torch.RandInt(0, 10, []int64{64}, torch.CUDA(0)).Keep()
		defer x.Free()
		defer y.Free()
		var losses []float64
		for range 60 {
			torch.Scoped(func() { losses = append(losses, g.Run(Batch{x, y}).Item()) })
		}
		if g.graph == nil {
			t.Fatal("the step was never captured")
		}
		if losses[58] == losses[59] {
			t.Errorf("two replays on one batch gave the same loss %g: the noise did not change", losses[59])
		}
		first, last := mean(losses[:5]), mean(losses[55:])
		if !(last < first/2) {
			t.Errorf("graphed training: loss %.4f -> %.4f, want it halved", first, last)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func mean(v []float64) float64 {
	var s float64
	for _, x := range v {
		s += x
	}
	return s / float64(len(v))
}
