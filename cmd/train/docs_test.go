package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"kakusan/cmd/internal/cli"
	"kakusan/cmd/internal/clitest"
	"kakusan/internal/docgen"
	"kakusan/models"
)

// TestFlagsDoc keeps docs/configuration.md's table of bin/train's flags
// what the flag set says (`make docs` rewrites it).
func TestFlagsDoc(t *testing.T) {
	fs, _ := newFlags()
	docgen.Check(t, "../../docs/configuration.md", "bin/train flags", docgen.FlagsTable(fs))
}

// TestDocumentedCommands checks every bin/train command the README and
// docs/ show: its flags are bin/train's and its config, with its --set,
// --seed and --device, loads. The classical fits, which take a second,
// run for real.
func TestDocumentedCommands(t *testing.T) {
	root, _ := filepath.Abs("../..")
	cmds := docgen.Commands(t, root, "bin/train")
	if len(cmds) < 20 {
		t.Fatalf("only %d bin/train commands found in the documentation", len(cmds))
	}
	for _, c := range cmds {
		fs, f := newFlags()
		if err := cli.Parse(fs, c.Args); err != nil {
			t.Errorf("%s: bin/train %s: %v", c.Where, strings.Join(c.Args, " "), err)
			continue
		}
		if f.config == "" {
			continue // --resume RUN: the run's own config
		}
		sets := f.sets
		if f.device != "" {
			sets = append(sets, "device="+f.device)
		}
		if fs.Changed("seed") {
			sets = append(sets, fmt.Sprintf("seed=%d", f.seed))
		}
		cfg, err := models.LoadConfig(filepath.Join(root, f.config), sets)
		if err != nil {
			t.Errorf("%s: %v", c.Where, err)
			continue
		}
		if !models.Neural(cfg.Model) && f.resume == "" {
			args := append([]string{"--out", filepath.Join(t.TempDir(), "run")}, c.Args...)
			for i, a := range args {
				if a == "--out" && i > 1 { // the documented folder gives way to the test's
					args = append(args[:i], args[i+2:]...)
					break
				}
			}
			if r := clitest.Run(t, root, args...); r.Code != 0 {
				t.Errorf("%s: bin/train %s: exit %d: %s", c.Where, strings.Join(args, " "), r.Code, r.Stderr)
			}
		}
	}
}
