package models

import (
	"fmt"

	"kakusan/diffusion"
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

// GridSampling is how the training grids of c's model sample (and the
// sampling jobs' default): the diffusion section's sampler and guidance.
func GridSampling(c *Config) diffusion.Sampling {
	if d, ok := c.Sections["diffusion"].(*diffusion.Config); ok {
		return d.Sampling()
	}
	return diffusion.Sampling{}
}

// NewGenerator wraps a model as a sampling job's generator: a diffusion
// model samples with s (validated here, for the model's timesteps); a VAE
// decodes draws from its prior, the generator seeded for each batch from
// (seed, first image), so fixed batches make the same images in any shard.
func NewGenerator(m Model, s diffusion.Sampling) (sample.Generator, error) {
	switch g := m.(type) {
	case *diffusion.Model:
		if err := g.CheckSampling(s); err != nil {
			return nil, err
		}
		return diffusionGenerator{g, s}, nil
	case Sampler:
		return priorGenerator{g}, nil
	case *aeModel:
		return nil, fmt.Errorf("an autoencoder reconstructs images, it does not generate them (bin/sample writes its reconstructions of training images)")
	case *Judge:
		return nil, fmt.Errorf("a classifier does not generate images")
	}
	return nil, fmt.Errorf("a %T does not generate images", m)
}

type diffusionGenerator struct {
	m *diffusion.Model
	s diffusion.Sampling
}

func (g diffusionGenerator) Generate(b sample.Batch) (*torch.Tensor, error) {
	return g.m.Generate(b.Images, b.Labels, b.Seed, g.s)
}

type priorGenerator struct{ m Sampler }

func (g priorGenerator) Generate(b sample.Batch) (*torch.Tensor, error) {
	if len(b.Images) == 0 {
		return nil, fmt.Errorf("an empty batch")
	}
	var x *torch.Tensor
	training := g.m.Module().Training()
	g.m.Module().SetTraining(false)
	defer g.m.Module().SetTraining(training)
	torch.WithSeed(diffusion.SplitMix(b.Seed^diffusion.SplitMix(uint64(b.Images[0]))), func() {
		torch.NoGrad(func() { x = g.m.Sample(int64(len(b.Images))) })
	})
	return x, nil
}
