package train

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kakusan/internal/signals"
	"kakusan/models"
	"kakusan/torch"
)

// neuralConfig is a small MNIST run: a 2,000-image subset, 500 test images.
func neuralConfig(t *testing.T, model string, sets ...string) *models.Config {
	t.Helper()
	base := []string{"data.subset=2000", "data.test_subset=500", "device=cpu", "train.log_every=10", "samples=16"}
	c, err := models.LoadConfig("../configs/mnist_"+model+".yaml", append(base, sets...))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

type metric struct {
	Step     int      `json:"step"`
	Loss     *float64 `json:"loss"`
	TestLoss *float64 `json:"test_loss"`
}

func readMetrics(t *testing.T, dir string) []metric {
	t.Helper()
	f, err := os.Open(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []metric
	s := bufio.NewScanner(f)
	for s.Scan() {
		var m metric
		if err := json.Unmarshal(s.Bytes(), &m); err != nil {
			t.Fatalf("metrics line %q: %v", s.Text(), err)
		}
		out = append(out, m)
	}
	return out
}

func testLosses(ms []metric) []float64 {
	var out []float64
	for _, m := range ms {
		if m.TestLoss != nil {
			out = append(out, *m.TestLoss)
		}
	}
	return out
}

func TestVAEAndHVAETrainingLowersTestLoss(t *testing.T) {
	// 5 epochs of 62 steps on 2,000 images. The untrained VAE sits near 180
	// per image (squared error of sigmoid(≈0.5) outputs); after 310 steps the
	// test loss must be below 60 and have fallen epoch over epoch overall.
	for _, model := range []string{"vae", "hvae"} {
		c := neuralConfig(t, model, "train.epochs=5")
		r, err := Train(c, Options{Out: filepath.Join(t.TempDir(), model)})
		if err != nil {
			t.Fatalf("%s: %v", model, err)
		}
		tl := testLosses(readMetrics(t, r.Dir))
		if len(tl) != 5 {
			t.Fatalf("%s: %d test-loss lines, want 5", model, len(tl))
		}
		if tl[4] > 60 || tl[4] > tl[0]-5 {
			t.Errorf("%s: test loss by epoch %v: want the last below 60 and 5 under the first", model, tl)
		}
		for _, f := range []string{"loss.png", "samples/final.png", "checkpoints/latest.safetensors", "config.yaml"} {
			if _, err := os.Stat(r.Path(f)); err != nil {
				t.Errorf("%s: %v", model, err)
			}
		}
	}
}

func TestCheckpointRoundTripAndResumeReproduces(t *testing.T) {
	dir := t.TempDir()
	// Uninterrupted: 124 steps (2 epochs), checkpoints at 60 and 120 and at the end.
	full := neuralConfig(t, "vae", "train.epochs=2", "train.checkpoint_every=60", "train.sample_every=1000")
	rf, err := Train(full, Options{Out: filepath.Join(dir, "full")})
	if err != nil {
		t.Fatal(err)
	}
	// Interrupted: stop at step 60, then resume to the end.
	part := neuralConfig(t, "vae", "train.epochs=2", "train.checkpoint_every=60", "train.sample_every=1000", "train.max_steps=60")
	rp, err := Train(part, Options{Out: filepath.Join(dir, "part")})
	if err != nil {
		t.Fatal(err)
	}
	rest := neuralConfig(t, "vae", "train.epochs=2", "train.checkpoint_every=60", "train.sample_every=1000")
	if _, err := Train(rest, Options{Resume: rp.Dir}); err != nil {
		t.Fatal(err)
	}
	// Every training-loss line and every epoch's test loss match exactly. (The
	// shortened run also logged a test loss where it stopped, at step 60.)
	byStep := func(ms []metric) (map[int]float64, map[int]float64) {
		train, test := map[int]float64{}, map[int]float64{}
		for _, m := range ms {
			if m.Loss != nil {
				train[m.Step] = *m.Loss
			}
			if m.TestLoss != nil && m.Step%62 == 0 {
				test[m.Step] = *m.TestLoss
			}
		}
		return train, test
	}
	at, aT := byStep(readMetrics(t, rf.Dir))
	bt, bT := byStep(readMetrics(t, rp.Dir))
	if len(at) != 13 || len(aT) != 2 || len(bt) != len(at) || len(bT) != len(aT) {
		t.Fatalf("uninterrupted: %d loss and %d test lines; resumed: %d and %d", len(at), len(aT), len(bt), len(bT))
	}
	for step, l := range at {
		if bt[step] != l {
			t.Errorf("step %d: loss %v uninterrupted, %v resumed", step, l, bt[step])
		}
	}
	for step, l := range aT {
		if bT[step] != l {
			t.Errorf("step %d: test loss %v uninterrupted, %v resumed", step, l, bT[step])
		}
	}
	// The final checkpoints hold identical weights, and a loaded model
	// computes what the trained one did.
	err = torch.Do(func() error {
		ca, err := models.ReadCheckpoint(rf.Dir, torch.CPU)
		if err != nil {
			return err
		}
		cb, err := models.ReadCheckpoint(rp.Dir, torch.CPU)
		if err != nil {
			return err
		}
		if ca.Step != 124 || cb.Step != 124 {
			t.Errorf("final steps %d and %d, want 124", ca.Step, cb.Step)
		}
		for name, x := range ca.Tensors {
			if name == models.RNGPrefix+"cpu" {
				continue
			}
			if y, ok := cb.Tensors[name]; !ok || !x.AllClose(y, 0, 0) {
				t.Errorf("%s differs between the uninterrupted and the resumed run", name)
			}
		}
		m1, _, err := models.Load(rf.Dir, torch.CPU, false)
		if err != nil {
			return err
		}
		m2, _ := models.New(full, ca.Geometry, torch.CPU)
		defer models.Free(m1)
		defer models.Free(m2)
		if err := m2.Module().Load(m1.Module().StateDict()); err != nil {
			return err
		}
		x := torch.Rand([]int64{4, 1, 28, 28})
		ha := m1.(models.Reconstructor).Reconstruct(x)
		hb := m2.(models.Reconstructor).Reconstruct(x)
		if !ha.AllClose(hb, 0, 0) {
			t.Error("a reloaded model computes something else")
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestBadCheckpointsAreNamed(t *testing.T) {
	dir := t.TempDir()
	bad := filepath.Join(dir, "bad.safetensors")
	os.WriteFile(bad, []byte("definitely not safetensors"), 0o644)
	err := torch.Do(func() error { _, err := models.ReadCheckpoint(bad, torch.CPU); return err })
	if err == nil || !strings.Contains(err.Error(), bad) {
		t.Errorf("corrupt checkpoint: %v", err)
	}
	// A checkpoint of another model kind: the error names the file and both kinds.
	c := neuralConfig(t, "hvae", "train.max_steps=5")
	r, err := Train(c, Options{Out: filepath.Join(dir, "h")})
	if err != nil {
		t.Fatal(err)
	}
	v := neuralConfig(t, "vae", "train.max_steps=10")
	_, err = Train(v, Options{Resume: r.Dir})
	if err == nil || !strings.Contains(err.Error(), `a "hvae" checkpoint, the config trains "vae"`) {
		t.Errorf("wrong kind: %v", err)
	}
	// Same kind, other shape: the first mismatching tensor is named.
	w := neuralConfig(t, "hvae", "train.max_steps=10", "hvae.hidden=50")
	_, err = Train(w, Options{Resume: r.Dir})
	if err == nil || !strings.Contains(err.Error(), "decoder1.linear1.bias\" has shape [100], the model wants [50]") {
		t.Errorf("wrong shape: %v", err)
	}
}

// nanModel's loss turns NaN at a given step; it wraps a VAE, and does
// what the VAE's entry says it can.
type nanModel struct {
	models.Model
	calls, at int
}

func (m *nanModel) Reconstruct(x *torch.Tensor) *torch.Tensor {
	return m.Model.(models.Reconstructor).Reconstruct(x)
}

func (m *nanModel) Sample(n int64) *torch.Tensor {
	return m.Model.(interface{ Sample(int64) *torch.Tensor }).Sample(n)
}

func (m *nanModel) Loss(x, y *torch.Tensor) *torch.Tensor {
	m.calls++
	l := m.Model.Loss(x, y)
	if m.calls >= m.at {
		return l.MulScalar(math.NaN())
	}
	return l
}

func TestNaNLossStopsAndKeepsLastCheckpoint(t *testing.T) {
	defer func(f func(*models.Config, models.Geometry, torch.Device, *models.Checkpoint) (models.Model, error)) {
		newModel = f
	}(newModel)
	newModel = func(c *models.Config, g models.Geometry, d torch.Device, from *models.Checkpoint) (models.Model, error) {
		m, err := models.Build(c, g, d, from)
		return &nanModel{Model: m, at: 45}, err
	}
	// Checkpoints every 15 steps, logs every 10: the NaN from step 45 on
	// reaches the weights before the checkpoint at step 45 and before any
	// log line sees it; that checkpoint must not be written.
	c := neuralConfig(t, "vae", "train.checkpoint_every=15", "train.epochs=1")
	r, err := Train(c, Options{Out: filepath.Join(t.TempDir(), "nan")})
	if err == nil || !strings.Contains(err.Error(), "NaN or Inf at step 45") || !strings.Contains(err.Error(), "step-00000030.safetensors") {
		t.Fatalf("err = %v", err)
	}
	latest, _ := os.Readlink(filepath.Join(r.Dir, "checkpoints", "latest.safetensors"))
	if latest != "step-00000030.safetensors" {
		t.Errorf("latest checkpoint is %q after the NaN", latest)
	}
	if _, err := Train(neuralConfig(t, "vae", "train.checkpoint_every=15", "train.max_steps=35"), Options{Resume: r.Dir}); err != nil {
		t.Errorf("the last good checkpoint does not resume: %v", err)
	}
}

func TestInterruptSavesACheckpoint(t *testing.T) {
	c := neuralConfig(t, "vae", "train.epochs=1")
	r, err := Start(c, Options{Out: filepath.Join(t.TempDir(), "int")})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // as if SIGINT arrived before the first step
	err = torch.Do(func() error { return trainNeural(ctx, r, "") })
	r.Close()
	if !errors.Is(err, signals.ErrInterrupted) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.Dir, "checkpoints", "step-00000000.safetensors")); err != nil {
		t.Error(err)
	}
	if _, err := Train(c, Options{Resume: r.Dir}); err != nil {
		t.Errorf("resume after interrupt: %v", err)
	}
}

func TestFashionMNISTByConfig(t *testing.T) {
	c := neuralConfig(t, "vae", "data.dataset=fashion-mnist", "train.max_steps=30")
	r, err := Train(c, Options{Out: filepath.Join(t.TempDir(), "fashion")})
	if err != nil {
		t.Fatal(err)
	}
	if tl := testLosses(readMetrics(t, r.Dir)); len(tl) != 1 || !(tl[0] > 0) {
		t.Errorf("test losses %v", tl)
	}
	if _, err := models.LoadConfig("../configs/mnist_vae.yaml", []string{"data.dataset=cifar"}); err == nil || !strings.Contains(err.Error(), `data.dataset: unknown dataset "cifar"`) {
		t.Errorf("unknown dataset: %v", err)
	}
}

// A checkpoint is whole or refused, whichever of its weights a command
// uses: a NaN in the optimizer's state, a moving-average tensor missing,
// a stray tensor, or a generator state that is not bytes stops sampling
// (which reads only the moving average) and resuming alike.
func TestDamagedCheckpointsAreRefused(t *testing.T) {
	dir := t.TempDir()
	r, err := Train(neuralConfig(t, "vae", "train.max_steps=3", "train.ema_decay=0.9"), Options{Out: filepath.Join(dir, "run")})
	if err != nil {
		t.Fatal(err)
	}
	path, _ := models.ResolveCheckpoint(r.Dir)
	explode := func(ts map[string]*torch.Tensor) {
		for k, v := range ts {
			if strings.HasPrefix(k, models.EMAPrefix) {
				ts[k] = v.MulScalar(1e6)
			}
		}
	}
	for _, c := range []struct {
		name   string
		damage func(ts map[string]*torch.Tensor)
		want   string
		meta   func(meta map[string]string)
	}{
		{"an exploded moving average", explode, "ema.weights of magnitude up to", nil},
		{"an exploded moving average, no record", explode, "far beyond what training makes", func(meta map[string]string) { delete(meta, models.MetaMaxAbs) }},
		{"a hostile world size", func(map[string]*torch.Tensor) {}, `bad kakusan.world_size "-3"`, func(meta map[string]string) { meta[models.MetaWorld] = "-3" }},
		{"NaN optimizer state", func(ts map[string]*torch.Tensor) {
			for k, v := range ts {
				if strings.HasPrefix(k, models.OptimPrefix) {
					ts[k] = v.MulScalar(math.NaN())
					return
				}
			}
		}, "holds NaN or infinite values", nil},
		{"a moving-average tensor missing", func(ts map[string]*torch.Tensor) { delete(ts, models.EMAPrefix+"decoder.linear1.bias") }, `tensor "ema.decoder.linear1.bias" is missing`, nil},
		{"a stray tensor", func(ts map[string]*torch.Tensor) { ts["extra.weight"] = torch.Zeros([]int64{2}, torch.CPU) }, `unexpected tensor "extra.weight"`, nil},
		{"an optimizer tensor of no parameter", func(ts map[string]*torch.Tensor) {
			ts[models.OptimPrefix+"exp_avg.nothing"] = torch.Zeros([]int64{2}, torch.CPU)
		}, `optimizer tensor "optimizer.exp_avg.nothing" is of no parameter`, nil},
		{"a generator state of floats", func(ts map[string]*torch.Tensor) { ts[models.RNGPrefix+"cpu"] = torch.Zeros([]int64{2}, torch.CPU) }, `generator state "rng.cpu" is not bytes`, nil},
	} {
		damaged := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".safetensors")
		err := torch.Do(func() error {
			ts, meta, err := torch.LoadFile(path, torch.CPU)
			if err != nil {
				return err
			}
			c.damage(ts)
			if c.meta != nil {
				c.meta(meta)
			}
			return torch.SaveFile(damaged, ts, meta)
		})
		if err != nil {
			t.Fatal(err)
		}
		err = torch.Do(func() error {
			m, _, err := models.Load(damaged, torch.CPU, true)
			if m != nil {
				models.Free(m)
			}
			return err
		})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: sampling's load: %v, want %q", c.name, err, c.want)
		}
		err = torch.Do(func() error {
			ck, err := models.ReadCheckpoint(damaged, torch.CPU)
			if err != nil {
				return err
			}
			defer ck.Free()
			st, err := NewState(ck.Config, ck.Geometry, torch.CPU, ck)
			if err != nil {
				return err
			}
			defer st.Free()
			return st.Restore(ck)
		})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: a resume: %v, want %q", c.name, err, c.want)
		}
	}
}
