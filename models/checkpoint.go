package models

import (
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"kakusan/datasets"
	"kakusan/diffusion"
	"kakusan/models/autoencoder"
	"kakusan/models/nn"
	"kakusan/torch"
	"kakusan/torch/safetensors"
)

// A checkpoint is one safetensors file holding a model and, when written by
// training, the whole training state: the model's parameters, buffers and
// frozen tensors under their PyTorch names (so the file loads into the
// PyTorch module once the entries with the prefixes below are dropped,
// and for a diffusion model its measured constants and its frozen
// autoencoder, first_stage_model.*),
// the optimizer's moments named after their parameters, the weights'
// moving average, the generators' states, and metadata: model kind, step,
// epoch, the data's geometry, the resolved config and, for a latent
// diffusion model, its autoencoder's architecture. This file is the one
// place that reads and writes that format.
const (
	OptimPrefix = "optimizer." // optimizer.<kind>.<param>: exp_avg, exp_avg_sq, momentum_buffer
	EMAPrefix   = "ema."       // ema.<param or buffer>: the moving average (frozen tensors are kept once, unprefixed; earlier versions saved them twice)
	RNGPrefix   = "rng."       // rng.cpu, rng.cuda:N: generator states
)

// Metadata keys.
const (
	MetaModel    = "kakusan.model"
	MetaStep     = "kakusan.step"
	MetaEpoch    = "kakusan.epoch"
	MetaOptStep  = "kakusan.optimizer_step"
	MetaConfig   = "kakusan.config"
	MetaGeometry = "kakusan.geometry"
	// MetaWorld is the number of data-parallel ranks that trained it (absent:
	// one); a step is one batch of train.batch_size images on each.
	MetaWorld = "kakusan.world_size"
	// MetaFirstStage is a latent diffusion model's autoencoder architecture
	// (autoencoder.Config as JSON): its weights are the checkpoint's
	// first_stage_model.* tensors.
	MetaFirstStage = "kakusan.first_stage_config"
	// MetaMaxAbs is the largest magnitude of the parameters and buffers
	// as training left them, by prefix ("" and "ema."), as JSON: a load
	// refuses weights larger than that (an altered checkpoint).
	MetaMaxAbs = "kakusan.max_abs"
)

// maxWeight bounds a weight's magnitude in a checkpoint that records no
// MetaMaxAbs: training makes nothing near it.
const maxWeight = 1e4

// optimizerKinds are the optimizers' per-parameter states.
var optimizerKinds = []string{"exp_avg", "exp_avg_sq", "momentum_buffer"}

// Checkpoint is a checkpoint read from a file, or one being made to be
// written (NewCheckpoint, the Put methods, Write).
type Checkpoint struct {
	Path    string
	Tensors map[string]*torch.Tensor
	Meta    map[string]string
	Step    int
	Epoch   int   // the epoch the next step is in
	OptStep int64 // the optimizer's own step count
	World   int   // the data-parallel ranks a step was spread over
	// Config is the resolved config the model was trained with.
	Config *Config
	// Geometry is of the data it was trained on.
	Geometry Geometry
	// FirstStage is a latent diffusion model's autoencoder architecture;
	// nil for other models.
	FirstStage *autoencoder.Config
	ema        bool               // it holds a moving average of the weights
	maxAbs     map[string]float64 // MetaMaxAbs
}

// NewCheckpoint starts a checkpoint of c's model trained on data of
// geometry g, at step (in epoch), by world data-parallel ranks: the Put
// methods fill it, Write saves it.
func NewCheckpoint(c *Config, g Geometry, step, epoch, world int) *Checkpoint {
	return &Checkpoint{Tensors: map[string]*torch.Tensor{}, Step: step, Epoch: epoch, World: world, Config: c, Geometry: g}
}

// PutModel adds a model's tensors under prefix ("" for the model,
// EMAPrefix for its moving average), and what its checkpoints record of
// it: a latent diffusion model's autoencoder architecture.
func (c *Checkpoint) PutModel(m Model, prefix string) {
	frozen := map[string]bool{} // the moving average's frozen tensors are the model's: one copy
	if prefix != "" {
		for _, n := range m.Module().Frozen() {
			frozen[n.Name] = true
		}
	}
	for name, t := range m.Module().StateDict() {
		if !frozen[name] {
			c.Tensors[prefix+name] = t
		}
	}
	if c.maxAbs == nil {
		c.maxAbs = map[string]float64{}
	}
	c.maxAbs[prefix] = maxAbs(append(m.Module().Params(), m.Module().Buffers()...))
	if fs, ok := m.(interface{ FirstStage() *autoencoder.Config }); ok && prefix == "" {
		c.FirstStage = fs.FirstStage()
	}
	c.ema = c.ema || prefix == EMAPrefix
}

// PutOptimizer adds an optimizer's state over the parameters params, each
// tensor named after its parameter, and its step count.
func (c *Checkpoint) PutOptimizer(opt torch.Optimizer, params []nn.Named) error {
	state, step := opt.State()
	for key, t := range state {
		kind, idx, _ := strings.Cut(key, ".")
		i, err := strconv.Atoi(idx)
		if err != nil || i < 0 || i >= len(params) {
			return fmt.Errorf("optimizer state %q does not name a parameter", key)
		}
		c.Tensors[OptimPrefix+kind+"."+params[i].Name] = t
	}
	c.OptStep = step
	return nil
}

// PutRNG adds the generators' states (the CPU's and each CUDA device's).
// They are copies: the caller frees them with the scope it runs in.
func (c *Checkpoint) PutRNG() {
	for dev, t := range torch.RNGStates() {
		c.Tensors[RNGPrefix+dev] = t
	}
}

// Write saves the checkpoint to path: its tensors and its metadata.
func (c *Checkpoint) Write(path string) error {
	geo, err := json.Marshal(c.Geometry)
	if err != nil {
		return err
	}
	meta := map[string]string{
		"format":     "pt",
		MetaModel:    c.Config.Model,
		MetaStep:     strconv.Itoa(c.Step),
		MetaEpoch:    strconv.Itoa(c.Epoch),
		MetaOptStep:  strconv.FormatInt(c.OptStep, 10),
		MetaConfig:   string(c.Config.Marshal()),
		MetaGeometry: string(geo),
	}
	if c.World > 1 {
		meta[MetaWorld] = strconv.Itoa(c.World)
	}
	if c.maxAbs != nil {
		b, err := json.Marshal(c.maxAbs)
		if err != nil {
			return err
		}
		meta[MetaMaxAbs] = string(b)
	}
	if c.FirstStage != nil {
		fs, err := json.Marshal(c.FirstStage)
		if err != nil {
			return err
		}
		meta[MetaFirstStage] = string(fs)
	}
	c.Path, c.Meta = path, meta
	return torch.SaveFile(path, c.Tensors, meta)
}

// ResolveCheckpoint turns a run folder into the step file its latest link
// points at; a file path is returned as it is.
func ResolveCheckpoint(path string) (string, error) {
	st, err := os.Stat(path)
	if err != nil || !st.IsDir() {
		return path, nil
	}
	for _, p := range []string{filepath.Join(path, "checkpoints", "latest.safetensors"), filepath.Join(path, "latest.safetensors")} {
		if _, err := os.Stat(p); err == nil {
			return filepath.EvalSymlinks(p) // the step file itself: latest moves on
		}
		if target, err := os.Readlink(p); err == nil {
			return "", fmt.Errorf("%s points at %s, which is missing", p, target)
		}
	}
	return "", fmt.Errorf("%s: no checkpoints/latest.safetensors in this run folder", path)
}

// CheckpointModel reads the model kind a checkpoint file records, from its
// safetensors header alone (bounded), without reading its tensors.
func CheckpointModel(path string) (string, error) {
	meta, err := safetensors.ReadMetadata(path)
	if err != nil {
		return "", err
	}
	if meta[MetaModel] == "" {
		return "", fmt.Errorf("%s: not a kakusan checkpoint (no %s in its metadata)", path, MetaModel)
	}
	return meta[MetaModel], nil
}

// ReadCheckpoint reads a checkpoint file (or a run folder's latest) onto
// dev, with its config and geometry. The tensors live in the current scope.
func ReadCheckpoint(path string, dev torch.Device) (*Checkpoint, error) {
	path, err := ResolveCheckpoint(path)
	if err != nil {
		return nil, err
	}
	tensors, meta, err := torch.LoadFile(path, dev) // a regular file of bounded size (internal/files)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Path: path, Tensors: tensors, Meta: meta}
	for k := range tensors {
		c.ema = c.ema || strings.HasPrefix(k, EMAPrefix)
	}
	if err := c.readMeta(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := c.upgrade(dev); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// readMeta reads and checks the metadata.
func (c *Checkpoint) readMeta() error {
	meta := c.Meta
	var err error
	if meta[MetaModel] == "" {
		return fmt.Errorf("not a kakusan checkpoint (no %s in its metadata)", MetaModel)
	}
	if c.Step, err = strconv.Atoi(meta[MetaStep]); err != nil || c.Step < 0 {
		return fmt.Errorf("bad %s %q", MetaStep, meta[MetaStep])
	}
	c.Epoch, _ = strconv.Atoi(meta[MetaEpoch]) // informational
	c.World = 1
	if w, ok := meta[MetaWorld]; ok {
		if c.World, err = strconv.Atoi(w); err != nil || c.World < 1 || c.World > 1<<16 {
			return fmt.Errorf("bad %s %q: want the ranks that trained it, 1 to 65536", MetaWorld, w)
		}
	}
	if m, ok := meta[MetaMaxAbs]; ok {
		if err := json.Unmarshal([]byte(m), &c.maxAbs); err != nil {
			return fmt.Errorf("bad %s %q: %v", MetaMaxAbs, m, err)
		}
	}
	if c.Config, err = ParseConfig(c.Path+" (embedded config)", []byte(meta[MetaConfig]), nil); err != nil {
		return err
	}
	var written struct {
		Data map[string]any `yaml:"data"`
	}
	if yaml.Unmarshal([]byte(meta[MetaConfig]), &written) == nil && written.Data["background"] == nil && c.Config.Train != nil {
		c.Config.Data.Background = "black" // trained before data.background: alpha was composited on black
	}
	if c.Config.Model != meta[MetaModel] {
		return fmt.Errorf("metadata says model %q, the embedded config %q", meta[MetaModel], c.Config.Model)
	}
	if g, ok := meta[MetaGeometry]; ok {
		if err := json.Unmarshal([]byte(g), &c.Geometry); err != nil {
			return fmt.Errorf("bad %s: %v", MetaGeometry, err)
		}
	} else if c.Geometry, err = DataGeometry(c.Config); err != nil { // written before geometry was recorded
		return fmt.Errorf("no %s, and its data: %w", MetaGeometry, err)
	}
	if err := c.Geometry.Validate(); err != nil {
		return err
	}
	if fs, ok := meta[MetaFirstStage]; ok {
		c.FirstStage = new(autoencoder.Config)
		if err := json.Unmarshal([]byte(fs), c.FirstStage); err != nil {
			return fmt.Errorf("bad %s: %v", MetaFirstStage, err)
		}
		if err := c.FirstStage.Validate(); err != nil {
			return fmt.Errorf("%s: %w", MetaFirstStage, err)
		}
	}
	return nil
}

// upgrade gives a checkpoint of an earlier version what this version's
// hold: a diffusion model's measured constants and its autoencoder's
// architecture were recorded in its config (diffusion.latent_scale,
// style_thresholds, autoencoder_config), not as tensors and metadata.
func (c *Checkpoint) upgrade(dev torch.Device) error {
	d := diffusionSection(c.Config)
	if d == nil {
		return nil
	}
	if c.FirstStage == nil && d.AutoencoderConfig != nil {
		a := *d.AutoencoderConfig
		c.FirstStage = &a
	}
	put := func(name string, make func() (*torch.Tensor, error)) error {
		for _, prefix := range []string{"", EMAPrefix} {
			if _, ok := c.Tensors[prefix+name]; ok || (prefix == EMAPrefix && !c.ema) {
				continue
			}
			t, err := make()
			if err != nil {
				return err
			}
			c.Tensors[prefix+name] = t
		}
		return nil
	}
	if d.Codec == "latent" && d.LatentScale > 0 {
		if err := put(diffusion.LatentScaleName, func() (*torch.Tensor, error) { return diffusion.LatentScaleTensor(d.LatentScale, dev), nil }); err != nil {
			return err
		}
	}
	if d.Conditioning == "prompt" && d.StyleThresholds != nil {
		return put(diffusion.StyleThresholdsName, func() (*torch.Tensor, error) { return diffusion.StyleThresholdsTensor(d.StyleThresholds, dev) })
	}
	return nil
}

// Weights returns the tensors to use: the moving average when the
// checkpoint has one and ema is true, else the trained weights.
func (c *Checkpoint) Weights(ema bool) map[string]*torch.Tensor {
	avg := map[string]*torch.Tensor{}
	for k, v := range c.Tensors {
		if name, ok := strings.CutPrefix(k, EMAPrefix); ok {
			avg[name] = v
		}
	}
	if !ema || len(avg) == 0 {
		return c.Tensors
	}
	for k, v := range c.Tensors { // the frozen tensors, kept once (CheckWhole checks the rest is averaged)
		if _, ok := avg[k]; !ok && !strings.HasPrefix(k, EMAPrefix) && !strings.HasPrefix(k, OptimPrefix) && !strings.HasPrefix(k, RNGPrefix) {
			avg[k] = v
		}
	}
	return avg
}

// StoredName is the name in the file of the tensor Weights(ema) holds as
// name: under EMAPrefix where the moving average gave it.
func (c *Checkpoint) StoredName(name string, ema bool) string {
	if _, ok := c.Tensors[EMAPrefix+name]; ok && ema {
		return EMAPrefix + name
	}
	return name
}

// CheckWhole refuses a checkpoint that is not whole for model m, whichever
// of its weights are then used: every floating-point tensor finite (the
// optimizer's state and a frozen autoencoder's too); every parameter and
// buffer of m there with m's shape, and again under the moving average's
// prefix when the checkpoint has one; every frozen tensor there once;
// every optimizer tensor a parameter's, of its shape; the generators'
// states bytes; nothing else. The first problem is named.
func (c *Checkpoint) CheckWhole(m Model) error {
	names := make([]string, 0, len(c.Tensors))
	for k := range c.Tensors {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		if t := c.Tensors[k]; t.DType().IsFloat() && !t.IsFinite().All() {
			return fmt.Errorf("%s: tensor %q holds NaN or infinite values: the checkpoint is damaged", c.Path, k)
		}
	}
	mod := m.Module()
	if err := c.checkMagnitude(mod); err != nil {
		return err
	}
	want := map[string][]int64{}
	params := map[string][]int64{}
	for _, n := range mod.Params() {
		params[n.Name] = n.T.Shape()
	}
	for _, n := range append(mod.Params(), mod.Buffers()...) {
		want[n.Name] = n.T.Shape()
		if c.ema {
			want[EMAPrefix+n.Name] = n.T.Shape()
		}
	}
	for _, n := range mod.Frozen() {
		want[n.Name] = n.T.Shape()
	}
	for _, name := range slices.Sorted(maps.Keys(want)) {
		shape := want[name]
		t, ok := c.Tensors[name]
		switch {
		case !ok:
			return fmt.Errorf("%s: tensor %q is missing: the checkpoint is damaged or of another model", c.Path, name)
		case !slices.Equal(t.Shape(), shape):
			return fmt.Errorf("%s: tensor %q has shape %v, the model wants %v", c.Path, name, t.Shape(), shape)
		}
	}
	for _, k := range names {
		t := c.Tensors[k]
		switch {
		case want[k] != nil:
		case strings.HasPrefix(k, OptimPrefix):
			_, param, _ := strings.Cut(strings.TrimPrefix(k, OptimPrefix), ".")
			if shape, ok := params[param]; !ok || !slices.Equal(t.Shape(), shape) {
				return fmt.Errorf("%s: optimizer tensor %q is of no parameter of the model (shape %v): the checkpoint is damaged", c.Path, k, t.Shape())
			}
		case strings.HasPrefix(k, RNGPrefix):
			if t.DType() != torch.Uint8 || t.Numel() == 0 {
				return fmt.Errorf("%s: generator state %q is not bytes: the checkpoint is damaged", c.Path, k)
			}
		case strings.HasPrefix(k, EMAPrefix) && want[strings.TrimPrefix(k, EMAPrefix)] != nil:
			// an earlier version's second copy of a frozen tensor
			if shape := want[strings.TrimPrefix(k, EMAPrefix)]; !slices.Equal(t.Shape(), shape) {
				return fmt.Errorf("%s: tensor %q has shape %v, the model wants %v", c.Path, k, t.Shape(), shape)
			}
		default:
			return fmt.Errorf("%s: unexpected tensor %q (not part of this model)", c.Path, k)
		}
	}
	return nil
}

// Entry is the registry entry of the checkpoint's model (ReadCheckpoint
// checked that it has one).
func (c *Checkpoint) Entry() Entry { return registry[c.Config.Model] }

// HasEMA reports whether the checkpoint carries a moving average.
func (c *Checkpoint) HasEMA() bool { return c.ema }

// GlobalBatch is the number of images a step of its run trained on: the
// batch size times the accumulated batches times the ranks.
func (c *Checkpoint) GlobalBatch() int {
	if c.Config == nil || c.Config.Train == nil {
		return c.World
	}
	return c.Config.Train.StepImages() * c.World
}

// maxAbs is the largest magnitude among ts' floating-point tensors.
func maxAbs(ts []nn.Named) float64 {
	m := 0.0
	torch.NoGrad(func() {
		for _, n := range ts {
			if n.T.DType().IsFloat() && n.T.Numel() > 0 {
				torch.Scoped(func() { m = max(m, n.T.Abs().Max().Item()) })
			}
		}
	})
	return m
}

// checkMagnitude refuses weights (parameters and buffers, the moving
// average's too) larger than training left them (MetaMaxAbs), or, in a
// checkpoint that does not record that, larger than maxWeight: finite but
// exploded weights draw saturated images.
func (c *Checkpoint) checkMagnitude(mod *nn.Module) error {
	for _, prefix := range []string{"", EMAPrefix} {
		if prefix == EMAPrefix && !c.ema {
			continue
		}
		var ts []nn.Named
		for _, n := range append(mod.Params(), mod.Buffers()...) {
			if t, ok := c.Tensors[prefix+n.Name]; ok {
				ts = append(ts, nn.Named{Name: prefix + n.Name, T: t})
			}
		}
		got := maxAbs(ts)
		bound, recorded := c.maxAbs[prefix]
		switch {
		case recorded && got > bound*(1+1e-6):
			return fmt.Errorf("%s: %sweights of magnitude up to %g, but training left them at most %g (%s): the checkpoint was altered", c.Path, prefix, got, bound, MetaMaxAbs)
		case !recorded && got > maxWeight:
			return fmt.Errorf("%s: %sweights of magnitude up to %g, far beyond what training makes (at most %g): the checkpoint is damaged", c.Path, prefix, got, float64(maxWeight))
		}
	}
	return nil
}

// Free releases the tensors (the metadata stays).
func (c *Checkpoint) Free() {
	for _, t := range c.Tensors {
		t.Free()
	}
	c.Tensors = nil
}

// LoadWeights copies the checkpoint's weights (the moving average when ema
// and present) into m strictly, ignoring the training state, and checks
// them against what m's config fixes (a latent scale it gives).
func (c *Checkpoint) LoadWeights(m Model, ema bool) error {
	if err := m.Module().Load(c.Weights(ema), OptimPrefix, RNGPrefix, EMAPrefix); err != nil {
		if ema && c.HasEMA() {
			return fmt.Errorf("%s: its moving average (the tensors named %s<name> in the file): %w", c.Path, EMAPrefix, err)
		}
		return fmt.Errorf("%s: %w", c.Path, err)
	}
	if k, ok := m.(interface{ CheckConstants() error }); ok {
		if err := k.CheckConstants(); err != nil {
			return fmt.Errorf("%s: %w", c.Path, err)
		}
	}
	return nil
}

// LoadOptimizer restores an optimizer over the parameters params from the
// checkpoint's state for them.
func (c *Checkpoint) LoadOptimizer(opt torch.Optimizer, params []nn.Named) error {
	state := map[string]*torch.Tensor{}
	for i, p := range params {
		for _, kind := range optimizerKinds {
			if t, ok := c.Tensors[OptimPrefix+kind+"."+p.Name]; ok {
				state[kind+"."+strconv.Itoa(i)] = t
			}
		}
	}
	step, err := strconv.ParseInt(c.Meta[MetaOptStep], 10, 64)
	if err != nil || step < 0 {
		return fmt.Errorf("%s: bad %s", c.Path, MetaOptStep)
	}
	if err := opt.LoadState(state, step); err != nil {
		return fmt.Errorf("%s: %w", c.Path, err)
	}
	return nil
}

// RestoreRNG sets the generators to the checkpoint's states; a CUDA
// generator this machine lacks is left out.
func (c *Checkpoint) RestoreRNG() error {
	rng := map[string]*torch.Tensor{}
	for k, t := range c.Tensors {
		dev, ok := strings.CutPrefix(k, RNGPrefix)
		if d, err := torch.ParseDevice(dev); ok && (dev == "cpu" || err == nil && d.Index < torch.CUDADeviceCount()) {
			rng[dev] = t.To(torch.CPU)
		}
	}
	if rng["cpu"] == nil {
		return fmt.Errorf("%s: no generator state (%scpu)", c.Path, RNGPrefix)
	}
	if err := torch.SetRNGStates(rng); err != nil {
		return fmt.Errorf("%s: %w", c.Path, err)
	}
	return nil
}

// Load loads a checkpoint (a file or a run folder) for use rather than
// training: it rebuilds the model from the config and geometry recorded in
// the file, loads the moving average of the weights when ema is true and
// the file has one (else the weights), and puts the model in eval mode.
// The returned checkpoint keeps its metadata, not its tensors (they are
// freed once copied into the model). The caller frees the model with
// models.Free.
func Load(path string, dev torch.Device, ema bool) (Model, *Checkpoint, error) {
	ck, err := ReadCheckpoint(path, dev)
	if err != nil {
		return nil, nil, err
	}
	defer ck.Free()
	m, err := Build(ck.Config, ck.Geometry, dev, ck)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", ck.Path, err)
	}
	if err := ck.CheckWhole(m); err != nil {
		Free(m)
		return nil, nil, err
	}
	if err := ck.LoadWeights(m, ema); err != nil {
		Free(m)
		return nil, nil, err
	}
	m.Module().SetTraining(false)
	return m, ck, nil
}

// DataGeometry is the geometry of the config's dataset (its test split).
func DataGeometry(c *Config) (Geometry, error) {
	set, err := c.Data.Load("test", nil)
	if err != nil {
		return Geometry{}, err
	}
	return GeometryOf(set), nil
}

// GeometryOf is an image set's geometry.
func GeometryOf(s *datasets.Images) Geometry {
	return Geometry{C: s.C, H: s.H, W: s.W, Classes: s.Classes, ClassNames: s.ClassNames}
}
