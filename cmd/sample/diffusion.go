package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"kakusan/sample"
	"kakusan/torch"
	"kakusan/train"
)

// diffusionJob is a batch sampling job: n images, image k with label
// labels[k], its noise seeded by (seed, k). Images are made in fixed
// batches of `batch` consecutive indices; shard i of n takes batches i,
// i+n, ..., so the union of the shards is the unsharded job image for image,
// and a restarted job skips the batches whose files all exist.
type diffusionJob struct {
	neuralJob
	labels      string
	sampler     string
	steps       int
	eta         float64
	guidance    float64
	shard, of   int
	noEMA       bool
	guidanceSet bool
}

// parseLabels turns "0-9", "3,7", "2-4,8" or "random" into a label per image.
func parseLabels(spec string, n int, classes int64, seed uint64) ([]int64, error) {
	out := make([]int64, n)
	if spec == "random" {
		for k := range out {
			out[k] = int64(sample.SplitMix(seed^0x6c6162656c^uint64(k)) % uint64(classes))
		}
		return out, nil
	}
	var cycle []int64
	for _, part := range strings.Split(spec, ",") {
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := strconv.ParseInt(strings.TrimSpace(lo), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("--labels %q: %q is not a label", spec, part)
		}
		b := a
		if isRange {
			if b, err = strconv.ParseInt(strings.TrimSpace(hi), 10, 64); err != nil || b < a {
				return nil, fmt.Errorf("--labels %q: %q is not a range", spec, part)
			}
		}
		for l := a; l <= b; l++ {
			if l < 0 || l >= classes {
				return nil, fmt.Errorf("--labels %q: label %d out of range: the model has classes 0-%d", spec, l, classes-1)
			}
			cycle = append(cycle, l)
		}
	}
	for k := range out {
		out[k] = cycle[k%len(cycle)]
	}
	return out, nil
}

func imageName(k int, label int64, conditional bool) string {
	if !conditional {
		return fmt.Sprintf("%06d.png", k)
	}
	return fmt.Sprintf("%06d_label%d.png", k, label)
}

func runDiffusion(j diffusionJob, dm *train.DiffusionModel, ck *train.Checkpoint, cfg *train.Config) error {
	var err error
	if !j.guidanceSet {
		j.guidance = cfg.Diffusion.Guidance
	}
	switch {
	case j.guidance < 0 || j.guidance > 50:
		return fmt.Errorf("--guidance must be between 0 and 50, got %g", j.guidance)
	case j.sampler != "ddim" && j.sampler != "ddpm":
		return fmt.Errorf("--sampler must be ddim or ddpm, got %q", j.sampler)
	case j.sampler == "ddim" && (j.steps < 1 || j.steps > dm.Sched.T):
		return fmt.Errorf("--steps must be between 1 and %d (the model's timesteps), got %d", dm.Sched.T, j.steps)
	case j.eta < 0 || j.eta > 1:
		return fmt.Errorf("--eta must be between 0 and 1, got %g", j.eta)
	}
	conditional := dm.Conditional()
	var labels []int64
	if conditional {
		if labels, err = parseLabels(j.labels, j.n, dm.Net.Cfg.Classes, j.seed); err != nil {
			return err
		}
	} else {
		labels = make([]int64, j.n)
		for i := range labels {
			labels[i] = -1
		}
	}
	if err := os.MkdirAll(j.out, 0o755); err != nil {
		return err
	}
	steps := j.steps
	if j.sampler == "ddpm" {
		steps = dm.Sched.T
	}
	var mine [][2]int // this shard's batches, [start, end)
	todo := 0
	for b, start := 0, 0; start < j.n; b, start = b+1, start+j.batch {
		if b%j.of != j.shard {
			continue
		}
		end := min(start+j.batch, j.n)
		mine = append(mine, [2]int{start, end})
		for k := start; k < end; k++ {
			if _, err := os.Stat(filepath.Join(j.out, imageName(k, labels[k], conditional))); err != nil {
				todo += end - start
				break
			}
		}
	}
	total := 0
	for _, r := range mine {
		total += r[1] - r[0]
	}
	if done := total - todo; done > 0 {
		fmt.Fprintf(os.Stderr, "sample: %d of %d images already written; generating the other %d\n", done, total, todo)
	}
	var bar *progressbar.ProgressBar
	if term.IsTerminal(int(os.Stderr.Fd())) {
		bar = progressbar.NewOptions(todo, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowCount(),
			progressbar.OptionShowIts(), progressbar.OptionSetItsString("img"), progressbar.OptionSetDescription("sampling"))
	}
	began, made := time.Now(), 0
	for _, r := range mine {
		missing := false
		for k := r[0]; k < r[1] && !missing; k++ {
			_, err := os.Stat(filepath.Join(j.out, imageName(k, labels[k], conditional)))
			missing = err != nil
		}
		if !missing {
			continue
		}
		job := train.SampleJob{Seed: j.seed, Sampler: j.sampler, Steps: j.steps, Eta: j.eta, Guidance: j.guidance}
		for k := r[0]; k < r[1]; k++ {
			job.Images = append(job.Images, k)
			job.Labels = append(job.Labels, max(labels[k], 0))
		}
		var genErr error
		torch.Scoped(func() {
			x, err := dm.Generate(job)
			if err != nil {
				genErr = err
				return
			}
			imgs := sample.FromTensor(x)
			for i, k := range job.Images {
				if err := sample.SavePNG(filepath.Join(j.out, imageName(k, labels[k], conditional)), imgs.Gray(i)); err != nil {
					genErr = err
					return
				}
			}
		})
		if genErr != nil {
			return genErr
		}
		made += r[1] - r[0]
		if bar != nil {
			bar.Add(r[1] - r[0])
		} else {
			fmt.Fprintf(os.Stderr, "sample: %d/%d images, %.1f images/s\n", made, todo, float64(made)/time.Since(began).Seconds())
		}
	}
	if bar != nil {
		bar.Finish()
	}
	// The manifest lists every image of this job (or shard), written whole.
	var lines []byte
	for _, r := range mine {
		for k := r[0]; k < r[1]; k++ {
			rec := map[string]any{"file": imageName(k, labels[k], conditional), "index": k, "seed": j.seed,
				"sampler": j.sampler, "steps": steps, "eta": j.eta, "guidance": j.guidance, "checkpoint": ck.Path, "ema": ck.HasEMA() && !j.noEMA}
			if conditional {
				rec["label"] = labels[k]
			}
			b, _ := json.Marshal(rec)
			lines = append(append(lines, b...), '\n')
		}
	}
	manifest := "manifest.jsonl"
	if j.of > 1 {
		manifest = fmt.Sprintf("manifest-%d-of-%d.jsonl", j.shard, j.of)
	}
	if err := train.WriteFileAtomic(filepath.Join(j.out, manifest), lines); err != nil {
		return err
	}
	if made > 0 {
		fmt.Fprintf(os.Stderr, "sample: %d images in %.1f s (%.1f images/s) into %s\n", made, time.Since(began).Seconds(), float64(made)/time.Since(began).Seconds(), j.out)
	}
	return writeGrid(j.out, mine, labels, conditional)
}

// writeGrid draws grid.png from the job's files: a row of up to ten images
// per class, or the first 64 images eight to a row for an unconditional model.
func writeGrid(dir string, mine [][2]int, labels []int64, conditional bool) error {
	var cells []int // image indices in grid order; -1 is a blank cell
	cols := 8
	if conditional {
		byClass := map[int64][]int{}
		for _, r := range mine {
			for k := r[0]; k < r[1]; k++ {
				if len(byClass[labels[k]]) < 10 {
					byClass[labels[k]] = append(byClass[labels[k]], k)
				}
			}
		}
		var classes []int64
		cols = 0
		for l, ks := range byClass {
			classes = append(classes, l)
			cols = max(cols, len(ks))
		}
		sort.Slice(classes, func(a, b int) bool { return classes[a] < classes[b] })
		for _, l := range classes {
			row := byClass[l]
			for c := range cols {
				if c < len(row) {
					cells = append(cells, row[c])
				} else {
					cells = append(cells, -1)
				}
			}
		}
	} else {
		for _, r := range mine {
			for k := r[0]; k < r[1] && len(cells) < 64; k++ {
				cells = append(cells, k)
			}
		}
	}
	if len(cells) == 0 {
		return nil
	}
	pix := make([]float32, 0, len(cells)*28*28)
	for _, k := range cells {
		cell := make([]float32, 28*28)
		if k >= 0 {
			g, err := sample.ReadPNG(filepath.Join(dir, imageName(k, labels[k], conditional)))
			if err != nil {
				return err
			}
			for i, v := range g.Pix {
				cell[i] = float32(v) / 255
			}
		}
		pix = append(pix, cell...)
	}
	return sample.SavePNG(filepath.Join(dir, "grid.png"), (&sample.Images{N: len(cells), H: 28, W: 28, Pix: pix}).Grid(cols, 2))
}
