package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"kakusan/cmd/internal/clitest"
	"kakusan/diffusion"
	"kakusan/eval"
	"kakusan/models"
	"kakusan/sample"
	"kakusan/torch"
	"kakusan/train"
)

// tinyCheckpoint trains a width-4 conditional diffusion model for 2 steps.
func tinyCheckpoint(t *testing.T, sets ...string) string {
	t.Helper()
	return tinyRun(t, "mnist_cond.yaml", append([]string{"unet.width=4", "diffusion.sample_steps=2"}, sets...)...)
}

// tinyRun trains configs/<config> for 2 steps of 32 of 256 images and
// returns the run folder.
func tinyRun(t *testing.T, config string, sets ...string) string {
	t.Helper()
	c, err := models.LoadConfig("../../configs/"+config, append([]string{"data.subset=256", "data.test_subset=64", "device=cpu",
		"train.batch_size=32", "train.max_steps=2", "samples=10"}, sets...))
	if err != nil {
		t.Fatal(err)
	}
	r, err := train.Train(c, train.Options{Out: filepath.Join(t.TempDir(), "run")})
	if err != nil {
		t.Fatal(err)
	}
	return r.Dir
}

func job(ck, out string, shard, of int) neuralJob {
	return neuralJob{checkpoint: ck, out: out, device: "cpu", n: 10, batch: 3, seed: 11, labels: "2,4-5",
		sampling: diffusion.Sampling{Sampler: "ddim", Steps: 3, Guidance: 2}, set: []string{"sampler", "steps", "guidance", "eta"}, shard: shard, of: of}
}

func files(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	out := map[string][]byte{}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasSuffix(e.Name(), "_label2.png") || strings.HasSuffix(e.Name(), "_label4.png") || strings.HasSuffix(e.Name(), "_label5.png") {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			out[e.Name()] = b
		}
	}
	return out
}

func TestShardsMakeTheUnshardedJob(t *testing.T) {
	ck := tinyCheckpoint(t)
	whole, parts := t.TempDir(), t.TempDir()
	if err := runNeural(context.Background(), job(ck, whole, 0, 1)); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := runNeural(context.Background(), job(ck, parts, i, 3)); err != nil {
			t.Fatal(err)
		}
	}
	a, b := files(t, whole), files(t, parts)
	if len(a) != 10 {
		t.Fatalf("%d images, want 10", len(a))
	}
	if !reflect.DeepEqual(a, b) {
		t.Error("the shards' images differ from the unsharded job's")
	}
	// --merge joins the shards' manifests into the unsharded job's, byte for byte.
	if r := clitest.Run(t, "", "--merge", parts); r.Code != 0 || !strings.Contains(r.Stdout, "merged 10 images") {
		t.Fatalf("--merge: %+v", r)
	}
	mw, _ := os.ReadFile(filepath.Join(whole, "manifest.jsonl"))
	mp, _ := os.ReadFile(filepath.Join(parts, "manifest.jsonl"))
	if len(mw) == 0 || !bytes.Equal(mw, mp) {
		t.Errorf("merged manifest:\n%s\nwant the unsharded job's:\n%s", mp, mw)
	}
	// bin/eval reads the merged folder as the unsharded job (each image
	// once), the shards' manifests where there is no merged one, and
	// refuses a folder missing a shard's manifest.
	mnist := models.Geometry{C: 1, H: 28, W: 28, Classes: 10, ClassNames: strings.Split("0 1 2 3 4 5 6 7 8 9", " ")}
	load := func(dir string) ([]int64, error) {
		var labels []int64
		err := torch.Do(func() (err error) {
			torch.Scoped(func() { _, labels, err = eval.LoadSamples(dir, mnist) })
			return err
		})
		return labels, err
	}
	lw, err := load(whole)
	if lp, perr := load(parts); err != nil || perr != nil || len(lw) != 10 || !reflect.DeepEqual(lw, lp) {
		t.Errorf("eval reads the whole job's labels %v (%v), the merged shards' %v (%v)", lw, err, lp, perr)
	}
	os.Rename(filepath.Join(parts, "manifest.jsonl"), filepath.Join(parts, "merged"))
	if lp, err := load(parts); err != nil || !reflect.DeepEqual(slices.Sorted(slices.Values(lw)), slices.Sorted(slices.Values(lp))) {
		t.Errorf("eval reads the shards' manifests as %v (%v), want %v in some order", lp, err, lw)
	}
	os.Rename(filepath.Join(parts, "manifest-1-of-3.jsonl"), filepath.Join(parts, "shard1"))
	if _, err := load(parts); err == nil || !strings.Contains(err.Error(), "the job made 10 images, its manifests list") {
		t.Errorf("a shard's manifest missing: %v", err)
	}
	os.Rename(filepath.Join(parts, "shard1"), filepath.Join(parts, "manifest-1-of-3.jsonl"))
	os.Rename(filepath.Join(parts, "merged"), filepath.Join(parts, "manifest.jsonl"))
	os.Remove(filepath.Join(parts, "000006_label2.png"))
	clitest.Run(t, "", "--merge", parts).Refused(t, []string{"--merge"}, "000006_label2.png")
	clitest.Run(t, "", "--merge", parts, "--n", "3").Refused(t, []string{"--merge", "--n"}, "--merge takes no other flags")
	if _, ok := a["000003_label2.png"]; !ok {
		t.Errorf("labels do not cycle 2,4,5: %v", keys(a))
	}
	// The manifest names every image with its label and the sampling settings.
	f, _ := os.Open(filepath.Join(whole, "manifest.jsonl"))
	defer f.Close()
	s := bufio.NewScanner(f)
	n := 0
	for s.Scan() {
		var rec struct {
			File     string  `json:"file"`
			Label    int     `json:"label"`
			Seed     uint64  `json:"seed"`
			Sampler  string  `json:"sampler"`
			Steps    int     `json:"steps"`
			Guidance float64 `json:"guidance"`
		}
		if err := json.Unmarshal(s.Bytes(), &rec); err != nil {
			t.Fatal(err)
		}
		if _, ok := a[rec.File]; !ok || rec.Seed != 11 || rec.Sampler != "ddim" || rec.Steps != 3 || rec.Guidance != 2 {
			t.Errorf("manifest line %s", s.Text())
		}
		n++
	}
	if n != 10 {
		t.Errorf("%d manifest lines", n)
	}
	for i := range 3 {
		if _, err := os.Stat(filepath.Join(parts, "manifest-"+string(rune('0'+i))+"-of-3.jsonl")); err != nil {
			t.Error(err)
		}
	}
	if _, err := os.Stat(filepath.Join(whole, "grid.png")); err != nil {
		t.Error(err)
	}

	// A restarted job regenerates only what is missing, identically.
	victim := filepath.Join(whole, "000004_label4.png")
	os.Remove(victim)
	keepTime, _ := os.Stat(filepath.Join(whole, "000000_label2.png"))
	if err := runNeural(context.Background(), job(ck, whole, 0, 1)); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(victim)
	if err != nil || !bytes.Equal(got, a["000004_label4.png"]) {
		t.Errorf("the regenerated image differs: %v", err)
	}
	if st, _ := os.Stat(filepath.Join(whole, "000000_label2.png")); !st.ModTime().Equal(keepTime.ModTime()) {
		t.Error("an image of a complete batch was rewritten")
	}
}

func keys(m map[string][]byte) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}

func TestSamplingJobErrors(t *testing.T) {
	ck := tinyCheckpoint(t)
	cases := []struct {
		edit func(*neuralJob)
		want string
	}{
		{func(j *neuralJob) { j.labels = "3,12" }, "label 12 out of range: the model has classes 0-9"},
		{func(j *neuralJob) { j.labels = "x" }, `"x" is not a label`},
		{func(j *neuralJob) { j.sampling.Guidance = -2 }, "guidance: must be in [0, 50], got -2"},
		{func(j *neuralJob) { j.sampling.Guidance = math.NaN() }, "guidance: must be in [0, 50], got NaN"},
		{func(j *neuralJob) { j.sampling.Steps = 5000 }, "steps must be between 1 and 1000"},
		{func(j *neuralJob) { j.sampling.Sampler = "lms" }, `unknown sampler "lms" (known: ddim, ddpm, dpm++2m, euler, heun)`},
		{func(j *neuralJob) { j.sampling.Eta = 1.5 }, "eta"},
		{func(j *neuralJob) { j.sampling.Eta = math.NaN() }, "eta"},
		{func(j *neuralJob) { j.n = 0 }, "--n must be between 1"},
		{func(j *neuralJob) { j.batch = -1 }, "--batch must be between 1"},
		{func(j *neuralJob) { j.checkpoint = filepath.Join(t.TempDir(), "none") }, "no such file"},
		{func(j *neuralJob) { j.sampling.ClipX0, j.set = "clamp", append(j.set, "clip-x0") }, `clip_x0: unknown mode "clamp" (known: none, clip, dynamic)`},
		{func(j *neuralJob) {
			j.sampling.ClipX0, j.sampling.ThresholdRatio, j.set = "dynamic", 0, append(j.set, "clip-x0", "threshold-ratio")
		}, "threshold_ratio: must be in (0, 1]"},
		{func(j *neuralJob) { j.sampling.GuidanceRescale, j.set = 2, append(j.set, "guidance-rescale") }, "guidance_rescale: must be in [0, 1], got 2"},
	}
	for _, c := range cases {
		j := job(ck, t.TempDir(), 0, 1)
		c.edit(&j)
		if err := runNeural(context.Background(), j); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want %q, got %v", c.want, err)
		}
	}
	// A folder holds one job: the same folder with other parameters is refused.
	dir := t.TempDir()
	if err := runNeural(context.Background(), job(ck, dir, 0, 1)); err != nil {
		t.Fatal(err)
	}
	other := job(ck, dir, 0, 1)
	other.sampling.Guidance = 5
	if err := runNeural(context.Background(), other); err == nil || !strings.Contains(err.Error(), "holds the images of another job") {
		t.Errorf("a restart with another guidance: %v", err)
	}
	// Clipping and guidance rescale shape the images: job.json records them.
	for flag, edit := range map[string]func(*neuralJob){
		"clip-x0":          func(j *neuralJob) { j.sampling.ClipX0 = "dynamic" },
		"guidance-rescale": func(j *neuralJob) { j.sampling.GuidanceRescale = 0.7 },
	} {
		other := job(ck, dir, 0, 1)
		edit(&other)
		other.set = append(other.set, flag)
		if err := runNeural(context.Background(), other); err == nil || !strings.Contains(err.Error(), "holds the images of another job") {
			t.Errorf("a restart with another --%s: %v", flag, err)
		}
	}
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	for _, c := range []struct {
		flag string
		env  []string
		i, n int
		bad  string
	}{
		{"auto", nil, 0, 1, ""},
		{"auto", []string{"JOB_COMPLETION_INDEX", "3", "JOB_COMPLETIONS", "8", "RANK", "1", "WORLD_SIZE", "2"}, 3, 8, ""},
		{"auto", []string{"RANK", "1", "WORLD_SIZE", "2"}, 1, 2, ""},
		{"2/5", []string{"RANK", "1", "WORLD_SIZE", "2"}, 2, 5, ""},
		{"auto", []string{"JOB_COMPLETION_INDEX", "3"}, 0, 0, "JOB_COMPLETIONS is not set"},
		{"auto", []string{"JOB_COMPLETION_INDEX", "8", "JOB_COMPLETIONS", "8"}, 0, 0, `JOB_COMPLETION_INDEX="8" of JOB_COMPLETIONS="8"`},
		{"auto", []string{"RANK", "0"}, 0, 0, "WORLD_SIZE is not set"},
	} {
		i, n, err := resolveShard(c.flag, env(c.env...))
		if c.bad != "" {
			if err == nil || !strings.Contains(err.Error(), c.bad) {
				t.Errorf("--shard %s with %v: %v, want an error naming %q", c.flag, c.env, err, c.bad)
			}
		} else if err != nil || i != c.i || n != c.n {
			t.Errorf("--shard %s with %v: %d/%d (%v), want %d/%d", c.flag, c.env, i, n, err, c.i, c.n)
		}
	}
	for _, s := range []string{"3/3", "1", "-1/2", "a/b"} {
		if _, _, err := parseShard(s); err == nil {
			t.Errorf("--shard %s accepted", s)
		}
	}
	if labels, err := sample.ParseLabels("random", 200, 10, 1); err != nil || len(labels) != 200 {
		t.Errorf("random labels: %v", err)
	} else {
		seen := map[int64]bool{}
		for _, l := range labels {
			seen[l] = true
		}
		if len(seen) != 10 {
			t.Errorf("random labels cover %d classes", len(seen))
		}
	}
}

// --prompt (ladder step 9): a class word sets every image's label, the
// style words are the job's prompt; a prompt the model cannot take is
// refused by name.
func TestPromptFlag(t *testing.T) {
	run := tinyCheckpoint(t, "unet.heads=2", "diffusion.conditioning=prompt")
	out := t.TempDir()
	j := job(run, out, 0, 1)
	j.labels, j.sampling.Prompt, j.set = "all", "slanted BOLD seven", append(j.set, "prompt")
	if err := runNeural(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "manifest.jsonl"))
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(string(b), `"label":7`); n != 10 {
		t.Errorf("%d of 10 images labelled 7:\n%s", n, b)
	}
	meta, _ := os.ReadFile(filepath.Join(out, "job.json"))
	if !strings.Contains(string(meta), `"prompt": "bold slanted"`) {
		t.Errorf("job.json does not record the style words:\n%s", meta)
	}
	for _, c := range []struct {
		ck, prompt string
		labels     bool
		want       string
	}{
		{run, "bold seven", true, "names a class and --labels gives the classes"},
		{run, "purple seven", false, `unknown word "purple" (known: zero, one,`},
		{tinyCheckpoint(t), "bold", false, "not conditioned on prompts"},
	} {
		j := job(c.ck, t.TempDir(), 0, 1)
		j.sampling.Prompt, j.set = c.prompt, append(j.set, "prompt")
		if c.labels {
			j.set = append(j.set, "labels")
		}
		if err := runNeural(context.Background(), j); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("--prompt %q: %v, want an error containing %q", c.prompt, err, c.want)
		}
	}
}

// An autoencoder's sampling job is its reconstructions of the first n
// training images, labelled with their labels (for bin/eval: what the
// autoencoder loses); it shards as any job.
func TestAutoencoderJobReconstructsTrainingImages(t *testing.T) {
	out := t.TempDir()
	j := neuralJob{checkpoint: tinyRun(t, "mnist_autoencoder.yaml"), out: out, device: "cpu", n: 10, batch: 4, seed: 1, labels: "all", shard: 1, of: 2}
	if err := runNeural(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	j.shard = 0
	if err := runNeural(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	if _, err := sample.Merge(out); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(filepath.Join(out, "manifest.jsonl"))
	// MNIST's first ten training labels.
	want := []int{5, 0, 4, 1, 9, 2, 1, 3, 1, 4}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) != 10 {
		t.Fatalf("%d manifest lines:\n%s", len(lines), b)
	}
	for i, line := range lines {
		var e struct{ Label int }
		if json.Unmarshal([]byte(line), &e) != nil || e.Label != want[i] {
			t.Errorf("image %d: %s, want label %d", i, line, want[i])
		}
	}
	j.set = []string{"labels"}
	if err := runNeural(context.Background(), j); err == nil || !strings.Contains(err.Error(), "with their own labels") {
		t.Errorf("--labels on an autoencoder: %v", err)
	}
}

// --init and --mask (image-to-image, inpainting): the kept pixels are the
// image's exactly, the painted ones are not, job.json records the edit; the
// edit flags are refused where they do nothing.
func TestEditJobs(t *testing.T) {
	ck := tinyCheckpoint(t)
	dir := t.TempDir()
	write := func(name string, f func(x, y int) uint8) string {
		img := image.NewGray(image.Rect(0, 0, 28, 28))
		for y := range 28 {
			for x := range 28 {
				img.Pix[y*28+x] = f(x, y)
			}
		}
		p := filepath.Join(dir, name)
		out, _ := os.Create(p)
		png.Encode(out, img)
		out.Close()
		return p
	}
	init := write("init.png", func(x, y int) uint8 { return uint8(x*9 + y) })
	left := write("left.png", func(x, y int) uint8 { return map[bool]uint8{true: 255}[x < 10] })
	j := job(ck, filepath.Join(dir, "inpainted"), 0, 1)
	j.init, j.mask = init, left
	if err := runNeural(context.Background(), j); err != nil {
		t.Fatal(err)
	}
	want, _ := os.ReadFile(init)
	wimg, _ := png.Decode(bytes.NewReader(want))
	for name, b := range files(t, j.out) {
		img, err := png.Decode(bytes.NewReader(b))
		if err != nil {
			t.Fatal(err)
		}
		g, w := img.(*image.Gray), wimg.(*image.Gray)
		changed := false
		for i := range g.Pix {
			if i%28 >= 10 && g.Pix[i] != w.Pix[i] {
				t.Fatalf("%s: kept pixel %d is %d, the image's %d", name, i, g.Pix[i], w.Pix[i])
			}
			changed = changed || i%28 < 10 && g.Pix[i] != w.Pix[i]
		}
		if !changed {
			t.Errorf("%s: the painted region is the image's", name)
		}
	}
	var rec struct {
		Params map[string]any `json:"params"`
	}
	b, _ := os.ReadFile(filepath.Join(j.out, "job.json"))
	json.Unmarshal(b, &rec)
	if rec.Params["init"] != init || rec.Params["mask"] != left || rec.Params["strength"] != 1.0 || rec.Params["resample"] != 1.0 {
		t.Errorf("job.json params %v", rec.Params)
	}
	for _, c := range []struct {
		edit func(*neuralJob)
		want string
	}{
		{func(j *neuralJob) { j.sampling.Strength, j.set = 0.5, append(j.set, "strength") }, "--strength is for image-to-image and inpainting (--init)"},
		{func(j *neuralJob) { j.mask = left }, "--mask: inpainting needs the image too (--init)"},
		{func(j *neuralJob) { j.init, j.sampling.Resample, j.set = init, 3, append(j.set, "resample") }, "--resample is for inpainting (--init with --mask)"},
		{func(j *neuralJob) { j.init = filepath.Join(dir, "none.png") }, "none.png"},
		{func(j *neuralJob) { j.init = ck + "/config.yaml" }, "not a PNG or JPEG file"},
		{func(j *neuralJob) { j.init, j.mask = init, write("black.png", func(x, y int) uint8 { return 0 }) }, "the mask paints nothing"},
		{func(j *neuralJob) { j.init, j.sampling.Strength, j.set = init, 1.5, append(j.set, "strength") }, "strength: must be in (0, 1]"},
	} {
		j := job(ck, t.TempDir(), 0, 1)
		c.edit(&j)
		if err := runNeural(context.Background(), j); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("want %q, got %v", c.want, err)
		}
	}
}
