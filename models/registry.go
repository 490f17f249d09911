// Package models is the registry of kakusan's models: a model's name maps to
// its config sections (its own config types, which the YAML fills) and its
// constructor. Training, the sampling jobs and the evaluation build models
// through it, from a config or from a checkpoint, so adding a model is one
// entry here. The models themselves live in the sub-packages (gaussian, vae,
// unet, classifier) and in package diffusion.
package models

import (
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"sort"

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

// Model is what the training step trains.
type Model interface {
	// Module holds the parameters and buffers under their PyTorch names.
	Module() *nn.Module
	// Loss is the scalar training loss of a batch: images (B, C, H, W) in
	// [0, 1] and int64 labels (B).
	Loss(x, y *torch.Tensor) *torch.Tensor
}

// Sampler is a model that draws images from the current generator: the
// VAEs, whose grids and sampling jobs seed it.
type Sampler interface {
	Model
	// Sample draws n images (n, C, H, W) in [0, 1].
	Sample(n int64) *torch.Tensor
}

// Scorer is a model whose test evaluation also counts correct answers.
type Scorer interface {
	Correct(x, y *torch.Tensor) int64
}

// Geometry is the shape of a dataset's images and its classes: models are
// built for it, and checkpoints record it.
type Geometry struct {
	C, H, W    int
	Classes    int
	ClassNames []string `json:",omitempty"`
}

// Pixels is C·H·W.
func (g Geometry) Pixels() int64 { return int64(g.C * g.H * g.W) }

// Shape is (C, H, W).
func (g Geometry) Shape() []int64 { return []int64{int64(g.C), int64(g.H), int64(g.W)} }

// SameAs reports, as "<g> but the data has <o>", how the data o differs
// from g in shape, class count or class names (nil when it does not):
// a model trained on g must not be resumed or judged with o.
func (g Geometry) SameAs(o Geometry) error {
	names := len(g.ClassNames) > 0 && len(o.ClassNames) > 0 && !slices.Equal(g.ClassNames, o.ClassNames)
	if g.C != o.C || g.H != o.H || g.W != o.W || g.Classes != o.Classes || names {
		return fmt.Errorf("%dx%dx%d images of classes %v, but the data has %dx%dx%d images of classes %v",
			g.C, g.H, g.W, g.classList(), o.C, o.H, o.W, o.classList())
	}
	return nil
}

// classList is the class names, or their count when unnamed.
func (g Geometry) classList() any {
	if len(g.ClassNames) > 0 {
		return g.ClassNames
	}
	return g.Classes
}

// Validate bounds the geometry a checkpoint or dataset may declare.
func (g Geometry) Validate() error {
	if g.C < 1 || g.C > 4 || g.H < 1 || g.W < 1 || g.H > 4096 || g.W > 4096 || g.Classes < 0 || g.Classes > 1<<16 {
		return fmt.Errorf("geometry %dx%dx%d with %d classes is out of range (1-4 channels, sides 1-4096)", g.C, g.H, g.W, g.Classes)
	}
	return nil
}

// Entry registers a model.
type Entry struct {
	Name string
	// Sections makes the model's own config sections, by YAML key, each a
	// pointer to a config type holding its defaults; a type with a
	// Validate() error method is validated with it.
	Sections func() map[string]any
	// Defaults adjusts the shared fields' defaults for the model (optional).
	Defaults func(c *Config)
	// Check validates across sections (optional).
	Check func(c *Config) error
	// New builds the model for data of geometry g on dev; nil for the
	// classical models, which are fitted in one go. from is the checkpoint
	// the model is about to be loaded from (nil: a fresh model): a model
	// with parts trained elsewhere (latent diffusion's autoencoder) reads
	// them from their own files only when fresh.
	New func(c *Config, g Geometry, dev torch.Device, from *Checkpoint) (Model, error)
}

var registry = map[string]Entry{}

// Register adds a model; registering a name twice is a programming error.
func Register(e Entry) {
	if _, dup := registry[e.Name]; dup {
		panic("models: " + e.Name + " registered twice")
	}
	registry[e.Name] = e
}

// Names are the registered models, sorted.
func Names() []string {
	out := make([]string, 0, len(registry))
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Neural reports whether the model trains on libtorch.
func Neural(model string) bool { return registry[model].New != nil }

// sectionOwners lists the models that take a section.
func sectionOwners(key string) []string {
	var out []string
	for _, n := range Names() {
		if e := registry[n]; e.Sections != nil {
			if _, ok := e.Sections()[key]; ok {
				out = append(out, n)
			}
		}
	}
	return out
}

// New builds the configured neural model for geometry g on dev.
func New(c *Config, g Geometry, dev torch.Device) (Model, error) { return Build(c, g, dev, nil) }

// Build is New for a model about to be loaded from the checkpoint from
// (nil: a fresh model); the parts it records (a latent model's autoencoder)
// come from it rather than from their own files.
func Build(c *Config, g Geometry, dev torch.Device, from *Checkpoint) (Model, error) {
	e, ok := registry[c.Model]
	if !ok || e.New == nil {
		return nil, fmt.Errorf("model %q is not a neural model (neural models: %v)", c.Model, neuralNames())
	}
	if err := g.Validate(); err != nil {
		return nil, err
	}
	return e.New(c, g, dev, from)
}

func neuralNames() []string {
	var out []string
	for _, n := range Names() {
		if Neural(n) {
			out = append(out, n)
		}
	}
	return out
}

func init() {
	for _, name := range []string{"normal", "mvn"} {
		Register(Entry{Name: name})
	}
	Register(Entry{Name: "gmm", Sections: func() map[string]any { return map[string]any{"gmm": gaussian.DefaultEM()} }})
	Register(vaeEntry("vae", 200, 0, func(c *vae.Config, g Geometry, dev torch.Device) Model {
		m := vae.NewVAE(g.Pixels(), int64(c.Hidden), int64(c.Latent), dev)
		m.KLWeight = c.KLWeight
		return &vaeModel{m, g, dev}
	}))
	Register(vaeEntry("hvae", 100, 1e-3, func(c *vae.Config, g Geometry, dev torch.Device) Model {
		m := vae.NewHVAE(g.Pixels(), int64(c.Hidden), int64(c.Latent), dev)
		m.KLWeight = c.KLWeight
		return &hvaeModel{m, g, dev}
	}))
	Register(Entry{
		Name: "autoencoder",
		Sections: func() map[string]any {
			return map[string]any{"autoencoder": autoencoder.Defaults()}
		},
		Defaults: func(c *Config) {
			c.Optimizer.LR = 1e-3
			c.Train.BatchSize, c.Train.Epochs = 128, 3
		},
		New: func(c *Config, g Geometry, dev torch.Device, _ *Checkpoint) (Model, error) {
			a, err := autoencoder.New(*Section[*autoencoder.Config](c, "autoencoder"), int64(g.C), int64(g.H), int64(g.W), dev)
			if err != nil {
				return nil, fmt.Errorf("autoencoder: %w", err)
			}
			return &aeModel{a}, nil
		},
	})
	Register(Entry{
		Name: "classifier",
		Sections: func() map[string]any {
			return map[string]any{"classifier": &classifier.Config{Hidden: 128, Dropout: 0.5}}
		},
		Defaults: func(c *Config) {
			c.Optimizer.LR = 1e-3
			c.Train.BatchSize, c.Train.Epochs = 128, 3
		},
		New: func(c *Config, g Geometry, dev torch.Device, _ *Checkpoint) (Model, error) {
			if g.Classes < 2 {
				return nil, fmt.Errorf("classifier: the data has %d classes; a classifier needs at least 2", g.Classes)
			}
			net, err := classifier.New(*Section[*classifier.Config](c, "classifier"), g.Shape(), int64(g.Classes), dev)
			if err != nil {
				return nil, err
			}
			return &Judge{net}, nil
		},
	})
	Register(Entry{
		Name: "diffusion",
		Sections: func() map[string]any {
			return map[string]any{"unet": unet.Defaults(), "diffusion": diffusion.DefaultConfig()}
		},
		Defaults: func(c *Config) {
			// The reference: batch 128, 10 epochs, Adam lr 1e-3.
			c.Samples = 100
			c.Optimizer.LR = 1e-3
			c.Train.BatchSize, c.Train.Epochs = 128, 10
		},
		New: func(c *Config, g Geometry, dev torch.Device, from *Checkpoint) (Model, error) {
			u, d := *Section[*unet.Config](c, "unet"), Section[*diffusion.Config](c, "diffusion")
			if d.Conditional {
				if g.Classes < 1 {
					return nil, errors.New("diffusion.conditional: the data has no classes; set it to false")
				}
				u.Classes = int64(g.Classes)
			}
			if d.Conditioning == "prompt" {
				if err := promptVocabulary(d, g, from); err != nil {
					return nil, err
				}
				u.Vocab, u.Context = int64(len(d.Vocabulary)), prompt.Context
			}
			var codec diffusion.Codec // of pixels, by name
			shape := g.Shape()
			var ae *autoencoder.AutoencoderKL
			if d.Codec == "latent" {
				var err error
				if ae, err = latentAutoencoder(d, g, dev, from); err != nil {
					return nil, err
				}
				codec, shape = diffusion.NewLatent(ae, d), ae.LatentShape()
			}
			u.Channels = shape[0]
			if side := min(shape[1], shape[2]); side>>u.Levels < 1 {
				if ae != nil {
					ae.Free()
				}
				return nil, fmt.Errorf("unet.levels: %d levels halve the model's %dx%d inputs below one pixel (at most %d)", u.Levels, shape[1], shape[2], bitsLen(side)-1)
			}
			net, err := unet.New(u, dev)
			if err != nil {
				if ae != nil {
					ae.Free()
				}
				return nil, fmt.Errorf("unet: %w", err)
			}
			if ae != nil {
				net.Freeze(FirstStagePrefix, ae.Module)
			}
			m, err := diffusion.NewModel(net, d, codec, shape, dev)
			if err != nil {
				net.Free()
				return nil, fmt.Errorf("diffusion: %w", err)
			}
			return m, nil
		},
	})
}

// vaeEntry registers a (hierarchical) VAE under its own section name with
// the book's defaults: latent 20, the given hidden size, and lr when not 0.
func vaeEntry(name string, hidden int, lr float64, build func(*vae.Config, Geometry, torch.Device) Model) Entry {
	return Entry{
		Name: name,
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

// Reconstructor is a model that encodes and decodes images (the VAEs).
type Reconstructor interface {
	Reconstruct(x *torch.Tensor) *torch.Tensor
}

// ReconstructionRows passes images x (B, C, H, W) through r in eval mode
// without gradients and interleaves them in rows of cols: originals, their
// reconstructions below (clamped to [0, 1]), and so on.
func ReconstructionRows(r Reconstructor, x *torch.Tensor, cols int64) *torch.Tensor {
	var rec *torch.Tensor
	if m, ok := r.(Model); ok {
		training := m.Module().Training()
		m.Module().SetTraining(false)
		defer m.Module().SetTraining(training)
	}
	torch.NoGrad(func() { rec = r.Reconstruct(x).Clamp(0, 1) })
	var rows []*torch.Tensor
	for i := int64(0); i < x.Size(0); i += cols {
		k := min(cols, x.Size(0)-i)
		rows = append(rows, x.Narrow(0, i, k), rec.Narrow(0, i, k))
	}
	return torch.Cat(rows, 0)
}

// Reconstruct passes images (B, C, H, W) through a VAE's posterior mean.
func (m *vaeModel) Reconstruct(x *torch.Tensor) *torch.Tensor {
	return m.VAE.Reconstruct(x.Flatten(1, -1)).View(x.Shape()...)
}

// Reconstruct passes images (B, C, H, W) through the HVAE's first level.
func (m *hvaeModel) Reconstruct(x *torch.Tensor) *torch.Tensor {
	return m.HVAE.Reconstruct(x.Flatten(1, -1)).View(x.Shape()...)
}

// Interpolate decodes steps images between a and b (each (1, C, H, W)).
func (m *vaeModel) Interpolate(a, b *torch.Tensor, steps int64) *torch.Tensor {
	return m.VAE.Interpolate(a.Flatten(1, -1), b.Flatten(1, -1), steps).View(append([]int64{steps}, m.g.Shape()...)...)
}

// aeModel trains the KL autoencoder of ladder step 9.
type aeModel struct{ *autoencoder.AutoencoderKL }

// IsAutoencoder reports whether m is the KL autoencoder, which encodes and
// decodes but draws nothing of its own.
func IsAutoencoder(m Model) bool {
	_, ok := m.(*aeModel)
	return ok
}

func (m *aeModel) Module() *nn.Module                    { return m.AutoencoderKL.Module }
func (m *aeModel) Loss(x, _ *torch.Tensor) *torch.Tensor { return m.AutoencoderKL.Loss(x, nil) }

// Judge is the classifier trained to judge samples.
type Judge struct{ *classifier.CNN }

func (j *Judge) Module() *nn.Module { return j.CNN.Module }
func (j *Judge) Loss(x, y *torch.Tensor) *torch.Tensor {
	return torch.CrossEntropyLoss(j.Logits(x), y, torch.ReduceMean, 0)
}
func (j *Judge) Correct(x, y *torch.Tensor) int64 {
	return int64(j.Logits(x).Argmax(1, false).Eq(y).To(torch.Int64).Sum().Item())
}

// bitsLen is the number of bits of n > 0.
func bitsLen(n int64) int64 { return int64(bits.Len64(uint64(n))) }
