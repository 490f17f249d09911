package datasets

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
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

// Without GoMNIST in any module cache MNIST is looked for in MNISTDir (the
// container image's copy), and the error names both places.
func TestMNISTWithoutModuleCache(t *testing.T) {
	if _, err := os.Stat(MNISTDir); err == nil {
		t.Skipf("%s exists here", MNISTDir)
	}
	empty := t.TempDir()
	t.Setenv("GOMODCACHE", empty)
	t.Setenv("GOPATH", empty)
	t.Setenv("HOME", empty)
	_, err := DatasetDir("mnist", "")
	if err == nil || !strings.Contains(err.Error(), empty) || !strings.Contains(err.Error(), MNISTDir) {
		t.Errorf("err = %v, want one naming %s and %s", err, empty, MNISTDir)
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
			if s.N != n || s.C != 1 || s.H != 28 || s.W != 28 || s.Classes != 10 || len(s.Image(n-1)) != 784 {
				t.Errorf("%s %s: %d images %dx%dx%d, %d classes", name, split, s.N, s.C, s.H, s.W, s.Classes)
			}
		}
		// Load finds the same set by name, at its own size or size 0.
		for _, size := range []int{0, 28} {
			s, err := Load(name, "", "test", Options{Size: size})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]string{"mnist": {"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"}, "fashion-mnist": FashionMNISTClasses}[name]
			if s.N != 10000 || s.C != 1 || !reflect.DeepEqual(s.ClassNames, want) {
				t.Errorf("Load(%s, size %d): %d images, C %d, classes %q", name, size, s.N, s.C, s.ClassNames)
			}
		}
		if _, err := Load(name, "", "test", Options{Size: 32}); err == nil || !strings.Contains(err.Error(), "image folders only") {
			t.Errorf("%s resized to 32: %v", name, err)
		}
	}
	if s, _ := Load("fashion-mnist", "", "train", Options{}); s == nil || s.ClassNames[9] != "Ankle boot" || s.ClassNames[0] != "T-shirt/top" {
		t.Error("Fashion-MNIST class names")
	}
	if _, err := DatasetDir("cifar", ""); err == nil {
		t.Error("unknown dataset accepted")
	}
	if _, err := Load("cifar", "", "train", Options{}); err == nil || !strings.Contains(err.Error(), "cifar") {
		t.Errorf("Load of an unknown dataset: %v", err)
	}
}

// Load reads a folder holding IDX files as IDX, whatever else it holds.
func TestLoadIDXFolder(t *testing.T) {
	dir := t.TempDir()
	pixels := make([]byte, 3*4*4)
	for i := range pixels {
		pixels[i] = byte(i)
	}
	os.WriteFile(filepath.Join(dir, "train-images-idx3-ubyte.gz"), gz(idx([]uint32{3, 4, 4}, pixels)), 0o644)
	os.WriteFile(filepath.Join(dir, "train-labels-idx1-ubyte"), idx([]uint32{3}, []byte{0, 2, 1}), 0o644)
	os.MkdirAll(filepath.Join(dir, "somefolder"), 0o755)
	for _, size := range []int{0, 4} {
		s, err := Load("mnist", dir, "train", Options{Size: size})
		if err != nil {
			t.Fatal(err)
		}
		if s.N != 3 || s.C != 1 || s.H != 4 || s.Classes != 3 || !reflect.DeepEqual(s.ClassNames, []string{"0", "1", "2"}) || s.Image(2)[15] != 47 {
			t.Errorf("size %d: %+v", size, s)
		}
	}
	if _, err := Load("mnist", dir, "train", Options{Size: 8}); err == nil || !strings.Contains(err.Error(), dir) || !strings.Contains(err.Error(), "resizing applies to image folders only") {
		t.Errorf("IDX resized: %v", err)
	}
	// The test split's files are missing: the error names them.
	if _, err := Load("mnist", dir, "test", Options{}); err == nil || !strings.Contains(err.Error(), "t10k-images-idx3-ubyte") {
		t.Errorf("missing test split: %v", err)
	}
	// Ten classes loaded as fashion-mnist get its class names.
	labels := []byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9}
	os.WriteFile(filepath.Join(dir, "train-images-idx3-ubyte.gz"), gz(idx([]uint32{10, 2, 2}, make([]byte, 40))), 0o644)
	os.WriteFile(filepath.Join(dir, "train-labels-idx1-ubyte"), idx([]uint32{10}, labels), 0o644)
	if s, err := Load("fashion-mnist", dir, "train", Options{}); err != nil || !reflect.DeepEqual(s.ClassNames, FashionMNISTClasses) {
		t.Errorf("fashion-mnist names: %v", err)
	}
	if s, err := Load("mnist", dir, "train", Options{}); err != nil || s.ClassNames[9] != "9" {
		t.Errorf("mnist names: %v", err)
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

// A gzip bomb: a valid header promising one 1-byte image, then 256 MiB of
// zeros in concatenated gzip members (a few hundred KiB on disk). It is
// refused, by file name, after reading at most the header's promise and a
// byte, not after decompressing the rest.
func TestIDXGzipBombIsRefusedEarly(t *testing.T) {
	var bomb bytes.Buffer
	bomb.Write(gz(idx([]uint32{1, 1, 1}, []byte{7})))
	zeros := gz(make([]byte, 1<<20))
	for range 256 {
		bomb.Write(zeros)
	}
	dir := t.TempDir()
	path := filepath.Join(dir, "train-images-idx3-ubyte.gz")
	if err := os.WriteFile(path, bomb.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "train-labels-idx1-ubyte"), idx([]uint32{1}, []byte{0}), 0o644)
	for name, read := range map[string]func() error{
		"ParseIDX": func() error { _, err := ParseIDX(bomb.Bytes()); return err },
		"ReadIDX":  func() error { _, err := ReadIDX(path); return err },
		"Load":     func() error { _, err := Load("mnist", dir, "train", Options{}); return err },
	} {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		err := read()
		runtime.ReadMemStats(&after)
		if err == nil || !strings.Contains(err.Error(), "beyond the 1 bytes the header promises") {
			t.Errorf("%s: err = %v, want the data beyond the header's promise refused", name, err)
		}
		if name != "ParseIDX" && (err == nil || !strings.Contains(err.Error(), path)) {
			t.Errorf("%s: err = %v, want it to name %s", name, err, path)
		}
		if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 16<<20 {
			t.Errorf("%s: allocated %d MiB to refuse a bomb whose header promises 1 byte", name, alloc>>20)
		}
	}
}
