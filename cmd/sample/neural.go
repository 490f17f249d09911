package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"kakusan/datasets"
	"kakusan/diffusion"
	"kakusan/internal/signals"
	"kakusan/models"
	"kakusan/sample"
	"kakusan/torch"
)

// neuralJob is the command line of a sampling job from a checkpoint.
type neuralJob struct {
	checkpoint, out, device, labels string
	init, mask                      string // image-to-image and inpainting
	n, batch, shard, of             int
	seed                            uint64
	sampling                        diffusion.Sampling
	set                             []string // the sampling flags given; the others take the checkpoint config's values
	noEMA, overwrite                bool
}

// runNeural loads a checkpoint and runs a sampling job into j.out: one PNG
// per image, job.json, the manifest and grid.png, and for the VAEs
// reconstructions of test images and (VAE) a latent interpolation strip.
func runNeural(ctx context.Context, j neuralJob) error {
	return torch.Do(func() error {
		dev, err := torch.ParseDevice(j.device)
		if err != nil {
			return fmt.Errorf("--device: %w", err)
		}
		if j.batch == 0 {
			j.batch = sample.DefaultBatch(dev)
		}
		torch.SetCuDNNBenchmark(true) // every batch has one shape (CUDA only)
		m, ck, err := models.Load(j.checkpoint, dev, !j.noEMA)
		if err != nil {
			return err
		}
		defer models.Free(m)
		e := ck.Entry()
		if err := j.flagsApply(e, m, ck.Config); err != nil {
			return fmt.Errorf("%s: %w", ck.Path, err)
		}
		if err := j.promptClass(m, ck.Geometry.Classes); err != nil {
			return fmt.Errorf("%s: %w", ck.Path, err)
		}
		s := j.samplingFor(ck.Config)
		job := &sample.Job{N: j.n, Batch: j.batch, Seed: j.seed, Shard: j.shard, Of: j.of}
		if err := job.Check(); err != nil { // before sizing anything by n
			return err
		}
		var gen sample.Generator
		switch {
		case j.init != "":
			s = s.ForEdit(j.mask != "")
			gen, err = j.editGenerator(ck, m, s, dev)
		case e.ReconstructsOnly(): // it draws nothing: its images are reconstructions
			gen, job.Labels, err = reconstructions(ck, m, j.n, dev)
		default:
			gen, err = e.NewGenerator(m, s)
		}
		if err != nil {
			return fmt.Errorf("%s: %w", ck.Path, err)
		}
		if models.Conditional(m) {
			if job.Labels, err = sample.ParseLabels(j.labels, j.n, ck.Geometry.Classes, j.seed); err != nil {
				return err
			}
		}
		if err := job.Check(); err != nil {
			return err
		}
		g := ck.Geometry
		meta := map[string]any{"model": ck.Config.Model, "checkpoint": ck.Path, "step": ck.Step, "ema": ck.HasEMA() && !j.noEMA}
		for k, v := range map[string]string{"init": j.init, "mask": j.mask} {
			if v != "" {
				meta[k] = v
			}
		}
		maps.Copy(meta, models.SamplingRecord(ck.Config, s))
		out := &sample.Folder{Dir: j.out, Job: job, C: g.C, H: g.H, W: g.W, Meta: meta, Names: g.ClassNames, Overwrite: j.overwrite}
		if err := out.Open(); err != nil {
			return err
		}
		if err := runJob(ctx, job, gen, out); err != nil {
			return err
		}
		return vaeExtras(e, ck.Config, m, dev, j.out)
	})
}

// flagsApply refuses the flags that do nothing for the checkpoint's model
// m, of entry e and config c (models.CheckSettings).
func (j neuralJob) flagsApply(e models.Entry, m models.Model, c *models.Config) error {
	return models.CheckSettings(e, m, c, j.sampling, j.set, j.init != "", j.mask != "", func(flag string) string { return "--" + flag })
}

// editGenerator reads --init (and --mask) for the checkpoint's geometry
// and wraps the model as a Generator that edits them with s.
func (j neuralJob) editGenerator(ck *models.Checkpoint, m models.Model, s diffusion.Sampling, dev torch.Device) (sample.Generator, error) {
	read := func(path string, decode func(r io.Reader) ([]float32, error)) ([]float32, error) {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return decode(f)
	}
	g := ck.Geometry
	px, err := read(j.init, func(r io.Reader) ([]float32, error) {
		px, _, _, err := models.InputImage(r, "--init "+j.init, g, ck.Config.Data, 0)
		return px, err
	})
	if err != nil {
		return nil, err
	}
	init := torch.FromSlice(px, []int64{1, int64(g.C), int64(g.H), int64(g.W)}, dev)
	var mask *torch.Tensor
	if j.mask != "" {
		v, err := read(j.mask, func(r io.Reader) ([]float32, error) {
			v, _, _, err := models.InputMask(r, "--mask "+j.mask, g, 0)
			return v, err
		})
		if err != nil {
			return nil, err
		}
		mask = torch.FromSlice(v, []int64{1, 1, int64(g.H), int64(g.W)}, dev)
	}
	return models.EditGenerator(m, s, init, mask)
}

// promptClass moves the class word of --prompt into the labels: "bold
// seven" draws sevens, bold; the style words stay the sampling's prompt.
// m has the given classes.
func (j *neuralJob) promptClass(m models.Model, classes int) error {
	class, style, err := models.PromptClass(m, classes, j.sampling.Prompt)
	if err != nil {
		return fmt.Errorf("--prompt %.60q: %w", j.sampling.Prompt, err)
	}
	if class >= 0 {
		if slices.Contains(j.set, "labels") {
			return fmt.Errorf("--prompt %.60q names a class and --labels gives the classes: one or the other", j.sampling.Prompt)
		}
		j.labels = strconv.Itoa(class)
	}
	j.sampling.Prompt = style
	return nil
}

// samplingFor is the sampling the flags ask for, the checkpoint config's
// where a flag was not given.
func (j neuralJob) samplingFor(c *models.Config) diffusion.Sampling {
	def := models.GridSampling(c)
	if def.Sampler == "" { // a model that does not sample by diffusion
		return j.sampling
	}
	return j.sampling.Over(def, j.set)
}

// runJob runs the job with a progress bar on a terminal (plain lines
// otherwise) and writes the manifest and the grid.
func runJob(ctx context.Context, job *sample.Job, gen sample.Generator, out *sample.Folder) error {
	var bar *progressbar.ProgressBar
	began := time.Now()
	job.Progress = func(done, todo int) {
		if bar == nil && term.IsTerminal(int(os.Stderr.Fd())) {
			bar = progressbar.NewOptions(todo, progressbar.OptionSetWriter(os.Stderr), progressbar.OptionShowCount(),
				progressbar.OptionShowIts(), progressbar.OptionSetItsString("img"), progressbar.OptionSetDescription("sampling"))
		}
		if bar != nil {
			bar.Set(done)
		} else {
			fmt.Fprintf(os.Stderr, "sample: %d/%d images, %.1f images/s\n", done, todo, float64(done)/time.Since(began).Seconds())
		}
	}
	made, err := job.Run(ctx, gen, out)
	if errors.Is(err, signals.ErrInterrupted) {
		fmt.Fprintf(os.Stderr, "sample: interrupted after %d images; the same command finishes the job\n", made)
	}
	if err != nil {
		return err
	}
	if bar != nil {
		bar.Finish()
	}
	if mine := len(job.Batches()); made == 0 && mine > 0 {
		fmt.Fprintf(os.Stderr, "sample: every image of this job is already in %s\n", out.Dir)
	} else if made > 0 {
		fmt.Fprintf(os.Stderr, "sample: %d images in %.1f s (%.1f images/s) into %s\n", made, time.Since(began).Seconds(), float64(made)/time.Since(began).Seconds(), out.Dir)
	}
	return out.Finish()
}

// reconstructor is an autoencoder's sampling job: image k is its
// reconstruction of training image k, so that bin/eval measures what the
// autoencoder loses (the ceiling of a latent diffusion model on it).
type reconstructor struct {
	r   models.Reconstructor
	set *datasets.Images
	dev torch.Device
}

// reconstructions is the generator and labels of a job reconstructing the
// first n training images of the data of the autoencoder's checkpoint ck.
func reconstructions(ck *models.Checkpoint, m models.Model, n int, dev torch.Device) (sample.Generator, []int64, error) {
	c := ck.Config
	set, err := c.Data.Load("train", nil)
	if err != nil {
		return nil, nil, err
	}
	if n > set.N {
		return nil, nil, fmt.Errorf("--n %d: an autoencoder reconstructs training images, and %s has %d", n, c.Data.Source(), set.N)
	}
	if err := ck.Geometry.SameAs(models.GeometryOf(set)); err != nil {
		return nil, nil, fmt.Errorf("%s: the autoencoder was trained on %w", c.Data.Source(), err)
	}
	labels := make([]int64, n)
	for i := range labels {
		labels[i] = int64(set.Labels[i])
	}
	return reconstructor{m.(models.Reconstructor), set, dev}, labels, nil
}

func (g reconstructor) Generate(b sample.Batch) (x *torch.Tensor, err error) {
	if len(b.Images) == 0 {
		return nil, fmt.Errorf("an empty batch")
	}
	loader := &datasets.Loader{Set: g.set}
	in := torch.FromSlice(loader.Gather(b.Images).Pixels, g.set.Shape(len(b.Images))).To(g.dev)
	torch.NoGrad(func() { x = g.r.Reconstruct(in) })
	return x, nil
}

// vaeExtras writes reconstructions.png (test images on odd rows, their
// reconstructions below) for a model of entry e that reconstructs and,
// for the VAE, interpolation.png.
func vaeExtras(e models.Entry, c *models.Config, m models.Model, dev torch.Device, out string) error {
	if !e.Does(models.Reconstructs) {
		return nil
	}
	r := m.(models.Reconstructor)
	test, err := c.Data.Load("test", nil)
	if err != nil || test.N < 32 {
		return nil // no data here: skip the extras rather than fail the job
	}
	b := (&datasets.Loader{Set: test.Subset(32), Batch: 32}).All()[0]
	x := torch.FromSlice(b.Pixels, test.Shape(b.N)).To(dev)
	var line *torch.Tensor
	torch.NoGrad(func() {
		if v, ok := m.(interface {
			Interpolate(a, b *torch.Tensor, steps int64) *torch.Tensor
		}); ok {
			line = v.Interpolate(x.Narrow(0, 0, 1), x.Narrow(0, 1, 1), 10)
		}
	})
	if err := savePNG(filepath.Join(out, "reconstructions.png"), models.ReconstructionRows(r, x, 8), 8); err != nil || line == nil {
		return err
	}
	return savePNG(filepath.Join(out, "interpolation.png"), line, 10)
}

func savePNG(path string, x *torch.Tensor, cols int) error {
	imgs, err := sample.FromTensor(x)
	if err != nil {
		return err
	}
	return sample.SavePNG(path, imgs.Grid(cols, 2))
}
