package models

import (
	"errors"
	"fmt"
	"math/bits"

	"kakusan/diffusion"
	"kakusan/models/autoencoder"
	"kakusan/models/classifier"
	"kakusan/models/gaussian"
	"kakusan/models/nn"
	"kakusan/models/prompt"
	"kakusan/models/unet"
	"kakusan/models/vae"
	"kakusan/torch"
)

// The registered models, one entry each.
func init() {
	for _, e := range []Entry{
		{Name: "normal", About: "a normal distribution fitted by maximum likelihood (ladder step 1)", Can: FitsPoints},
		{Name: "mvn", About: "a multivariate normal distribution fitted by maximum likelihood (ladder step 2)", Can: FitsPoints},
		{Name: "gmm", About: "a Gaussian mixture fitted by EM (ladder step 3)", Can: FitsPoints,
			Sections: func() map[string]any { return map[string]any{"gmm": gaussian.DefaultEM()} }},
		vaeEntry("vae", "a variational autoencoder (ladder step 5)", 200, 0, func(c *vae.Config, g Geometry, dev torch.Device) Model {
			m := vae.NewVAE(g.Pixels(), int64(c.Hidden), int64(c.Latent), dev)
			m.KLWeight = c.KLWeight
			return &vaeModel{m, g, dev}
		}),
		vaeEntry("hvae", "a hierarchical VAE with two stochastic layers (ladder step 6)", 100, 1e-3, func(c *vae.Config, g Geometry, dev torch.Device) Model {
			m := vae.NewHVAE(g.Pixels(), int64(c.Hidden), int64(c.Latent), dev)
			m.KLWeight = c.KLWeight
			return &hvaeModel{m, g, dev}
		}),
		autoencoderEntry(),
		classifierEntry(),
		diffusionEntry(),
	} {
		Register(e)
	}
}

// smallBatchDefaults are the autoencoder's and the judge's training
// defaults: Adam at 1e-3, batch 128, 3 epochs.
func smallBatchDefaults(c *Config) {
	c.Optimizer.LR = 1e-3
	c.Train.BatchSize, c.Train.Epochs = 128, 3
}

func autoencoderEntry() Entry {
	return Entry{
		Name:     "autoencoder",
		About:    "a KL autoencoder, Stable Diffusion's AutoencoderKL in small: latent diffusion's codec (ladder step 9)",
		Can:      Reconstructs,
		Sections: func() map[string]any { return map[string]any{"autoencoder": autoencoder.Defaults()} },
		Defaults: smallBatchDefaults,
		New: func(c *Config, g Geometry, dev torch.Device, _ *Checkpoint) (Model, error) {
			a, err := autoencoder.New(*Section[*autoencoder.Config](c, "autoencoder"), int64(g.C), int64(g.H), int64(g.W), dev)
			if err != nil {
				return nil, fmt.Errorf("autoencoder: %w", err)
			}
			return &aeModel{a}, nil
		},
	}
}

func classifierEntry() Entry {
	return Entry{
		Name:  "classifier",
		About: "a small CNN classifier: the judge bin/eval measures samples with",
		Can:   Classifies,
		Sections: func() map[string]any {
			return map[string]any{"classifier": &classifier.Config{Hidden: 128, Dropout: 0.5}}
		},
		Defaults: smallBatchDefaults,
		New: func(c *Config, g Geometry, dev torch.Device, _ *Checkpoint) (Model, error) {
			if g.Classes < 2 {
				return nil, fmt.Errorf("classifier: the data has %d classes; a classifier needs at least 2", g.Classes)
			}
			net, err := classifier.New(*Section[*classifier.Config](c, "classifier"), g.Shape(), int64(g.Classes), dev)
			if err != nil {
				return nil, err
			}
			return &judge{net}, nil
		},
	}
}

func diffusionEntry() Entry {
	return Entry{
		Name:  "diffusion",
		About: "a diffusion model: a U-Net denoiser with its noise schedule, in pixels or an autoencoder's latents, conditioned on labels or prompts (ladder steps 7-9)",
		Can:   DrawsImages | Diffuses,
		Sections: func() map[string]any {
			return map[string]any{"unet": unet.Defaults(), "diffusion": diffusion.DefaultConfig()}
		},
		Defaults: func(c *Config) {
			// The reference: batch 128, 10 epochs, Adam lr 1e-3.
			c.Samples = 100
			c.Optimizer.LR = 1e-3
			c.Train.BatchSize, c.Train.Epochs = 128, 10
		},
		New:       newDiffusion,
		Generator: diffusionGenerator,
	}
}

// newDiffusion builds a diffusion model: its U-Net sized for the data's
// classes (or prompt vocabulary) and for the space its codec works in
// (pixels, or a frozen autoencoder's latents). Whatever it built is freed
// if a later part fails.
func newDiffusion(c *Config, g Geometry, dev torch.Device, from *Checkpoint) (_ Model, err error) {
	var built []interface{ Free() } // freed, last first, when err is set
	defer func() {
		for i := len(built) - 1; err != nil && i >= 0; i-- {
			built[i].Free()
		}
	}()
	u, d := *Section[*unet.Config](c, "unet"), Section[*diffusion.Config](c, "diffusion")
	if d.Conditional {
		if g.Classes < 1 {
			return nil, errors.New("diffusion.conditional: the data has no classes; set it to false")
		}
		u.Classes = int64(g.Classes)
	}
	var vocab []string
	if d.Conditioning == "prompt" {
		if vocab, err = promptVocabulary(d, g); err != nil {
			return nil, err
		}
		u.Vocab, u.Context = int64(len(vocab)), prompt.Context
	}
	var codec diffusion.Codec // nil: of pixels, by name
	shape := g.Shape()
	var ae *autoencoder.AutoencoderKL
	if d.Codec == "latent" {
		if ae, err = latentAutoencoder(d, g, dev, from); err != nil {
			return nil, err
		}
		built = append(built, ae)
		codec, shape = diffusion.NewLatent(ae), ae.LatentShape()
	}
	u.Channels = shape[0]
	if side := min(shape[1], shape[2]); side>>u.Levels < 1 {
		return nil, fmt.Errorf("unet.levels: %d levels halve the model's %dx%d inputs below one pixel (at most %d)", u.Levels, shape[1], shape[2], bits.Len64(uint64(side))-1)
	}
	net, err := unet.New(u, dev)
	if err != nil {
		return nil, fmt.Errorf("unet: %w", err)
	}
	built = append(built, net)
	if ae != nil {
		net.Freeze(FirstStagePrefix, ae.Module) // the network frees it from now on
		built = built[1:]
	}
	m, err := diffusion.NewModel(net, d, codec, shape, vocab, dev)
	if err != nil {
		return nil, fmt.Errorf("diffusion: %w", err)
	}
	return m, nil
}

// vaeEntry registers a (hierarchical) VAE under its own section name with
// the book's defaults: latent 20, the given hidden size, and lr when not 0.
func vaeEntry(name, about string, hidden int, lr float64, build func(*vae.Config, Geometry, torch.Device) Model) Entry {
	return Entry{
		Name:  name,
		About: about,
		Can:   DrawsImages | Reconstructs,
		Sections: func() map[string]any {
			return map[string]any{name: &vae.Config{Hidden: hidden, Latent: 20, KLWeight: 1}}
		},
		Defaults: func(c *Config) {
			if lr > 0 {
				c.Optimizer.LR = lr
			}
		},
		New: func(c *Config, g Geometry, dev torch.Device, _ *Checkpoint) (Model, error) {
			return build(Section[*vae.Config](c, name), g, dev), nil
		},
		Generator: priorGenerator,
	}
}

type vaeModel struct {
	*vae.VAE
	g   Geometry
	dev torch.Device
}

func (m *vaeModel) Module() *nn.Module { return m.VAE.Module }
func (m *vaeModel) Loss(x, _ *torch.Tensor) *torch.Tensor {
	return m.VAE.Loss(x.Flatten(1, -1), nil)
}
func (m *vaeModel) Sample(n int64) *torch.Tensor {
	return m.VAE.Sample(n, m.dev).View(append([]int64{n}, m.g.Shape()...)...)
}

// Reconstruct passes images (B, C, H, W) through a VAE's posterior mean.
func (m *vaeModel) Reconstruct(x *torch.Tensor) *torch.Tensor {
	return m.VAE.Reconstruct(x.Flatten(1, -1)).View(x.Shape()...)
}

// Interpolate decodes steps images between a and b (each (1, C, H, W)).
func (m *vaeModel) Interpolate(a, b *torch.Tensor, steps int64) *torch.Tensor {
	return m.VAE.Interpolate(a.Flatten(1, -1), b.Flatten(1, -1), steps).View(append([]int64{steps}, m.g.Shape()...)...)
}

type hvaeModel struct {
	*vae.HVAE
	g   Geometry
	dev torch.Device
}

func (m *hvaeModel) Module() *nn.Module { return m.HVAE.Module }
func (m *hvaeModel) Loss(x, _ *torch.Tensor) *torch.Tensor {
	return m.HVAE.Loss(x.Flatten(1, -1), nil, nil)
}
func (m *hvaeModel) Sample(n int64) *torch.Tensor {
	return m.HVAE.Sample(n, m.dev).View(append([]int64{n}, m.g.Shape()...)...)
}

// Reconstruct passes images (B, C, H, W) through the HVAE's first level.
func (m *hvaeModel) Reconstruct(x *torch.Tensor) *torch.Tensor {
	return m.HVAE.Reconstruct(x.Flatten(1, -1)).View(x.Shape()...)
}

// aeModel trains the KL autoencoder of ladder step 9.
type aeModel struct{ *autoencoder.AutoencoderKL }

func (m *aeModel) Module() *nn.Module                    { return m.AutoencoderKL.Module }
func (m *aeModel) Loss(x, _ *torch.Tensor) *torch.Tensor { return m.AutoencoderKL.Loss(x, nil) }

// judge is the classifier trained to judge samples.
type judge struct{ *classifier.CNN }

func (j *judge) Module() *nn.Module { return j.CNN.Module }
func (j *judge) Loss(x, y *torch.Tensor) *torch.Tensor {
	return torch.CrossEntropyLoss(j.Logits(x), y, torch.ReduceMean, 0)
}
func (j *judge) Correct(x, y *torch.Tensor) int64 {
	return int64(j.Logits(x).Argmax(1, false).Eq(y).To(torch.Int64).Sum().Item())
}
func (j *judge) Describe() (network, features string) {
	return fmt.Sprintf("a models/classifier CNN (conv32-pool-conv64-pool-fc%d-fc%d)", j.Hidden, j.Classes),
		fmt.Sprintf("its %d-d fc1 ReLU layer", j.Hidden)
}
