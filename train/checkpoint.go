package train

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"kakusan/models"
	"kakusan/torch"
)

// Training checkpoints follow models' format (see models.Checkpoint): this
// file writes the training state into it and restores it.

func checkpointDir(runDir string) string { return filepath.Join(runDir, "checkpoints") }

func checkpointName(step int) string { return fmt.Sprintf("step-%08d.safetensors", step) }

// saveCheckpoint writes checkpoints/step-NNNNNNNN.safetensors atomically,
// points latest.safetensors at it and prunes all but the newest
// train.keep_checkpoints.
func saveCheckpoint(r *Run, g models.Geometry, m, ema models.Model, opt torch.Optimizer, step, epoch int) (path string, err error) {
	err = torch.Try(func() error { // the generator states it copies are freed after
		path, err = writeCheckpoint(r, g, m, ema, opt, step, epoch)
		return err
	})
	return path, err
}

func writeCheckpoint(r *Run, g models.Geometry, m, ema models.Model, opt torch.Optimizer, step, epoch int) (string, error) {
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
		tensors[models.OptimPrefix+kind+"."+params[i].Name] = t
	}
	if ema != nil {
		for name, t := range ema.Module().StateDict() {
			tensors[models.EMAPrefix+name] = t
		}
	}
	for dev, t := range torch.RNGStates() {
		tensors[models.RNGPrefix+dev] = t
	}
	name := checkpointName(step)
	path := filepath.Join(dir, name)
	meta := models.Metadata(r.Config, g, step, epoch, optStep)
	if r.dist != nil {
		meta[models.MetaWorld] = strconv.Itoa(r.dist.World)
	}
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
	// Prune the oldest, never the one just written nor a later one (of a
	// run this folder held before).
	steps, _ := filepath.Glob(filepath.Join(dir, "step-*.safetensors"))
	sort.Strings(steps)
	older := steps[:sort.SearchStrings(steps, path)]
	for len(older) > r.Config.Train.KeepCheckpoints-1 {
		os.Remove(older[0])
		older = older[1:]
	}
	return path, nil
}

// restore loads a checkpoint into the model, its moving average (which
// starts from the weights when the checkpoint has none), the optimizer and
// the generators, after checking it is of the model and data being trained.
func restore(ck *models.Checkpoint, model string, g models.Geometry, m, ema models.Model, opt torch.Optimizer) error {
	if got := ck.Meta[models.MetaModel]; got != model {
		return fmt.Errorf("%s: a %q checkpoint, the config trains %q", ck.Path, got, model)
	}
	if err := ck.Geometry.SameAs(g); err != nil {
		return fmt.Errorf("%s: trained on %w", ck.Path, err)
	}
	if err := m.Module().Load(ck.Tensors, models.OptimPrefix, models.RNGPrefix, models.EMAPrefix); err != nil {
		return fmt.Errorf("%s: %w", ck.Path, err)
	}
	if ema != nil {
		if err := ema.Module().Load(ck.Weights(true), models.OptimPrefix, models.RNGPrefix, models.EMAPrefix); err != nil {
			return fmt.Errorf("%s: moving average: %w", ck.Path, err)
		}
	}
	state := map[string]*torch.Tensor{}
	for i, p := range m.Module().Params() {
		for _, kind := range []string{"exp_avg", "exp_avg_sq", "momentum_buffer"} {
			if t, ok := ck.Tensors[models.OptimPrefix+kind+"."+p.Name]; ok {
				state[kind+"."+strconv.Itoa(i)] = t
			}
		}
	}
	optStep, err := strconv.ParseInt(ck.Meta[models.MetaOptStep], 10, 64)
	if err != nil || optStep < 0 {
		return fmt.Errorf("%s: bad %s", ck.Path, models.MetaOptStep)
	}
	if err := opt.LoadState(state, optStep); err != nil {
		return fmt.Errorf("%s: %w", ck.Path, err)
	}
	rng := map[string]*torch.Tensor{}
	for k, t := range ck.Tensors {
		dev, ok := strings.CutPrefix(k, models.RNGPrefix)
		if d, err := torch.ParseDevice(dev); ok && (dev == "cpu" || err == nil && d.Index < torch.CUDADeviceCount()) {
			rng[dev] = t.To(torch.CPU) // a CUDA generator this machine lacks is left out
		}
	}
	if rng["cpu"] == nil {
		return fmt.Errorf("%s: no generator state (%scpu)", ck.Path, models.RNGPrefix)
	}
	if err := torch.SetRNGStates(rng); err != nil {
		return fmt.Errorf("%s: %w", ck.Path, err)
	}
	return nil
}
