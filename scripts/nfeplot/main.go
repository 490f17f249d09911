// Command nfeplot draws sample quality against sampling cost from bin/eval
// outputs: FID and conditional accuracy against network evaluations, one
// line per sampler and spacing, as a PNG, and prints the same numbers, with
// the rate each sampling ran at, as a Markdown table.
//
//	go run ./scripts/nfeplot -o docs/quality_vs_nfe.png runs/nfe/*.json
//
// scripts/quality_vs_nfe.sh makes the eval.json files and calls it.
package main

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"

	"kakusan/internal/atomic"
)

// evalFile is what nfeplot reads of bin/eval's eval.json.
type evalFile struct {
	Sampler struct {
		Sampler string  `json:"sampler"`
		Steps   int     `json:"steps"`
		Eta     float64 `json:"eta"`
		Spacing string  `json:"spacing"`
		Clip    string  `json:"clip_x0"`
		N       int     `json:"n"`
		Rescale float64 `json:"guidance_rescale"`
		// Interval is where guidance applied, [lo, hi] in σ; absent = every step.
		Interval []float64 `json:"guidance_interval"`
		EMA      *bool     `json:"ema"`
	} `json:"sampler"`
	Reports []struct {
		Guidance *float64 `json:"guidance"`
		Accuracy *struct {
			Value, Low, High float64
		} `json:"conditional_accuracy"`
		FID       float64 `json:"fid"`
		Precision float64 `json:"precision"`
		Recall    float64 `json:"recall"`
		Rate      float64 `json:"sampling_images_per_s"`
	} `json:"reports"`
}

type point struct {
	line                   string // sampler and spacing
	nfe                    int
	guidance               float64
	acc, lo, hi            float64
	fid, precision, recall float64
	rate                   float64 // sampling images/s, 0 when unknown
	n                      int
	guided, hasAcc         bool // a guidance scale, a conditional accuracy
}

// nfe is the network evaluations a sampler makes in steps steps: Heun's
// corrector adds one at every step but the last.
func nfe(sampler string, steps int) int {
	if sampler == "heun" {
		return 2*steps - 1
	}
	return steps
}

func main() {
	out := flag.String("o", "docs/quality_vs_nfe.png", "the PNG to write")
	flag.Parse()
	if flag.NArg() == 0 {
		fmt.Fprintln(os.Stderr, "usage: nfeplot -o PNG EVAL.json...")
		os.Exit(2)
	}
	pts, err := readPoints(flag.Args())
	if err != nil {
		fatal(err)
	}
	table(os.Stdout, pts)
	if err := draw2(pts, *out); err != nil {
		fatal(err)
	}
}

// readPoints reads bin/eval's eval.json files, a point per report, sorted
// by line then cost. A point measured on another number of images than
// most gets a line of its own: FID depends on the number of images.
func readPoints(paths []string) ([]point, error) {
	var pts []point
	for _, path := range paths {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		var f evalFile
		if err := json.Unmarshal(b, &f); err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		s := f.Sampler
		if s.Sampler == "" {
			return nil, fmt.Errorf("%s: no sampler: bin/eval --checkpoint writes one", path)
		}
		line := s.Sampler
		if s.Sampler != "ddpm" {
			line += ", " + s.Spacing
		}
		if s.Eta > 0 {
			line += fmt.Sprintf(", η = %g", s.Eta)
		}
		if s.EMA != nil && !*s.EMA {
			line += ", no EMA"
		}
		if s.Clip != "" && s.Clip != "none" {
			line += ", " + s.Clip
		}
		if s.Rescale > 0 {
			line += fmt.Sprintf(", rescale %g", s.Rescale)
		}
		if len(s.Interval) == 2 {
			line += fmt.Sprintf(", guided at σ in (%g, %g]", s.Interval[0], s.Interval[1])
		}
		for _, r := range f.Reports {
			p := point{line: line, nfe: nfe(s.Sampler, s.Steps), fid: r.FID, precision: r.Precision, recall: r.Recall,
				rate: r.Rate, n: s.N}
			if r.Guidance != nil {
				p.guidance, p.guided = *r.Guidance, true
				p.line += fmt.Sprintf(", γ %g", p.guidance)
			}
			if r.Accuracy != nil {
				p.acc, p.lo, p.hi, p.hasAcc = r.Accuracy.Value, r.Accuracy.Low, r.Accuracy.High, true
			}
			pts = append(pts, p)
		}
	}
	if len(pts) == 0 {
		return nil, fmt.Errorf("no reports in %s", strings.Join(paths, ", "))
	}
	count := map[int]int{}
	for _, p := range pts {
		count[p.n]++
	}
	common := pts[0].n
	for n, c := range count {
		if c > count[common] || (c == count[common] && n > common) {
			common = n
		}
	}
	for i := range pts {
		if pts[i].n != common {
			pts[i].line += fmt.Sprintf(" (%d images)", pts[i].n)
		}
	}
	slices.SortStableFunc(pts, func(a, b point) int {
		if c := strings.Compare(a.line, b.line); c != 0 {
			return c
		}
		return a.nfe - b.nfe
	})
	return pts, nil
}

// table writes pts as docs/results.md's Markdown table; a rate or an accuracy
// the eval.json does not hold (older bin/eval, an unconditional model) is
// blank, a missing γ is "-".
func table(w io.Writer, pts []point) {
	fmt.Fprintln(w, "| sampler | network evaluations | γ | images | sampling, images/s | conditional accuracy (95% CI) | FID | precision | recall |")
	fmt.Fprintln(w, "| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, p := range pts {
		gamma, rate, acc := "-", "", ""
		if p.guided {
			gamma = fmt.Sprintf("%g", p.guidance)
		}
		if p.rate > 0 {
			rate = fmt.Sprintf("%.3g", p.rate)
		}
		if p.hasAcc {
			acc = fmt.Sprintf("%.4f (%.4f-%.4f)", p.acc, p.lo, p.hi)
		}
		fmt.Fprintf(w, "| %s | %d | %s | %d | %s | %s | %.2f | %.3f | %.3f |\n",
			p.line, p.nfe, gamma, p.n, rate, acc, p.fid, p.precision, p.recall)
	}
}

// draw2 writes FID (left) and conditional accuracy (right, when the points
// have one) against network evaluations on a log axis, a line per sampler.
func draw2(pts []point, path string) error {
	fid, acc := plot.New(), plot.New()
	fid.Title.Text, acc.Title.Text = "FID (judge space) against cost", "conditional accuracy against cost"
	fid.Y.Label.Text, acc.Y.Label.Text = "FID", "conditional accuracy"
	for _, p := range []*plot.Plot{fid, acc} {
		p.X.Label.Text = "network evaluations"
		p.X.Scale = plot.LogScale{}
		p.X.Tick.Marker = plot.LogTicks{Prec: -1}
		p.Add(plotter.NewGrid())
		p.Legend.Top = true
	}
	var lines []string
	for _, p := range pts {
		if !slices.Contains(lines, p.line) {
			lines = append(lines, p.line)
		}
	}
	for i, l := range lines {
		var f, a plotter.XYs
		for _, p := range pts {
			if p.line == l {
				f = append(f, plotter.XY{X: float64(p.nfe), Y: p.fid})
				if p.hasAcc {
					a = append(a, plotter.XY{X: float64(p.nfe), Y: p.acc})
				}
			}
		}
		for _, c := range []struct {
			p   *plot.Plot
			xys plotter.XYs
		}{{fid, f}, {acc, a}} {
			if len(c.xys) == 0 { // no accuracy: an unconditional model
				continue
			}
			ln, sc, err := plotter.NewLinePoints(c.xys)
			if err != nil {
				return err
			}
			ln.Color, sc.Color = plotutil.Color(i), plotutil.Color(i)
			sc.Shape = plotutil.Shape(i)
			ln.Width = vg.Points(1.5)
			c.p.Add(ln, sc)
			c.p.Legend.Add(l, ln, sc)
		}
	}
	// Without any accuracy (unconditional models) the FID panel is drawn
	// alone: an empty panel has no range for its log axis.
	panels := []*plot.Plot{fid, acc}
	if !slices.ContainsFunc(pts, func(p point) bool { return p.hasAcc }) {
		panels = panels[:1]
	}
	img := vgimg.New(vg.Length(len(panels))*6*vg.Inch, 4.5*vg.Inch)
	dc := draw.New(img)
	tiles := draw.Tiles{Rows: 1, Cols: len(panels), PadX: vg.Inch / 4}
	canvases := plot.Align([][]*plot.Plot{panels}, tiles, dc)
	for i, p := range panels {
		p.Draw(canvases[0][i])
	}
	var buf bytes.Buffer
	if _, err := (vgimg.PngCanvas{Canvas: img}).WriteTo(&buf); err != nil {
		return err
	}
	return atomic.WriteFile(path, buf.Bytes())
}

func fatal(err error) {
	fmt.Fprintln(os.Stderr, "nfeplot:", err)
	os.Exit(1)
}
