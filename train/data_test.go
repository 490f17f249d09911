package train

import (
	"bytes"
	"encoding/binary"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"kakusan/datasets"
	"kakusan/models"
	"kakusan/torch"
)

// The training set held on the device gives the batches the host loader
// gives, value for value, and a run trained from it logs the same losses.
func TestResidentBatchesMatchTheHost(t *testing.T) {
	set, err := datasets.Load("mnist", "", "train", datasets.Options{})
	if err != nil {
		t.Fatal(err)
	}
	set = set.Subset(300)
	err = torch.Do(func() error {
		r := newResident(set, torch.CPU)
		defer r.free()
		host := &datasets.Loader{Set: set, Batch: 32, Seed: 7, Shuffle: true}
		dev := &datasets.Loader{Set: set, Batch: 32, Seed: 7, Shuffle: true, IndicesOnly: true}
		hb, stopH := host.Epoch(1, 0)
		db, stopD := dev.Epoch(1, 0)
		defer stopH()
		defer stopD()
		for i := range 3 {
			h, d := <-hb, <-db
			if d.Pixels != nil {
				t.Fatal("IndicesOnly loader filled pixels")
			}
			want, got := batchTensors(h, set, torch.CPU), r.batch(d)
			if !slices.Equal(want.X.Float32s(), got.X.Float32s()) || !slices.Equal(want.Y.Int64s(), got.Y.Int64s()) {
				t.Fatalf("batch %d differs", i)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	losses := func(resident bool) []float64 {
		residentOnAnyDevice = resident
		defer func() { residentOnAnyDevice = false }()
		dir := filepath.Join(t.TempDir(), "run")
		if _, err := Train(neuralConfig(t, "vae", "data.subset=640", "train.epochs=1", "train.log_every=5"), Options{Out: dir}); err != nil {
			t.Fatal(err)
		}
		var out []float64
		for _, m := range readMetrics(t, dir) {
			if m.Loss != nil {
				out = append(out, *m.Loss)
			}
		}
		return out
	}
	host, dev := losses(false), losses(true)
	if len(host) < 4 || !slices.Equal(host, dev) {
		t.Fatalf("losses from host batches %v, from resident ones %v", host, dev)
	}
}

// flipHalf flips each image left-right or leaves it, about half of each,
// and draws from the device's generator (the same seed, the same flips).
func TestFlipHalf(t *testing.T) {
	err := torch.Do(func() error {
		x := torch.Arange(0, 64*2*3*4, 1, torch.CPU).To(torch.Float32).View(64, 2, 3, 4)
		flipped := x.Flip(3)
		var first []float32
		for run := range 2 {
			var y *torch.Tensor
			torch.WithSeed(5, func() { y = flipHalf(x) })
			flips := 0
			for i := range int64(64) {
				img := y.Index(torch.At(i))
				switch {
				case slices.Equal(img.Float32s(), flipped.Index(torch.At(i)).Float32s()):
					flips++
				case !slices.Equal(img.Float32s(), x.Index(torch.At(i)).Float32s()):
					t.Fatalf("image %d is neither itself nor its mirror", i)
				}
			}
			if flips < 16 || flips > 48 {
				t.Errorf("%d of 64 images flipped, want about half", flips)
			}
			if run == 0 {
				first = y.Float32s()
			} else if !slices.Equal(first, y.Float32s()) {
				t.Error("the same seed flipped other images")
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A class without test images and a set of one class are said in the log;
// a classifier of one class is refused.
func TestCheckClasses(t *testing.T) {
	set := func(labels ...uint8) *datasets.Images {
		s := &datasets.Images{N: len(labels), Labels: labels, ClassNames: []string{"cats", "dogs", "emus"}}
		for _, l := range labels {
			s.Classes = max(s.Classes, int(l)+1)
		}
		s.ClassNames = s.ClassNames[:s.Classes]
		return s
	}
	c := &models.Config{Model: "diffusion", Data: models.Data{Dir: "pets"}}
	var log strings.Builder
	if err := checkClasses(c, set(0, 2, 2), set(0, 2), &log); err == nil || !strings.Contains(err.Error(), "pets: 1 of its 3 classes have no training images (dogs)") {
		t.Errorf("a class without training images: %v", err)
	}
	if err := checkClasses(c, set(0, 1, 2, 2), set(0, 2), &log); err != nil || !strings.Contains(log.String(), "pets: no test images of dogs") {
		t.Errorf("%v, log %q", err, log.String())
	}
	log.Reset()
	if err := checkClasses(c, set(0, 0), set(0), &log); err != nil || !strings.Contains(log.String(), "one class (cats)") {
		t.Errorf("%v, log %q", err, log.String())
	}
	c.Model = "classifier"
	if err := checkClasses(c, set(0, 0), set(0), &log); err == nil || !strings.Contains(err.Error(), "a classifier needs two or more") {
		t.Errorf("a one-class classifier: %v", err)
	}
	log.Reset()
	if err := checkClasses(c, set(0, 1), set(0, 1), &log); err != nil || log.Len() != 0 {
		t.Errorf("a sound set: %v, log %q", err, log.String())
	}
}

// An IDX label file with one stray label (200) is refused by name, not
// trained as a model of 201 classes.
func TestStrayIDXLabelIsRefused(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, magic uint32, dims []uint32, body []byte) {
		var b bytes.Buffer
		binary.Write(&b, binary.BigEndian, magic)
		binary.Write(&b, binary.BigEndian, dims)
		b.Write(body)
		os.WriteFile(filepath.Join(dir, name), b.Bytes(), 0o644)
	}
	for _, split := range []string{"train", "t10k"} {
		labels := []byte{0, 1, 0, 1, 200, 1}
		write(split+"-images-idx3-ubyte", 0x803, []uint32{6, 28, 28}, make([]byte, 6*28*28))
		write(split+"-labels-idx1-ubyte", 0x801, []uint32{6}, labels)
	}
	c, err := models.LoadConfig("../configs/mnist_classifier.yaml", []string{"data.dir=" + dir, "device=cpu", "train.batch_size=2"})
	if err != nil {
		t.Fatal(err)
	}
	_, err = Train(c, Options{Out: filepath.Join(t.TempDir(), "run")})
	if err == nil || !strings.Contains(err.Error(), "198 of its 201 classes have no training images (2, 3, 4, 5, 6, 7, 8, 9 and 190 more)") ||
		!strings.Contains(err.Error(), "the largest is 200") {
		t.Errorf("a stray label: %v", err)
	}
}
