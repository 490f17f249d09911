package main

import (
	"testing"

	"github.com/spf13/pflag"

	"kakusan/cmd/internal/clitest"
)

// TestDocs keeps bin/sample's documentation true to its flags.
func TestDocs(t *testing.T) {
	clitest.CheckDocs(t, "bin/sample", 5, func() *pflag.FlagSet { fs, _ := newFlags(); return fs }, nil)
}
