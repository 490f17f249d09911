package models

import (
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
