package main

import (
	"testing"

	"github.com/spf13/pflag"

	"kakusan/cmd/internal/clitest"
)

// TestDocs keeps bin/eval's documentation true to its flags.
func TestDocs(t *testing.T) {
	clitest.CheckDocs(t, "bin/eval", 5, func() *pflag.FlagSet { fs, _, _ := newFlags(); return fs }, nil)
}
