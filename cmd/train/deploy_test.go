package main

import (
	"path/filepath"
	"strings"
	"testing"

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
	for _, c := range clitest.Deployed(t, root, "train") {
		fs, f := newFlags()
		c.Parse(t, fs)
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
}
