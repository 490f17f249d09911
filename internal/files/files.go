// Package files opens and reads the files users name (configs, data,
// checkpoints, manifests, images): regular files only, so a FIFO cannot
// block and a device cannot stream forever, and of bounded size, checked
// before anything is read. Errors name the path.
package files

import (
	"fmt"
	"io"
	"os"
)

// Check stats path: it must be a regular file (symlinks followed) of at
// most limit bytes.
func Check(path string, limit int64) (os.FileInfo, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: not a regular file (%s)", path, Kind(st.Mode()))
	}
	if st.Size() > limit {
		return nil, fmt.Errorf("%s: %d bytes, more than the %d such a file may have", path, st.Size(), limit)
	}
	return st, nil
}

// Open opens path for reading after Check.
func Open(path string, limit int64) (*os.File, error) {
	if _, err := Check(path, limit); err != nil {
		return nil, err
	}
	return os.Open(path)
}

// Read reads path whole after Check, never more than limit bytes (a file
// that grows meanwhile is cut there).
func Read(path string, limit int64) ([]byte, error) {
	f, err := Open(path, limit)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(io.LimitReader(f, limit))
}

// Kind names what a file that is not a regular one is, for errors: "a
// folder", "a FIFO", "a device", "a socket", "a symbolic link" (where not
// followed), else its mode.
func Kind(m os.FileMode) string {
	switch {
	case m.IsDir():
		return "a folder"
	case m&os.ModeNamedPipe != 0:
		return "a FIFO"
	case m&os.ModeDevice != 0, m&os.ModeCharDevice != 0:
		return "a device"
	case m&os.ModeSocket != 0:
		return "a socket"
	case m&os.ModeSymlink != 0:
		return "a symbolic link"
	}
	return "mode " + m.String()
}
