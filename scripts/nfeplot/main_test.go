package main

import (
	"bytes"
	"fmt"
	"image/png"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// evalJSON is an eval.json as bin/eval --checkpoint writes it, cut to the
// keys nfeplot reads and a few it does not.
func evalJSON(sampler string, steps int, eta float64, n int, fid, rate float64) string {
	return fmt.Sprintf(`{"protocol": "p", "judge": "j", "source": "s",
 "sampler": {"sampler": %q, "steps": %d, "eta": %g, "spacing": "leading", "precision": "fp32",
  "clip_x0": "none", "guidance_rescale": 0, "guidance_interval": [0.28, 5.42], "seed": 1, "n": %d, "ema": true},
 "reports": [{"guidance": 1.875, "samples": %d, "conditional_accuracy": {"Value": 0.98, "Low": 0.97, "High": 0.99},
  "fid": %g, "precision": 0.8, "recall": 0.75, "sampling_images_per_s": %g}]}`, sampler, steps, eta, n, n, fid, rate)
}

func TestReadPointsAndTable(t *testing.T) {
	dir := t.TempDir()
	files := map[string]string{
		"ddim-50.json":      evalJSON("ddim", 50, 0, 2000, 9.5, 24.7),
		"ddim-10.json":      evalJSON("ddim", 10, 0, 2000, 11.25, 110),
		"heun-10.json":      evalJSON("heun", 10, 0, 2000, 10, 60),
		"ddim-eta1-20.json": evalJSON("ddim", 20, 1, 2000, 12, 55),
		"ddpm-1000.json":    evalJSON("ddpm", 1000, 0, 500, 9, 1.24),
	}
	var paths []string
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	pts, err := readPoints(paths)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	table(&b, pts)
	rows := strings.Split(strings.TrimSpace(b.String()), "\n")
	g := ", guided at σ in (0.28, 5.42], γ 1.875"
	want := []string{
		"| ddim, leading" + g + " | 10 | 1.875 | 2000 | 110 | 0.9800 (0.9700-0.9900) | 11.25 | 0.800 | 0.750 |",
		"| ddim, leading" + g + " | 50 | 1.875 | 2000 | 24.7 | 0.9800 (0.9700-0.9900) | 9.50 | 0.800 | 0.750 |",
		"| ddim, leading, η = 1" + g + " | 20 | 1.875 | 2000 | 55 | 0.9800 (0.9700-0.9900) | 12.00 | 0.800 | 0.750 |",
		// another number of images: a line of its own; ddpm has no spacing
		"| ddpm" + g + " (500 images) | 1000 | 1.875 | 500 | 1.24 | 0.9800 (0.9700-0.9900) | 9.00 | 0.800 | 0.750 |",
		// Heun's corrector: 2N-1 evaluations
		"| heun, leading" + g + " | 19 | 1.875 | 2000 | 60 | 0.9800 (0.9700-0.9900) | 10.00 | 0.800 | 0.750 |",
	}
	if len(rows) != 2+len(want) {
		t.Fatalf("table has %d rows, want %d:\n%s", len(rows), 2+len(want), b.String())
	}
	if !strings.Contains(rows[0], "images/s") {
		t.Errorf("header has no sampling rate: %s", rows[0])
	}
	for i, w := range want {
		if rows[2+i] != w {
			t.Errorf("row %d:\n got %s\nwant %s", i, rows[2+i], w)
		}
	}

	out := filepath.Join(dir, "plot.png")
	if err := draw2(pts, out); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("the plot is not a PNG: %v", err)
	}
	if r := img.Bounds(); r.Dx() <= r.Dy() || r.Dy() < 100 {
		t.Errorf("plot is %dx%d, want two panels side by side", r.Dx(), r.Dy())
	}
}

// An unconditional model's eval.json has no guidance and no accuracy:
// blanks in the table, no point on the accuracy panel, and still a plot.
func TestUnconditional(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ddim-20.json")
	body := `{"sampler": {"sampler": "ddim", "steps": 20, "eta": 0, "spacing": "leading", "n": 1000},
 "reports": [{"samples": 1000, "fid": 12.5, "precision": 0.7, "recall": 0.6, "sampling_images_per_s": 80.25}]}`
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	pts, err := readPoints([]string{p})
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	table(&b, pts)
	want := "| ddim, leading | 20 | - | 1000 | 80.2 |  | 12.50 | 0.700 | 0.600 |"
	if rows := strings.Split(strings.TrimSpace(b.String()), "\n"); rows[2] != want {
		t.Errorf("row:\n got %s\nwant %s", rows[2], want)
	}
	if err := draw2(pts, filepath.Join(dir, "plot.png")); err != nil {
		t.Errorf("plot: %v", err)
	}
}

func TestReadPointsErrors(t *testing.T) {
	dir := t.TempDir()
	for name, c := range map[string]struct{ body, msg string }{
		"folder.json": {`{"reports": [{"fid": 3}]}`, "no sampler"},
		"broken.json": {`{"sampler": `, "unexpected end"},
		"empty.json":  {`{"sampler": {"sampler": "ddim"}, "reports": []}`, "no reports"},
	} {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(c.body), 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := readPoints([]string{p})
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("%s: got %v, want an error saying %q", name, err, c.msg)
		}
	}
}
