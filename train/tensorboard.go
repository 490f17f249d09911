package train

import (
	"encoding/json"
	"fmt"
	"image"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"kakusan/internal/atomic"
	"kakusan/internal/files"
	"kakusan/internal/tfevents"
)

// eventsGlob matches a run folder's TensorBoard event files.
const eventsGlob = "events.out.tfevents.*"

// board is a run's TensorBoard event file: what metrics.jsonl logs, as
// scalars, plus the sample grids and the config. Each write is flushed, so
// a TensorBoard pointed at runs/ shows the run live. Its cost is timed.
type board struct {
	w     *tfevents.Writer
	spent time.Duration
	n     int // events written
}

// openBoard starts a new event file in the run folder when the config asks
// for one (only rank 0 has a run folder to write into).
func (r *Run) openBoard() error {
	if r.Config.Train == nil || !r.Config.Train.TensorBoard {
		return nil
	}
	w, err := tfevents.Create(r.Dir)
	if err != nil {
		return fmt.Errorf("train.tensorboard: %w", err)
	}
	r.board = &board{w: w}
	return nil
}

// timed runs f, a batch of writes, and flushes them.
func (b *board) timed(f func(w *tfevents.Writer) error) error {
	if b == nil {
		return nil
	}
	if b.w == nil { // discarded
		return nil
	}
	start := time.Now()
	err := f(b.w)
	if ferr := b.w.Flush(); err == nil {
		err = ferr
	}
	b.spent += time.Since(start)
	b.n++
	if err != nil {
		return fmt.Errorf("tensorboard %s: %w", b.w.Path, err)
	}
	return nil
}

// scalarTag is the TensorBoard tag of a metrics.jsonl field: test_ and
// eval_ fields under test/ and eval/, the training step's under train/.
func scalarTag(key string) string {
	for _, group := range []string{"test", "eval"} {
		if rest, ok := strings.CutPrefix(key, group+"_"); ok {
			return group + "/" + rest
		}
	}
	return "train/" + key
}

// scalars writes a metrics line's numbers (the epoch aside: it is the
// x-axis's other name).
func (b *board) scalars(step int, fields map[string]any) error {
	keys := make([]string, 0, len(fields))
	for k := range fields {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return b.timed(func(w *tfevents.Writer) error {
		for _, k := range keys {
			var v float64
			switch x := fields[k].(type) {
			case float64:
				v = x
			case int:
				v = float64(x)
			default:
				continue
			}
			if k == "epoch" {
				continue
			}
			if err := w.Scalar(scalarTag(k), int64(step), v); err != nil {
				return err
			}
		}
		return nil
	})
}

// image writes img, encoded as the PNG png (a sample grid), under tag.
func (b *board) image(tag string, step int, img image.Image, png []byte) error {
	return b.timed(func(w *tfevents.Writer) error {
		channels := 4 // the colorspace field: 1 grey, 4 RGBA
		if _, grey := img.(*image.Gray); grey {
			channels = 1
		}
		r := img.Bounds()
		return w.Image(tag, int64(step), png, r.Dy(), r.Dx(), channels)
	})
}

// config writes the resolved config as text (indented: markdown shows it
// as it is).
func (b *board) config(step int, yaml []byte) error {
	return b.timed(func(w *tfevents.Writer) error {
		text := "    " + strings.ReplaceAll(strings.TrimRight(string(yaml), "\n"), "\n", "\n    ")
		return w.Text("config", int64(step), text)
	})
}

// renumbered records, in a run folder, the renumbering of a resume with
// another global batch (resumed from checkpoint, its steps converted), so
// that a resume that stops half-way and is retried converts nothing twice.
type renumbered struct {
	Checkpoint string   `json:"checkpoint"`
	Metrics    bool     `json:"metrics"` // metrics.jsonl is converted
	Events     []string `json:"events"`  // the event files converted
}

func readRenumbered(r *Run, ck string) *renumbered {
	rec := &renumbered{Checkpoint: ck}
	if b, err := files.Read(r.Path(".renumbered"), 1<<20); err == nil {
		var old renumbered
		if json.Unmarshal(b, &old) == nil && old.Checkpoint == ck {
			return &old
		}
	}
	return rec
}

func (rec *renumbered) save(r *Run) error {
	b, _ := json.Marshal(rec)
	return atomic.WriteFile(r.Path(".renumbered"), b)
}

// renumberEvents converts the run folder's event files as a resume with
// another global batch converts metrics.jsonl: the events past the
// checkpoint's step dropped, the others' steps converted (a SessionLog
// START's as the step after its checkpoint's). Event files that are not
// regular files, or cannot be read, are left alone with a warning: their
// steps stay as they were, and TensorBoard may show them twice.
func renumberEvents(r *Run, rec *renumbered, ckStep int, convert func(int) int) error {
	paths, _ := filepath.Glob(r.Path(eventsGlob))
	for _, f := range paths {
		if st, err := os.Lstat(f); err != nil || !st.Mode().IsRegular() || slices.Contains(rec.Events, filepath.Base(f)) ||
			r.board != nil && f == r.board.w.Path { // this process's own, new file
			continue
		}
		err := tfevents.Rewrite(f, func(s int64, start bool) (int64, bool) {
			if start {
				return int64(convert(int(s)-1) + 1), int(s)-1 <= ckStep
			}
			return int64(convert(int(s))), s <= int64(ckStep)
		})
		if err != nil {
			fmt.Fprintf(r.Log, "warning: tensorboard: %s keeps its steps (renumbering it failed: %v); delete it if TensorBoard shows steps twice\n", f, err)
			continue
		}
		rec.Events = append(rec.Events, filepath.Base(f))
		if err := rec.save(r); err != nil {
			return err
		}
	}
	return nil
}

// resume starts this event file with SessionLog START at the step after
// the checkpoint the run goes on from: TensorBoard then discards the
// earlier files' events from that step on (logged after the checkpoint by
// the run that stopped), as it does for TensorFlow's restarts.
func (b *board) resume(step int) error {
	if b == nil {
		return nil
	}
	return b.timed(func(w *tfevents.Writer) error { return w.Restart(int64(step + 1)) })
}

// discard closes and removes this process's event file (a resume that had
// nothing to train), so retries leave no files behind; the run's later
// writes go nowhere.
func (b *board) discard() {
	if b == nil || b.w == nil {
		return
	}
	b.w.Close()
	os.Remove(b.w.Path)
	b.w = nil
}

func (b *board) close() error {
	if b == nil || b.w == nil {
		return nil
	}
	return b.w.Close()
}
