package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"kakusan/cmd/internal/clitest"
	"kakusan/datasets"
	"kakusan/models"
	"kakusan/sample"
	"kakusan/train"
)

func TestMain(m *testing.M) { clitest.Main(m, main) }

func tinyRun(t *testing.T, config string, sets ...string) string {
	t.Helper()
	c, err := models.LoadConfig("../../configs/"+config+".yaml", append([]string{"data.subset=256", "data.test_subset=64", "device=cpu", "train.max_steps=2"}, sets...))
	if err != nil {
		t.Fatal(err)
	}
	r, err := train.Train(c, train.Options{Out: filepath.Join(t.TempDir(), config)})
	if err != nil {
		t.Fatal(err)
	}
	return r.Dir
}

// TestHostileInputs runs bin/eval's main as a careless or hostile user
// would: every case fails with a message naming the culprit and no panic
// trace, and a samples folder is left as it was.
func TestHostileInputs(t *testing.T) {
	judge := tinyRun(t, "mnist_classifier")
	vae := tinyRun(t, "mnist_vae")
	dir := t.TempDir()
	folder := func(name, manifest string) string {
		d := filepath.Join(dir, name)
		os.MkdirAll(d, 0o755)
		if err := os.WriteFile(filepath.Join(d, "manifest.jsonl"), []byte(manifest), 0o644); err != nil {
			t.Fatal(err)
		}
		return d
	}
	os.WriteFile(filepath.Join(dir, "secret.png"), []byte("outside the folder"), 0o644)
	traversal := folder("traversal", `{"file":"../secret.png","label":1}`+"\n")
	job := func(name, record string) string {
		d := folder(name, `{"file":"000000_label1.png","index":0,"label":1}`+"\n")
		os.WriteFile(filepath.Join(d, "job.json"), []byte(record), 0o644)
		return d
	}
	corrupt := job("corrupt", `{"n": 1}`)
	os.WriteFile(filepath.Join(corrupt, "000000_label1.png"), []byte("not a PNG"), 0o644)
	edited := job("edited", fmt.Sprintf(`{"n": 1, "labels": %q}`, sample.LabelsDigest([]int64{3})))
	renamed := job("renamed", `{"n": 1}`)
	os.WriteFile(filepath.Join(renamed, "manifest.jsonl"), []byte(`{"file":"000000_label3.png","index":0,"label":1}`+"\n"), 0o644)
	fashion, _ := json.Marshal(map[string]any{"n": 1, "class_names": datasets.FashionMNISTClasses})
	before := clitest.Snapshot(t, traversal)
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--judge", judge}, "usage: eval --judge"},
		{[]string{"--judge", judge, "--samples", traversal}, `file "../secret.png" is not a name in the folder`},
		{[]string{"--judge", judge, "--samples", folder("empty", "")}, "the manifests list no images"},
		{[]string{"--judge", judge, "--samples", folder("mixed", `{"file":"a.png"}`+"\n"+`{"file":"b.png","label":1}`+"\n")}, "some manifest lines have labels and some do not"},
		{[]string{"--judge", judge, "--samples", folder("label", `{"file":"a.png","label":12}`+"\n")}, "label 12 is not a class of the judge (0-9)"},
		{[]string{"--judge", judge, "--samples", traversal, "--n", "50"}, "--n is for --checkpoint"},
		{[]string{"--judge", judge, "--checkpoint", vae, "--n", "5"}, "--n 5: must be between 10 (FID and precision/recall need that many) and"},
		{[]string{"--judge", judge, "--samples", corrupt}, "000000_label1.png: png: invalid format: not a PNG file (listed at "},
		{[]string{"--judge", judge, "--samples", edited}, "the manifests' labels are not the job's"},
		{[]string{"--judge", judge, "--samples", renamed}, "names 000000_label3.png, but image 0 with its label is 000000_label1.png"},
		{[]string{"--judge", judge, "--samples", job("badjson", `{"n": 1,`)}, "not valid JSON"},
		{[]string{"--judge", judge, "--samples", corrupt}, "delete it and rerun the same bin/sample command"},
		{[]string{"--judge", judge, "--samples", folder("twice", `{"file":"a.png","label":1}`+"\n"+`{"file":"a.png","label":1}`+"\n")}, "lists a.png again"},
		{[]string{"--judge", judge, "--checkpoint", vae, "--steps", "20"}, "--steps is for diffusion models"},
		{[]string{"--judge", judge, "--samples", traversal, "--out", dir}, "not a file"},
		{[]string{"--judge", judge, "--checkpoint", vae, "--guidance", "nan"}, "--guidance"},
		{[]string{"--judge", vae, "--samples", traversal}, `a "vae" checkpoint; the judge must be a classifier`},
		{[]string{"--judge", "/dev/zero", "--samples", traversal}, "/dev/zero: not a regular file"},
		{[]string{"--judge", judge, "--samples", job("fashion", string(fashion))}, `the images are of the classes ["T-shirt/top"`},
		{[]string{"--judge", judge, "--samples", job("unfinished", `{"n": 3}`)}, "the job made 3 images, its manifests list 1"},
		{[]string{"--judge", judge, "--samples", job("nocount", `{"seed": 3}`)}, "not bin/sample's job record"},
	}
	for _, c := range cases {
		clitest.Run(t, dir, c.args...).Refused(t, c.args, c.want)
	}
	if after := clitest.Snapshot(t, traversal); after != before {
		t.Errorf("refused evaluations changed the samples folder:\n%s\nbecame\n%s", before, after)
	}
}
