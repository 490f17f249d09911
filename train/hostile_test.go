package train

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"kakusan/internal/signals"
	"kakusan/models"
	"kakusan/torch"
)

// TestOverwriteKeepsTheNewRun: --overwrite over a longer earlier run must
// leave this run's checkpoints, not the old run's higher-numbered ones.
func TestOverwriteKeepsTheNewRun(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	long := neuralConfig(t, "vae", "train.max_steps=40", "train.checkpoint_every=10", "train.keep_checkpoints=2")
	if _, err := Train(long, Options{Out: out}); err != nil {
		t.Fatal(err)
	}
	short := neuralConfig(t, "vae", "train.max_steps=20", "train.checkpoint_every=10", "train.keep_checkpoints=2")
	if _, err := Train(short, Options{Out: out, Overwrite: true}); err != nil {
		t.Fatal(err)
	}
	steps, _ := filepath.Glob(filepath.Join(out, "checkpoints", "step-*.safetensors"))
	var names []string
	for _, s := range steps {
		names = append(names, filepath.Base(s))
	}
	if strings.Join(names, " ") != "step-00000010.safetensors step-00000020.safetensors" {
		t.Errorf("checkpoints after --overwrite: %v", names)
	}
	if _, err := Train(neuralConfig(t, "vae", "train.max_steps=30"), Options{Resume: out}); err != nil {
		t.Errorf("resume after --overwrite: %v", err)
	}
}

// Checkpoints are pruned by when they were written: a run at one global
// batch resumed at a larger one writes lower step numbers than it left,
// and its earlier checkpoints go once keep_checkpoints newer ones are
// there.
func TestPruneKeepsTheLastWritten(t *testing.T) {
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour)
	write := func(step int, age time.Duration) string {
		p := filepath.Join(dir, checkpointName(step))
		os.WriteFile(p, []byte("x"), 0o644)
		os.Chtimes(p, t0.Add(age), t0.Add(age))
		return p
	}
	for i, step := range []int{1000, 2000, 3000} { // the run at batch 64
		write(step, time.Duration(i)*time.Minute)
	}
	for i, step := range []int{1600, 1700} { // resumed at 128: 3000 is 1500
		p := write(step, time.Duration(10+i)*time.Minute)
		prune(dir, p, 3)
	}
	steps, _ := filepath.Glob(filepath.Join(dir, "step-*.safetensors"))
	var names []string
	for _, p := range steps {
		names = append(names, strings.TrimSuffix(strings.TrimPrefix(filepath.Base(p), "step-"), ".safetensors"))
	}
	if got := strings.Join(names, " "); got != "00001600 00001700 00003000" {
		t.Errorf("kept %s, want the three last written: 00001600 00001700 00003000", got)
	}
}

// TestRunFolderIsLocked: a second process (here a second Start) on a run
// folder in use is refused with the holder's PID.
func TestRunFolderIsLocked(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	c := neuralConfig(t, "vae", "train.max_steps=2")
	r, err := Start(c, Options{Out: out})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Start(neuralConfig(t, "vae", "train.max_steps=2"), Options{Resume: out})
	if err == nil || !strings.Contains(err.Error(), "in use by process") || !strings.Contains(err.Error(), "process "+strconv.Itoa(os.Getpid())) {
		t.Errorf("a second run in a locked folder: %v", err)
	}
	r.Close()
	r2, err := Start(neuralConfig(t, "vae", "train.max_steps=2"), Options{Resume: out})
	if err != nil {
		t.Fatalf("after the first closed: %v", err)
	}
	r2.Close()
}

// TestFailedRunLeavesNoFolderAndCleansLeftovers: a run that fails before
// writing anything of worth gives its --out back; a resumed run clears the
// temporary files a killed process left; resuming a finished run changes
// nothing.
func TestFailedRunLeavesNoFolderAndCleansLeftovers(t *testing.T) {
	out := filepath.Join(t.TempDir(), "run")
	bad := neuralConfig(t, "vae", "train.batch_size=5000", "data.subset=100")
	if _, err := Train(bad, Options{Out: out}); err == nil || !strings.Contains(err.Error(), "larger than the 100 training images") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed run left its folder: %v", err)
	}
	c := neuralConfig(t, "vae", "train.max_steps=10")
	if _, err := Train(c, Options{Out: out}); err != nil {
		t.Fatalf("--out after a failed run: %v", err)
	}
	leftover := filepath.Join(out, "checkpoints", ".step-00000020.safetensors.tmp-123")
	os.WriteFile(leftover, []byte("torn"), 0o644)
	metrics, _ := os.ReadFile(filepath.Join(out, "metrics.jsonl"))
	if _, err := Train(neuralConfig(t, "vae", "train.max_steps=10"), Options{Resume: out}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !errors.Is(err, os.ErrNotExist) {
		t.Error("a killed process's temporary checkpoint survived the next run")
	}
	if again, _ := os.ReadFile(filepath.Join(out, "metrics.jsonl")); string(again) != string(metrics) {
		t.Errorf("resuming a finished run changed metrics.jsonl:\n%s\nto\n%s", metrics, again)
	}
}

// TestBadWeightsAreNamed: a checkpoint whose float weights claim an
// integer dtype, or hold NaN, is refused with the tensor's name.
func TestBadWeightsAreNamed(t *testing.T) {
	c := neuralConfig(t, "vae", "train.max_steps=2")
	r, err := Train(c, Options{Out: filepath.Join(t.TempDir(), "run")})
	if err != nil {
		t.Fatal(err)
	}
	err = torch.Do(func() error {
		ck, err := models.ReadCheckpoint(r.Dir, torch.CPU)
		if err != nil {
			return err
		}
		for name, edit := range map[string]func(*torch.Tensor) *torch.Tensor{
			"is int64, the model wants float32": func(w *torch.Tensor) *torch.Tensor { return w.To(torch.Int64) },
			"holds NaN or infinite values":      func(w *torch.Tensor) *torch.Tensor { return w.MulScalar(0).DivScalar(0) },
		} {
			tensors := map[string]*torch.Tensor{}
			for k, v := range ck.Tensors {
				tensors[k] = v
			}
			tensors["decoder.linear2.bias"] = edit(tensors["decoder.linear2.bias"])
			path := filepath.Join(t.TempDir(), "bad.safetensors")
			if err := torch.SaveFile(path, tensors, ck.Meta); err != nil {
				return err
			}
			if _, _, err := models.Load(path, torch.CPU, false); err == nil || !strings.Contains(err.Error(), `"decoder.linear2.bias" `+name) {
				t.Errorf("want %q, got %v", name, err)
			}
		}
		// A checkpoint path that is a device, or a dangling latest link.
		if _, err := models.ReadCheckpoint("/dev/zero", torch.CPU); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("/dev/zero: %v", err)
		}
		dangling := t.TempDir()
		os.Symlink("step-00000099.safetensors", filepath.Join(dangling, "latest.safetensors"))
		if _, err := models.ReadCheckpoint(dangling, torch.CPU); err == nil || !strings.Contains(err.Error(), "points at step-00000099.safetensors, which is missing") {
			t.Errorf("dangling latest: %v", err)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestSignalDuringAGridCheckpoints: a signal that arrives while a grid is
// drawn stops it within an operation, and the run saves a checkpoint and
// reports the interruption.
func TestSignalDuringAGridCheckpoints(t *testing.T) {
	c := diffusionConfig(t, "train.max_steps=3")
	r, err := Start(c, Options{Out: filepath.Join(t.TempDir(), "run")})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	ctx, cancel := context.WithCancel(context.Background())
	err = torch.Do(func() error {
		l, err := newLoop(ctx, r, "")
		if l != nil {
			defer l.free()
		}
		if err != nil {
			return err
		}
		cancel()
		if err := l.grid("x.png"); !errors.Is(err, errStop) {
			t.Errorf("grid after the signal: %v", err)
		}
		if err := l.evaluate(0); !errors.Is(err, errStop) {
			t.Errorf("evaluation after the signal: %v", err)
		}
		return l.interrupted(0)
	})
	if !errors.Is(err, signals.ErrInterrupted) {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.Dir, "checkpoints", "step-00000000.safetensors")); err != nil {
		t.Error(err)
	}
}

// A resume refused while the run is set up (here train.cuda_graph with a
// moving average's warm-up, which only building the step refuses) leaves the run folder's
// config.yaml and metrics.jsonl as they were: with another batch size the
// metrics' steps would otherwise have been converted already.
func TestRefusedResumeChangesNothing(t *testing.T) {
	r, err := Train(neuralConfig(t, "vae", "train.max_steps=20", "train.log_every=5"), Options{Out: filepath.Join(t.TempDir(), "run")})
	if err != nil {
		t.Fatal(err)
	}
	read := func() (string, string) {
		c, err1 := os.ReadFile(r.Path("config.yaml"))
		m, err2 := os.ReadFile(r.Path("metrics.jsonl"))
		if err1 != nil || err2 != nil {
			t.Fatal(err1, err2)
		}
		return string(c), string(m)
	}
	config, metrics := read()
	c := neuralConfig(t, "vae", "train.max_steps=40", "train.log_every=5", "train.batch_size=64", "train.cuda_graph=true", "train.ema_decay=0.99", "train.ema_warmup=true")
	if _, err := Train(c, Options{Resume: r.Dir}); err == nil || !strings.Contains(err.Error(), "train.cuda_graph") {
		t.Fatalf("resume: %v, want a train.cuda_graph error", err)
	}
	if c2, m2 := read(); c2 != config || m2 != metrics {
		t.Errorf("the refused resume changed the run folder:\nconfig.yaml %q\nmetrics.jsonl %q", c2, m2)
	}
}
