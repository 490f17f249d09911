package main

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"kakusan/cmd/internal/clitest"
	"kakusan/internal/docgen"
	"kakusan/models"
)

// TestDocs keeps bin/train's documentation true to its flags and configs:
// each documented command's config, with its --set, --seed and --device,
// loads; the classical fits, which take a second, run for real.
func TestDocs(t *testing.T) {
	root, _ := filepath.Abs("../..")
	var f *flags
	newFlagSet := func() *pflag.FlagSet {
		var fs *pflag.FlagSet
		fs, f = newFlags()
		return fs
	}
	clitest.CheckDocs(t, "bin/train", 20, newFlagSet, func(c docgen.Command, fs *pflag.FlagSet) error {
		if f.config == "" {
			return nil // --resume RUN: the run's own config
		}
		sets := f.sets
		if f.device != "" {
			sets = append(sets, "device="+f.device)
		}
		if fs.Changed("seed") {
			sets = append(sets, fmt.Sprintf("seed=%d", f.seed))
		}
		cfg, err := models.LoadConfig(filepath.Join(root, f.config), sets)
		if err != nil || models.Neural(cfg.Model) || f.resume != "" {
			return err
		}
		args := []string{"--out", filepath.Join(t.TempDir(), "run")}
		for i := 0; i < len(c.Args); i++ {
			if c.Args[i] == "--out" { // the documented folder gives way to the test's
				i++
				continue
			}
			args = append(args, c.Args[i])
		}
		if r := clitest.Run(t, root, args...); r.Code != 0 {
			return fmt.Errorf("exit %d: %s", r.Code, strings.TrimSpace(r.Stderr))
		}
		return nil
	})
}
