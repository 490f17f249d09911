package train

import (
	"bytes"
	"fmt"
	"image"
	"image/color"
	_ "image/png" // DecodeConfig of the grids
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

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

// image writes the PNG at path (a sample grid) under tag.
func (b *board) image(tag string, step int, path string) error {
	return b.timed(func(w *tfevents.Writer) error {
		png, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		cfg, format, err := image.DecodeConfig(bytes.NewReader(png))
		if err != nil || format != "png" {
			return fmt.Errorf("%s: not a PNG: %v", path, err)
		}
		channels := 4 // the colorspace field: 1 grey, 4 RGBA
		if cfg.ColorModel == color.GrayModel || cfg.ColorModel == color.Gray16Model {
			channels = 1
		}
		return w.Image(tag, int64(step), png, cfg.Height, cfg.Width, channels)
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

// resume makes the run's earlier event files agree with the checkpoint it
// goes on from: where the steps are renumbered (another global batch) the
// files are rewritten, the events past the checkpoint dropped and the rest
// renumbered; in any case this file starts with SessionLog START at the
// next step, after which TensorBoard discards the earlier files' events
// from that step on (logged after the checkpoint by the run that stopped).
func (b *board) resume(dir string, ckStep, step int, convert func(int) int) error {
	if b == nil {
		return nil
	}
	if convert != nil {
		files, _ := filepath.Glob(filepath.Join(dir, eventsGlob))
		for _, f := range files {
			if f == b.w.Path {
				continue
			}
			err := tfevents.Rewrite(f, func(s int64) (int64, bool) { return int64(convert(int(s))), s <= int64(ckStep) })
			if err != nil {
				return fmt.Errorf("tensorboard: renumbering %s: %w", f, err)
			}
		}
	}
	return b.timed(func(w *tfevents.Writer) error { return w.Restart(int64(step + 1)) })
}

func (b *board) close() error {
	if b == nil {
		return nil
	}
	return b.w.Close()
}
