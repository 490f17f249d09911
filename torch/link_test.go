package torch

import (
	"debug/elf"
	"os"
	"strings"
	"testing"
)

// Binaries that use this package must link only the shim's C ABI, never
// libtorch itself: that is what lets a binary built here run against a shim
// built elsewhere. This test binary is such a binary.
func TestBinaryLinksOnlyTheShim(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Skip(err)
	}
	f, err := elf.Open(exe)
	if err != nil {
		t.Skip(err)
	}
	defer f.Close()
	libs, err := f.ImportedLibraries()
	if err != nil {
		t.Fatal(err)
	}
	shim := false
	for _, l := range libs {
		if l == "libkakusan_torch.so" {
			shim = true
		}
		if strings.HasPrefix(l, "libtorch") || strings.HasPrefix(l, "libc10") {
			t.Errorf("binary links %s directly", l)
		}
	}
	if !shim {
		t.Errorf("binary does not link libkakusan_torch.so: %v", libs)
	}
}
