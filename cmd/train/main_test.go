package main

import (
	"os"
	"path/filepath"
	"testing"

	"kakusan/cmd/internal/clitest"
)

func TestMain(m *testing.M) { clitest.Main(m, main) }

// TestHostileInputs runs bin/train's main as a careless or hostile user
// would: every case must fail with a message naming the culprit, no panic
// trace, and no change to the run folder that was there.
func TestHostileInputs(t *testing.T) {
	root, _ := filepath.Abs("../..")
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	data := filepath.Join(root, "third_party/dlfs5/height.txt")
	good := write("good.yaml", "model: normal\ndata: {path: "+data+"}\nsamples: 10\n")
	existing := filepath.Join(dir, "run")
	if r := clitest.Run(t, dir, "-config", good, "--out", existing); r.Code != 0 {
		t.Fatalf("a good run: %+v", r)
	}
	notRun := filepath.Join(dir, "photos")
	os.MkdirAll(filepath.Join(notRun, "samples"), 0o755)
	os.WriteFile(filepath.Join(notRun, "samples", "mine.png"), []byte("a user's file"), 0o644)
	before := clitest.Snapshot(t, existing)
	beforeNotRun := clitest.Snapshot(t, notRun)
	cases := []struct {
		args []string
		want string
	}{
		{nil, "usage: train -config FILE"},
		{[]string{"-config", filepath.Join(dir, "none.yaml")}, "none.yaml: no such file"},
		{[]string{"-config", "/dev/zero"}, "/dev/zero: not a regular file"},
		{[]string{"-config", write("null.yaml", "model: diffusion\nunet:\n")}, "unet: empty section"},
		{[]string{"-config", write("t.yaml", "model: diffusion\ndiffusion: {timesteps: 1000000000}\n")}, "timesteps must be between 1 and 100000"},
		{[]string{"-config", write("gan.yaml", "model: gan\n")}, `unknown model "gan"`},
		{[]string{"-config", good, "--seed", "-5"}, "invalid argument \"-5\""},
		{[]string{"-config", good, "--set", "samples="}, `--set "samples=": want key=value`},
		{[]string{"-config", good, "--set", "samples=3\nmodel: vae"}, "a one-line value"},
		{[]string{"-config", good, "--out", existing}, "already holds a run"},
		{[]string{"--resume", existing, "--out", filepath.Join(dir, "other")}, "--out and --overwrite do not apply"},
		{[]string{"--resume", existing}, `model "normal" fits in one go`},
		{[]string{"-config", good, "--device", "tpu"}, "device"},
		{[]string{"-config", good, "--out", notRun, "--overwrite"}, "the folder holds no run"},
		{[]string{"-config", good, "configs/other.yaml"}, `unexpected argument "configs/other.yaml"`},
		{[]string{"-config", good, "--set", "name=../escaped"}, `name: "../escaped" cannot name a folder`},
	}
	for _, c := range cases {
		clitest.Run(t, dir, c.args...).Refused(t, c.args, c.want)
	}
	if after := clitest.Snapshot(t, notRun); after != beforeNotRun {
		t.Errorf("--overwrite changed a folder that held no run:\n%s\nbecame\n%s", beforeNotRun, after)
	}
	if after := clitest.Snapshot(t, existing); after != before {
		t.Errorf("the refused commands changed the existing run:\n%s\nbecame\n%s", before, after)
	}
}
