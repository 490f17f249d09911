package train

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"

	"kakusan/internal/atomic"
	"kakusan/models"
	"kakusan/torch"
)

// Options are the command line's say over a run.
type Options struct {
	Out       string // run folder; overrides out_dir
	Overwrite bool   // reuse an existing, non-empty run folder
	Resume    string // continue the run in this folder from its latest checkpoint
	Log       io.Writer
}

// Run is one training run's folder and logs.
type Run struct {
	Config  *models.Config
	Dir     string
	Log     io.Writer
	metrics *os.File
}

// Start resolves the run folder and writes the resolved config into it. The
// default folder runs/<name> gets a -2, -3, ... suffix rather than touching
// an earlier run; a folder named explicitly (--out or out_dir) must be new
// or empty unless Overwrite.
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
	if !o.Overwrite {
		if explicit && !emptyOrMissing(dir) {
			return nil, fmt.Errorf("run folder %s already holds a run: choose another with --out, or pass --overwrite", dir)
		}
		for base, i := dir, 2; !emptyOrMissing(dir); i++ {
			dir = base + "-" + strconv.Itoa(i)
		}
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	c.OutDir = dir
	if err := atomic.WriteFile(filepath.Join(dir, "config.yaml"), c.Marshal()); err != nil {
		return nil, err
	}
	m, err := os.Create(filepath.Join(dir, "metrics.jsonl"))
	if err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	return &Run{Config: c, Dir: dir, Log: log, metrics: m}, nil
}

// reopen continues a run in its existing folder.
func reopen(c *models.Config, o Options) (*Run, error) {
	if st, err := os.Stat(o.Resume); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("--resume %s: not a run folder", o.Resume)
	}
	c.OutDir = o.Resume
	m, err := os.OpenFile(filepath.Join(o.Resume, "metrics.jsonl"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	log := o.Log
	if log == nil {
		log = io.Discard
	}
	return &Run{Config: c, Dir: o.Resume, Log: log, metrics: m}, nil
}

// truncateMetrics drops the metrics lines past step (logged by the run
// being resumed after its last checkpoint) and leaves the file positioned
// for appending.
func (r *Run) truncateMetrics(step int) error {
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
	rec := map[string]any{"step": step}
	for k, v := range fields {
		rec[k] = v
	}
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	_, err = r.metrics.Write(append(b, '\n'))
	return err
}

// Path is a file inside the run folder.
func (r *Run) Path(name string) string { return filepath.Join(r.Dir, name) }

// Close flushes the metrics.
func (r *Run) Close() error {
	if err := r.metrics.Sync(); err != nil {
		r.metrics.Close()
		return err
	}
	return r.metrics.Close()
}

// Train runs the configured model.
func Train(c *models.Config, o Options) (*Run, error) {
	r, err := Start(c, o)
	if err != nil {
		return nil, err
	}
	switch {
	case models.Neural(c.Model):
		ctx, stop := signalContext()
		defer stop()
		err = torch.Do(func() error { return trainNeural(ctx, r, o.Resume) })
	case o.Resume != "":
		err = fmt.Errorf("--resume: model %q fits in one go; there is nothing to resume", c.Model)
	default:
		err = fitClassical(r)
	}
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return r, err
}

// signalContext is cancelled by the first SIGINT or SIGTERM; a second one
// kills the process as usual.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-ch:
			cancel()
			signal.Stop(ch)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}
