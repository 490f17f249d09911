package models

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"kakusan/datasets"
	"kakusan/torch"
)

// A checkpoint is one safetensors file holding a model and, when written by
// training, the whole training state: the model's parameters and buffers
// under their PyTorch names (so the file loads into the PyTorch module once
// the entries with the prefixes below are dropped), the optimizer's moments
// named after their parameters, the weights' moving average, the
// generators' states, and metadata: model kind, step, epoch, the data's
// geometry and the resolved config.
const (
	OptimPrefix = "optimizer." // optimizer.<kind>.<param>: exp_avg, exp_avg_sq, momentum_buffer
	EMAPrefix   = "ema."       // ema.<param or buffer>: the moving average
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
)

// Checkpoint is a loaded checkpoint.
type Checkpoint struct {
	Path     string
	Tensors  map[string]*torch.Tensor
	Meta     map[string]string
	Step     int
	Config   *Config  // the resolved config it was trained with
	Geometry Geometry // of the data it was trained on
	ema      bool     // it holds a moving average of the weights
}

// Metadata is what a checkpoint of c's model, trained on data of geometry
// g, records beside the step counts.
func Metadata(c *Config, g Geometry, step, epoch int, optStep int64) map[string]string {
	geo, _ := json.Marshal(g)
	return map[string]string{
		"format":     "pt",
		MetaModel:    c.Model,
		MetaStep:     strconv.Itoa(step),
		MetaEpoch:    strconv.Itoa(epoch),
		MetaOptStep:  strconv.FormatInt(optStep, 10),
		MetaConfig:   string(c.Marshal()),
		MetaGeometry: string(geo),
	}
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
	if meta[MetaModel] == "" {
		return nil, fmt.Errorf("%s: not a kakusan checkpoint (no %s in its metadata)", path, MetaModel)
	}
	if c.Step, err = strconv.Atoi(meta[MetaStep]); err != nil || c.Step < 0 {
		return nil, fmt.Errorf("%s: bad %s %q", path, MetaStep, meta[MetaStep])
	}
	if c.Config, err = ParseConfig(path+" (embedded config)", []byte(meta[MetaConfig]), nil); err != nil {
		return nil, err
	}
	if c.Config.Model != meta[MetaModel] {
		return nil, fmt.Errorf("%s: metadata says model %q, the embedded config %q", path, meta[MetaModel], c.Config.Model)
	}
	if g, ok := meta[MetaGeometry]; ok {
		if err := json.Unmarshal([]byte(g), &c.Geometry); err != nil {
			return nil, fmt.Errorf("%s: bad %s: %v", path, MetaGeometry, err)
		}
	} else if c.Geometry, err = DataGeometry(c.Config); err != nil { // written before geometry was recorded
		return nil, fmt.Errorf("%s: no %s, and its data: %w", path, MetaGeometry, err)
	}
	if err := c.Geometry.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
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
	if ema && len(avg) > 0 {
		return avg
	}
	return c.Tensors
}

// Entry is the registry entry of the checkpoint's model (ReadCheckpoint
// checked that it has one).
func (c *Checkpoint) Entry() Entry { return registry[c.Config.Model] }

// HasEMA reports whether the checkpoint carries a moving average.
func (c *Checkpoint) HasEMA() bool { return c.ema }

// GlobalBatch is the number of images a step of its run trained on: the
// batch size times the ranks.
func (c *Checkpoint) GlobalBatch() int {
	world, err := strconv.Atoi(c.Meta[MetaWorld])
	if err != nil || world < 1 || world > 1<<16 {
		world = 1
	}
	if c.Config == nil || c.Config.Train == nil {
		return world
	}
	return c.Config.Train.BatchSize * world
}

// Free releases the tensors (the metadata stays).
func (c *Checkpoint) Free() {
	for _, t := range c.Tensors {
		t.Free()
	}
	c.Tensors = nil
}

// LoadWeights copies the checkpoint's weights (the moving average when ema
// and present) into m strictly, ignoring the training state.
func (c *Checkpoint) LoadWeights(m Model, ema bool) error {
	if err := m.Module().Load(c.Weights(ema), OptimPrefix, RNGPrefix, EMAPrefix); err != nil {
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
	if err := ck.LoadWeights(m, ema); err != nil {
		Free(m)
		return nil, nil, err
	}
	m.Module().SetTraining(false)
	return m, ck, nil
}

// DataGeometry is the geometry of the config's dataset (its test split).
func DataGeometry(c *Config) (Geometry, error) {
	set, err := datasets.Load(c.Data.Dataset, c.Data.Dir, c.Data.Size, "test")
	if err != nil {
		return Geometry{}, err
	}
	return GeometryOf(set), nil
}

// GeometryOf is an image set's geometry.
func GeometryOf(s *datasets.Images) Geometry {
	return Geometry{C: s.C, H: s.H, W: s.W, Classes: s.Classes, ClassNames: s.ClassNames}
}
