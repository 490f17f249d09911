// Package sample runs sampling jobs: a model's images made in fixed batches
// with per-image randomness, sharded over machines, restartable, written
// as PNGs with a manifest and a grid; and the images themselves (tensors to
// PNGs and back).
package sample

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"kakusan/internal/signals"
	"kakusan/internal/splitmix"
	"kakusan/torch"
)

// Batch is one batch of a sampling job: image Images[i] gets label
// Labels[i] (nil for an unconditional model), and its randomness is drawn
// from (Seed, Images[i]).
type Batch struct {
	Images []int
	Labels []int64
	Seed   uint64
}

// A Generator makes the images of a batch, (B, C, H, W) in [0, 1]. A
// diffusion model draws image k's noise from (seed, k), so an image is the
// same whichever batch or shard makes it.
type Generator interface {
	Generate(b Batch) (*torch.Tensor, error)
}

// Job is a batch sampling job: N images, image k with label Labels[k], made
// in fixed batches of Batch consecutive indices. Shard i of Of takes
// batches i, i+Of, ..., so the union of the shards is the unsharded job
// image for image; a Sink that already holds a batch's images skips it, so
// a restarted job makes only what is missing.
type Job struct {
	N         int
	Batch     int
	Seed      uint64
	Labels    []int64 // one per image; nil for an unconditional model
	Shard, Of int     // this machine's part: 0 <= Shard < Of
	// Progress, when set, hears after each batch made how many images of
	// this shard's missing ones are done.
	Progress func(done, todo int)
}

// MaxImages bounds a job, so a typo cannot ask for more than a disk holds.
const MaxImages = 100_000_000

// Check validates the job's sizes.
func (j *Job) Check() error {
	switch {
	case j.N < 1 || j.N > MaxImages:
		return fmt.Errorf("--n must be between 1 and %d, got %d", MaxImages, j.N)
	case j.Batch < 1 || j.Batch > 1<<16:
		return fmt.Errorf("--batch must be between 1 and 65536, got %d", j.Batch)
	case j.Of < 1 || j.Shard < 0 || j.Shard >= j.Of:
		return fmt.Errorf("--shard %d/%d: want i/n with 0 <= i < n", j.Shard, j.Of)
	case j.Labels != nil && len(j.Labels) != j.N:
		return fmt.Errorf("%d labels for %d images", len(j.Labels), j.N)
	}
	return nil
}

// Batches are this shard's batches, each the half-open range [start, end)
// of image indices.
func (j *Job) Batches() [][2]int {
	var out [][2]int
	for b, start := 0, 0; start < j.N; b, start = b+1, start+j.Batch {
		if b%j.Of == j.Shard {
			out = append(out, [2]int{start, min(start+j.Batch, j.N)})
		}
	}
	return out
}

// batch is the Batch of images [r[0], r[1]).
func (j *Job) batch(r [2]int) Batch {
	b := Batch{Seed: j.Seed}
	for k := r[0]; k < r[1]; k++ {
		b.Images = append(b.Images, k)
		if j.Labels != nil {
			b.Labels = append(b.Labels, j.Labels[k])
		}
	}
	return b
}

// A Sink receives a job's images.
type Sink interface {
	// Has reports whether the images of a batch are already there.
	Has(b Batch) bool
	// Put stores a batch's images.
	Put(b Batch, imgs *Images) error
}

// Run makes this shard's missing batches with gen and hands them to out;
// it returns how many images it made. When ctx ends (a signal), it stops
// within one torch operation and returns signals.ErrInterrupted: the
// batches it finished are written whole, so running the job again
// completes it.
func (j *Job) Run(ctx context.Context, gen Generator, out Sink) (int, error) {
	if err := j.Check(); err != nil {
		return 0, err
	}
	var todo []Batch
	total := 0
	for _, r := range j.Batches() {
		if b := j.batch(r); !out.Has(b) {
			todo = append(todo, b)
			total += len(b.Images)
		}
	}
	made := 0
	for _, b := range todo {
		var imgs *Images
		err := torch.Try(func() error {
			var err error
			torch.Interruptible(ctx, func() {
				var x *torch.Tensor
				if x, err = gen.Generate(b); err == nil {
					imgs, err = FromTensor(x)
				}
			})
			return err
		})
		if ctx.Err() != nil {
			return made, signals.ErrInterrupted
		}
		if err == nil {
			err = imgs.Check()
		}
		if err == nil {
			err = out.Put(b, imgs)
		}
		if err != nil {
			return made, err
		}
		made += len(b.Images)
		if j.Progress != nil {
			j.Progress(made, total)
		}
	}
	return made, nil
}

// ParseLabels turns "all", "0-9", "3,7", "2-4,8" or "random" into a label
// per image for a model of the given classes: a list is cycled over the
// images ("all" is every class in order); random draws each image's label
// from (seed, index).
func ParseLabels(spec string, n, classes int, seed uint64) ([]int64, error) {
	if classes < 1 {
		return nil, fmt.Errorf("--labels %q: the model has no classes", spec)
	}
	if n < 0 || n > MaxImages {
		return nil, fmt.Errorf("--labels for %d images: at most %d", n, MaxImages)
	}
	if spec == "all" {
		spec = fmt.Sprintf("0-%d", classes-1)
	}
	out := make([]int64, n)
	if spec == "random" {
		for k := range out {
			out[k] = int64(splitmix.Mix(splitmix.Mix(seed^0x6c6162656c)^uint64(k)) % uint64(classes))
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
		if a < 0 || b >= int64(classes) {
			return nil, fmt.Errorf("--labels %q: label %d out of range: the model has classes 0-%d", spec, max(b, a), classes-1)
		}
		for l := a; l <= b; l++ {
			cycle = append(cycle, l)
		}
	}
	for k := range out {
		out[k] = cycle[k%len(cycle)]
	}
	return out, nil
}
