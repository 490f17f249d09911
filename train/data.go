package train

import (
	"fmt"
	"io"
	"strings"

	"kakusan/datasets"
	"kakusan/models"
	"kakusan/torch"
)

// data is a run's training and test images and the loader of the former.
type data struct {
	train, test *datasets.Images
	loader      *datasets.Loader
	spe         int       // steps per epoch
	resident    *resident // the training set on the device; nil: batches come from the host
	hflip       bool      // flip half the training images left-right
}

// maxResident bounds the training set a CUDA run keeps on its device
// (as bytes, one per pixel): MNIST is 47 MB.
const maxResident = 4 << 30

// resident is an image set held on a device, a byte per pixel, from which
// batches are gathered there: no host copy, no transfer per step.
type resident struct{ x, y *torch.Tensor }

func newResident(set *datasets.Images, dev torch.Device) *resident {
	return &resident{
		x: torch.FromSlice(set.Pixels, set.Shape(set.N)).To(dev).Keep(),
		y: torch.FromSlice(set.Labels, nil).To(dev).To(torch.Int64).Keep(),
	}
}

// batch gathers b's images (b.Index) on the device, scaled to [0, 1] as the
// loader scales them on the host (the same float32 division).
func (r *resident) batch(b datasets.Batch) Batch {
	idx := make([]int64, len(b.Index))
	for i, v := range b.Index {
		idx[i] = int64(v)
	}
	at := torch.FromSlice(idx, nil).To(r.x.Device())
	return Batch{X: r.x.IndexSelect(0, at).To(torch.Float32).DivScalar(255), Y: r.y.IndexSelect(0, at)}
}

func (r *resident) free() {
	if r != nil {
		r.x.Free()
		r.y.Free()
	}
}

// holdOnDevice keeps the training set on dev when dev is CUDA (or when a
// test asks, on any device) and the set is at most maxResident bytes; the
// loader then gives indices only.
func (d *data) holdOnDevice(dev torch.Device, always bool) {
	if (dev.Type != torch.CUDADevice && !always) || len(d.train.Pixels) > maxResident {
		return
	}
	d.resident = newResident(d.train, dev)
	d.loader.IndicesOnly = true
}

// residentOnAnyDevice makes every run keep its training set on its device
// (tests set it to check that path against the host's on the CPU).
var residentOnAnyDevice = false

// batch is the training batch b on dev, each image flipped left-right with
// probability 1/2 when the data asks (drawn from dev's generator).
func (d *data) batch(b datasets.Batch, dev torch.Device) Batch {
	var t Batch
	if d.resident != nil {
		t = d.resident.batch(b)
	} else {
		t = batchTensors(b, d.train, dev)
	}
	if d.hflip {
		t.X = flipHalf(t.X)
	}
	return t
}

// flipHalf flips each image of x (B, C, H, W) left-right with probability 1/2.
func flipHalf(x *torch.Tensor) *torch.Tensor {
	flip := torch.Rand([]int64{x.Size(0), 1, 1, 1}, x.Device()).LtScalar(0.5)
	return torch.Where(flip, x.Flip(3), x)
}

// loadData reads the configured dataset; its geometry and classes are
// what the model is built for. The loader gives rank its share of each
// step's batch of world ranks (world 0 or 1: the whole batch).
func loadData(c *models.Config, rank, world int, log io.Writer) (*data, error) {
	d := c.Data
	tr, err := d.Load("train", log)
	if err != nil {
		return nil, err
	}
	te, err := d.Load("test", log)
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
	if err := checkClasses(c, tr, te, log); err != nil {
		return nil, err
	}
	out := &data{train: tr.Subset(d.Subset), test: te.Subset(d.TestSubset), hflip: d.HFlip}
	out.loader = &datasets.Loader{Set: out.train, Batch: c.Train.StepImages(), Seed: c.Seed, Shuffle: true, Balance: d.Balance, Rank: rank, World: world}
	batch := fmt.Sprintf("train.batch_size %d", c.Train.BatchSize)
	if c.Train.Accumulate > 1 {
		batch = fmt.Sprintf("train.batch_size %d x train.accumulate %d", c.Train.BatchSize, c.Train.Accumulate)
	}
	if out.spe = out.loader.StepsPerEpoch(); out.spe == 0 && world > 1 {
		return nil, fmt.Errorf("%s on each of %d ranks is more than the %d training images", batch, world, out.train.N)
	} else if out.spe == 0 {
		return nil, fmt.Errorf("%s is larger than the %d training images", batch, out.train.N)
	}
	return out, nil
}

// checkClasses refuses classes without training images (an IDX label file
// whose stray label 200 would make 201 classes) and a judge of one class,
// and says in the log what a set's classes leave out: a single class (labels that carry nothing), and
// classes without test images (their test loss is not measured; an image
// folder's every-10th rule gives none to a class of fewer than 10 images).
func checkClasses(c *models.Config, tr, te *datasets.Images, log io.Writer) error {
	where := c.Data.Source()
	var empty []string
	for i, n := range tr.ClassCounts() {
		if n == 0 {
			empty = append(empty, tr.ClassNames[i])
		}
	}
	if len(empty) > 0 {
		shown := empty[:min(len(empty), 8)]
		more := ""
		if len(empty) > len(shown) {
			more = fmt.Sprintf(" and %d more", len(empty)-len(shown))
		}
		return fmt.Errorf("%s: %d of its %d classes have no training images (%s%s): a model would learn labels it never saw; a stray label (the largest is %d) makes every number below it a class, so fix the labels",
			where, len(empty), tr.Classes, strings.Join(shown, ", "), more, tr.Classes-1)
	}
	if tr.Classes == 1 {
		if e, ok := models.Lookup(c.Model); ok && e.Does(models.Classifies) {
			return fmt.Errorf("%s: one class (%s): a classifier needs two or more", where, tr.ClassNames[0])
		}
		fmt.Fprintf(log, "%s: one class (%s): its labels tell the model nothing\n", where, tr.ClassNames[0])
	}
	seen := te.ClassCounts() // te.Classes <= tr.Classes: classes past it have no test images
	var none []string
	for i, name := range tr.ClassNames {
		if i >= len(seen) || seen[i] == 0 {
			none = append(none, name)
		}
	}
	if len(none) > 0 {
		fmt.Fprintf(log, "%s: no test images of %s: the test loss leaves them out (with no test/ folder, a class needs 10 images to have one)\n", where, strings.Join(none, ", "))
	}
	return nil
}

// batchTensors moves a host batch of set's images to dev: pixels (B, C, H, W)
// and int64 labels (B).
// To CUDA the copies go through page-locked memory without waiting (the
// caching host allocator keeps the staging block until its copy is done).
func batchTensors(b datasets.Batch, set *datasets.Images, dev torch.Device) Batch {
	x, y := torch.FromSlice(b.Pixels, set.Shape(b.N)), torch.FromSlice(b.Labels, nil)
	if dev.Type == torch.CUDADevice {
		return Batch{X: x.PinMemory().ToAsync(dev), Y: y.PinMemory().ToAsync(dev)}
	}
	return Batch{X: x.To(dev), Y: y.To(dev)}
}

// testScores are a model's scores on the test set.
type testScores struct {
	loss     float64 // mean per-image loss
	accuracy float64 // a Classifier's share right
	mse      float64 // a Reconstructor's mean squared error per pixel, in [0, 1] units
}

// evalLoss scores m, a model of entry e, on a set in eval mode without
// gradients: the mean per-image loss, for a classifier the share it gets
// right, for a model that reconstructs the squared error of its
// reconstructions.
func evalLoss(e models.Entry, m models.Model, set *datasets.Images, batch int, dev torch.Device) testScores {
	m.Module().SetTraining(false)
	defer m.Module().SetTraining(true)
	var scorer models.Classifier
	var rec models.Reconstructor
	if e.Does(models.Classifies) {
		scorer = m.(models.Classifier)
	}
	if e.Does(models.Reconstructs) {
		rec = m.(models.Reconstructor)
	}
	var total, sq float64
	var correct int64
	torch.NoGrad(func() {
		for _, b := range (&datasets.Loader{Set: set, Batch: batch}).All() {
			torch.Scoped(func() {
				t := batchTensors(b, set, dev)
				total += m.Loss(t.X, t.Y).Item() * float64(b.N)
				if scorer != nil {
					correct += scorer.Correct(t.X, t.Y)
				}
				if rec != nil {
					sq += torch.MSELoss(rec.Reconstruct(t.X).Clamp(0, 1), t.X, torch.ReduceSum).Item()
				}
			})
		}
	})
	n := float64(set.N)
	return testScores{total / n, float64(correct) / n, sq / n / float64(set.ImageSize())}
}
