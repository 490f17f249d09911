// Package models is the registry of kakusan's models and what every
// command shares about them: a model's name maps to an Entry (what it is
// and can do, its config sections of its own config types, which the YAML
// fills, and its constructor); configs are read and checked here
// (LoadConfig), and checkpoints read and written (ReadCheckpoint,
// Checkpoint.Write). Training, the sampling jobs and the evaluation build
// models only through the registry, from a config or from a checkpoint,
// and ask an entry what its model can do instead of switching on types:
// adding a model is one entry (entries.go). The models themselves live in
// the sub-packages (gaussian, vae, unet, autoencoder, classifier, prompt)
// and in package diffusion.
package models

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"kakusan/diffusion"
	"kakusan/models/nn"
	"kakusan/sample"
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

// Reconstructor is a model that encodes and decodes images: an entry that
// Can Reconstructs builds one.
type Reconstructor interface {
	Model
	// Reconstruct passes images (B, C, H, W) in [0, 1] through the
	// model's code and back.
	Reconstruct(x *torch.Tensor) *torch.Tensor
}

// Classifier is a model that classifies images: an entry that Can
// Classifies builds one. Its features are the space bin/eval measures
// samples in.
type Classifier interface {
	Model
	// Features are the activations (B, D) the classes are read from, for
	// images (B, C, H, W) in [0, 1].
	Features(x *torch.Tensor) *torch.Tensor
	// Head maps features to class scores (B, classes).
	Head(features *torch.Tensor) *torch.Tensor
	// Correct counts the images of x the model classifies as y.
	Correct(x, y *torch.Tensor) int64
	// Describe is the network and its feature layer in words, for the
	// evaluation's protocol.
	Describe() (network, features string)
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

// Capability is something a model can do. Its registry entry declares
// them, and the commands ask the entry (Entry.Can) rather than the model's
// type: what a sampling job makes of a checkpoint, which flags apply, what
// can judge samples.
type Capability uint

const (
	// FitsPoints: fitted in one go to a table of points (no libtorch);
	// bin/sample --run draws points from its params.json.
	FitsPoints Capability = 1 << iota
	// DrawsImages: draws images of its own (Entry.NewGenerator): the
	// training grids, bin/sample's jobs, bin/eval --checkpoint.
	DrawsImages
	// Diffuses: draws by a diffusion sampler, tuned by the sampling
	// settings (diffusion.Sampling: the sampling flags apply).
	Diffuses
	// Reconstructs: encodes and decodes images (the model is a
	// Reconstructor); one that does not draw images makes sampling jobs
	// of its reconstructions of training images.
	Reconstructs
	// Classifies: classifies images (the model is a Classifier): a judge
	// for bin/eval.
	Classifies
)

var capabilityNames = []string{"fits points", "draws images", "diffuses", "reconstructs", "classifies"}

// String names the capabilities, comma-separated.
func (c Capability) String() string {
	var names []string
	for i, n := range capabilityNames {
		if c&(1<<i) != 0 {
			names = append(names, n)
		}
	}
	return strings.Join(names, ", ")
}

// Entry registers a model: what it is and can do, its config sections and
// its constructor.
type Entry struct {
	Name  string
	About string     // what the model is, in a line
	Can   Capability // what the commands may ask of it
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
	// Generator wraps a model New built as a sampling job's generator,
	// drawing with s (validated for the model); set where Can has
	// DrawsImages.
	Generator func(m Model, s diffusion.Sampling) (sample.Generator, error)
}

// Does reports whether the entry declares every capability in c.
func (e Entry) Does(c Capability) bool { return e.Can&c == c }

// ReconstructsOnly reports whether the entry's model reconstructs images
// without drawing any of its own (the autoencoder): its sampling jobs are
// its reconstructions of training images.
func (e Entry) ReconstructsOnly() bool { return e.Does(Reconstructs) && !e.Does(DrawsImages) }

// NewGenerator wraps m, a model of this entry, as a sampling job's
// generator drawing with s; a model that does not draw images is an
// error saying what it does instead.
func (e Entry) NewGenerator(m Model, s diffusion.Sampling) (sample.Generator, error) {
	if e.Generator != nil {
		return e.Generator(m, s)
	}
	switch {
	case e.Does(Reconstructs):
		return nil, fmt.Errorf("model %q reconstructs images; it does not generate images (bin/sample writes its reconstructions of training images)", e.Name)
	case e.Does(Classifies):
		return nil, fmt.Errorf("model %q classifies images; it does not generate images", e.Name)
	}
	return nil, fmt.Errorf("model %q does not generate images", e.Name)
}

var registry = map[string]Entry{}

// Register adds a model; registering a name twice, or an entry whose
// capabilities and functions disagree, is a programming error.
func Register(e Entry) {
	if _, dup := registry[e.Name]; dup {
		panic("models: " + e.Name + " registered twice")
	}
	if (e.Generator != nil) != e.Does(DrawsImages) || (e.New == nil) != e.Does(FitsPoints) {
		panic("models: " + e.Name + ": Can does not match Generator and New")
	}
	registry[e.Name] = e
}

// Lookup is the entry of a registered model.
func Lookup(name string) (Entry, bool) {
	e, ok := registry[name]
	return e, ok
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
