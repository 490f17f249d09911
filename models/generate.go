package models

import (
	"fmt"

	"kakusan/diffusion"
	"kakusan/internal/splitmix"
	"kakusan/sample"
	"kakusan/torch"
)

// Free releases a model: its module, and whatever else it holds on the
// device (a diffusion model's schedule tables).
func Free(m Model) {
	if f, ok := m.(interface{ Free() }); ok {
		f.Free()
		return
	}
	m.Module().Free()
}

// Conditional reports whether a model generates images of given classes.
func Conditional(m Model) bool {
	c, ok := m.(interface{ Conditional() bool })
	return ok && c.Conditional()
}

// Vocabulary is the words of a model conditioned on prompts, by token
// (package prompt); nil for a model that takes none.
func Vocabulary(m Model) []string {
	if p, ok := m.(interface{ Vocabulary() []string }); ok {
		return p.Vocabulary()
	}
	return nil
}

// GridSampling is how the training grids of c's model sample (and the
// sampling jobs' default): the diffusion section's sampling settings; the
// zero Sampling for a model that does not diffuse.
func GridSampling(c *Config) diffusion.Sampling {
	if d := diffusionSection(c); d != nil {
		return d.Sampling
	}
	return diffusion.Sampling{}
}

// diffusionSection is c's diffusion: section; nil for a model without one.
func diffusionSection(c *Config) *diffusion.Config {
	d, _ := c.Sections["diffusion"].(*diffusion.Config)
	return d
}

// SamplingRecord is s as a sampling job of c's model records it
// (diffusion.Sampling.Record, for the model's timesteps); nil for a model
// that does not diffuse.
func SamplingRecord(c *Config, s diffusion.Sampling) map[string]any {
	if d := diffusionSection(c); d != nil {
		return s.Record(d.Timesteps)
	}
	return nil
}

// diffusionGenerator is the diffusion entry's Generator: the model samples
// with s, validated here for the model's timesteps and codec.
func diffusionGenerator(m Model, s diffusion.Sampling) (sample.Generator, error) {
	dm := m.(*diffusion.Model)
	if err := dm.CheckSampling(s); err != nil {
		return nil, err
	}
	return diffusionBatches{m: dm, s: s}, nil
}

// EditGenerator is a diffusion model's Generator that edits the image init
// (1, C, H, W) in [0, 1] in every image of a job: image-to-image, or with
// mask (1, 1, H, W; 1 where the model paints, nil for none) inpainting, as
// s.Strength and s.Resample say (diffusion.Batch). The job's images differ
// by their noise.
func EditGenerator(m Model, s diffusion.Sampling, init, mask *torch.Tensor) (sample.Generator, error) {
	dm, ok := m.(*diffusion.Model)
	if !ok {
		return nil, fmt.Errorf("image-to-image and inpainting are for diffusion models")
	}
	s = s.ForEdit(mask != nil)
	if err := dm.CheckSampling(s); err != nil {
		return nil, err
	}
	return diffusionBatches{m: dm, s: s, init: init, mask: mask}, nil
}

type diffusionBatches struct {
	m          *diffusion.Model
	s          diffusion.Sampling
	init, mask *torch.Tensor // one image each, for every image of the job; nil: none
}

func (g diffusionBatches) Generate(b sample.Batch) (*torch.Tensor, error) {
	db := diffusion.Batch{Images: b.Images, Labels: b.Labels, Seeds: diffusion.SameSeed(b.Seed, len(b.Images))}
	n := int64(len(b.Images))
	if g.init != nil {
		db.Init = g.init.Expand(append([]int64{n}, g.init.Shape()[1:]...)...)
	}
	if g.mask != nil {
		db.Mask = g.mask.Expand(append([]int64{n}, g.mask.Shape()[1:]...)...)
	}
	return g.m.Draw(db, g.s)
}

// priorModel is a model that draws images from the current generator: the
// VAEs, whose grids and sampling jobs seed it.
type priorModel interface {
	Model
	// Sample draws n images (n, C, H, W) in [0, 1].
	Sample(n int64) *torch.Tensor
}

// priorGenerator is the VAEs' Generator: they decode draws from their
// prior, the generator seeded for each batch from (seed, first image), so
// fixed batches make the same images in any shard. s does not apply.
func priorGenerator(m Model, _ diffusion.Sampling) (sample.Generator, error) {
	return priorBatches{m.(priorModel)}, nil
}

type priorBatches struct{ m priorModel }

func (g priorBatches) Generate(b sample.Batch) (*torch.Tensor, error) {
	if len(b.Images) == 0 {
		return nil, fmt.Errorf("an empty batch")
	}
	var x *torch.Tensor
	training := g.m.Module().Training()
	g.m.Module().SetTraining(false)
	defer g.m.Module().SetTraining(training)
	torch.WithSeed(splitmix.Mix(b.Seed^splitmix.Mix(uint64(b.Images[0]))), func() {
		torch.NoGrad(func() { x = g.m.Sample(int64(len(b.Images))) })
	})
	return x, nil
}

// ReconstructionRows passes images x (B, C, H, W) through r in eval mode
// without gradients and interleaves them in rows of cols: originals, their
// reconstructions below (clamped to [0, 1]), and so on.
func ReconstructionRows(r Reconstructor, x *torch.Tensor, cols int64) *torch.Tensor {
	var rec *torch.Tensor
	training := r.Module().Training()
	r.Module().SetTraining(false)
	defer r.Module().SetTraining(training)
	torch.NoGrad(func() { rec = r.Reconstruct(x).Clamp(0, 1) })
	var rows []*torch.Tensor
	for i := int64(0); i < x.Size(0); i += cols {
		k := min(cols, x.Size(0)-i)
		rows = append(rows, x.Narrow(0, i, k), rec.Narrow(0, i, k))
	}
	return torch.Cat(rows, 0)
}
