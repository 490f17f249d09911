package eval

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"kakusan/datasets"
	"kakusan/diffusion"
	"kakusan/internal/files"
	"kakusan/models"
	"kakusan/models/prompt"
	"kakusan/sample"
	"kakusan/torch"
)

// Judge is a trained classifier checkpoint.
type Judge struct {
	models.Classifier
	Config   *models.Config
	Geometry models.Geometry
	Path     string
	dev      torch.Device
}

// LoadJudge loads a classifier checkpoint (file or run folder); any other
// kind of checkpoint is an error naming it.
func LoadJudge(path string, dev torch.Device) (*Judge, error) {
	m, ck, err := models.Load(path, dev, false)
	if err != nil {
		return nil, err
	}
	if !ck.Entry().Does(models.Classifies) {
		models.Free(m)
		return nil, fmt.Errorf("%s: a %q checkpoint; the judge must be a classifier (train one with configs/mnist_classifier.yaml)", ck.Path, ck.Config.Model)
	}
	return &Judge{Classifier: m.(models.Classifier), Config: ck.Config, Geometry: ck.Geometry, Path: ck.Path, dev: dev}, nil
}

// Protocol is what makes numbers comparable, written with them: the judge
// actually used and the reference sets.
func (j *Judge) Protocol() string {
	data := j.Config.Data.Source()
	g := j.Geometry
	network, features := j.Describe()
	return fmt.Sprintf("judge: %s, %s on %dx%dx%d images of %s; "+
		"features = %s; FID and precision/recall against the test images of that dataset; floor = FID of the "+
		"first %d training images against the test images; precision/recall with k = %d nearest neighbours; generated images "+
		"through 8-bit pixels", j.Path, network, g.C, g.H, g.W, data, features, floorImages, k)
}

// Free releases the judge's weights.
func (j *Judge) Free() { j.Module().Free() }

// Apply runs the judge over images (N, C, H, W) in batches and returns
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

// floorImages is how many training images the floor FID uses.
const floorImages = 10000

// Reference holds the real images' features: the test set, and the first
// 10,000 training images for the floor.
type Reference struct {
	Test, Train *torch.Tensor
	TestRadii   *torch.Tensor // k-NN radii of the test features, k = 3
	TestGauss   Gaussian
	Floor       float64 // FID of training against test images
	Accuracy    float64 // the judge's accuracy on the test images
	// ClassCounts are the test images of each class: a conditional model's
	// samples take its labels in these proportions when they are uneven
	// (MixedLabels), so that FID compares like with like.
	ClassCounts []int
	// StyleMedians are each class's median ink mass and slant over the
	// floor's training images (prompt.Measure): a prompt's style words are
	// judged against them.
	StyleMedians [][2]float64
}

// NewReference computes the judge's features of its dataset's real images.
func (j *Judge) NewReference() (*Reference, error) {
	d := j.Config.Data
	test, err := d.Load("test", nil)
	if err != nil {
		return nil, err
	}
	tr, err := d.Load("train", nil)
	if err != nil {
		return nil, err
	}
	ref := &Reference{}
	var preds []int64
	ref.Test, preds = j.Apply(imagesTensor(test))
	floor := tr.Subset(floorImages)
	floorImgs := imagesTensor(floor)
	ref.Train, _ = j.Apply(floorImgs)
	hits := 0
	for i, p := range preds {
		if p == int64(test.Labels[i]) {
			hits++
		}
	}
	ref.Accuracy = float64(hits) / float64(test.N)
	ref.ClassCounts = test.ClassCounts()
	ref.TestRadii = Radii(ref.Test, k)
	if ref.TestGauss, err = Fit(ref.Test); err != nil {
		return nil, err
	}
	trainGauss, err := Fit(ref.Train)
	if err != nil {
		return nil, err
	}
	ref.Floor, err = FrechetDistance(trainGauss, ref.TestGauss)
	ref.StyleMedians = styleMedians(floor, floorImgs)
	return ref, err
}

// styleMedians is each class's median ink mass and slant over set, whose
// images are imgs (NaN for a class without images).
func styleMedians(set *datasets.Images, imgs *torch.Tensor) [][2]float64 {
	ink, slant := measure(imgs)
	labels := make([]int64, set.N)
	for i, l := range set.Labels[:set.N] {
		labels[i] = int64(l)
	}
	inks, slants := prompt.ByClass(ink, labels, set.Classes), prompt.ByClass(slant, labels, set.Classes)
	out := make([][2]float64, set.Classes)
	for c := range out {
		out[c] = [2]float64{math.NaN(), math.NaN()}
		if len(inks[c]) > 0 {
			out[c] = [2]float64{prompt.Quantile(inks[c], 0.5), prompt.Quantile(slants[c], 0.5)}
		}
	}
	return out
}

// measure is prompt.Measure of images (N, C, H, W) in [0, 1], in chunks, on the host.
func measure(imgs *torch.Tensor) (ink, slant []float64) {
	n := imgs.Size(0)
	torch.NoGrad(func() {
		for start := int64(0); start < n; start += 5000 {
			torch.Scoped(func() {
				i, s := prompt.MeasureValues(imgs.Narrow(0, start, min(5000, n-start)))
				ink, slant = append(ink, i...), append(slant, s...)
			})
		}
	})
	return ink, slant
}

// styleShares are the shares of images whose ink mass and whose slant are
// above their class's training median: about one half each for images
// drawn like the training set, near 1 for "bold" (or "slanted") prompts
// that work, near 0 for "thin" (or "upright").
func styleShares(ref *Reference, imgs *torch.Tensor, labels []int64) map[string]*Interval {
	ink, slant := measure(imgs)
	var inkHits, slantHits, n int
	for i, l := range labels {
		if l < 0 || int(l) >= len(ref.StyleMedians) || math.IsNaN(ref.StyleMedians[l][0]) {
			continue
		}
		n++
		if ink[i] > ref.StyleMedians[l][0] {
			inkHits++
		}
		if slant[i] > ref.StyleMedians[l][1] {
			slantHits++
		}
	}
	if n == 0 {
		return nil
	}
	a, b := Wilson(inkHits, n), Wilson(slantHits, n)
	return map[string]*Interval{"ink_above_class_median": &a, "slant_above_class_median": &b}
}

func imagesTensor(s *datasets.Images) *torch.Tensor {
	b := (&datasets.Loader{Set: s, Batch: s.N}).All()[0]
	return torch.FromSlice(b.Pixels, s.Shape(s.N))
}

// Report is one evaluated set of generated images.
type Report struct {
	Guidance *float64          `json:"guidance,omitempty"`
	Samples  int               `json:"samples"`
	Accuracy *Interval         `json:"conditional_accuracy,omitempty"`
	PerClass map[int]*Interval `json:"per_class_accuracy,omitempty"`
	// Style: the shares of images above their class's training median in
	// ink mass and in slant (styleShares), for labelled images.
	Style     map[string]*Interval `json:"style,omitempty"`
	FID       float64              `json:"fid"`
	Precision float64              `json:"precision"`
	Recall    float64              `json:"recall"`
	// SamplingRate is the images a second the sampling job drew them at
	// (bin/eval --checkpoint), 0 when they were read from a folder.
	SamplingRate float64 `json:"sampling_images_per_s,omitempty"`
}

// Evaluate measures images (N, C, H, W) in [0, 1]; labels (one per
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
		r.Style = styleShares(ref, imgs, labels)
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

// Manifest line fields bin/sample writes, and where the line is.
type entry struct {
	File  string `json:"file"`
	Label *int64 `json:"label"`
	Index *int   `json:"index"`
	where string
}

// Bounds on what an evaluation reads: a manifest file, and the values of
// all images together (2^31 float32s, 8 GiB).
const (
	maxManifest = 1 << 30
	maxPixels   = 1 << 31
)

// LoadSamples reads a sampling job's folder: its manifest (manifest.jsonl,
// whole or merged from the shards', else every shard's
// manifest-i-of-n.jsonl), the PNGs it names (of geometry g, the judge's; a
// name must be a file in the folder itself) and their labels (nil when the
// images have none; every line has one or none does, each a class of g).
// Where the folder has bin/sample's job.json, the manifests must list the
// job's every image, and the job's class names must be the judge's. Errors
// name the file.
func LoadSamples(dir string, g models.Geometry) (*torch.Tensor, []int64, error) {
	entries, err := readManifests(dir)
	if err != nil {
		return nil, nil, err
	}
	if err := checkJob(dir, g, entries); err != nil {
		return nil, nil, err
	}
	size := g.C * g.H * g.W
	if int64(len(entries))*int64(size) > maxPixels {
		return nil, nil, fmt.Errorf("%s: %d images of %d values are more than an evaluation holds (%d values)", dir, len(entries), size, maxPixels)
	}
	var labels []int64
	for _, e := range entries {
		switch {
		case (e.Label != nil) != (entries[0].Label != nil):
			return nil, nil, fmt.Errorf("%s: some manifest lines have labels and some do not (%s)", dir, e.where)
		case e.Label != nil && (*e.Label < 0 || *e.Label >= int64(g.Classes)):
			return nil, nil, fmt.Errorf("%s: label %d is not a class of the judge (0-%d)", e.where, *e.Label, g.Classes-1)
		case e.Label != nil:
			labels = append(labels, *e.Label)
		}
	}
	pix := make([]float32, len(entries)*size)
	for i, e := range entries {
		if err := sample.ReadPNG(filepath.Join(dir, e.File), g.C, g.H, g.W, pix[i*size:(i+1)*size]); err != nil {
			return nil, nil, fmt.Errorf("%w (listed at %s): if bin/sample made it, delete it and rerun the same bin/sample command, which makes what is missing", err, e.where)
		}
	}
	return torch.FromSlice(pix, []int64{int64(len(entries)), int64(g.C), int64(g.H), int64(g.W)}), labels, nil
}

// checkJob checks a folder's job.json, when it has one, against the
// judge's geometry g and the n images its manifests list.
func checkJob(dir string, g models.Geometry, entries []entry) error {
	n := len(entries)
	path := filepath.Join(dir, "job.json")
	raw, err := files.Read(path, 1<<20)
	if errors.Is(err, os.ErrNotExist) {
		return nil // a folder of images made elsewhere, with a manifest of its own
	} else if err != nil {
		return err
	}
	var job struct {
		N          *int     `json:"n"`
		Labels     string   `json:"labels"`
		ClassNames []string `json:"class_names"`
	}
	if err := json.Unmarshal(raw, &job); err != nil {
		return fmt.Errorf("%s: not valid JSON (%v): not bin/sample's job record", path, err)
	}
	if job.N == nil {
		return fmt.Errorf("%s: not bin/sample's job record (no image count n)", path)
	}
	if *job.N != n {
		return fmt.Errorf("%s: the job made %d images, its manifests list %d: a shard's manifest is missing or the job is unfinished (finish every shard, then bin/sample --merge %s)", path, *job.N, n, dir)
	}
	if job.ClassNames != nil && g.ClassNames != nil && !slices.Equal(job.ClassNames, g.ClassNames) {
		return fmt.Errorf("%s: the images are of the classes %q, the judge classifies %q: judge them with a classifier of the model's data", path, job.ClassNames, g.ClassNames)
	}
	if job.ClassNames != nil && len(job.ClassNames) != g.Classes {
		return fmt.Errorf("%s: the images are of %d classes, the judge classifies %d", path, len(job.ClassNames), g.Classes)
	}
	// The labels are the job's, each image's in its file name too: an
	// edited manifest would score images against labels they were not
	// drawn for.
	byIndex := make([]*entry, n)
	for i := range entries {
		e := &entries[i]
		if e.Index == nil || *e.Index < 0 || *e.Index >= n || byIndex[*e.Index] != nil {
			return fmt.Errorf("%s: no index, or one out of range or listed twice, for a job of %d images: a manifest was edited; rerun the job", e.where, n)
		}
		byIndex[*e.Index] = e
	}
	var labels []int64
	for k, e := range byIndex {
		if e.Label != nil {
			labels = append(labels, *e.Label)
		}
		if name := sample.ImageName(k, e.Label); e.File != name {
			return fmt.Errorf("%s: names %s, but image %d with its label is %s: a manifest was edited; rerun the job", e.where, e.File, k, name)
		}
	}
	if job.Labels != "" && sample.LabelsDigest(labels) != job.Labels {
		return fmt.Errorf("%s: the manifests' labels are not the job's (its labels %s): a manifest was edited; rerun the job", path, job.Labels)
	}
	return nil
}

// readManifests reads the entries of a folder's manifest: manifest.jsonl
// (a whole job's, or the shards' merged by bin/sample --merge), else every
// shard's manifest-i-of-n.jsonl.
func readManifests(dir string) ([]entry, error) {
	manifests := []string{filepath.Join(dir, "manifest.jsonl")}
	if _, err := os.Stat(manifests[0]); err != nil {
		manifests, _ = filepath.Glob(filepath.Join(dir, "manifest-*-of-*.jsonl"))
	}
	if len(manifests) == 0 {
		return nil, fmt.Errorf("%s: no manifest.jsonl (write samples with bin/sample)", dir)
	}
	sort.Strings(manifests)
	var entries []entry
	for _, m := range manifests {
		f, err := files.Open(m, maxManifest)
		if err != nil {
			return nil, err
		}
		s := bufio.NewScanner(io.LimitReader(f, maxManifest))
		line := 0
		for s.Scan() {
			line++
			var e entry
			if err := json.Unmarshal(s.Bytes(), &e); err != nil || e.File == "" {
				f.Close()
				return nil, fmt.Errorf("%s:%d: not a manifest line", m, line)
			}
			if e.File != filepath.Base(e.File) || strings.HasPrefix(e.File, ".") {
				f.Close()
				return nil, fmt.Errorf("%s:%d: file %q is not a name in the folder", m, line, e.File)
			}
			e.where = fmt.Sprintf("%s:%d", m, line)
			entries = append(entries, e)
		}
		f.Close()
		if err := s.Err(); err != nil {
			return nil, fmt.Errorf("%s: %w", m, err)
		}
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%s: the manifests list no images", dir)
	}
	seen := map[string]string{}
	for _, e := range entries {
		if first, dup := seen[e.File]; dup {
			return nil, fmt.Errorf("%s: %s lists %s again (first at %s): one folder, one job's manifests", dir, e.where, e.File, first)
		}
		seen[e.File] = e.where
	}
	return entries, nil
}

// Uneven is how much larger the test split's largest class must be than
// its smallest for MixedLabels to follow the split's proportions rather
// than cycle: MNIST's (1135 to 892 images) cycle, the emoji's (452 to 10)
// follow.
const Uneven = 1.5

// MixedLabels are n labels for a conditional model's samples: the classes
// in turn (as bin/sample --labels all gives them) when the test split's
// counts are even (within Uneven), else in the split's proportions,
// interleaved (label i goes to the class furthest below its share of the
// first i+1).
func MixedLabels(n int, counts []int) []int64 {
	lo, hi, total := math.MaxInt, 0, 0
	for _, c := range counts {
		lo, hi, total = min(lo, c), max(hi, c), total+c
	}
	out := make([]int64, n)
	if len(counts) == 0 || lo == 0 || float64(hi) <= Uneven*float64(lo) {
		for i := range out {
			out[i] = int64(i % max(len(counts), 1))
		}
		return out
	}
	given := make([]int, len(counts))
	for i := range out {
		best, gap := 0, math.Inf(-1)
		for c, k := range counts {
			if g := float64(i+1)*float64(k)/float64(total) - float64(given[c]); g > gap {
				best, gap = c, g
			}
		}
		given[best]++
		out[i] = int64(best)
	}
	return out
}

// Sample generates n images from a model of entry e (models.Load) with a
// sampling job, through 8-bit pixels as bin/sample's PNGs are: a
// conditional model's labels are MixedLabels(n, counts) (counts nil: the
// classes in turn, as bin/sample --labels all gives them). It returns the images and their labels (nil for
// unconditional models). Progress, when not nil, hears after each batch
// how many images are done.
func Sample(ctx context.Context, e models.Entry, m models.Model, g models.Geometry, n int, seed uint64, s diffusion.Sampling, batch int, counts []int, progress func(done, total int)) (*torch.Tensor, []int64, error) {
	gen, err := e.NewGenerator(m, s)
	if err != nil {
		return nil, nil, err
	}
	job := &sample.Job{N: n, Batch: batch, Seed: seed, Of: 1, Progress: progress}
	if models.Conditional(m) {
		if counts == nil {
			counts = make([]int, g.Classes)
		}
		if len(counts) != g.Classes {
			return nil, nil, fmt.Errorf("label proportions of %d classes for a model of %d", len(counts), g.Classes)
		}
		job.Labels = MixedLabels(n, counts)
	}
	var out sample.Memory
	if _, err := job.Run(ctx, gen, &out); err != nil {
		return nil, nil, err
	}
	return torch.FromSlice(out.Pix, []int64{int64(out.N), int64(g.C), int64(g.H), int64(g.W)}), out.Labels, nil
}
