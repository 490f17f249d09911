package train

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"kakusan/internal/atomic"
	"kakusan/internal/signals"
	"kakusan/models"
	"kakusan/torch"
)

// Options are the command line's say over a run.
type Options struct {
	Out       string // run folder; overrides out_dir
	Overwrite bool   // reuse an existing, non-empty run folder
	Resume    string // continue the run in this folder from its latest checkpoint
	Log       io.Writer
	// Dist is this process's place in a data-parallel job (DistFromEnv);
	// nil: it trains alone. Only rank 0 touches the run folder.
	Dist *DistEnv
	// Scorer loads the judge of evaluation during training
	// (train.eval_every); bin/train passes eval.NewScorer's.
	Scorer NewScorer
}

// Run is one training run's folder and logs. It holds an exclusive lock on
// the folder for its lifetime, so two processes never train into one run.
type Run struct {
	Config  *models.Config
	Dir     string
	Log     io.Writer
	metrics *os.File
	lock    *os.File
	created bool // the folder was made by this run (removed again if it fails before writing anything of worth)
	dist    *DistEnv
	board   *board // TensorBoard's event file; nil: train.tensorboard off, or a rank other than 0
	scorer  NewScorer
}

// Start resolves the run folder, locks it and writes the resolved config
// into it. The default folder runs/<name> gets a -2, -3, ... suffix rather
// than touching an earlier run; a folder named explicitly (--out or
// out_dir) must be new or empty unless Overwrite, which starts it afresh:
// the old run's checkpoints and samples are removed, so nothing of it is
// mistaken for this run's.
func Start(c *models.Config, o Options) (*Run, error) {
	if o.Resume != "" {
		return reopen(c, o)
	}
	dir, explicit := c.OutDir, true
	if o.Out != "" {
		dir = o.Out
	}
	if dir == "" {
		dir, explicit = filepath.Join("runs", c.Name), false
	}
	if o.Overwrite && !emptyOrMissing(dir) {
		if _, err := os.Stat(filepath.Join(dir, "config.yaml")); err != nil {
			return nil, fmt.Errorf("--overwrite %s: the folder holds no run (no config.yaml); kakusan overwrites only run folders", dir)
		}
	}
	if !o.Overwrite {
		if explicit && !emptyOrMissing(dir) {
			return nil, fmt.Errorf("run folder %s already holds a run: choose another with --out, or pass --overwrite", dir)
		}
		for base, i := dir, 2; !emptyOrMissing(dir); i++ {
			dir = base + "-" + strconv.Itoa(i)
		}
	}
	_, statErr := os.Stat(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	r := &Run{Config: c, Dir: dir, Log: o.Log, created: errors.Is(statErr, os.ErrNotExist)}
	if err := r.open(false); err != nil {
		r.fail()
		return nil, err
	}
	if o.Overwrite {
		old, _ := filepath.Glob(filepath.Join(dir, eventsGlob)) // the old run's event files, not this one's
		old = slices.DeleteFunc(old, func(f string) bool {
			st, err := os.Lstat(f) // only the old run's files: not a folder a user named so
			return err != nil || !st.Mode().IsRegular() || r.board != nil && f == r.board.w.Path
		})
		for _, name := range []string{"checkpoints", "samples", "loss.png", "params.json"} {
			old = append(old, filepath.Join(dir, name))
		}
		for _, f := range old {
			if err := os.RemoveAll(f); err != nil {
				r.fail()
				return nil, err
			}
		}
	}
	c.OutDir = dir
	if err := atomic.WriteFile(filepath.Join(dir, "config.yaml"), c.Marshal()); err != nil {
		r.fail()
		return nil, err
	}
	if err := r.board.config(0, c.Marshal()); err != nil {
		r.fail()
		return nil, err
	}
	return r, nil
}

// reopen continues a run in its existing folder.
func reopen(c *models.Config, o Options) (*Run, error) {
	if st, err := os.Stat(o.Resume); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("--resume %s: not a run folder", o.Resume)
	}
	c.OutDir = o.Resume
	r := &Run{Config: c, Dir: o.Resume, Log: o.Log}
	if err := r.open(true); err != nil {
		return nil, err
	}
	return r, nil
}

// open takes the folder's lock, removes what an earlier process killed
// mid-write left behind, and opens metrics.jsonl (appending when resuming).
func (r *Run) open(resume bool) error {
	if r.Log == nil {
		r.Log = io.Discard
	}
	lock, err := lockFolder(r.Dir)
	if err != nil {
		return err
	}
	r.lock = lock
	for _, pattern := range []string{".*.tmp-*", "checkpoints/.*.tmp-*", "samples/.*.tmp-*", "checkpoints/.latest.tmp"} {
		leftovers, _ := filepath.Glob(filepath.Join(r.Dir, pattern))
		for _, f := range leftovers {
			os.Remove(f)
		}
	}
	flags := os.O_RDWR | os.O_CREATE | os.O_TRUNC
	if resume {
		flags = os.O_RDWR | os.O_CREATE
	}
	if r.metrics, err = os.OpenFile(filepath.Join(r.Dir, "metrics.jsonl"), flags, 0o644); err != nil {
		r.Close()
		return err
	}
	if err := r.openBoard(); err != nil {
		r.Close()
		return err
	}
	return nil
}

// lockFolder takes an exclusive lock on dir/.lock (released when the
// process ends, however it ends) and writes this process's PID into it;
// a folder locked by another process is an error naming that process.
func lockFolder(dir string) (*os.File, error) {
	f, err := os.OpenFile(filepath.Join(dir, ".lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		holder, _ := io.ReadAll(io.LimitReader(f, 32))
		f.Close()
		return nil, fmt.Errorf("run folder %s is in use by process %s: wait for it, or stop it first", dir, strings.TrimSpace(string(holder)))
	}
	f.Truncate(0)
	f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0)
	return f, nil
}

// truncateMetrics drops the metrics lines past step (logged by the run
// being resumed after its last checkpoint), renumbers the others' steps
// with convert when it is not nil (a resume with another global batch), and
// leaves the file positioned for appending.
func (r *Run) truncateMetrics(step int, convert func(int) int) error {
	b, err := os.ReadFile(r.metrics.Name())
	if err != nil {
		return err
	}
	var keep []byte
	for _, line := range bytes.SplitAfter(b, []byte("\n")) {
		var rec struct {
			Step *int `json:"step"`
		}
		if len(bytes.TrimSpace(line)) == 0 || json.Unmarshal(line, &rec) != nil || rec.Step == nil || *rec.Step > step {
			continue
		}
		if convert != nil {
			var fields map[string]any
			dec := json.NewDecoder(bytes.NewReader(line))
			dec.UseNumber() // the other fields as written
			if dec.Decode(&fields) != nil {
				continue
			}
			fields["step"] = convert(*rec.Step)
			b, err := json.Marshal(fields)
			if err != nil {
				return err
			}
			line = append(b, '\n')
		}
		keep = append(keep, line...)
	}
	if err := r.metrics.Truncate(0); err != nil {
		return err
	}
	if _, err := r.metrics.WriteAt(keep, 0); err != nil {
		return err
	}
	_, err = r.metrics.Seek(int64(len(keep)), io.SeekStart)
	return err
}

func emptyOrMissing(dir string) bool {
	entries, err := os.ReadDir(dir)
	return errors.Is(err, os.ErrNotExist) || (err == nil && len(entries) == 0)
}

// Metric appends one JSON object to metrics.jsonl; it always has "step".
func (r *Run) Metric(step int, fields map[string]any) error {
	if r.metrics == nil { // a rank other than 0 writes nothing
		return nil
	}
	rec := map[string]any{"step": step}
	for k, v := range fields {
		rec[k] = v
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if _, err = r.metrics.Write(append(b, '\n')); err != nil {
		return err
	}
	return r.board.scalars(step, fields)
}

// Path is a file inside the run folder.
func (r *Run) Path(name string) string { return filepath.Join(r.Dir, name) }

// Close flushes the metrics and the event file and releases the folder.
func (r *Run) Close() error {
	err := r.board.close()
	r.board = nil
	if r.metrics != nil && err != nil {
		r.metrics.Close()
	} else if r.metrics != nil {
		if err = r.metrics.Sync(); err == nil {
			err = r.metrics.Close()
		} else {
			r.metrics.Close()
		}
	}
	if r.lock != nil {
		r.lock.Close()
	}
	return err
}

// fail ends a run that failed: it gives back a folder the run made but
// wrote nothing of worth into, then releases it.
func (r *Run) fail() {
	r.discard()
	r.Close()
}

// discard removes the folder of a run that failed before writing a
// checkpoint or parameters, so that its --out can be used again; a folder
// that was there before, or holds anything of worth, is left alone. The
// lock is still held while it does.
func (r *Run) discard() {
	if !r.created {
		return
	}
	for _, worth := range []string{"checkpoints", "params.json", "samples"} {
		if _, err := os.Stat(filepath.Join(r.Dir, worth)); err == nil {
			return
		}
	}
	os.RemoveAll(r.Dir)
}

// Train runs the configured model.
func Train(c *models.Config, o Options) (*Run, error) {
	if o.Dist != nil && !models.Neural(c.Model) {
		return nil, fmt.Errorf("model %q fits in one go on one process; data-parallel training (WORLD_SIZE=%d) is for neural models", c.Model, o.Dist.World)
	}
	if o.Dist != nil && o.Dist.Rank != 0 {
		return nil, follow(c, o)
	}
	if err := checkInitFrom(c, o); err != nil {
		return nil, err
	}
	r, err := Start(c, o)
	if err != nil {
		return nil, err
	}
	r.dist, r.scorer = o.Dist, o.Scorer
	switch {
	case models.Neural(c.Model):
		ctx, stop := signals.Context()
		defer stop()
		err = torch.Do(func() error { return trainNeural(ctx, r, o.Resume) })
	case o.Resume != "":
		err = fmt.Errorf("--resume: model %q fits in one go; there is nothing to resume", c.Model)
	default:
		err = fitClassical(r)
	}
	if err != nil && !errors.Is(err, signals.ErrInterrupted) {
		r.discard()
	}
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return r, err
}

// checkInitFrom checks train.init_from before the run folder is touched
// (--overwrite would clear it first): a checkpoint file, or a run folder's
// latest, of the model the config trains, and not inside the folder being
// overwritten.
func checkInitFrom(c *models.Config, o Options) error {
	if c.Train == nil || c.Train.InitFrom == "" || o.Resume != "" {
		return nil
	}
	path, err := models.ResolveCheckpoint(c.Train.InitFrom)
	if err != nil {
		return fmt.Errorf("train.init_from: %w", err)
	}
	out := o.Out
	if out == "" {
		out = c.OutDir
	}
	if abs, aerr := filepath.Abs(path); o.Overwrite && out != "" && aerr == nil {
		if dir, derr := filepath.Abs(out); derr == nil && strings.HasPrefix(abs, dir+string(filepath.Separator)) {
			return fmt.Errorf("train.init_from %s is inside %s, which --overwrite would clear first: copy it elsewhere", path, out)
		}
	}
	kind, err := models.CheckpointModel(path) // a regular file's header: a FIFO is refused unread
	if err != nil {
		return fmt.Errorf("train.init_from: %w", err)
	}
	if kind != c.Model {
		return fmt.Errorf("train.init_from %s: a %q checkpoint; this run trains %q", path, kind, c.Model)
	}
	return nil
}

// follow trains as a rank other than 0: the same steps on its share of the
// data, writing nothing (rank 0 sends it the state it resumes from).
func follow(c *models.Config, o Options) error {
	r := &Run{Config: c, Log: io.Discard, dist: o.Dist}
	ctx, stop := signals.Context()
	defer stop()
	err := torch.Do(func() error { return trainNeural(ctx, r, "") })
	if errors.Is(err, signals.ErrInterrupted) {
		return err
	}
	if err != nil {
		return fmt.Errorf("rank %d: %w", o.Dist.Rank, err)
	}
	return nil
}
