package datasetstest

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"kakusan/datasets"
)

// WriteFolder writes the same files every time, classes a nearest-mean
// classifier tells apart, in grey or colour.
func TestWriteFolder(t *testing.T) {
	for _, rgb := range []bool{false, true} {
		dir := filepath.Join(t.TempDir(), "set")
		if err := WriteFolder(dir, 4, 12, 16, rgb); err != nil {
			t.Fatal(err)
		}
		train, err := datasets.Load("", dir, "train", datasets.Options{Size: 16})
		if err != nil {
			t.Fatal(err)
		}
		test, err := datasets.Load("", dir, "test", datasets.Options{Size: 16})
		if err != nil {
			t.Fatal(err)
		}
		wantC := map[bool]int{false: 1, true: 3}[rgb]
		if train.N != 44 || test.N != 4 || train.C != wantC || !reflect.DeepEqual(train.ClassNames, []string{"class0", "class1", "class2", "class3"}) {
			t.Fatalf("rgb %v: %d train, %d test images, C %d, classes %q", rgb, train.N, test.N, train.C, train.ClassNames)
		}
		// Class means of the training images; each test image is nearest
		// its own class's mean, and the images of a class differ.
		size := train.ImageSize()
		means := make([][]float64, 4)
		for k := range means {
			means[k] = make([]float64, size)
		}
		for i := range train.N {
			for j, v := range train.Image(i) {
				means[train.Labels[i]][j] += float64(v) / 11
			}
		}
		for i := range test.N {
			best, bestD := -1, 0.0
			for k, m := range means {
				d := 0.0
				for j, v := range test.Image(i) {
					d += (float64(v) - m[j]) * (float64(v) - m[j])
				}
				if best < 0 || d < bestD {
					best, bestD = k, d
				}
			}
			if best != int(test.Labels[i]) {
				t.Errorf("rgb %v: test image %d of class %d is nearest class %d", rgb, i, test.Labels[i], best)
			}
		}
		if bytes.Equal(train.Image(0), train.Image(1)) {
			t.Error("two images of a class are identical")
		}
		again := filepath.Join(t.TempDir(), "again")
		WriteFolder(again, 4, 12, 16, rgb)
		for _, f := range []string{"class0/0000.png", "class3/0011.png"} {
			a, _ := os.ReadFile(filepath.Join(dir, f))
			b, _ := os.ReadFile(filepath.Join(again, f))
			if len(a) == 0 || !bytes.Equal(a, b) {
				t.Errorf("%s differs between two writes", f)
			}
		}
	}
	if err := WriteFolder(t.TempDir(), 11, 1, 8, true); err != nil {
		t.Error(err)
	}
	for _, c := range [][3]int{{0, 1, 8}, {257, 1, 8}, {2, 0, 8}, {2, 1, 3}, {2, 1, 2000}} {
		if err := WriteFolder(t.TempDir(), c[0], c[1], c[2], false); err == nil {
			t.Errorf("WriteFolder%v accepted", c)
		}
	}
}
