package train

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"

	"kakusan/torch/safetensors"
)

// Options are the command line's say over a run.
type Options struct {
	Out       string // run folder; overrides out_dir
	Overwrite bool   // reuse an existing, non-empty run folder
	Log       io.Writer
}

// Run is one training run's folder and logs.
type Run struct {
	Config  *Config
	Dir     string
	Log     io.Writer
	metrics *os.File
}

// Start resolves the run folder and writes the resolved config into it. The
// default folder runs/<name> gets a -2, -3, ... suffix rather than touching
// an earlier run; a folder named explicitly (--out or out_dir) must be new
// or empty unless Overwrite.
func Start(c *Config, o Options) (*Run, error) {
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
	if err := WriteFileAtomic(filepath.Join(dir, "config.yaml"), c.Marshal()); err != nil {
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

// WriteFileAtomic writes b to path through a synced temporary file and a
// rename, so readers see the old file or the new one, never a torn one.
func WriteFileAtomic(path string, b []byte) error {
	return safetensors.WriteAtomic(path, func(w io.Writer) error {
		_, err := w.Write(b)
		return err
	})
}

// Train runs the configured model.
func Train(c *Config, o Options) (*Run, error) {
	r, err := Start(c, o)
	if err != nil {
		return nil, err
	}
	switch c.Model {
	case "normal", "mvn", "gmm":
		err = fitClassical(r)
	default:
		err = fmt.Errorf("model %q has no trainer", c.Model)
	}
	if cerr := r.Close(); err == nil {
		err = cerr
	}
	return r, err
}
