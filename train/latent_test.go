package train

import (
	"encoding/json"
	"fmt"
	"kakusan/internal/longtest"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"kakusan/datasets"
	"kakusan/diffusion"
	"kakusan/models"
	"kakusan/models/autoencoder"
	"kakusan/models/prompt"
	"kakusan/torch"
	"kakusan/torch/torchtest"
)

// ladder9Config is a small run of configs/mnist_<name>.yaml on 2,000 images.
func ladder9Config(t *testing.T, name string, sets ...string) *models.Config {
	t.Helper()
	base := []string{"data.subset=2000", "data.test_subset=256", "device=cpu", "train.batch_size=64", "train.log_every=10", "samples=10"}
	if name != "autoencoder" {
		base = append(base, "unet.width=16", "diffusion.sample_steps=5", "train.sample_every=100000")
	}
	if dir := os.Getenv("KAKUSAN_TEST_MNIST"); dir != "" {
		base = append(base, "data.dir="+dir)
	}
	c, err := models.LoadConfig("../configs/mnist_"+name+".yaml", append(base, sets...))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// trainLadder9 trains configs/mnist_<name>.yaml (small) into out and
// returns the run. Its config.yaml is the config as given: the measured
// constants are the model's, not the config's.
func trainLadder9(t *testing.T, name, out string, sets ...string) *Run {
	t.Helper()
	r, err := Train(ladder9Config(t, name, sets...), Options{Out: out})
	if err != nil {
		t.Fatal(err)
	}
	saved, err := models.LoadConfig(r.Path("config.yaml"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := models.Section[*diffusion.Config](saved, "diffusion"); d.LatentScale != 0 || d.StyleThresholds != nil || d.Vocabulary != nil || d.AutoencoderConfig != nil {
		t.Errorf("config.yaml was rewritten with what the model measured or recorded: %+v", d)
	}
	return r
}

// constants are what a run's checkpoint holds of its model's measured
// constants, once (the moving average's weights carry the same): the
// latent scale (0 when it has none) and the style thresholds (nil when it
// has none), and its autoencoder's architecture.
func constants(t *testing.T, run string) (scale float64, thresholds [][]float64, firstStage *autoencoder.Config) {
	t.Helper()
	torchtest.Run(t, func() {
		ck, err := models.ReadCheckpoint(run, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer ck.Free()
		for _, name := range []string{diffusion.LatentScaleName, diffusion.StyleThresholdsName} {
			w, ok := ck.Tensors[name]
			if !ok {
				continue
			}
			if _, ok := ck.Tensors[models.EMAPrefix+name]; ok {
				t.Errorf("%s: the moving average has a copy of its own (a constant is kept once)", name)
			}
			if avg := ck.Weights(true)[name]; avg == nil || !avg.AllClose(w, 0, 0) {
				t.Errorf("%s: the moving average's weights do not carry the model's", name)
			}
			v := torch.Values[float64](w.To(torch.Float64))
			if name == diffusion.LatentScaleName {
				scale = v[0]
				continue
			}
			for i := 0; i+4 <= len(v); i += 4 {
				thresholds = append(thresholds, v[i:i+4])
			}
		}
		firstStage = ck.FirstStage
	})
	return scale, thresholds, firstStage
}

// trainAutoencoder trains the KL autoencoder for two epochs of 2,000
// images; its reconstruction error must fall well below the blank image's.
func trainAutoencoder(t *testing.T, dir string, sets ...string) *Run {
	t.Helper()
	r, err := Train(ladder9Config(t, "autoencoder", append([]string{"train.epochs=2", "train.batch_size=32"}, sets...)...), Options{Out: filepath.Join(dir, "ae")})
	if err != nil {
		t.Fatal(err)
	}
	var mse []float64
	for _, m := range readMetricLines(t, r.Dir) {
		if v, ok := m["test_mse"].(float64); ok {
			mse = append(mse, v)
		}
	}
	// A blank reconstruction's error is the mean squared pixel, about 0.1 on MNIST.
	if len(mse) != 2 || mse[1] > 0.03 || mse[1] >= mse[0] {
		t.Errorf("reconstruction MSE by epoch %v: want it falling, below 0.03", mse)
	}
	if _, err := os.Stat(r.Path("samples/final.png")); err != nil {
		t.Errorf("no reconstruction grid: %v", err)
	}
	return r
}

// shared is one autoencoder for the step-9 tests, trained once per test
// binary (TestMain removes it).
var shared struct {
	once sync.Once
	dir  string
	run  *Run
}

// sharedAutoencoder is trainAutoencoder's run, made by the first test
// that asks.
func sharedAutoencoder(t *testing.T) *Run {
	t.Helper()
	shared.once.Do(func() {
		dir, err := os.MkdirTemp("", "kakusan-ae-")
		if err != nil {
			t.Fatal(err)
		}
		shared.dir = dir
		shared.run = trainAutoencoder(t, dir)
	})
	if shared.run == nil {
		t.Fatal("the shared autoencoder failed to train (see the first test that asked for it)")
	}
	return shared.run
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.dir != "" {
		os.RemoveAll(shared.dir)
	}
	os.Exit(code)
}

// Latent diffusion (ladder step 9): the U-Net trains on the autoencoder's
// latents with the autoencoder frozen and saved inside its checkpoints,
// its architecture in their metadata; the latent scale is 1/std of the
// training images' latents, measured and held by the model; the
// checkpoint samples without the autoencoder's own files.
func TestLongLatentDiffusion(t *testing.T) {
	longtest.Skip(t)
	dir := t.TempDir()
	ae := trainAutoencoder(t, dir) // its own: the test moves it away
	r := trainLadder9(t, "latent", filepath.Join(dir, "latent"), "train.max_steps=20", "diffusion.autoencoder="+ae.Dir)
	scale, _, firstStage := constants(t, r.Dir)
	if firstStage == nil || !slices.Equal(firstStage.Channels, []int64{16, 32, 64}) {
		t.Errorf("the checkpoint records the autoencoder as %+v", firstStage)
	}
	err := torch.Do(func() error {
		aeModel, _, err := models.Load(ae.Dir, torch.CPU, false)
		if err != nil {
			return err
		}
		defer models.Free(aeModel)
		// The scale, measured again: 1/std of the latent means of the 2,000 training images.
		set, err := datasets.Load("mnist", os.Getenv("KAKUSAN_TEST_MNIST"), "train", datasets.Options{})
		if err != nil {
			return err
		}
		set = set.Subset(2000)
		x := torch.FromSlice((&datasets.Loader{Set: set, Batch: set.N}).All()[0].Pixels, set.Shape(set.N))
		var z []float64
		torch.NoGrad(func() {
			mean, _ := aeModel.(interface {
				Encode(*torch.Tensor) (*torch.Tensor, *torch.Tensor)
			}).Encode(x)
			z = torch.Values[float64](mean.To(torch.Float64))
		})
		var s, sq float64
		for _, v := range z {
			s, sq = s+v, sq+v*v
		}
		n := float64(len(z))
		want := 1 / math.Sqrt(sq/n-(s/n)*(s/n))
		if math.Abs(scale-want) > 1e-4*want {
			t.Errorf("latent scale %g, want 1/std = %g", scale, want)
		}
		// Frozen: the checkpoint's first stage is the autoencoder's
		// weights, bit for bit, after 20 steps, once: the moving average
		// has no copy of its own (whichever weights a command uses, it is
		// this one, checked at load).
		ck, err := models.ReadCheckpoint(r.Dir, torch.CPU)
		if err != nil {
			return err
		}
		defer ck.Free()
		for name, w := range aeModel.Module().StateDict() {
			if got, ok := ck.Tensors[models.FirstStagePrefix+name]; !ok || !got.AllClose(w, 0, 0) {
				t.Fatalf("%s: missing or trained (present %v)", name, ok)
			}
			if _, ok := ck.Tensors[models.EMAPrefix+models.FirstStagePrefix+name]; ok {
				t.Errorf("%s: a second copy under the moving average's prefix", name)
			}
		}
		// A NaN in the autoencoder refuses the checkpoint, with the moving
		// average too (which once read its own copy).
		ts, meta, err := torch.LoadFile(ck.Path, torch.CPU)
		if err != nil {
			return err
		}
		ts[models.FirstStagePrefix+"quant_conv.bias"] = ts[models.FirstStagePrefix+"quant_conv.bias"].MulScalar(math.NaN())
		damaged := filepath.Join(dir, "damaged.safetensors")
		if err := torch.SaveFile(damaged, ts, meta); err != nil {
			return err
		}
		if m, _, err := models.Load(damaged, torch.CPU, true); err == nil || !strings.Contains(err.Error(), `"first_stage_model.quant_conv.bias" holds NaN`) {
			if m != nil {
				models.Free(m)
			}
			t.Errorf("a NaN in the autoencoder, sampled with the moving average: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// The checkpoint is whole: it samples with the autoencoder's run gone.
	if err := os.Rename(ae.Dir, ae.Dir+"-moved"); err != nil {
		t.Fatal(err)
	}
	err = torch.Do(func() error {
		m, ck, err := models.Load(r.Dir, torch.CPU, true)
		if err != nil {
			return err
		}
		defer models.Free(m)
		dm := m.(*diffusion.Model)
		if !slices.Equal(dm.Shape, []int64{4, 7, 7}) {
			t.Errorf("the model works on %v, want 4x7x7 latents", dm.Shape)
		}
		x, err := dm.Generate([]int{0, 1, 2}, []int64{3, 4, 5}, 1, models.GridSampling(ck.Config))
		if err != nil {
			return err
		}
		if !slices.Equal(x.Shape(), []int64{3, 1, 28, 28}) || !x.IsFinite().All() {
			t.Errorf("decoded samples %v, finite %v", x.Shape(), x.IsFinite().All())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// A resume needs no autoencoder files either: the model is built from
	// the checkpoint, and goes on with the scale it measured (the shipped
	// config's latent_scale is 0: measure); a config that fixes another
	// scale is refused by name.
	c := ladder9Config(t, "latent", "train.max_steps=30", "diffusion.autoencoder="+ae.Dir)
	if _, err := Train(c, Options{Resume: r.Dir}); err != nil {
		t.Fatalf("resume with the autoencoder's run gone: %v", err)
	}
	if again, _, _ := constants(t, r.Dir); again != scale {
		t.Errorf("after the resume the latent scale is %g, the run measured %g", again, scale)
	}
	c = ladder9Config(t, "latent", "train.max_steps=40", "diffusion.latent_scale=0.5", "diffusion.autoencoder="+ae.Dir)
	if _, err := Train(c, Options{Resume: r.Dir}); err == nil || !strings.Contains(err.Error(), "diffusion.latent_scale: the config says 0.5") {
		t.Errorf("resume with another latent scale: %v", err)
	}
	c = ladder9Config(t, "latent", "train.max_steps=40", "diffusion.autoencoder="+filepath.Join(dir, "other"))
	if _, err := Train(c, Options{Resume: r.Dir}); err == nil || !strings.Contains(err.Error(), "diffusion.autoencoder: ") || !strings.Contains(err.Error(), "the config now names "+filepath.Join(dir, "other")) {
		t.Errorf("resume with another autoencoder: %v", err)
	}
	// Training a new one needs the autoencoder: its absence, or a
	// checkpoint of another model, is an error naming the key.
	for path, want := range map[string]string{ae.Dir: "diffusion.autoencoder", r.Dir: "is a diffusion checkpoint"} {
		_, err := Train(ladder9Config(t, "latent", "train.max_steps=2", "diffusion.autoencoder="+path), Options{Out: filepath.Join(dir, "again")})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("diffusion.autoencoder=%s: error %v, want one containing %q", path, err, want)
		}
	}
	if err := os.Rename(ae.Dir+"-moved", ae.Dir); err != nil {
		t.Fatal(err)
	}
	// A U-Net too deep for 7x7 latents, or an architecture that is not the
	// autoencoder's, is refused by name before anything trains.
	for set, want := range map[string]string{
		"unet.levels=3": "unet.levels: 3 levels halve the model's 7x7 inputs below one pixel (at most 2)",
		"diffusion.autoencoder_config={channels: [8, 16], blocks: 1, latent_channels: 4, groups: 8, kl_weight: 0}": "diffusion.autoencoder_config: the config says",
	} {
		_, err := Train(ladder9Config(t, "latent", "train.max_steps=2", "diffusion.autoencoder="+ae.Dir, set), Options{Out: filepath.Join(dir, "again")})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: error %v, want one containing %q", set, err, want)
		}
	}
	for set, want := range map[string]string{
		"diffusion.clip_x0=clip":        "diffusion.clip_x0: the latent codec has no bounded range",
		"diffusion.latent_scale=1e-300": "diffusion.latent_scale: must be 0 (measure it) or between 1e-6 and 1e6",
	} {
		if _, err := models.LoadConfig("../configs/mnist_latent.yaml", []string{set}); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("--set %s: error %v, want one containing %q", set, err, want)
		}
	}
}

// Prompt conditioning (ladder step 9): the vocabulary comes from the
// data's class names, the style thresholds are the tertiles measured on
// the training images, and sampling takes style words.
func TestLongPromptDiffusion(t *testing.T) {
	longtest.Skip(t)
	dir := t.TempDir()
	ae := sharedAutoencoder(t)
	r := trainLadder9(t, "prompt", filepath.Join(dir, "prompt"), "train.max_steps=20", "diffusion.autoencoder="+ae.Dir)
	_, thresholds, _ := constants(t, r.Dir)
	if len(thresholds) != 10 {
		t.Fatalf("%d rows of style thresholds", len(thresholds))
	}
	// A vocabulary that does not name the data's classes in order is refused.
	swapped := `diffusion.vocabulary=["", one, zero, two, three, four, five, six, seven, eight, nine, thin, bold, upright, slanted]`
	if _, err := Train(ladder9Config(t, "prompt", "train.max_steps=2", "diffusion.autoencoder="+ae.Dir, swapped), Options{Out: filepath.Join(dir, "swapped")}); err == nil ||
		!strings.Contains(err.Error(), "does not name the data's classes") {
		t.Errorf("a vocabulary with two class words swapped: %v", err)
	}
	err := torch.Do(func() error {
		set, err := datasets.Load("mnist", os.Getenv("KAKUSAN_TEST_MNIST"), "train", datasets.Options{})
		if err != nil {
			return err
		}
		set = set.Subset(2000)
		ink, slant := prompt.Measure(torch.FromSlice((&datasets.Loader{Set: set, Batch: set.N}).All()[0].Pixels, set.Shape(set.N)))
		labels := make([]int64, set.N)
		for i, l := range set.Labels {
			labels[i] = int64(l)
		}
		want, err := prompt.Thresholds(torch.Values[float64](ink.To(torch.Float64)), torch.Values[float64](slant.To(torch.Float64)), labels, 10)
		if err != nil {
			return err
		}
		for c := range want {
			for i := range want[c] {
				if math.Abs(thresholds[c][i]-want[c][i]) > 1e-4*(1+want[c][i]) {
					return fmt.Errorf("style thresholds %v, want %v", thresholds, want)
				}
			}
		}
		m, ck, err := models.Load(r.Dir, torch.CPU, true)
		if err != nil {
			return err
		}
		defer models.Free(m)
		if v := models.Vocabulary(m); len(v) != 15 || v[8] != "seven" {
			t.Errorf("vocabulary %q", v)
		}
		dm := m.(*diffusion.Model)
		s := models.GridSampling(ck.Config)
		s.Prompt = "slanted bold"
		x, err := dm.Generate([]int{0, 1}, []int64{7, 1}, 1, s)
		if err != nil {
			return err
		}
		if !slices.Equal(x.Shape(), []int64{2, 1, 28, 28}) || !x.IsFinite().All() {
			t.Errorf("prompted samples %v", x.Shape())
		}
		for p, want := range map[string]string{"seven": "style words only", "purple": `unknown word "purple"`} {
			s.Prompt = p
			if err := dm.CheckSampling(s); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("prompt %q: %v, want an error containing %q", p, err, want)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// readMetricLines is every line of a run's metrics.jsonl as a map.
func readMetricLines(t *testing.T, dir string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("metrics.jsonl: %v", err)
		}
		out = append(out, m)
	}
	return out
}

// Two ranks of a prompted latent model train the same model bit for bit,
// frozen autoencoder included, even when rank 1's autoencoder files hold
// other weights (another seed): rank 0's first stage, latent scale and
// style thresholds reach every rank.
func TestLongDataParallelLatentPromptRanksAgree(t *testing.T) {
	longtest.Skip(t)
	dir := t.TempDir()
	ae0, ae1 := sharedAutoencoder(t), trainAutoencoder(t, dir, "seed=7")
	j := distJob{config: "../configs/mnist_prompt.yaml", out: filepath.Join(dir, "run"), dump: dir,
		sets:  append([]string{"train.max_steps=4", "train.batch_size=16", "unet.width=16", "diffusion.autoencoder=" + ae0.Dir}, distSmall...),
		rank1: []string{"diffusion.autoencoder=" + ae1.Dir}}
	distRun(t, j, 2)
	a, _ := readDump(t, filepath.Join(dir, "rank-0.safetensors"))
	b, _ := readDump(t, filepath.Join(dir, "rank-1.safetensors"))
	if _, ok := a[models.FirstStagePrefix+"quant_conv.weight"]; !ok {
		t.Fatal("the dump holds no first stage")
	}
	compare(t, a, b, 0)
}
