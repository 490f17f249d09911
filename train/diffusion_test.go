package train

import (
	"kakusan/internal/longtest"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kakusan/diffusion"
	"kakusan/models"
	"kakusan/torch"
)

func diffusionConfig(t *testing.T, sets ...string) *models.Config {
	t.Helper()
	base := []string{"data.subset=2000", "data.test_subset=256", "device=cpu", "unet.width=8", "train.batch_size=64",
		"train.log_every=10", "samples=10", "diffusion.sample_steps=5", "train.sample_every=100000"}
	if dir := os.Getenv("KAKUSAN_TEST_MNIST"); dir != "" { // a machine without Go's module cache (the GPU check)
		base = append(base, "data.dir="+dir)
	}
	c, err := models.LoadConfig("../configs/mnist_cond.yaml", append(base, sets...))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestLongConditionalDiffusionLearns(t *testing.T) {
	longtest.Skip(t)
	// 217 steps (7 epochs of 31) of a width-8 U-Net on 2,000 images. The
	// noise-prediction MSE starts near 1 (the noise's variance); it must end
	// below 0.12 and below a fifth of where it started.
	learns(t, diffusionConfig(t, "train.epochs=7"))
}

// The same under bf16 autocast with the channels-last layout: the same bar,
// and the checkpoint's weights are float32.
func TestLongBF16ChannelsLastDiffusionLearns(t *testing.T) {
	longtest.Skip(t)
	r := learns(t, diffusionConfig(t, "train.epochs=7", "train.precision=bf16", "unet.channels_last=true", "diffusion.sample_precision=bf16"))
	err := torch.Do(func() error {
		m, _, err := models.Load(r.Dir, torch.CPU, false)
		if err != nil {
			return err
		}
		defer models.Free(m)
		for _, p := range m.Module().Params() {
			if p.T.DType() != torch.Float32 {
				t.Errorf("%s is %v in the checkpoint, want float32", p.Name, p.T.DType())
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func learns(t *testing.T, c *models.Config) *Run {
	t.Helper()
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
	return r
}

func TestDiffusionSamplingIsDeterministicAndChecked(t *testing.T) {
	c := diffusionConfig(t, "train.max_steps=3", "train.ema_decay=0")
	err := torch.Do(func() error {
		geo, err := models.DataGeometry(c)
		if err != nil {
			return err
		}
		m, err := models.New(c, geo, torch.CPU)
		if err != nil {
			return err
		}
		defer models.Free(m)
		dm := m.(*diffusion.Model)
		ddim := diffusion.Sampling{Sampler: "ddim", Steps: 4, Guidance: 3}
		a, err := dm.Generate([]int{0, 1, 2}, []int64{1, 5, 9}, 4, ddim)
		if err != nil {
			return err
		}
		b, _ := dm.Generate([]int{0, 1, 2}, []int64{1, 5, 9}, 4, ddim)
		if !a.AllClose(b, 0, 0) {
			t.Error("the same job gave different images")
		}
		// Image 1 alone, in another batch, is the same image: its noise is its
		// own; only float32 rounding, which varies with the batch's size, may differ.
		one, _ := dm.Generate([]int{1}, []int64{5}, 4, ddim)
		if d := one.Sub(a.Narrow(0, 1, 1)).Abs().Max().Item(); d > 1e-3 {
			t.Errorf("an image depends on its batch: it moved by up to %g", d)
		}
		if s := a.Shape(); s[0] != 3 || s[1] != int64(geo.C) || s[2] != int64(geo.H) || s[3] != int64(geo.W) {
			t.Errorf("shape %v for geometry %+v", s, geo)
		}
		for _, bad := range []struct {
			label int64
			s     diffusion.Sampling
			want  string
		}{
			{int64(geo.Classes), ddim, "label 10 out of range"},
			{0, diffusion.Sampling{Sampler: "ddim", Steps: 0, Guidance: 3}, "steps must be between 1 and 1000"},
			{0, diffusion.Sampling{Sampler: "ddim", Steps: 4, Eta: 3, Guidance: 3}, "eta"},
			{0, diffusion.Sampling{Sampler: "ddim", Steps: 4, Eta: math.NaN(), Guidance: 3}, "eta"},
			{0, diffusion.Sampling{Sampler: "ddim", Steps: 4, Guidance: math.NaN()}, "guidance"},
			{0, diffusion.Sampling{Sampler: "lms", Steps: 4}, `unknown sampler "lms" (known: ddim, ddpm, dpm++2m, euler, heun)`},
		} {
			if _, err := dm.Generate([]int{0}, []int64{bad.label}, 1, bad.s); err == nil || !strings.Contains(err.Error(), bad.want) {
				t.Errorf("job %+v label %d: want %q, got %v", bad.s, bad.label, bad.want, err)
			}
		}
		ddpm, err := dm.Generate([]int{0}, []int64{2}, 1, diffusion.Sampling{Sampler: "ddpm", Guidance: 1})
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
	uncond := diffusionConfig(t, "train.max_steps=4", "diffusion.conditional=false")
	if _, err := Train(uncond, Options{Resume: r.Dir}); err == nil || !strings.Contains(err.Error(), `unexpected tensor "label_emb.weight"`) {
		t.Errorf("conditional checkpoint into an unconditional model: %v", err)
	}
	v := neuralConfig(t, "vae", "train.max_steps=4")
	if _, err := Train(v, Options{Resume: r.Dir}); err == nil || !strings.Contains(err.Error(), `a "diffusion" checkpoint, the config trains "vae"`) {
		t.Errorf("kind mismatch: %v", err)
	}
	for set, want := range map[string]string{
		"diffusion.guidance=-1":          "diffusion.guidance: must be in [0, 50], got -1",
		"diffusion.guidance=.nan":        "diffusion.guidance: must be in [0, 50], got NaN",
		"diffusion.sample_steps=0":       "diffusion.sampler: sampler ddim: steps must be between 1 and 1000, got 0",
		"diffusion.prediction=x1":        `diffusion.prediction: unknown prediction "x1"`,
		"diffusion.sampler=lms":          `diffusion.sampler: unknown sampler "lms" (known: ddim, ddpm, dpm++2m, euler, heun)`,
		"diffusion.spacing=even":         `unknown spacing "even"`,
		"diffusion.codec=jpeg":           `diffusion.codec: unknown codec "jpeg" (known: centered, latent, pixels)`,
		"unet.norm=layer":                "unet.norm: must be batch or group",
		"diffusion.schedule=sqrt":        `diffusion.schedule: unknown schedule "sqrt" (known: cosine, linear)`,
		"diffusion.beta_end=2":           "betas must satisfy",
		"diffusion.timesteps=1000000000": "diffusion.schedule: timesteps must be between 1 and 100000",
		"train.ema_decay=1":              "train.ema_decay",
		"diffusion.cond_drop_mode=x":     "diffusion.cond_drop_mode",
		"unet=null":                      "unet: empty section",
		"train=null":                     "train: empty section",
		"vae.hidden=3":                   `vae: section given for model "diffusion"; it belongs to model vae`,
		"diffusion.codec=latent":         "diffusion.autoencoder: codec latent needs the trained autoencoder's checkpoint",
		"diffusion.latent_scale=2":       "autoencoder, autoencoder_config and latent_scale are for codec latent",
		"diffusion.conditioning=text":    "diffusion.conditioning: must be label or prompt",
		"diffusion.word_drop=2":          "diffusion.word_drop: must be in [0, 1]",
		"unet.transformer_from=5":        "unet.transformer_from: must be a level from 0 to levels",
	} {
		if _, err := models.LoadConfig("../configs/mnist_cond.yaml", []string{set}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: %v", set, err)
		}
	}
}

func TestUnconditionalDiffusionTrainsAndSamples(t *testing.T) {
	c := diffusionConfig(t, "diffusion.conditional=false", "train.max_steps=10", "samples=4")
	r, err := Train(c, Options{Out: filepath.Join(t.TempDir(), "uncond")})
	if err != nil {
		t.Fatal(err)
	}
	err = torch.Do(func() error {
		m, _, err := models.Load(r.Dir, torch.CPU, true)
		if err != nil {
			return err
		}
		defer models.Free(m)
		ck, err := models.ReadCheckpoint(r.Dir, torch.CPU)
		if err != nil {
			return err
		}
		if _, ok := ck.Tensors["label_emb.weight"]; ok {
			t.Error("an unconditional model saved a label embedding")
		}
		x, err := m.(*diffusion.Model).Generate([]int{0, 1}, nil, 1, diffusion.Sampling{Sampler: "ddim", Steps: 3, Guidance: 3})
		if err != nil || x.Size(0) != 2 {
			t.Errorf("unconditional sampling: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestMinSNRLossWeighs checks the min-SNR loss against the plain one on the
// same draws: with γ above every SNR of the schedule (about 1e4 at t = 1)
// the ε weights are all 1 and the losses agree; with γ = 5 each image's
// error is weighed by min(SNR_t, 5)/SNR_t ≤ 1 (below 1 for t up to about
// 130 of 1000), so the loss is smaller.
func TestMinSNRLossWeighs(t *testing.T) {
	losses := map[string]float64{}
	for _, gamma := range []string{"0", "1e5", "5"} {
		c := diffusionConfig(t, "diffusion.min_snr_gamma="+gamma)
		err := torch.Do(func() error {
			torch.ManualSeed(3)
			m, err := models.New(c, mnist, torch.CPU)
			if err != nil {
				return err
			}
			defer models.Free(m)
			x := torch.Rand([]int64{32, 1, 28, 28})
			y := torch.RandInt(0, 10, []int64{32})
			losses[gamma] = m.Loss(x, y).Item()
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if math.Abs(losses["1e5"]-losses["0"]) > 1e-6*losses["0"] {
		t.Errorf("γ = 1e5: loss %.8g, want the plain %.8g", losses["1e5"], losses["0"])
	}
	if !(losses["5"] < (1-1e-3)*losses["0"]) {
		t.Errorf("γ = 5: loss %.6g, not below the plain %.6g", losses["5"], losses["0"])
	}
}
