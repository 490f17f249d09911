package train

import (
	"bufio"
	"encoding/json"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"kakusan/models"
	"kakusan/models/gaussian"
)

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
		c, err := models.LoadConfig("configs/"+name+".yaml", []string{"samples=300"})
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
		again, err := models.LoadConfig(r.Path("config.yaml"), nil)
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
		c, err := models.LoadConfig("c.yaml", nil)
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
	c, _ := models.LoadConfig("c.yaml", nil)
	if _, err := Train(c, Options{Out: "runs/c"}); err == nil || !strings.Contains(err.Error(), "already holds a run") {
		t.Errorf("explicit existing folder: %v", err)
	}
	if _, err := Train(c, Options{Out: "runs/c", Overwrite: true}); err != nil {
		t.Errorf("--overwrite: %v", err)
	}
	// Bad data is an error naming the file and line.
	os.WriteFile("d.txt", []byte("1\nabc\n"), 0o644)
	c, _ = models.LoadConfig("c.yaml", nil)
	if _, err := Train(c, Options{}); err == nil || !strings.Contains(err.Error(), "d.txt:2") {
		t.Errorf("bad data: %v", err)
	}
}
