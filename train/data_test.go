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
	set, err := datasets.Load("mnist", "", 0, "train")
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
