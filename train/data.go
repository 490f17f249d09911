package train

import (
	"fmt"

	"kakusan/datasets"
	"kakusan/models"
	"kakusan/torch"
)

// data is a run's training and test images and the loader of the former.
type data struct {
	train, test *datasets.Images
	loader      *datasets.Loader
	spe         int // steps per epoch
}

// loadData reads the configured dataset; its geometry and classes are
// what the model is built for.
func loadData(c *models.Config) (*data, error) {
	d := c.Data
	tr, err := datasets.Load(d.Dataset, d.Dir, d.Size, "train")
	if err != nil {
		return nil, err
	}
	te, err := datasets.Load(d.Dataset, d.Dir, d.Size, "test")
	if err != nil {
		return nil, err
	}
	where := d.Source()
	if tr.C != te.C || tr.H != te.H || tr.W != te.W {
		return nil, fmt.Errorf("%s: the training images are %dx%dx%d, the test images %dx%dx%d", where, tr.C, tr.H, tr.W, te.C, te.H, te.W)
	}
	if te.Classes > tr.Classes {
		return nil, fmt.Errorf("%s: the test labels go up to %d; the training set has %d classes", where, te.Classes-1, tr.Classes)
	}
	out := &data{train: tr.Subset(d.Subset), test: te.Subset(d.TestSubset)}
	out.loader = &datasets.Loader{Set: out.train, Batch: c.Train.BatchSize, Seed: c.Seed, Shuffle: true}
	if out.spe = out.loader.StepsPerEpoch(); out.spe == 0 {
		return nil, fmt.Errorf("train.batch_size %d is larger than the %d training images", c.Train.BatchSize, out.train.N)
	}
	return out, nil
}

// batchTensors moves a host batch of set's images to dev: pixels (B, C, H, W)
// and int64 labels (B).
func batchTensors(b datasets.Batch, set *datasets.Images, dev torch.Device) Batch {
	x := torch.FromSlice(b.Pixels, set.Shape(b.N)).To(dev)
	return Batch{X: x, Y: torch.FromSlice(b.Labels, nil).To(dev)}
}

// evalLoss is the mean per-image loss over a set, and for a Scorer the
// share it gets right, in eval mode without gradients.
func evalLoss(m models.Model, set *datasets.Images, batch int, dev torch.Device) (loss, accuracy float64) {
	m.Module().SetTraining(false)
	defer m.Module().SetTraining(true)
	scorer, _ := m.(models.Scorer)
	var total float64
	var correct int64
	torch.NoGrad(func() {
		for _, b := range (&datasets.Loader{Set: set, Batch: batch}).All() {
			torch.Scoped(func() {
				t := batchTensors(b, set, dev)
				total += m.Loss(t.X, t.Y).Item() * float64(b.N)
				if scorer != nil {
					correct += scorer.Correct(t.X, t.Y)
				}
			})
		}
	})
	return total / float64(set.N), float64(correct) / float64(set.N)
}
