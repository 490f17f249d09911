package train

import (
	"path/filepath"
	"strings"
	"testing"

	"kakusan/torch"
)

func diffusionConfig(t *testing.T, sets ...string) *Config {
	t.Helper()
	base := []string{"data.subset=2000", "data.test_subset=256", "device=cpu", "unet.width=8", "train.batch_size=64",
		"train.log_every=10", "samples=10", "diffusion.sample_steps=5", "train.sample_every=100000"}
	c, err := LoadConfig("../configs/mnist_cond.yaml", append(base, sets...))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestConditionalDiffusionLearns(t *testing.T) {
	// 217 steps (7 epochs of 31) of a width-8 U-Net on 2,000 images. The
	// noise-prediction MSE starts near 1 (the noise's variance); it must end
	// below 0.12 and below a fifth of where it started.
	c := diffusionConfig(t, "train.epochs=7")
	r, err := Train(c, Options{Out: filepath.Join(t.TempDir(), "cond")})
	if err != nil {
		t.Fatal(err)
	}
	ms := readMetrics(t, r.Dir)
	var losses []float64
	for _, m := range ms {
		if m.Loss != nil {
			losses = append(losses, *m.Loss)
		}
	}
	first, last := losses[0], losses[len(losses)-1]
	if last > 0.12 || last > first/5 {
		t.Errorf("training loss %.4f -> %.4f: want below 0.12 and a fifth of the start", first, last)
	}
	if tl := testLosses(ms); tl[len(tl)-1] > 0.15 {
		t.Errorf("test loss by epoch %v", tl)
	}
}

func TestDiffusionSamplingIsDeterministicAndChecked(t *testing.T) {
	c := diffusionConfig(t, "train.max_steps=3", "train.ema_decay=0")
	err := torch.Do(func() error {
		m, err := NewModel(c, torch.CPU)
		if err != nil {
			return err
		}
		defer m.Module().Free()
		dm := m.(*DiffusionModel)
		job := SampleJob{Images: []int{0, 1, 2}, Labels: []int64{1, 5, 9}, Seed: 4, Sampler: "ddim", Steps: 4, Guidance: 3}
		a, err := dm.Generate(job)
		if err != nil {
			return err
		}
		b, _ := dm.Generate(job)
		if !a.AllClose(b, 0, 0) {
			t.Error("the same job gave different images")
		}
		// Image 1 alone, in another batch, is the same image: its noise is its
		// own; only float32 rounding, which varies with the batch's size, may differ.
		one, _ := dm.Generate(SampleJob{Images: []int{1}, Labels: []int64{5}, Seed: 4, Sampler: "ddim", Steps: 4, Guidance: 3})
		if d := one.Sub(a.Narrow(0, 1, 1)).Abs().Max().Item(); d > 1e-3 {
			t.Errorf("an image depends on its batch: it moved by up to %g", d)
		}
		if s := a.Shape(); s[0] != 3 || s[1] != 1 || s[2] != 28 || s[3] != 28 {
			t.Errorf("shape %v", s)
		}
		for _, bad := range []SampleJob{
			{Images: []int{0}, Labels: []int64{10}, Sampler: "ddim", Steps: 4, Guidance: 3},
			{Images: []int{0}, Labels: []int64{0}, Sampler: "ddim", Steps: 0, Guidance: 3},
			{Images: []int{0}, Labels: []int64{0}, Sampler: "ddim", Steps: 4, Eta: 3},
			{Images: []int{0}, Labels: []int64{0}, Sampler: "euler", Steps: 4},
		} {
			if _, err := dm.Generate(bad); err == nil {
				t.Errorf("job %+v accepted", bad)
			}
		}
		ddpm, err := dm.Generate(SampleJob{Images: []int{0}, Labels: []int64{2}, Seed: 1, Sampler: "ddpm", Guidance: 1})
		if err != nil || ddpm.Size(0) != 1 {
			t.Errorf("ddpm: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestDiffusionCheckpointMismatchesAreNamed(t *testing.T) {
	dir := t.TempDir()
	c := diffusionConfig(t, "train.max_steps=2")
	r, err := Train(c, Options{Out: filepath.Join(dir, "d")})
	if err != nil {
		t.Fatal(err)
	}
	wide := diffusionConfig(t, "train.max_steps=4", "unet.width=16")
	if _, err := Train(wide, Options{Resume: r.Dir}); err == nil || !strings.Contains(err.Error(), `tensor "bot1.convs.0.bias" has shape [32], the model wants [64]`) {
		t.Errorf("width mismatch: %v", err)
	}
	uncond := diffusionConfig(t, "train.max_steps=4", "unet.classes=0")
	if _, err := Train(uncond, Options{Resume: r.Dir}); err == nil || !strings.Contains(err.Error(), `unexpected tensor "label_emb.weight"`) {
		t.Errorf("conditional checkpoint into an unconditional model: %v", err)
	}
	v := neuralConfig(t, "vae", "train.max_steps=4")
	if _, err := Train(v, Options{Resume: r.Dir}); err == nil || !strings.Contains(err.Error(), `a "diffusion" checkpoint, the config trains "vae"`) {
		t.Errorf("kind mismatch: %v", err)
	}
	for set, want := range map[string]string{
		"diffusion.guidance=-1":      "diffusion.guidance",
		"diffusion.sample_steps=0":   "diffusion.sample_steps",
		"diffusion.prediction=x0":    "diffusion.prediction",
		"unet.norm=layer":            "unet: norm must be batch or group",
		"diffusion.schedule=sqrt":    "schedule must be linear or cosine",
		"diffusion.beta_end=2":       "betas must satisfy",
		"train.ema_decay=1":          "train.ema_decay",
		"diffusion.cond_drop_mode=x": "diffusion.cond_drop_mode",
	} {
		if _, err := LoadConfig("../configs/mnist_cond.yaml", []string{set}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: %v", set, err)
		}
	}
}

func TestUnconditionalDiffusionTrainsAndSamples(t *testing.T) {
	c := diffusionConfig(t, "unet.classes=0", "train.max_steps=10", "samples=4")
	r, err := Train(c, Options{Out: filepath.Join(t.TempDir(), "uncond")})
	if err != nil {
		t.Fatal(err)
	}
	err = torch.Do(func() error {
		ck, err := LoadCheckpoint(r.Dir, torch.CPU)
		if err != nil {
			return err
		}
		if _, ok := ck.Tensors["label_emb.weight"]; ok {
			t.Error("an unconditional model saved a label embedding")
		}
		m, _ := NewModel(c, torch.CPU)
		defer m.Module().Free()
		if err := m.Module().Load(ck.Tensors, optimPrefix, "rng."); err != nil {
			return err
		}
		x, err := m.(*DiffusionModel).Generate(SampleJob{Images: []int{0, 1}, Labels: []int64{7, 7}, Seed: 1, Sampler: "ddim", Steps: 3, Guidance: 3})
		if err != nil || x.Size(0) != 2 {
			t.Errorf("unconditional sampling: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestShippedConfigsLoad(t *testing.T) {
	files, _ := filepath.Glob("../configs/*.yaml")
	if len(files) < 8 {
		t.Fatalf("only %d configs", len(files))
	}
	for _, f := range files {
		if _, err := LoadConfig(f, nil); err != nil {
			t.Error(err)
		}
	}
}
