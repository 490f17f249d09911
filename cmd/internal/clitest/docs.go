package clitest

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"kakusan/cmd/internal/cli"
	"kakusan/internal/docgen"
)

// CheckDocs keeps the documentation of command ("bin/train") true to its
// flag set, which newFlags makes afresh: docs/configuration.md's section
// "<command> flags" is the flag set's table (make docs rewrites it), and
// every command line of it the README and docs/ show parses with the
// command's flags, then passes check when that is not nil. At least min
// such lines must be found.
func CheckDocs(t *testing.T, command string, min int, newFlags func() *pflag.FlagSet, check func(c docgen.Command, fs *pflag.FlagSet) error) {
	t.Helper()
	root, _ := filepath.Abs("../..")
	docgen.Check(t, filepath.Join(root, "docs", "configuration.md"), command+" flags", docgen.FlagsTable(newFlags()))
	cmds := docgen.Commands(t, root, command)
	if len(cmds) < min {
		t.Fatalf("only %d %s commands found in the documentation", len(cmds), command)
	}
	for _, c := range cmds {
		fs := newFlags()
		err := cli.Parse(fs, c.Args)
		if err == nil && check != nil {
			err = check(c, fs)
		}
		if err != nil {
			t.Errorf("%s: %s %s: %v", c.Where, command, strings.Join(c.Args, " "), err)
		}
	}
}
