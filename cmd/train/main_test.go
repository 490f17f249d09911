package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"kakusan/cmd/internal/clitest"
	"kakusan/torch/safetensors"
	"kakusan/torch/torchtest"
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
		// Sizes refused before anything is allocated: a U-Net of billions of
		// parameters, a batch no memory holds.
		{[]string{"-config", write("wide.yaml", "model: diffusion\ndevice: cpu\n"), "--set", "unet.width=4096"}, "unet.width: 4096 (with levels 2, emb_dim 100) makes a network of"},
		{[]string{"-config", write("batch.yaml", "model: diffusion\ndevice: cpu\ndata: {test_subset: 64}\n"), "--set", "unet.width=512", "--set", "train.batch_size=32768"},
			"train.batch_size: 32768 images of 1x28x28 need about"},
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

// TestTorchrun launches two ranks with PyTorch's own launcher, Debian's
// torch 1.13 (`python3 -m torch.distributed.run`, which is torchrun), as a
// user would launch bin/train: its agent serves the store and sets each
// rank's variables; rank 0 writes the run. Debian 12's Python 3.11 breaks
// torch 1.13's default --redirects/--tee ("0" parses to None: Python 3.11
// no longer iterates a Flag's zero member), hence "--redirects 1 --tee 1".
// Debian 13's PyTorch 2.6 is built without libuv, which its torchrun's
// stores ask for regardless of USE_LIBUV: scripts/torchrun.py is torchrun
// with USE_LIBUV honoured.
func TestTorchrun(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch.distributed.run").Run(); err != nil {
		t.Skipf("no torchrun (%s with torch): %v", py, err)
	}
	root, _ := filepath.Abs("../..")
	out := filepath.Join(t.TempDir(), "run")
	port := strconv.Itoa(torchtest.FreePort(t))
	cmd := exec.Command(py, filepath.Join(root, "scripts/torchrun.py"), "--nproc_per_node", "2", "--master_port", port, "--redirects", "1", "--tee", "1", "--no_python", os.Args[0],
		"-config", filepath.Join(root, "configs/mnist_classifier.yaml"), "--out", out,
		"--set", "data.subset=512", "--set", "data.test_subset=64", "--set", "train.max_steps=6", "--set", "train.log_every=3",
		"--set", "classifier.hidden=16", "--set", "device=cpu", "--set", "train.dist_timeout=60")
	cmd.Env = append(os.Environ(), clitest.EnvMain+"=1", "KAKUSAN_THREADS=1", "USE_LIBUV=0")
	cmd.Dir = root
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("torchrun: %v\n%s", err, b)
	}
	if !strings.Contains(string(b), "data parallel: 2 ranks (gloo), 128 images a step (64 a rank)") {
		t.Errorf("rank 0 did not report two ranks:\n%s", b)
	}
	meta := readMeta(t, filepath.Join(out, "checkpoints", "latest.safetensors"))
	if meta["kakusan.step"] != "6" || meta["kakusan.world_size"] != "2" {
		t.Errorf("checkpoint metadata %v", meta)
	}
}

// readMeta reads a safetensors file's metadata.
func readMeta(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := safetensors.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return f.Metadata
}

// --auto-resume starts a run whose folder is new (or holds no checkpoint:
// a job killed early) and continues one that holds a checkpoint, as a
// restarted pod of deploy/training.yaml does.
func TestAutoResume(t *testing.T) {
	root, _ := filepath.Abs("../..")
	out := filepath.Join(t.TempDir(), "run")
	args := func(steps string) []string {
		return []string{"-config", filepath.Join(root, "configs/mnist_classifier.yaml"), "--out", out, "--auto-resume",
			"--set", "data.subset=256", "--set", "data.test_subset=64", "--set", "classifier.hidden=8", "--set", "device=cpu",
			"--set", "train.max_steps=" + steps}
	}
	os.MkdirAll(out, 0o755)
	os.WriteFile(filepath.Join(out, "config.yaml"), []byte("model: classifier\n"), 0o644) // killed before its first checkpoint
	if r := clitest.Run(t, "", args("2")...); r.Code != 0 || strings.Contains(r.Stdout, "resumed") {
		t.Fatalf("first start: %+v", r)
	}
	if r := clitest.Run(t, "", args("4")...); r.Code != 0 || !strings.Contains(r.Stdout, "resumed from") || !strings.Contains(r.Stdout, "at step 2") {
		t.Fatalf("restart: %+v", r)
	}
	if meta := readMeta(t, filepath.Join(out, "checkpoints", "latest.safetensors")); meta["kakusan.step"] != "4" {
		t.Errorf("after the restart the checkpoint is at step %s, want 4", meta["kakusan.step"])
	}
	clitest.Run(t, "", "-config", "x.yaml", "--auto-resume").Refused(t, []string{"--auto-resume"}, "--auto-resume needs --out")
}

// TestVersionNamesTheRevision builds bin/train as `make build` does and
// checks that --version prints the checkout's revision, read from the
// binary's build information.
func TestVersionNamesTheRevision(t *testing.T) {
	root, _ := filepath.Abs("../..")
	rev, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("no git checkout: %v", err)
	}
	dir := t.TempDir()
	shim := filepath.Join(root, "bin", "libkakusan_torch.so")
	if _, err := os.Stat(shim); err != nil {
		t.Skipf("no shim in bin/ (make build): %v", err)
	}
	os.Symlink(shim, filepath.Join(dir, "libkakusan_torch.so"))
	build := exec.Command("go", "build", "-buildvcs=true", "-ldflags", `-extldflags "-Wl,-rpath,$ORIGIN"`, "-o", dir, "./cmd/train")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	out, err := exec.Command(filepath.Join(dir, "train"), "--version").Output()
	if err != nil {
		t.Fatalf("train --version: %v", err)
	}
	if want := "revision " + strings.TrimSpace(string(rev)); !strings.Contains(string(out), want) {
		t.Errorf("train --version printed %q, want %q", out, want)
	}
}
