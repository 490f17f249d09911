package main

import (
	"path/filepath"
	"strings"
	"testing"

	"kakusan/cmd/internal/cli"
	"kakusan/cmd/internal/clitest"
	"kakusan/models"
)

// TestDeployTraining checks the training command lines of deploy/: bin/train's
// flag parser accepts them, the config they name (a path in the image,
// whose working folder is the repository's layout) loads with their --set
// values, and the PyTorchJob has one Master and its run folder on the
// shared volume.
func TestDeployTraining(t *testing.T) {
	root, _ := filepath.Abs("../..")
	n := 0
	for _, c := range clitest.Containers(t, root) {
		if len(c.Args) == 0 || c.Args[0] != "train" {
			continue
		}
		n++
		fs, f := newFlags()
		if err := cli.Parse(fs, c.Args[1:]); err != nil {
			t.Fatalf("%s: %v: %v", c.File, c.Args, err)
		}
		if _, err := models.LoadConfig(filepath.Join(root, f.config), f.sets); err != nil {
			t.Errorf("%s: %v", c.File, err)
		}
		if !strings.HasPrefix(f.out, "/kakusan/runs/") || !f.autoResume {
			t.Errorf("%s: --out %q --auto-resume %v: want a folder on the runs volume, resumed when a pod restarts", c.File, f.out, f.autoResume)
		}
		if c.Doc["kind"] == "PyTorchJob" {
			specs, _ := c.Doc["spec"].(map[string]any)["pytorchReplicaSpecs"].(map[string]any)
			master, _ := specs["Master"].(map[string]any)
			if master == nil || master["replicas"] != 1 || specs["Worker"] == nil {
				t.Errorf("%s: want one Master and Workers, got %v", c.File, specs)
			}
		}
	}
	if n == 0 {
		t.Error("no training command in deploy/")
	}
}
