package models

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"kakusan/diffusion"
	"kakusan/models/gaussian"
)

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "cfg.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestConfigErrorsNameFileLineAndKey(t *testing.T) {
	cases := []struct {
		name, body string
		sets       []string
		want       []string
	}{
		{"unknown key", "model: gmm\ndata:\n  path: x\n  colour: red\n", nil, []string{"cfg.yaml:4: data: unknown key \"colour\""}},
		{"unknown top key", "model: normal\nepochs: 3\ndata: {path: x}\n", nil, []string{"cfg.yaml:2: unknown key \"epochs\""}},
		{"wrong type", "model: gmm\ndata: {path: x}\ngmm:\n  components: two\n", nil, []string{"cfg.yaml:4: gmm.components: expected an integer, got str \"two\""}},
		{"out of range", "model: gmm\ndata: {path: x}\ngmm:\n  components: 0\n", nil, []string{"cfg.yaml: gmm.components: must be between 1 and 100, got 0"}},
		{"unknown model", "model: gan\ndata: {path: x}\n", nil, []string{"model: unknown model \"gan\""}},
		{"missing model", "data: {path: x}\n", nil, []string{"model: missing"}},
		{"missing data", "model: normal\n", nil, []string{"data.path: missing"}},
		{"section for another model", "model: normal\ndata: {path: x}\ngmm: {components: 2}\n", nil, []string{"gmm: section given for model \"normal\""}},
		{"book without means", "model: gmm\ndata: {path: x}\ngmm: {init: book, components: 3}\n", nil, []string{"gmm.init_means: init: book needs one mean per component (3), got 0"}},
		{"bad init", "model: gmm\ndata: {path: x}\ngmm: {init: random}\n", nil, []string{"gmm.init: unknown initialisation \"random\""}},
		{"not yaml", "model: [unclosed\n", nil, []string{"cfg.yaml:"}},
		{"set wrong type", "model: gmm\ndata: {path: x}\n", []string{"gmm.tol=small"}, []string{"--set gmm.tol=small: gmm.tol: expected a number"}},
		{"set unknown key", "model: gmm\ndata: {path: x}\n", []string{"gmm.k=3"}, []string{"--set gmm.k=3: gmm: unknown key \"k\""}},
		{"set without =", "model: gmm\ndata: {path: x}\n", []string{"gmm.k"}, []string{"want key=value"}},
	}
	for _, c := range cases {
		_, err := LoadConfig(writeConfig(t, c.body), c.sets)
		if err == nil {
			t.Errorf("%s: no error", c.name)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q does not contain %q", c.name, err, w)
			}
		}
	}
}

func TestConfigDefaultsAndOverrides(t *testing.T) {
	c, err := LoadConfig(writeConfig(t, "model: gmm\ndata: {path: d.txt}\n"), []string{"gmm.components=3", "seed=9", "data.names=[a, b]"})
	if err != nil {
		t.Fatal(err)
	}
	if Section[*gaussian.EMConfig](c, "gmm").K != 3 || c.Seed != 9 || Section[*gaussian.EMConfig](c, "gmm").Init != "kmeans++" || Section[*gaussian.EMConfig](c, "gmm").MaxIter != 200 || c.Name != "cfg" || c.Data.Name(1) != "b" {
		t.Errorf("resolved %+v", c)
	}
	// The shipped configs all load.
	for _, f := range []string{"normal_height", "mvn_height_weight", "gmm_old_faithful"} {
		if _, err := LoadConfig("../configs/"+f+".yaml", nil); err != nil {
			t.Error(err)
		}
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

func TestHostileConfigs(t *testing.T) {
	body := "model: diffusion\ndata: {dataset: mnist}\n"
	for _, c := range []struct {
		name string
		body string
		sets []string
		want string
	}{
		{"empty --set value", body, []string{"seed="}, `--set "seed=": want key=value`},
		{"newline in --set", body, []string{"seed=1\nmodel: vae"}, "a one-line value"},
		{"key injection", body, []string{"train: {epochs: 1}\nx=1"}, "a one-line value"},
		{"null section", body + "unet:\n", nil, "unet: empty section"},
		{"null train", body + "train: null\n", nil, "train: empty section"},
		{"null by --set", body, []string{"diffusion=null"}, "diffusion: empty section"},
		{"huge T", body + "diffusion: {timesteps: 1000000000}\n", nil, "timesteps must be between 1 and 100000"},
		{"NaN guidance", body + "diffusion: {guidance: .nan}\n", nil, "guidance: must be in [0, 50], got NaN"},
		{"NaN lr", body + "optimizer: {lr: .nan}\n", nil, "optimizer.lr: must be in (0, 10]"},
		{"Inf clip", body + "train: {grad_clip: .inf}\n", nil, "train.grad_clip: must be finite and at least 0, got +Inf"},
		{"fraction for an integer", body + "train:\n  batch_size: 32.9\n", nil, "cfg.yaml:4: train.batch_size: expected an integer, got float \"32.9\""},
		{"fraction by --set", body, []string{"train.max_steps=4.7"}, "train.max_steps: expected an integer, got float \"4.7\""},
		{"escaping name", body, []string{"name=../../x"}, "name: \"../../x\" cannot name a folder"},
		{"huge epochs", body + "train: {epochs: 2000000000}\n", nil, "train.epochs: must be between 1 and 1000000"},
		{"bad precision", body + "train: {precision: fp8}\n", nil, `train.precision: unknown precision "fp8"`},
		{"bad size", body, []string{"data.size=3"}, "--set data.size=3: data.size: must be between 4 and 1024"},
		// A value a --set gave is blamed on it, the file's on the file.
		{"bad by --set beside the file's", body + "train: {epochs: 0}\n", []string{"unet.width=0"}, "cfg.yaml: train.epochs: must be between 1 and 1000000 (or set train.max_steps), got 0; --set unet.width=0: unet.width: must be"},
		{"bad section by --set", body, []string{"diffusion.guidance=99"}, "--set diffusion.guidance=99: diffusion.guidance: must be in [0, 50]"},
		// Typed settings parse where they are read, naming the line and key.
		{"bad spacing", body + "diffusion:\n  sampler: ddim\n  spacing: even\n", nil, `cfg.yaml:5: diffusion.spacing: unknown spacing "even" (known: karras, leading, linspace, trailing)`},
		{"bad clip mode", body + "diffusion: {clip_x0: clamp}\n", nil, `cfg.yaml:3: diffusion.clip_x0: unknown mode "clamp" (known: none, clip, dynamic)`},
		{"bad prediction by --set", body, []string{"diffusion.prediction=epsilon"}, `--set diffusion.prediction=epsilon: diffusion.prediction: unknown prediction "epsilon"`},
		{"bad sample precision", body + "diffusion: {sample_precision: fp16}\n", nil, `cfg.yaml:3: diffusion.sample_precision: unknown precision "fp16"`},
		{"three noise levels", body + "diffusion:\n  guidance_interval: [1, 2, 3]\n", nil, "cfg.yaml:4: diffusion.guidance_interval: want two noise levels [lo, hi], got 3 values"},
		{"unordered noise levels", body, []string{"diffusion.guidance_interval=[5, 1]"}, "diffusion.guidance_interval: want [lo, hi] with 0 <= lo < hi"},
		{"other model's section", body + "gmm: {components: 2}\n", nil, `gmm: section given for model "diffusion"; it belongs to model gmm`},
	} {
		_, err := ParseConfig("cfg.yaml", []byte(c.body), c.sets)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: want %q, got %v", c.name, c.want, err)
		}
	}
	// A config file must be a regular file of bounded size: a FIFO is
	// refused without waiting for a writer, /dev/zero without reading it.
	fifo := filepath.Join(t.TempDir(), "c.yaml")
	if err := syscall.Mkfifo(fifo, 0o644); err == nil {
		if _, err := LoadConfig(fifo, nil); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("FIFO: %v", err)
		}
	}
	if _, err := LoadConfig("/dev/zero", nil); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("/dev/zero: %v", err)
	}
}

// FuzzParseConfig feeds the config loader arbitrary YAML and --set
// overrides: it may refuse them, never panic.
func FuzzParseConfig(f *testing.F) {
	for _, name := range []string{"mnist_cond", "mnist_vae", "gmm_old_faithful", "mnist_classifier"} {
		b, err := os.ReadFile("../configs/" + name + ".yaml")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "train.epochs=2")
	}
	f.Add([]byte("model: diffusion\nunet: ~\n"), "unet.width=-1")
	f.Add([]byte("model: gmm\ngmm: [1, 2]\n"), "gmm.init_means=[[1,2],[3]]")
	f.Add([]byte("&a [*a]"), "x.y=z")
	f.Fuzz(func(t *testing.T, b []byte, set string) {
		c, err := ParseConfig("fuzz.yaml", b, []string{set})
		if err == nil {
			if _, err := ParseConfig("again.yaml", c.Marshal(), nil); err != nil {
				t.Errorf("a resolved config does not load again: %v\n%s", err, c.Marshal())
			}
		}
	})
}

// A typed setting left null (spacing: ~) is not given: it keeps its
// default.
func TestNullTypedSetting(t *testing.T) {
	c, err := ParseConfig("cfg.yaml", []byte("model: diffusion\ndiffusion: {spacing: ~, clip_x0: null}\n"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if d := Section[*diffusion.Config](c, "diffusion"); d.Spacing != diffusion.Leading || d.ClipX0 != diffusion.None {
		t.Errorf("spacing %q, clip_x0 %q", d.Spacing, d.ClipX0)
	}
}

// One bound a key: samples of a neural model is refused with the grid's
// bound alone, not with the classical fits' too.
func TestSamplesHasOneBound(t *testing.T) {
	_, err := LoadConfig("../configs/mnist_vae.yaml", []string{"samples=100000000"})
	if err == nil || !strings.Contains(err.Error(), "a neural model's grid holds at most 1024 images, got 100000000") ||
		strings.Contains(err.Error(), "between 1 and 10000000") {
		t.Errorf("samples=1e8: %v", err)
	}
	_, err = LoadConfig("../configs/normal_height.yaml", []string{"samples=100000000"})
	if err == nil || !strings.Contains(err.Error(), "must be between 1 and 10000000") {
		t.Errorf("a classical fit's samples=1e8: %v", err)
	}
}

// Keys that would be silently ignored are refused: train keys for a
// classical fit, a judge without evaluations.
func TestIgnoredKeysAreRefused(t *testing.T) {
	for _, c := range []struct {
		config string
		sets   []string
		want   string
	}{
		{"gmm_old_faithful", []string{"train.accumulate=7"}, "train: the classical models are fitted in one go"},
		{"gmm_old_faithful", []string{"train.init_from=runs/x"}, "train: the classical models are fitted in one go"},
		{"mnist_classifier", []string{"train.eval_judge=runs/mnist_classifier"}, "train.eval_judge: is set but train.eval_every is 0"},
	} {
		if _, err := LoadConfig("../configs/"+c.config+".yaml", c.sets); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: %v, want %q", c.config, c.sets, err, c.want)
		}
	}
}
