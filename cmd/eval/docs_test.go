package main

import (
	"path/filepath"
	"strings"
	"testing"

	"kakusan/cmd/internal/cli"
	"kakusan/internal/docgen"
)

// TestFlagsDoc keeps docs/configuration.md's table of bin/eval's flags
// what the flag set says (`make docs` rewrites it).
func TestFlagsDoc(t *testing.T) {
	fs, _, _ := newFlags()
	docgen.Check(t, "../../docs/configuration.md", "bin/eval flags", docgen.FlagsTable(fs))
}

// TestDocumentedCommands checks that every bin/eval command the README
// and docs/ show takes only bin/eval's flags.
func TestDocumentedCommands(t *testing.T) {
	root, _ := filepath.Abs("../..")
	cmds := docgen.Commands(t, root, "bin/eval")
	if len(cmds) < 5 {
		t.Fatalf("only %d bin/eval commands found in the documentation", len(cmds))
	}
	for _, c := range cmds {
		fs, _, _ := newFlags()
		if err := cli.Parse(fs, c.Args); err != nil {
			t.Errorf("%s: bin/eval %s: %v", c.Where, strings.Join(c.Args, " "), err)
		}
	}
}
