package train

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"kakusan/torch"
)

// A checkpoint is one safetensors file holding the whole training state:
// the model's parameters and buffers under their PyTorch names (so the file
// loads into the PyTorch module once the "optimizer.", "ema." and "rng."
// entries are dropped), the optimizer's moments named after their
// parameters, the weights' moving average under "ema.<name>", the CPU
// generator state, and metadata: model kind, step, epoch and the resolved
// config.
const (
	optimPrefix = "optimizer."
	emaPrefix   = "ema."
	rngKey      = "rng.cpu"
)

// Checkpoint is a loaded checkpoint.
type Checkpoint struct {
	Path    string
	Tensors map[string]*torch.Tensor
	Meta    map[string]string
	Step    int
}

func checkpointDir(runDir string) string { return filepath.Join(runDir, "checkpoints") }

// saveCheckpoint writes checkpoints/step-NNNNNNNN.safetensors atomically,
// points latest.safetensors at it and prunes all but the newest keep.
func saveCheckpoint(r *Run, m, ema Model, opt torch.Optimizer, step, epoch, keep int) (string, error) {
	dir := checkpointDir(r.Dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	tensors := m.Module().StateDict()
	state, optStep := opt.State()
	params := m.Module().Params()
	for key, t := range state {
		kind, idx, _ := strings.Cut(key, ".")
		i, err := strconv.Atoi(idx)
		if err != nil || i >= len(params) {
			return "", fmt.Errorf("optimizer state %q does not name a parameter", key)
		}
		tensors[optimPrefix+kind+"."+params[i].Name] = t
	}
	if ema != nil {
		for name, t := range ema.Module().StateDict() {
			tensors[emaPrefix+name] = t
		}
	}
	tensors[rngKey] = torch.RNGState()
	meta := map[string]string{
		"format":                 "pt",
		"kakusan.model":          r.Config.Model,
		"kakusan.step":           strconv.Itoa(step),
		"kakusan.epoch":          strconv.Itoa(epoch),
		"kakusan.optimizer_step": strconv.FormatInt(optStep, 10),
		"kakusan.config":         string(r.Config.Marshal()),
	}
	name := fmt.Sprintf("step-%08d.safetensors", step)
	path := filepath.Join(dir, name)
	if err := torch.SaveFile(path, tensors, meta); err != nil {
		return "", err
	}
	// Repoint latest atomically: a new link, renamed over the old one.
	tmp := filepath.Join(dir, ".latest.tmp")
	os.Remove(tmp)
	if err := os.Symlink(name, tmp); err != nil {
		return "", err
	}
	if err := os.Rename(tmp, filepath.Join(dir, "latest.safetensors")); err != nil {
		return "", err
	}
	steps, _ := filepath.Glob(filepath.Join(dir, "step-*.safetensors"))
	sort.Strings(steps)
	for len(steps) > keep {
		os.Remove(steps[0])
		steps = steps[1:]
	}
	return path, nil
}

// LoadCheckpoint reads a checkpoint file (or a run folder's latest) onto
// dev. The tensors live in the current scope.
func LoadCheckpoint(path string, dev torch.Device) (*Checkpoint, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		for _, p := range []string{filepath.Join(checkpointDir(path), "latest.safetensors"), filepath.Join(path, "latest.safetensors")} {
			if _, err := os.Stat(p); err == nil {
				path = p
				break
			}
		}
		if st, _ := os.Stat(path); st != nil && st.IsDir() {
			return nil, fmt.Errorf("%s: no checkpoints/latest.safetensors in this run folder", path)
		}
	}
	tensors, meta, err := torch.LoadFile(path, dev)
	if err != nil {
		return nil, err
	}
	c := &Checkpoint{Path: path, Tensors: tensors, Meta: meta}
	if meta["kakusan.model"] == "" {
		return nil, fmt.Errorf("%s: not a kakusan checkpoint (no kakusan.model in its metadata)", path)
	}
	if c.Step, err = strconv.Atoi(meta["kakusan.step"]); err != nil {
		return nil, fmt.Errorf("%s: bad kakusan.step %q", path, meta["kakusan.step"])
	}
	return c, nil
}

// Weights returns the tensors to sample with: the moving average when the
// checkpoint has one and ema is true, else the trained weights.
func (c *Checkpoint) Weights(ema bool) map[string]*torch.Tensor {
	avg := map[string]*torch.Tensor{}
	for k, v := range c.Tensors {
		if name, ok := strings.CutPrefix(k, emaPrefix); ok {
			avg[name] = v
		}
	}
	if ema && len(avg) > 0 {
		return avg
	}
	return c.Tensors
}

// HasEMA reports whether the checkpoint carries a moving average.
func (c *Checkpoint) HasEMA() bool {
	for k := range c.Tensors {
		if strings.HasPrefix(k, emaPrefix) {
			return true
		}
	}
	return false
}

// LoadModel loads a checkpoint (a file or a run folder) for use rather than
// training: it rebuilds the model from the config embedded in the file,
// loads the moving average of the weights when ema is true and the file has
// one (else the weights), and puts the model in eval mode. The caller frees
// the model's module.
func LoadModel(path string, dev torch.Device, ema bool) (Model, *Config, *Checkpoint, error) {
	ck, err := LoadCheckpoint(path, dev)
	if err != nil {
		return nil, nil, nil, err
	}
	cfg, err := ParseConfig(ck.Path+" (embedded config)", []byte(ck.Meta["kakusan.config"]), nil)
	if err != nil {
		return nil, nil, nil, err
	}
	m, err := NewModel(cfg, dev)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := m.Module().Load(ck.Weights(ema), optimPrefix, "rng.", emaPrefix); err != nil {
		m.Module().Free()
		return nil, nil, nil, fmt.Errorf("%s: %w", ck.Path, err)
	}
	m.Module().SetTraining(false)
	return m, cfg, ck, nil
}

// restore loads the checkpoint into the model, its moving average (which
// starts from the weights when the checkpoint has none), the optimizer and
// the generator.
func (c *Checkpoint) restore(model string, m, ema Model, opt torch.Optimizer) error {
	if got := c.Meta["kakusan.model"]; got != model {
		return fmt.Errorf("%s: a %q checkpoint, the config trains %q", c.Path, got, model)
	}
	if err := m.Module().Load(c.Tensors, optimPrefix, "rng.", emaPrefix); err != nil {
		return fmt.Errorf("%s: %w", c.Path, err)
	}
	if ema != nil {
		if err := ema.Module().Load(c.Weights(true), optimPrefix, "rng.", emaPrefix); err != nil {
			return fmt.Errorf("%s: moving average: %w", c.Path, err)
		}
	}
	if opt != nil {
		state := map[string]*torch.Tensor{}
		for i, p := range m.Module().Params() {
			for _, kind := range []string{"exp_avg", "exp_avg_sq", "momentum_buffer"} {
				if t, ok := c.Tensors[optimPrefix+kind+"."+p.Name]; ok {
					state[kind+"."+strconv.Itoa(i)] = t
				}
			}
		}
		optStep, err := strconv.ParseInt(c.Meta["kakusan.optimizer_step"], 10, 64)
		if err != nil {
			return fmt.Errorf("%s: bad kakusan.optimizer_step", c.Path)
		}
		if err := opt.LoadState(state, optStep); err != nil {
			return fmt.Errorf("%s: %w", c.Path, err)
		}
	}
	if rng, ok := c.Tensors[rngKey]; ok {
		torch.SetRNGState(rng.To(torch.CPU))
	} else {
		return errors.New(c.Path + ": no generator state (rng.cpu)")
	}
	return nil
}
