//go:build unix

package datasets

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A FIFO or a device with an image's name is refused, and never opened
// for reading (a FIFO would block with no writer).
func TestFolderRefusesFIFOsAndDevices(t *testing.T) {
	for _, c := range []struct {
		name, want string
		make       func(path string) error
	}{
		{"fifo.png", "not a regular file (a FIFO)", func(p string) error { return syscall.Mkfifo(p, 0o644) }},
		{"null.png", "not a regular file (a device)", func(p string) error { return os.Symlink("/dev/null", p) }},
		{"dangling.jpg", "dangling.jpg", func(p string) error { return os.Symlink("/nowhere/at/all", p) }},
	} {
		dir := t.TempDir()
		writeImage(t, filepath.Join(dir, "a", "ok.png"), greyImage(8, 8, 1))
		p := filepath.Join(dir, "a", c.name)
		if err := c.make(p); err != nil {
			t.Fatal(err)
		}
		done := make(chan error, 1)
		go func() {
			_, err := Load("", dir, "train", Options{Size: 8})
			done <- err
		}()
		select {
		case err := <-done:
			if err == nil || !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), c.want) {
				t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: loading hangs", c.name)
		}
	}
	// A symlink to a regular image is read like the image.
	dir := t.TempDir()
	writeImage(t, filepath.Join(dir, "elsewhere", "x.png"), greyImage(8, 8, 42))
	os.MkdirAll(filepath.Join(dir, "set", "a"), 0o755)
	os.Symlink(filepath.Join(dir, "elsewhere", "x.png"), filepath.Join(dir, "set", "a", "link.png"))
	s, err := Load("", filepath.Join(dir, "set"), "train", Options{Size: 8})
	if err != nil || s.N != 1 || s.Image(0)[0] != 42 {
		t.Errorf("symlinked image: %v", err)
	}
}
