package files

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func TestOnlyBoundedRegularFiles(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "f")
	os.WriteFile(p, []byte("12345"), 0o644)
	if b, err := Read(p, 5); err != nil || string(b) != "12345" {
		t.Errorf("a 5-byte file with limit 5: %q %v", b, err)
	}
	fifo := filepath.Join(dir, "fifo")
	syscall.Mkfifo(fifo, 0o644)
	for path, want := range map[string]string{p: "more than the 4", fifo: "not a regular file", "/dev/zero": "not a regular file", dir: "not a regular file", filepath.Join(dir, "none"): "no such file"} {
		if _, err := Read(path, 4); err == nil || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), path) {
			t.Errorf("%s: want %q, got %v", path, want, err)
		}
	}
}
