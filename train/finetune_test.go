package train

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"kakusan/eval"
	"kakusan/models"
	"kakusan/torch"
)

// classifierConfig is a small, fast classifier run.
func classifierConfig(t *testing.T, sets ...string) *models.Config {
	t.Helper()
	base := []string{"data.subset=640", "data.test_subset=128", "device=cpu", "classifier.hidden=16", "train.log_every=2",
		"train.max_steps=6", "train.ema_decay=0.9"}
	c, err := models.LoadConfig("../configs/mnist_classifier.yaml", append(base, sets...))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// greyFolder writes an image folder of classes classes, n 28x28 grey
// images each (a class is a brightness), and returns it.
func greyFolder(t *testing.T, classes, n int) string {
	dir := t.TempDir()
	for k := range classes {
		os.MkdirAll(filepath.Join(dir, fmt.Sprintf("c%d", k)), 0o755)
		for i := range n {
			img := image.NewGray(image.Rect(0, 0, 28, 28))
			for p := range img.Pix {
				img.Pix[p] = uint8((k*80 + i*7 + p) % 256)
			}
			img.Set(i%28, k, color.Gray{255})
			f, _ := os.Create(filepath.Join(dir, fmt.Sprintf("c%d", k), fmt.Sprintf("%03d.png", i)))
			png.Encode(f, img)
			f.Close()
		}
	}
	return dir
}

// setUp builds a run's loop as far as its first step and hands it to
// check: the state a fine-tuned run starts from.
func setUp(t *testing.T, c *models.Config, check func(l *loop)) (string, error) {
	t.Helper()
	var log strings.Builder
	r, err := Start(c, Options{Out: filepath.Join(t.TempDir(), "run"), Log: &log})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	err = torch.Do(func() error {
		l, err := newLoop(context.Background(), r, "")
		defer l.free()
		if err == nil {
			check(l)
		}
		return err
	})
	return log.String(), err
}

// TestInitFrom: a fine-tuned run starts from the other run's moving
// average (or its trained weights), with a fresh optimizer at step 0; a
// new class count re-initialises only the classifier's last layer; any
// other mismatch is refused, naming every tensor.
func TestInitFrom(t *testing.T) {
	base, err := Train(classifierConfig(t), Options{Out: filepath.Join(t.TempDir(), "base")})
	if err != nil {
		t.Fatal(err)
	}
	same := func(l *loop, ema bool, skip ...string) {
		err := torch.Do(func() error { // (already on the torch thread: Do runs inline)
			ck, err := models.ReadCheckpoint(base.Dir, torch.CPU)
			if err != nil {
				return err
			}
			defer ck.Free()
			want := ck.Weights(ema)
		params:
			for _, p := range l.st.Model.Module().Params() {
				for _, s := range skip {
					if p.Name == s {
						if want[p.Name].Shape()[0] == p.T.Shape()[0] {
							t.Errorf("%s kept its shape", p.Name)
						}
						continue params
					}
				}
				if !p.T.AllClose(want[p.Name], 0, 0) {
					t.Errorf("%s (ema %v) is not the base run's", p.Name, ema)
				}
				if !l.st.EMA.Avg.Module().StateDict()[p.Name].AllClose(p.T, 0, 0) {
					t.Errorf("%s: the moving average does not start from the loaded weights", p.Name)
				}
			}
			if l.st.Step != 0 {
				t.Errorf("step %d, want 0", l.st.Step)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	log, err := setUp(t, classifierConfig(t, "train.init_from="+base.Dir), func(l *loop) { same(l, true) })
	if err != nil || !strings.Contains(log, "its moving average") {
		t.Errorf("init_from: %v\n%s", err, log)
	}
	log, err = setUp(t, classifierConfig(t, "train.init_from="+base.Dir, "train.init_from_ema=false"), func(l *loop) { same(l, false) })
	if err != nil || !strings.Contains(log, "its trained weights") {
		t.Errorf("init_from_ema=false: %v\n%s", err, log)
	}
	three := greyFolder(t, 3, 40)
	log, err = setUp(t, classifierConfig(t, "train.init_from="+base.Dir, "data.dir="+three, "data.size=28", "train.batch_size=16"),
		func(l *loop) { same(l, true, "fc2.weight", "fc2.bias") })
	if err != nil || !strings.Contains(log, "10 classes there, 3 here: freshly initialised fc2.weight [10 16] -> [3 16], fc2.bias [10] -> [3]") {
		t.Errorf("three classes: %v\n%s", err, log)
	}
	// Another width: every tensor it changes is named.
	_, err = setUp(t, classifierConfig(t, "train.init_from="+base.Dir, "classifier.hidden=32"), func(*loop) {})
	if err == nil || !strings.Contains(err.Error(), "fc1.weight: shape [16 3136] float32 in the checkpoint, [32 3136] float32 in the model") ||
		!strings.Contains(err.Error(), "fc2.weight") {
		t.Errorf("another width: %v", err)
	}
	_, err = setUp(t, classifierConfig(t, "train.init_from="+filepath.Join(base.Dir, "nothing")), func(*loop) {})
	if err == nil || !strings.Contains(err.Error(), "train.init_from") {
		t.Errorf("a missing run: %v", err)
	}
	// A NaN in the moving average is named as the file names it.
	damaged := filepath.Join(t.TempDir(), "damaged.safetensors")
	err = torch.Do(func() error {
		ts, meta, err := torch.LoadFile(filepath.Join(base.Dir, "checkpoints", "latest.safetensors"), torch.CPU)
		if err != nil {
			return err
		}
		ts[models.EMAPrefix+"fc1.weight"] = ts[models.EMAPrefix+"fc1.weight"].MulScalar(math.NaN())
		return torch.SaveFile(damaged, ts, meta)
	})
	if err != nil {
		t.Fatal(err)
	}
	_, err = setUp(t, classifierConfig(t, "train.init_from="+damaged), func(*loop) {})
	if err == nil || !strings.Contains(err.Error(), `tensor "ema.fc1.weight" holds NaN`) {
		t.Errorf("a NaN in the moving average: %v", err)
	}
	// A checkpoint of another model.
	vae, err := Train(neuralConfig(t, "vae", "train.max_steps=2", "data.subset=256"), Options{Out: filepath.Join(t.TempDir(), "vae")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = setUp(t, classifierConfig(t, "train.init_from="+vae.Dir), func(*loop) {})
	if err == nil || !strings.Contains(err.Error(), `a "vae" checkpoint; this run trains "classifier"`) {
		t.Errorf("a VAE's checkpoint: %v", err)
	}
	// --overwrite clears nothing when init_from is wrong: not another
	// model's checkpoint, nor one inside the folder being overwritten.
	before := listFiles(t, base.Dir)
	for _, from := range []string{vae.Dir, base.Dir, filepath.Join(base.Dir, "checkpoints", "latest.safetensors")} {
		_, err := Train(classifierConfig(t, "train.init_from="+from), Options{Out: base.Dir, Overwrite: true})
		if err == nil {
			t.Errorf("--overwrite %s with init_from %s: no error", base.Dir, from)
		}
	}
	if after := listFiles(t, base.Dir); after != before {
		t.Errorf("refused overwrites changed the run folder:\n%s\nbecame\n%s", before, after)
	}
}

// TestEvalDuringTraining: train.eval_every logs the judge's figures at its
// steps and at the last, in metrics.jsonl and TensorBoard, and leaves the
// training itself exactly as it was without it.
func TestEvalDuringTraining(t *testing.T) {
	// A folder of three classes: the judge's reference features (its test
	// and training images) take no time.
	folder := greyFolder(t, 3, 40)
	judge, err := Train(classifierConfig(t, "data.dir="+folder, "data.size=28", "train.batch_size=16"), Options{Out: filepath.Join(t.TempDir(), "judge")})
	if err != nil {
		t.Fatal(err)
	}
	sets := []string{"data.dir=" + folder, "data.size=28", "train.batch_size=16", "train.max_steps=10", "train.log_every=2"}
	plain, err := Train(diffusionConfig(t, sets...), Options{Out: filepath.Join(t.TempDir(), "plain")})
	if err != nil {
		t.Fatal(err)
	}
	var log strings.Builder
	c := diffusionConfig(t, append(sets, "train.eval_every=4", "train.eval_images=40", "train.eval_judge="+judge.Dir)...)
	judged, err := Train(c, Options{Out: filepath.Join(t.TempDir(), "judged"), Log: &log, Scorer: scorer})
	if err != nil {
		t.Fatal(err)
	}
	a, b := readMetricLines(t, plain.Dir), readMetricLines(t, judged.Dir)
	var evals []int
	var withoutEval []map[string]any
	for _, m := range b {
		if _, ok := m["eval_fid"]; ok {
			evals = append(evals, int(m["step"].(float64)))
			for _, k := range []string{"eval_accuracy", "eval_precision", "eval_recall", "eval_seconds"} {
				if v, ok := m[k].(float64); !ok || v < 0 || v != v {
					t.Errorf("step %v: %s = %v", m["step"], k, m[k])
				}
			}
			continue
		}
		withoutEval = append(withoutEval, m)
	}
	if fmt.Sprint(evals) != "[4 8 10]" {
		t.Errorf("evaluations at steps %v, want [4 8 10]", evals)
	}
	if len(a) != len(withoutEval) {
		t.Fatalf("%d metrics lines without evaluation, %d with (the evaluations aside)", len(a), len(withoutEval))
	}
	for i := range a {
		for _, k := range []string{"loss", "test_loss"} {
			if a[i][k] != withoutEval[i][k] {
				t.Errorf("line %d: %s %v without evaluation, %v with", i, k, a[i][k], withoutEval[i][k])
			}
		}
	}
	if got := scalarsOf(t, judged.Dir); got["eval/fid@8"] == 0 {
		t.Errorf("no eval/fid at step 8 in metrics' TensorBoard view: %v", got)
	}
	for _, want := range []string{"evaluation every 4 steps: 40 images judged by", "evaluation at step 8 (40 images): accuracy ", "evaluation during training: 3 evaluations took"} {
		if !strings.Contains(log.String(), want) {
			t.Errorf("the log lacks %q:\n%s", want, log.String())
		}
	}
	// An evaluation a signal cut short (its step checkpointed, its line
	// never written) is made when the run resumes.
	cut := filepath.Join(t.TempDir(), "cut")
	judging := []string{"train.eval_every=4", "train.eval_images=40", "train.eval_judge=" + judge.Dir}
	if _, err := Train(diffusionConfig(t, append(append(sets, "train.max_steps=8"), judging...)...), Options{Out: cut, Scorer: scorer}); err != nil {
		t.Fatal(err)
	}
	var kept []byte
	for _, m := range readMetricLines(t, cut) {
		if m["step"].(float64) == 8 && m["eval_fid"] != nil {
			continue
		}
		line, _ := json.Marshal(m)
		kept = append(append(kept, line...), '\n')
	}
	os.WriteFile(filepath.Join(cut, "metrics.jsonl"), kept, 0o644)
	log.Reset()
	if _, err := Train(diffusionConfig(t, append(append(sets, "train.max_steps=12"), judging...)...), Options{Resume: cut, Log: &log, Scorer: scorer}); err != nil {
		t.Fatal(err)
	}
	evals = nil
	for _, m := range readMetricLines(t, cut) {
		if m["eval_fid"] != nil {
			evals = append(evals, int(m["step"].(float64)))
		}
	}
	if fmt.Sprint(evals) != "[4 8 12]" || !strings.Contains(log.String(), "the evaluation at step 8 was cut short: making it now") {
		t.Errorf("after a cut evaluation, evaluations at %v\n%s", evals, log.String())
	}
	// Refusals, before the first step.
	for _, c := range []struct {
		sets   []string
		scorer NewScorer
		want   string
	}{
		{[]string{"train.eval_every=4"}, nil, "train.eval_every: this program cannot judge images"},
		{[]string{"train.eval_every=4"}, scorer, "name the classifier that judges the images in train.eval_judge"},
		{[]string{"train.eval_every=4", `data.dir=""`, "data.size=0", "data.subset=640", "train.eval_judge=" + judge.Dir}, scorer, "was trained on 1x28x28 images of classes [c0 c1 c2], but the data has 1x28x28 images of classes [0 1 2 3 4 5 6 7 8 9]"},
		{[]string{"train.eval_every=4", "train.eval_judge=" + plain.Dir}, scorer, `a "diffusion" checkpoint; the judge must be a classifier`},
	} {
		_, err := Train(diffusionConfig(t, append(sets, c.sets...)...), Options{Out: filepath.Join(t.TempDir(), "x"), Scorer: c.scorer})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%v: %v, want %q", c.sets, err, c.want)
		}
	}
}

func scorer(path string, dev torch.Device, g models.Geometry) (Scorer, error) {
	return eval.NewScorer(path, dev, g)
}

// listFiles names a folder's files and their sizes.
func listFiles(t *testing.T, dir string) string {
	var b strings.Builder
	filepath.Walk(dir, func(p string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && filepath.Base(p) != ".lock" {
			fmt.Fprintf(&b, "%s %d\n", strings.TrimPrefix(p, dir), info.Size())
		}
		return nil
	})
	return b.String()
}

// A signal while the judge's reference features are computed (seconds,
// before the first step) ends the run at once with status 130, writing no
// checkpoint of an untrained model.
func TestSignalWhileTheJudgeLoads(t *testing.T) {
	judge, err := Train(classifierConfig(t), Options{Out: filepath.Join(t.TempDir(), "judge")})
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "run")
	cmd := exec.Command(os.Args[0], "-test.run=^TestDistTrainChild$")
	cmd.Env = append(os.Environ(), "KK_CONFIG=../configs/mnist_cond.yaml", "KK_OUT="+out, "KAKUSAN_THREADS=1",
		"KK_SETS="+strings.Join([]string{"data.subset=640", "device=cpu", "unet.width=8", "train.max_steps=4", "train.eval_every=2", "train.eval_judge=" + judge.Dir}, ";"))
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// The reference features (20,000 images through the judge) take 5 s
	// and more on 2 cores, after a second of setting up.
	time.Sleep(2 * time.Second)
	cmd.Process.Signal(syscall.SIGINT)
	err = cmd.Wait()
	if code := cmd.ProcessState.ExitCode(); code != 130 || strings.Contains(log.String(), "checkpoint saved") || strings.Contains(log.String(), "reference features took") {
		t.Errorf("exit %d (%v)\n%s", code, err, log.String())
	}
	if _, err := os.Stat(filepath.Join(out, "checkpoints")); err == nil {
		t.Error("a checkpoint of the untrained model was written")
	}
}

// Fine-tuning a diffusion model into another prediction target (or
// schedule) is allowed, the shapes being the same, and said in the log.
func TestInitFromAnotherPredictionWarns(t *testing.T) {
	base, err := Train(diffusionConfig(t, "data.subset=640", "train.max_steps=2", "diffusion.prediction=v"), Options{Out: filepath.Join(t.TempDir(), "v")})
	if err != nil {
		t.Fatal(err)
	}
	log, err := setUp(t, diffusionConfig(t, "data.subset=640", "diffusion.prediction=eps", "train.init_from="+base.Dir), func(*loop) {})
	if err != nil || !strings.Contains(log, "warning: train.init_from's model was trained with diffusion.prediction v, this run trains with eps") {
		t.Errorf("%v\n%s", err, log)
	}
}
