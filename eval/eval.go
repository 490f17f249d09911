package eval

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"

	"kakusan/datasets"
	"kakusan/sample"
	"kakusan/torch"
	"kakusan/train"
)

// Protocol is what makes numbers comparable; it is written with them.
const Protocol = "judge: models/classifier CNN (conv32-pool-conv64-pool-fc128-fc10), features = its 128-d fc1 ReLU layer; " +
	"FID and precision/recall against the 10,000 test images of the judge's dataset; floor = FID of the first 10,000 " +
	"training images against the test images; precision/recall with k = 3 nearest neighbours"

// Judge is a trained classifier checkpoint.
type Judge struct {
	*train.Judge
	Config *train.Config
	Path   string
	dev    torch.Device
}

// LoadJudge loads a classifier checkpoint (file or run folder); any other
// kind of checkpoint is an error naming it.
func LoadJudge(path string, dev torch.Device) (*Judge, error) {
	m, cfg, ck, err := train.LoadModel(path, dev, false)
	if err != nil {
		return nil, err
	}
	judge, ok := m.(*train.Judge)
	if !ok {
		m.Module().Free()
		return nil, fmt.Errorf("--judge %s: a %q checkpoint; the judge must be a classifier (train one with configs/mnist_classifier.yaml)", ck.Path, cfg.Model)
	}
	return &Judge{Judge: judge, Config: cfg, Path: ck.Path, dev: dev}, nil
}

// Free releases the judge's weights.
func (j *Judge) Free() { j.Module().Free() }

// Apply runs the judge over images (N, 1, 28, 28) in batches and returns
// the features (N, D, float64 on the CPU) and the predicted classes.
func (j *Judge) Apply(imgs *torch.Tensor) (*torch.Tensor, []int64) {
	var feats []*torch.Tensor
	var preds []int64
	n := imgs.Size(0)
	torch.NoGrad(func() {
		for start := int64(0); start < n; start += 1000 {
			sc := torch.NewScope()
			f := j.Features(imgs.Narrow(0, start, min(1000, n-start)).To(j.dev))
			preds = append(preds, j.Head(f).Argmax(1, false).Int64s()...)
			feats = append(feats, sc.Escape(f.To(torch.Float64, torch.CPU)))
			sc.Close()
		}
	})
	return torch.Cat(feats, 0), preds
}

// Reference holds the real images' features: the test set, and the first
// 10,000 training images for the floor.
type Reference struct {
	Test, Train *torch.Tensor
	TestRadii   *torch.Tensor // k-NN radii of the test features, k = 3
	TestGauss   Gaussian
	Floor       float64 // FID of training against test images
	Accuracy    float64 // the judge's accuracy on the test images
}

// NewReference computes the judge's features of its dataset's real images.
func (j *Judge) NewReference() (*Reference, error) {
	dir, err := datasets.DatasetDir(j.Config.Data.Dataset, j.Config.Data.Dir)
	if err != nil {
		return nil, err
	}
	test, err := datasets.LoadImages(dir, "test")
	if err != nil {
		return nil, err
	}
	tr, err := datasets.LoadImages(dir, "train")
	if err != nil {
		return nil, err
	}
	ref := &Reference{}
	var preds []int64
	ref.Test, preds = j.Apply(imagesTensor(test))
	ref.Train, _ = j.Apply(imagesTensor(tr.Subset(10000)))
	hits := 0
	for i, p := range preds {
		if p == int64(test.Labels[i]) {
			hits++
		}
	}
	ref.Accuracy = float64(hits) / float64(test.N)
	ref.TestRadii = Radii(ref.Test, k)
	if ref.TestGauss, err = Fit(ref.Test); err != nil {
		return nil, err
	}
	trainGauss, err := Fit(ref.Train)
	if err != nil {
		return nil, err
	}
	ref.Floor, err = FrechetDistance(trainGauss, ref.TestGauss)
	return ref, err
}

func imagesTensor(s *datasets.Images) *torch.Tensor {
	b := (&datasets.Loader{Set: s, Batch: s.N}).All()[0]
	return torch.FromSlice(b.Pixels, []int64{int64(s.N), 1, int64(s.H), int64(s.W)})
}

// Report is one evaluated set of generated images.
type Report struct {
	Guidance  *float64          `json:"guidance,omitempty"`
	Samples   int               `json:"samples"`
	Accuracy  *Interval         `json:"conditional_accuracy,omitempty"`
	PerClass  map[int]*Interval `json:"per_class_accuracy,omitempty"`
	FID       float64           `json:"fid"`
	Precision float64           `json:"precision"`
	Recall    float64           `json:"recall"`
}

// Evaluate measures images (N, 1, 28, 28) in [0, 1]; labels (one per
// image, or nil) enable the conditional accuracy.
func (j *Judge) Evaluate(ref *Reference, imgs *torch.Tensor, labels []int64) (*Report, error) {
	feats, preds := j.Apply(imgs)
	r := &Report{Samples: len(preds)}
	if labels != nil {
		if len(labels) != len(preds) {
			return nil, fmt.Errorf("%d labels for %d images", len(labels), len(preds))
		}
		hits, perHits, perN := 0, map[int]int{}, map[int]int{}
		for i, l := range labels {
			perN[int(l)]++
			if preds[i] == l {
				hits++
				perHits[int(l)]++
			}
		}
		acc := Wilson(hits, len(labels))
		r.Accuracy, r.PerClass = &acc, map[int]*Interval{}
		for c, n := range perN {
			w := Wilson(perHits[c], n)
			r.PerClass[c] = &w
		}
	}
	g, err := Fit(feats)
	if err != nil {
		return nil, err
	}
	if r.FID, err = FrechetDistance(g, ref.TestGauss); err != nil {
		return nil, err
	}
	if feats.Size(0) <= k {
		return nil, fmt.Errorf("need more than %d images, got %d", k, feats.Size(0))
	}
	r.Precision = coverage(ref.Test, ref.TestRadii, feats)
	r.Recall = coverage(feats, Radii(feats, k), ref.Test)
	return r, nil
}

// k is the neighbourhood size of precision and recall.
const k = 3

// Manifest line fields bin/sample writes.
type entry struct {
	File  string `json:"file"`
	Label *int64 `json:"label"`
}

// LoadSamples reads a sampling job's folder: every manifest*.jsonl, the
// PNGs they name (28×28 greyscale) and their labels (nil when the images
// have none). Errors name the file.
func LoadSamples(dir string) (*torch.Tensor, []int64, error) {
	manifests, _ := filepath.Glob(filepath.Join(dir, "manifest*.jsonl"))
	if len(manifests) == 0 {
		return nil, nil, fmt.Errorf("%s: no manifest.jsonl (write samples with bin/sample)", dir)
	}
	sort.Strings(manifests)
	var entries []entry
	for _, m := range manifests {
		f, err := os.Open(m)
		if err != nil {
			return nil, nil, err
		}
		s := bufio.NewScanner(f)
		line := 0
		for s.Scan() {
			line++
			var e entry
			if err := json.Unmarshal(s.Bytes(), &e); err != nil || e.File == "" {
				f.Close()
				return nil, nil, fmt.Errorf("%s:%d: not a manifest line", m, line)
			}
			entries = append(entries, e)
		}
		f.Close()
	}
	pix := make([]float32, 0, len(entries)*28*28)
	var labels []int64
	for i, e := range entries {
		path := filepath.Join(dir, e.File)
		g, err := sample.ReadPNG(path)
		if err != nil {
			return nil, nil, err
		}
		for _, v := range g.Pix {
			pix = append(pix, float32(v)/255)
		}
		if e.Label != nil {
			labels = append(labels, *e.Label)
		} else if i > 0 && labels != nil {
			return nil, nil, fmt.Errorf("%s: some manifest lines have labels and some do not", dir)
		}
	}
	if len(labels) != len(entries) {
		labels = nil
	}
	return torch.FromSlice(pix, []int64{int64(len(entries)), 1, 28, 28}), labels, nil
}

// Generate samples n images from a model (train.LoadModel): for a
// diffusion model with labels cycling 0-9 (as bin/sample --labels 0-9 does)
// at the given guidance, else from the model's own sampler. It returns the
// images and their labels (nil for unconditional models). Progress, when
// not nil, hears after each batch how many images are done.
func Generate(m train.Model, n int, job train.SampleJob, batch int, progress func(done int)) (*torch.Tensor, []int64, error) {
	var err error
	var out []*torch.Tensor
	var labels []int64
	dm, isDiffusion := m.(*train.DiffusionModel)
	for start := 0; start < n; start += batch {
		sc := torch.NewScope()
		var x *torch.Tensor
		if isDiffusion {
			j := job
			j.Images, j.Labels = nil, nil
			for k := start; k < min(start+batch, n); k++ {
				j.Images = append(j.Images, k)
				j.Labels = append(j.Labels, int64(k%10))
			}
			if x, err = dm.Generate(j); err != nil {
				sc.Close()
				return nil, nil, err
			}
			if dm.Conditional() {
				labels = append(labels, j.Labels...)
			}
		} else if s, ok := m.(train.Sampler); ok {
			torch.NoGrad(func() { x = s.Sample(int64(min(batch, n-start))) })
		} else {
			sc.Close()
			return nil, nil, fmt.Errorf("a %T does not generate images", m)
		}
		// Through 8-bit pixels, as the PNGs of bin/sample are.
		x = x.Clamp(0, 1).MulScalar(255).Round().DivScalar(255).To(torch.CPU)
		out = append(out, sc.Escape(x))
		sc.Close()
		if progress != nil {
			progress(min(start+batch, n))
		}
	}
	return torch.Cat(out, 0), labels, nil
}
