package train

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"kakusan/models"
	"kakusan/torch"
)

// State is a training run's whole state, in one value: what a checkpoint
// holds (Save) and a resume restores (Restore). It owns the model, the
// moving average and the optimizer, and frees them (Free); the training
// step works on them (Step), the loop drives it. The generators' states
// live in libtorch and are saved and restored with the rest.
type State struct {
	Config   *models.Config
	Geometry models.Geometry // of the data the model is trained on
	Model    models.Model
	EMA      *EMA // the weights' moving average; nil: none
	Opt      torch.Optimizer
	Step     int // steps done
	Epoch    int // the epoch the next step is in
	World    int // data-parallel ranks a step is spread over (1: alone)
}

// NewState builds the state of a run of c on data of geometry g on dev,
// at step 0: the model (to be loaded from the checkpoint from when
// resuming, which then holds the parts trained elsewhere: a latent model's
// autoencoder), the optimizer over its parameters and, when c asks for
// one, the moving average, a model of its own that Restore loads or
// StartEMA copies the model into.
func NewState(c *models.Config, g models.Geometry, dev torch.Device, from *models.Checkpoint) (_ *State, err error) {
	s := &State{Config: c, Geometry: g, World: 1}
	defer func() {
		if err != nil {
			s.Free()
		}
	}()
	if s.Model, err = newModel(c, g, dev, from); err != nil {
		return nil, err
	}
	s.Opt = newOptimizer(c.Optimizer, s.Model.Module().ParamTensors())
	if t := c.Train; t.EMADecay > 0 {
		avg, err := newModel(c, g, dev, from)
		if err != nil {
			return nil, err
		}
		s.EMA = &EMA{Avg: avg, Decay: t.EMADecay, Warmup: t.EMAWarmup}
	}
	return s, nil
}

// newModel builds the model to train (to be loaded from the checkpoint
// from when resuming); tests swap it.
var newModel = models.Build

// StartEMA starts the moving average from the model's weights (and its
// measured constants): a fresh run's, once the model is calibrated.
func (s *State) StartEMA() error {
	if s.EMA == nil {
		return nil
	}
	return s.EMA.Avg.Module().Load(s.Model.Module().StateDict())
}

// Free releases the model, the moving average and the optimizer.
func (s *State) Free() {
	if s.Model != nil {
		models.Free(s.Model)
	}
	if s.EMA != nil {
		models.Free(s.EMA.Avg)
	}
	if s.Opt != nil {
		s.Opt.Free()
	}
}

// sampler is what draws a run's grids: the moving average when there is
// one, else the model.
func (s *State) sampler() models.Model {
	if s.EMA != nil {
		return s.EMA.Avg
	}
	return s.Model
}

func checkpointName(step int) string { return fmt.Sprintf("step-%08d.safetensors", step) }

// Save writes the state into dir as step-NNNNNNNN.safetensors, points
// latest.safetensors at it and prunes all but the newest keep step files,
// never one newer than this (of a run the folder held before). It returns
// the file's path.
func (s *State) Save(dir string, keep int) (path string, err error) {
	err = torch.Try(func() error { // the generator states it copies are freed after
		path, err = s.save(dir, keep)
		return err
	})
	return path, err
}

func (s *State) save(dir string, keep int) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	ck := models.NewCheckpoint(s.Config, s.Geometry, s.Step, s.Epoch, s.World)
	ck.PutModel(s.Model, "")
	if s.EMA != nil {
		ck.PutModel(s.EMA.Avg, models.EMAPrefix)
	}
	if err := ck.PutOptimizer(s.Opt, s.Model.Module().Params()); err != nil {
		return "", err
	}
	ck.PutRNG()
	name := checkpointName(s.Step)
	path := filepath.Join(dir, name)
	if err := ck.Write(path); err != nil {
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
	prune(dir, path, keep)
	return path, nil
}

// prune removes the checkpoints in dir but the keep last written, path
// (just written) among them: by when they were written, not by step, since
// a resume with another global batch renumbers the steps (a run at batch
// 64 resumed at 128 writes step 1100 after step 2000). Ties go by step.
func prune(dir, path string, keep int) {
	steps, _ := filepath.Glob(filepath.Join(dir, "step-*.safetensors"))
	type ck struct {
		path string
		t    time.Time
	}
	var cks []ck
	for _, p := range steps {
		if st, err := os.Lstat(p); err == nil && st.Mode().IsRegular() && p != path {
			cks = append(cks, ck{p, st.ModTime()})
		}
	}
	slices.SortFunc(cks, func(a, b ck) int {
		if c := a.t.Compare(b.t); c != 0 {
			return c
		}
		return strings.Compare(a.path, b.path)
	})
	for len(cks) > keep-1 {
		os.Remove(cks[0].path)
		cks = cks[1:]
	}
}

// Restore loads the checkpoint ck into the state, after checking it is of
// the model and data being trained: the model, the moving average (which
// starts from the weights when ck has none), the optimizer, the
// generators and the step count (ck's own: a resume with another global
// batch converts it).
func (s *State) Restore(ck *models.Checkpoint) error {
	if got := ck.Config.Model; got != s.Config.Model {
		return fmt.Errorf("%s: a %q checkpoint, the config trains %q", ck.Path, got, s.Config.Model)
	}
	if err := ck.Geometry.SameAs(s.Geometry); err != nil {
		return fmt.Errorf("%s: trained on %w", ck.Path, err)
	}
	if ck.Step < 0 || ck.Step > maxStep {
		return fmt.Errorf("%s: step %d is out of range", ck.Path, ck.Step)
	}
	if err := ck.CheckWhole(s.Model); err != nil {
		return err
	}
	if err := ck.LoadWeights(s.Model, false); err != nil {
		return err
	}
	if s.EMA != nil {
		if err := ck.LoadWeights(s.EMA.Avg, true); err != nil {
			return fmt.Errorf("moving average: %w", err)
		}
	}
	if err := ck.LoadOptimizer(s.Opt, s.Model.Module().Params()); err != nil {
		return err
	}
	if err := ck.RestoreRNG(); err != nil {
		return err
	}
	s.Step, s.Epoch = ck.Step, ck.Epoch
	return nil
}
