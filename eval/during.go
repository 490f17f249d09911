package eval

import (
	"context"
	"fmt"

	"kakusan/diffusion"
	"kakusan/models"
	"kakusan/torch"
)

// Scorer is a judge with its reference features, computed once: the
// evaluation a training run makes every train.eval_every steps (bin/train
// passes NewScorer to the training loop).
type Scorer struct {
	judge *Judge
	ref   *Reference
}

// NewScorer loads the judge at path on dev, checks it judges images of
// geometry g, and computes its reference.
func NewScorer(path string, dev torch.Device, g models.Geometry) (_ *Scorer, err error) {
	judge, err := LoadJudge(path, dev)
	if err != nil {
		return nil, err
	}
	if err := judge.Geometry.SameAs(g); err != nil {
		judge.Free()
		return nil, fmt.Errorf("the judge %s was trained on %v", judge.Path, err)
	}
	var ref *Reference
	torch.Scoped(func() {
		if ref, err = judge.NewReference(); err == nil {
			for _, t := range ref.tensors() {
				t.Keep() // the reference outlives this scope: the run's
			}
		}
	})
	if err != nil {
		judge.Free()
		return nil, fmt.Errorf("%s: %w", judge.Path, err)
	}
	return &Scorer{judge: judge, ref: ref}, nil
}

// Path is the judge's checkpoint.
func (s *Scorer) Path() string { return s.judge.Path }

// Score draws n images from m (of entry e, geometry g) with sampling
// settings sp, seeded by seed, as bin/eval --checkpoint does (labels in the
// test split's proportions), and returns the judge's figures by their
// metrics.jsonl names: fid, precision, recall and, for labelled images,
// accuracy.
func (s *Scorer) Score(ctx context.Context, e models.Entry, m models.Model, g models.Geometry, sp diffusion.Sampling, n int, seed uint64, batch int) (map[string]float64, error) {
	imgs, labels, err := Sample(ctx, e, m, g, n, seed, sp, batch, s.ref.ClassCounts, nil)
	if err != nil {
		return nil, err
	}
	r, err := s.judge.Evaluate(s.ref, imgs, labels)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{"fid": r.FID, "precision": r.Precision, "recall": r.Recall}
	if r.Accuracy != nil {
		out["accuracy"] = r.Accuracy.Value
	}
	return out, nil
}

// Free releases the judge and its reference.
func (s *Scorer) Free() {
	for _, t := range s.ref.tensors() {
		t.Free()
	}
	s.judge.Free()
}

// tensors are the reference's tensors.
func (r *Reference) tensors() []*torch.Tensor { return []*torch.Tensor{r.Test, r.Train, r.TestRadii} }
