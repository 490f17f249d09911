package train

import (
	"bufio"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
	if c.GMM.Components != 3 || c.Seed != 9 || c.GMM.Init != "kmeans++" || c.GMM.MaxIter != 200 || c.Name != "cfg" || c.Data.name(1) != "b" {
		t.Errorf("resolved %+v %+v", c, c.GMM)
	}
	// The shipped configs all load.
	for _, f := range []string{"normal_height", "mvn_height_weight", "gmm_old_faithful"} {
		if _, err := LoadConfig("../configs/"+f+".yaml", nil); err != nil {
			t.Error(err)
		}
	}
}

// chdirRoot runs the test from the repository root, where configs name
// their data files.
func chdirRoot(t *testing.T) {
	t.Helper()
	wd, _ := os.Getwd()
	t.Chdir(filepath.Dir(wd))
}

func TestTrainWritesARunFolder(t *testing.T) {
	chdirRoot(t)
	for _, name := range []string{"normal_height", "mvn_height_weight", "gmm_old_faithful"} {
		c, err := LoadConfig("configs/"+name+".yaml", []string{"samples=300"})
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(t.TempDir(), name)
		var log strings.Builder
		r, err := Train(c, Options{Out: out, Log: &log})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		// params.json parses and checks out.
		p, err := gaussian.LoadParams(r.Path("params.json"))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if p.Model != c.Model {
			t.Errorf("%s: params for %q", name, p.Model)
		}
		// The resolved config reloads to the same model.
		again, err := LoadConfig(r.Path("config.yaml"), nil)
		if err != nil || again.Model != c.Model || again.Samples != 300 {
			t.Errorf("%s: resolved config: %v %+v", name, err, again)
		}
		// Every metrics line is JSON with a step; EM's never loses likelihood.
		f, _ := os.Open(r.Path("metrics.jsonl"))
		s := bufio.NewScanner(f)
		prev, lines := -1e300, 0
		for s.Scan() {
			var m map[string]any
			if err := json.Unmarshal(s.Bytes(), &m); err != nil {
				t.Fatalf("%s: metrics line %q: %v", name, s.Text(), err)
			}
			if _, ok := m["step"]; !ok {
				t.Errorf("%s: metrics line without step: %s", name, s.Text())
			}
			ll := m["avg_log_likelihood"].(float64)
			if ll < prev-1e-12 {
				t.Errorf("%s: log-likelihood fell %v -> %v", name, prev, ll)
			}
			prev = ll
			lines++
		}
		f.Close()
		if lines == 0 || (name == "gmm_old_faithful" && lines < 3) {
			t.Errorf("%s: %d metrics lines", name, lines)
		}
		pngs := []string{"fit.png", "samples.png"}
		if name == "gmm_old_faithful" {
			pngs = append(pngs, "log_likelihood.png")
		}
		for _, img := range pngs {
			f, err := os.Open(r.Path(img))
			if err != nil {
				t.Fatal(err)
			}
			if cfg, err := png.DecodeConfig(f); err != nil || cfg.Width < 300 {
				t.Errorf("%s/%s: %v %+v", name, img, err, cfg)
			}
			f.Close()
		}
		if name == "normal_height" && !strings.Contains(log.String(), "mu 172.7025, sigma 4.8302") {
			t.Errorf("log: %s", log.String())
		}
	}
}

func TestRunFoldersAreNeverOverwritten(t *testing.T) {
	chdirRoot(t)
	t.Chdir(t.TempDir())
	os.WriteFile("d.txt", []byte("1\n2\n4\n"), 0o644)
	os.WriteFile("c.yaml", []byte("model: normal\ndata: {path: d.txt}\nsamples: 10\n"), 0o644)
	var dirs []string
	for range 3 {
		c, err := LoadConfig("c.yaml", nil)
		if err != nil {
			t.Fatal(err)
		}
		r, err := Train(c, Options{})
		if err != nil {
			t.Fatal(err)
		}
		dirs = append(dirs, r.Dir)
	}
	if want := []string{"runs/c", "runs/c-2", "runs/c-3"}; strings.Join(dirs, " ") != strings.Join(want, " ") {
		t.Errorf("run folders %v, want %v", dirs, want)
	}
	c, _ := LoadConfig("c.yaml", nil)
	if _, err := Train(c, Options{Out: "runs/c"}); err == nil || !strings.Contains(err.Error(), "already holds a run") {
		t.Errorf("explicit existing folder: %v", err)
	}
	if _, err := Train(c, Options{Out: "runs/c", Overwrite: true}); err != nil {
		t.Errorf("--overwrite: %v", err)
	}
	// Bad data is an error naming the file and line.
	os.WriteFile("d.txt", []byte("1\nabc\n"), 0o644)
	c, _ = LoadConfig("c.yaml", nil)
	if _, err := Train(c, Options{}); err == nil || !strings.Contains(err.Error(), "d.txt:2") {
		t.Errorf("bad data: %v", err)
	}
}
