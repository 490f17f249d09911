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
	"kakusan/models/unet"
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
	// A run's config (a fresh run, or a resume's, read apart from its
	// checkpoint) is to train: its batch must fit. A checkpoint's own
	// config (Load: sampling, serving, judging) trained on its machine, and
	// builds here to draw, whatever batch it trained with.
	if from == nil || c != from.Config {
		if err := checkTrainingBatch(c, g, dev, from); err != nil {
			return nil, err
		}
	}
	return e.New(c, g, dev, from)
}

// maxDeviceMemory bounds a training step on a CUDA device, whose memory
// the host's does not tell: more than any one GPU has (a B200's 192 GB).
// A batch under it that the GPU cannot hold ends in libtorch's "CUDA out
// of memory", an error like any other.
const maxDeviceMemory = 256 << 30

// CheckTrainingBatch refuses a train.batch_size whose training step on
// images of g cannot fit in the memory this process may use (on the CPU
// torch.HostMemory: the machine's, or its cgroup's limit; on a GPU
// maxDeviceMemory), estimated from the config before anything is
// allocated (trainingBytes), naming the key, the figures and a batch that
// would fit. A batch of 65536 images was accepted and ended in raw
// allocation failures for big images.
func CheckTrainingBatch(c *Config, g Geometry, dev torch.Device) error {
	return checkTrainingBatch(c, g, dev, nil)
}

// checkTrainingBatch is CheckTrainingBatch for a model about to be loaded
// from the checkpoint from (nil: a fresh one), whose recorded autoencoder
// sizes a latent model's latents.
func checkTrainingBatch(c *Config, g Geometry, dev torch.Device, from *Checkpoint) error {
	if c.Train == nil || c.Train.BatchSize < 1 {
		return nil
	}
	per, fixed, what := trainingBytes(c, g, from)
	limit, where := torch.HostMemory()
	if dev.Type == torch.CUDADevice {
		limit, where = maxDeviceMemory, "kakusan's bound for a GPU's memory"
	}
	batch := c.Train.BatchSize
	need := float64(fixed) + float64(per)*float64(batch)
	if limit <= 0 || need <= float64(limit) {
		return nil
	}
	fits := "none fits"
	if n := (limit - fixed) / max(per, 1); n >= 1 {
		fits = fmt.Sprintf("at most about %d images a batch fit (train.accumulate trains a step on several batches)", n)
	}
	return fmt.Errorf("train.batch_size: %d images of %dx%dx%d need about %s for a training step (%s), more than the %s this process may use (%s): %s",
		batch, g.C, g.H, g.W, torch.Bytes(int64(min(need, 1<<62))), what, torch.Bytes(limit), where, fits)
}

// trainingBytes estimates a training step's memory for images of g: per
// image of the batch, and fixed whatever the batch, and says what it
// counts. For a diffusion model, its U-Net's activations
// (unet.Config.ActivationBytes, at the latents' size where the
// autoencoder's architecture is known, else at the image's, which is more)
// and 20 bytes a parameter (weights, gradients, Adam's two moments, the
// moving average); for the other models, the batch itself four times over
// in float32 (input, output, target and gradient), a lower estimate.
func trainingBytes(c *Config, g Geometry, from *Checkpoint) (per, fixed int64, what string) {
	u, ok := c.Sections["unet"].(*unet.Config)
	if !ok || u == nil {
		return 16 * g.Pixels(), 0, "the batch in float32, four times over"
	}
	net := *u
	net.Channels = int64(g.C)
	if d := diffusionSection(c); d != nil && d.Conditional {
		net.Classes = int64(g.Classes)
	}
	h, w := int64(g.H), int64(g.W)
	if d := diffusionSection(c); d != nil && d.Codec == "latent" {
		ae := d.AutoencoderConfig
		if from != nil && from.FirstStage != nil {
			ae = from.FirstStage
		}
		if ae != nil && ae.Validate() == nil {
			hs, ws := ae.Sides(h), ae.Sides(w)
			h, w, net.Channels = hs[len(hs)-1], ws[len(ws)-1], ae.Latent
		}
	}
	return net.ActivationBytes(1, h, w), 20 * net.Params(),
		fmt.Sprintf("the U-Net's activations at %dx%d, from unet.width %d and levels %d, and its %d parameters' weights, gradients and optimizer state", h, w, net.Width, net.Levels, net.Params())
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
