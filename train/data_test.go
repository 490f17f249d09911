package train

import (
	"path/filepath"
	"slices"
	"testing"

	"kakusan/datasets"
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
