package datasets

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func idx(dims []uint32, data []byte) []byte {
	b := []byte{0, 0, 8, byte(len(dims))}
	for _, d := range dims {
		b = append(b, byte(d>>24), byte(d>>16), byte(d>>8), byte(d))
	}
	return append(b, data...)
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func TestParseIDX(t *testing.T) {
	x, err := ParseIDX(gz(idx([]uint32{2, 2, 3}, []byte{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12})))
	if err != nil {
		t.Fatal(err)
	}
	if len(x.Dims) != 3 || x.Dims[2] != 3 || x.Data[11] != 12 {
		t.Errorf("%+v", x)
	}
	cases := []struct {
		name string
		b    []byte
		want string
	}{
		{"short", []byte{0, 0}, "too short"},
		{"magic", []byte{1, 2, 8, 1, 0, 0, 0, 0}, "bad magic"},
		{"type", []byte{0, 0, 0x0d, 1, 0, 0, 0, 1, 0, 0, 0, 0}, "not unsigned byte"},
		{"dims", []byte{0, 0, 8, 0}, "0 dimensions"},
		{"header", []byte{0, 0, 8, 2, 0, 0, 0, 1}, "truncated header"},
		{"truncated", idx([]uint32{3, 2}, []byte{1, 2, 3}), "truncated: 3 data bytes, the header promises 6"},
		{"trailing", idx([]uint32{1}, []byte{1, 2}), "beyond"},
		{"huge", idx([]uint32{1 << 20, 1 << 20}, nil), "would exceed"},
		{"bad gzip", []byte{0x1f, 0x8b, 0, 0}, "gzip"},
	}
	for _, c := range cases {
		if _, err := ParseIDX(c.b); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want %q", c.name, err, c.want)
		}
	}
}

func TestCorruptIDXFileIsNamed(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "train-images-idx3-ubyte"), idx([]uint32{2, 28, 28}, make([]byte, 100)), 0o644)
	os.WriteFile(filepath.Join(dir, "train-labels-idx1-ubyte"), idx([]uint32{2}, []byte{1, 2}), 0o644)
	_, err := LoadImages(dir, "train")
	if err == nil || !strings.Contains(err.Error(), "train-images-idx3-ubyte: truncated") {
		t.Errorf("err = %v", err)
	}
	os.WriteFile(filepath.Join(dir, "train-images-idx3-ubyte"), idx([]uint32{3, 2, 2}, make([]byte, 12)), 0o644)
	if _, err := LoadImages(dir, "train"); err == nil || !strings.Contains(err.Error(), "labels for 3 images") {
		t.Errorf("label count mismatch: %v", err)
	}
}

func TestMNISTAndFashionMNIST(t *testing.T) {
	for _, name := range []string{"mnist", "fashion-mnist"} {
		dir, err := DatasetDir(name, "")
		if err != nil {
			t.Fatal(err)
		}
		for split, n := range map[string]int{"train": 60000, "test": 10000} {
			s, err := LoadImages(dir, split)
			if err != nil {
				t.Fatal(err)
			}
			if s.N != n || s.H != 28 || s.W != 28 || s.Classes != 10 {
				t.Errorf("%s %s: %d images %dx%d, %d classes", name, split, s.N, s.H, s.W, s.Classes)
			}
		}
	}
	if _, err := DatasetDir("cifar", ""); err == nil {
		t.Error("unknown dataset accepted")
	}
}

func FuzzParseIDX(f *testing.F) {
	f.Add(idx([]uint32{2, 2}, []byte{1, 2, 3, 4}))
	f.Add(gz(idx([]uint32{1}, []byte{9})))
	f.Add([]byte{0, 0, 8, 3, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := ParseIDX(b)
		if err != nil {
			return
		}
		n := 1
		for _, d := range x.Dims {
			n *= d
		}
		if n != len(x.Data) {
			t.Fatalf("dims %v but %d bytes", x.Dims, len(x.Data))
		}
	})
}
