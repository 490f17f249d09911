package main

import (
	"path/filepath"
	"strings"
	"testing"

	"kakusan/cmd/internal/cli"
	"kakusan/internal/docgen"
)

// TestFlagsDoc keeps docs/configuration.md's table of bin/sample's flags
// what the flag set says (`make docs` rewrites it).
func TestFlagsDoc(t *testing.T) {
	fs, _ := newFlags()
	docgen.Check(t, "../../docs/configuration.md", "bin/sample flags", docgen.FlagsTable(fs))
}

// TestDocumentedCommands checks that every bin/sample command the README
// and docs/ show takes only bin/sample's flags.
func TestDocumentedCommands(t *testing.T) {
	root, _ := filepath.Abs("../..")
	cmds := docgen.Commands(t, root, "bin/sample")
	if len(cmds) < 5 {
		t.Fatalf("only %d bin/sample commands found in the documentation", len(cmds))
	}
	for _, c := range cmds {
		fs, _ := newFlags()
		if err := cli.Parse(fs, c.Args); err != nil {
			t.Errorf("%s: bin/sample %s: %v", c.Where, strings.Join(c.Args, " "), err)
		}
	}
}
