package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kakusan/cmd/internal/clitest"
	"kakusan/models"
	"kakusan/train"
)

func TestMain(m *testing.M) { clitest.Main(m, main) }

// TestHostileInputs runs bin/sample's main as a careless or hostile user
// would: every case fails with a message naming the culprit, no panic
// trace, and no change to a finished job's folder.
func TestHostileInputs(t *testing.T) {
	diff := tinyCheckpoint(t)
	c, err := models.LoadConfig("../../configs/mnist_vae.yaml", []string{"data.subset=256", "data.test_subset=64", "device=cpu", "train.max_steps=2"})
	if err != nil {
		t.Fatal(err)
	}
	vae, err := train.Train(c, train.Options{Out: filepath.Join(t.TempDir(), "vae")})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	done := filepath.Join(dir, "done")
	base := []string{"--checkpoint", diff, "--device", "cpu", "--n", "4", "--steps", "2", "--out", done}
	if r := clitest.Run(t, dir, base...); r.Code != 0 {
		t.Fatalf("a good job: %+v", r)
	}
	before := clitest.Snapshot(t, done)
	photos := filepath.Join(dir, "photos") // a user's folder, not a job's
	os.MkdirAll(photos, 0o755)
	os.WriteFile(filepath.Join(photos, "000001.png"), []byte("a user's picture"), 0o644)
	os.WriteFile(filepath.Join(photos, "manifest.jsonl"), []byte("a user's list\n"), 0o644)
	ci := filepath.Join(dir, "ci") // a user's folder with a job.json of its own
	os.MkdirAll(ci, 0o755)
	os.WriteFile(filepath.Join(ci, "job.json"), []byte(`{"name": "my ci job"}`), 0o644)
	os.WriteFile(filepath.Join(ci, "000050_label7.png"), []byte("a user's picture"), 0o644)
	beforeCI := clitest.Snapshot(t, ci)
	beforePhotos := clitest.Snapshot(t, photos)
	fifo := filepath.Join(dir, "fifo.safetensors")
	if err := mkfifo(fifo); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--checkpoint", "/dev/zero", "--out", filepath.Join(dir, "a")}, "/dev/zero: not a regular file"},
		{[]string{"--checkpoint", fifo, "--out", filepath.Join(dir, "a")}, "fifo.safetensors: not a regular file"},
		{[]string{"--checkpoint", filepath.Join(dir, "none"), "--out", filepath.Join(dir, "a")}, "no such file"},
		{append(base[:len(base)-1], filepath.Join(dir, "b"), "--guidance", "NaN"), "guidance: must be in [0, 50], got NaN"},
		{append(base[:len(base)-1], filepath.Join(dir, "b"), "--eta", "nan"), "eta"},
		{append(base[:len(base)-1], filepath.Join(dir, "b"), "--sampler", "lms"), `unknown sampler "lms"`},
		{append(base[:len(base)-1], filepath.Join(dir, "b"), "--sampler", "dpm++2m", "--eta", "0.5"), "--eta is for ddim: dpm++2m is deterministic"},
		{append(base[:len(base)-1], filepath.Join(dir, "b"), "--labels", "3,12"), "label 12 out of range"},
		{append(base[:len(base)-1], filepath.Join(dir, "b"), "--n", "0"), "--n must be between 1"},
		{append(base[:len(base)-1], filepath.Join(dir, "b"), "--n", "1000000000"), "--n must be between 1"},
		{append(base[:len(base)-1], filepath.Join(dir, "b"), "--shard", "2/2"), `--shard "2/2"`},
		{append(base, "--guidance", "5"), "holds the images of another job"},
		{append(base, "--seed", "2"), "holds the images of another job"},
		{[]string{"--checkpoint", vae.Dir, "--device", "cpu", "--guidance", "2", "--out", filepath.Join(dir, "c")}, "--guidance is for diffusion models"},
		{[]string{"--checkpoint", vae.Dir, "--device", "cpu", "--labels", "1", "--out", filepath.Join(dir, "c")}, "--labels: the model is unconditional"},
		{append(base[:len(base)-1], filepath.Join(dir, "b"), "--sampler", "ddpm", "--eta", "0.5"), "ddpm visits every timestep"},
		{[]string{"--run", filepath.Join(dir, "none")}, "params.json: no such file"},
		{[]string{"--params", "/dev/zero", "--device", "cuda"}, "--device is for neural checkpoints"},
		{[]string{"--params", "/dev/zero"}, "/dev/zero: not a regular file"},
		{[]string{"--params", fifo}, "fifo.safetensors: not a regular file"},
		{slices.Concat(base[:len(base)-1], []string{photos}), "is not empty and holds no sampling job (no job.json)"},
		{slices.Concat(base[:len(base)-1], []string{photos, "--overwrite"}), "is not empty and holds no sampling job (no job.json)"},
		{slices.Concat(base[:len(base)-1], []string{ci, "--overwrite"}), "has a job.json that is not bin/sample's"},
	}
	for _, c := range cases {
		clitest.Run(t, dir, c.args...).Refused(t, c.args, c.want)
	}
	if after := clitest.Snapshot(t, done); after != before {
		t.Errorf("the refused commands changed the finished job:\n%s\nbecame\n%s", before, after)
	}
	if after := clitest.Snapshot(t, ci); after != beforeCI {
		t.Errorf("--overwrite changed a user's folder with a job.json of its own")
	}
	if after := clitest.Snapshot(t, photos); after != beforePhotos {
		t.Errorf("the refused commands changed a user's folder:\n%s\nbecame\n%s", beforePhotos, after)
	}
	if _, err := os.Stat(filepath.Join(dir, "b")); err == nil {
		if entries, _ := os.ReadDir(filepath.Join(dir, "b")); len(entries) > 1 {
			t.Errorf("refused jobs wrote %d files into their folder", len(entries))
		}
	}
	// --overwrite starts another job afresh in a job's folder: 2 labelled
	// images where there were 4, the old ones gone, a file of the user's kept.
	os.WriteFile(filepath.Join(done, "notes.txt"), []byte("mine"), 0o644)
	if r := clitest.Run(t, dir, append(base, "--overwrite", "--n", "2", "--seed", "9")...); r.Code != 0 {
		t.Fatalf("--overwrite: %+v", r)
	}
	pngs, _ := filepath.Glob(filepath.Join(done, "0*.png"))
	job, _ := os.ReadFile(filepath.Join(done, "job.json"))
	if notes, err := os.ReadFile(filepath.Join(done, "notes.txt")); len(pngs) != 2 || !strings.Contains(string(job), `"seed": 9`) || err != nil || string(notes) != "mine" {
		t.Errorf("after --overwrite: images %v, job.json %s, notes %q (%v)", pngs, job, notes, err)
	}
}

// TestClassicalCSVIsWrittenSafely: the CSV never replaces the parameters
// it is drawn from, and a failed write leaves an earlier file whole.
func TestClassicalCSVIsWrittenSafely(t *testing.T) {
	dir := t.TempDir()
	params := filepath.Join(dir, "params.json")
	os.WriteFile(params, []byte(`{"model":"normal","normal":{"mu":1,"sigma":2}}`), 0o644)
	before, _ := os.ReadFile(params)
	args := []string{"--params", params, "--out", params}
	clitest.Run(t, dir, args...).Refused(t, args, "is the parameters file the samples are drawn from")
	if after, _ := os.ReadFile(params); string(after) != string(before) {
		t.Error("the parameters were overwritten")
	}
	out := filepath.Join(dir, "s.csv")
	if r := clitest.Run(t, dir, "--params", params, "--n", "5", "--out", out); r.Code != 0 {
		t.Fatalf("%+v", r)
	}
	if b, _ := os.ReadFile(out); len(strings.Split(strings.TrimSpace(string(b)), "\n")) != 6 {
		t.Errorf("CSV:\n%s", b)
	}
}
