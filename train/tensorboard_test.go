package train

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"kakusan/internal/tfevents"
)

// boardView is what TensorBoard shows of a run folder's event files.
func boardView(t *testing.T, dir string) []tfevents.Event {
	t.Helper()
	files, _ := filepath.Glob(filepath.Join(dir, eventsGlob))
	sort.Strings(files)
	events, err := tfevents.View(files)
	if err != nil {
		t.Fatal(err)
	}
	return events
}

// scalarsOf is metrics.jsonl as TensorBoard's tags and float32 values:
// "tag@step" -> value.
func scalarsOf(t *testing.T, dir string) map[string]float64 {
	t.Helper()
	out := map[string]float64{}
	for _, line := range readMetricLines(t, dir) {
		step := int(line["step"].(float64))
		for k, v := range line {
			if x, ok := v.(float64); ok && k != "step" && k != "epoch" {
				out[fmt.Sprintf("%s@%d", scalarTag(k), step)] = float64(float32(x))
			}
		}
	}
	return out
}

// TestTensorBoardMirrorsTheRun trains, stops after a checkpoint as a killed
// run would have (its last steps logged, their checkpoint not written), and
// resumes: what TensorBoard shows of the folder's two event files, after
// its purge at the resume's SessionLog START, is exactly metrics.jsonl's
// scalars, every sample grid the folder holds, and each config.
func TestTensorBoardMirrorsTheRun(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	sets := []string{"data.subset=640", "train.log_every=2", "train.checkpoint_every=4", "train.sample_every=4"}
	c := diffusionConfig(t, append(sets, "train.max_steps=6")...)
	if _, err := Train(c, Options{Out: dir}); err != nil {
		t.Fatal(err)
	}
	firstConfig, _ := os.ReadFile(filepath.Join(dir, "config.yaml"))
	// The kill: step 6 was logged, but its checkpoint never written.
	ck := filepath.Join(dir, "checkpoints")
	os.Remove(filepath.Join(ck, "step-00000006.safetensors"))
	os.Remove(filepath.Join(ck, "latest.safetensors"))
	os.Symlink("step-00000004.safetensors", filepath.Join(ck, "latest.safetensors"))
	c = diffusionConfig(t, append(sets, "train.max_steps=8")...)
	if _, err := Train(c, Options{Resume: dir}); err != nil {
		t.Fatal(err)
	}
	// A resume of the finished run trains nothing and leaves no file.
	if _, err := Train(c, Options{Resume: dir}); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, eventsGlob))
	if len(files) != 2 {
		t.Fatalf("%d event files, want one a process that trained: %v", len(files), files)
	}
	events := boardView(t, dir)
	want := scalarsOf(t, dir)
	got := map[string]float64{}
	var texts []string
	images := map[int][]byte{}
	for _, e := range events {
		switch e.Kind {
		case "scalar":
			key := fmt.Sprintf("%s@%d", e.Tag, e.Step)
			if _, dup := got[key]; dup {
				t.Errorf("%s twice", key)
			}
			got[key] = e.Value
		case "text":
			texts = append(texts, fmt.Sprintf("%d:%s", e.Step, e.Data))
		case "image":
			if e.Tag != "samples" {
				t.Errorf("image tag %q", e.Tag)
			}
			images[int(e.Step)] = e.Data
		}
	}
	if len(got) != len(want) {
		t.Errorf("TensorBoard shows %d scalars, metrics.jsonl has %d:\n%v\n%v", len(got), len(want), got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: TensorBoard %v, metrics.jsonl %v", k, got[k], v)
		}
	}
	for _, k := range []string{"train/loss@6", "train/loss@8", "train/lr@2", "train/images_per_s@4", "test/loss@8"} {
		if _, ok := got[k]; !ok {
			t.Errorf("no %s", k)
		}
	}
	// Grids at steps 4 and 8 (the resumed run redrew step 8's as final.png too).
	for _, step := range []int{4, 8} {
		png, err := os.ReadFile(filepath.Join(dir, "samples", fmt.Sprintf("step-%08d.png", step)))
		if err != nil || !bytes.Equal(images[step], png) {
			t.Errorf("step %d: the grid in TensorBoard (%d bytes) is not samples/ (%d bytes, %v)", step, len(images[step]), len(png), err)
		}
	}
	if _, ok := images[6]; ok {
		t.Error("a grid past the checkpoint survived the purge")
	}
	secondConfig, _ := os.ReadFile(filepath.Join(dir, "config.yaml"))
	indent := func(b []byte) string {
		return "    " + strings.ReplaceAll(strings.TrimRight(string(b), "\n"), "\n", "\n    ")
	}
	if len(texts) != 2 || texts[0] != "0:"+indent(firstConfig) || texts[1] != "4:"+indent(secondConfig) {
		t.Errorf("config texts %q", texts)
	}
}

// TestTensorBoardOff: train.tensorboard false writes no event file.
func TestTensorBoardOff(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	c := diffusionConfig(t, "data.subset=640", "train.max_steps=2", "train.tensorboard=false")
	if _, err := Train(c, Options{Out: dir}); err != nil {
		t.Fatal(err)
	}
	if files, _ := filepath.Glob(filepath.Join(dir, eventsGlob)); len(files) != 0 {
		t.Errorf("event files %v with train.tensorboard false", files)
	}
	b, _ := json.Marshal(readMetricLines(t, dir))
	if !strings.Contains(string(b), `"loss"`) {
		t.Errorf("metrics.jsonl has no loss: %s", b)
	}
}

// TestTensorBoardRenumbersOnResume: a resume with another global batch
// renumbers metrics.jsonl's steps, and the earlier event file's with them.
func TestTensorBoardRenumbersOnResume(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	sets := []string{"data.subset=640", "train.log_every=2", "train.checkpoint_every=4", "train.sample_every=100"}
	if _, err := Train(diffusionConfig(t, append(sets, "train.max_steps=4")...), Options{Out: dir}); err != nil {
		t.Fatal(err)
	}
	c := diffusionConfig(t, append(sets, "train.max_steps=12", "train.batch_size=32")...)
	if _, err := Train(c, Options{Resume: dir}); err != nil {
		t.Fatal(err)
	}
	want, got := scalarsOf(t, dir), map[string]float64{}
	for _, e := range boardView(t, dir) {
		if e.Kind == "scalar" {
			got[fmt.Sprintf("%s@%d", e.Tag, e.Step)] = e.Value
		}
	}
	if _, ok := want["train/loss@8"]; !ok || len(got) != len(want) {
		t.Fatalf("TensorBoard %v, metrics.jsonl %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s: TensorBoard %v, metrics.jsonl %v", k, got[k], v)
		}
	}
}

// A broken event file does not stop a renumbering resume (a warning says
// so), and a resume retried after one that stopped before its first
// checkpoint converts nothing twice.
func TestRenumberingIsOnceAndSurvivesABrokenEventFile(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "run")
	sets := []string{"data.subset=640", "train.log_every=2", "train.checkpoint_every=4", "train.sample_every=100"}
	if _, err := Train(diffusionConfig(t, append(sets, "train.max_steps=4")...), Options{Out: dir}); err != nil {
		t.Fatal(err)
	}
	files, _ := filepath.Glob(filepath.Join(dir, eventsGlob))
	os.WriteFile(files[0], bytes.Repeat([]byte{0x5a}, 3000), 0o644)
	var log strings.Builder
	// Step 4 of 64 images is step 8 of 32: complete at max_steps 8, so this
	// resume writes no checkpoint; the next one starts from the same one.
	c := diffusionConfig(t, append(sets, "train.max_steps=8", "train.batch_size=32")...)
	if _, err := Train(c, Options{Resume: dir, Log: &log}); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(log.String(), "warning: tensorboard: "+files[0]+" keeps its steps") {
		t.Errorf("no warning about the broken file:\n%s", log.String())
	}
	c = diffusionConfig(t, append(sets, "train.max_steps=10", "train.batch_size=32")...)
	if _, err := Train(c, Options{Resume: dir}); err != nil {
		t.Fatal(err)
	}
	var steps []int
	for _, m := range readMetricLines(t, dir) {
		if _, ok := m["loss"]; ok {
			steps = append(steps, int(m["step"].(float64)))
		}
	}
	if fmt.Sprint(steps) != "[4 8 10]" { // 2 and 4 of 64 images, then 10 of 32
		t.Errorf("training-loss steps %v, want [4 8 10]: converted once", steps)
	}
}
