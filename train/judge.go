package train

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"kakusan/diffusion"
	"kakusan/internal/signals"
	"kakusan/models"
	"kakusan/sample"
	"kakusan/torch"
)

// Scorer is what evaluates a run during training (train.eval_every): a
// judge and its reference, as eval.NewScorer makes them (bin/train passes
// it in Options.Scorer; the training loop does not depend on package eval).
type Scorer interface {
	// Score draws n images from m with the sampling settings s, seeded
	// by seed, and returns the figures to log by name (fid, accuracy, ...).
	Score(ctx context.Context, e models.Entry, m models.Model, g models.Geometry, s diffusion.Sampling, n int, seed uint64, batch int) (map[string]float64, error)
	Path() string // the judge's checkpoint
	Free()
}

// NewScorer loads the judge at path on dev for images of geometry g.
type NewScorer func(path string, dev torch.Device, g models.Geometry) (Scorer, error)

// evalSeed seeds the noise of the evaluations during training: every
// evaluation of a run draws from the same noise, so their figures differ
// by the model only (and the training stream is left alone).
const evalSeed = 4321

// defaultJudges are the judges train.eval_judge defaults to, by dataset:
// where configs/mnist_classifier.yaml and fashion_classifier.yaml train them.
var defaultJudges = map[string]string{"mnist": "runs/mnist_classifier", "fashion-mnist": "runs/fashion_classifier"}

// judging is evaluation during training: the scorer and the time spent.
type judging struct {
	scorer Scorer
	spent  time.Duration
	n      int
}

// loadJudge sets evaluation during training up (train.eval_every): the
// judge, checked against the training data, with its reference, so that a
// wrong judge fails the run before its first step.
func (l *loop) loadJudge() error {
	t := l.c.Train
	if t.EvalEvery == 0 || !l.dist.leader() {
		return nil
	}
	if !l.entry.Does(models.DrawsImages) {
		return fmt.Errorf("train.eval_every: %q models draw no images to evaluate", l.c.Model)
	}
	if l.r.scorer == nil {
		return fmt.Errorf("train.eval_every: this program cannot judge images (bin/train can)")
	}
	path := t.EvalJudge
	if path == "" && l.c.Data.Dir == "" {
		path = defaultJudges[l.c.Data.Dataset]
		if _, err := os.Stat(path); path != "" && err != nil {
			return fmt.Errorf("train.eval_every: %s's default judge, %s, is not there (from the folder bin/train runs in): train it with configs/%s_classifier.yaml, or name one in train.eval_judge",
				l.c.Data.Dataset, path, strings.TrimSuffix(strings.TrimPrefix(path, "runs/"), "_classifier"))
		}
	}
	if path == "" {
		return fmt.Errorf("train.eval_every: name the classifier that judges the images in train.eval_judge (a run folder or checkpoint; train one on the same folder, as configs/emoji_classifier.yaml does)")
	}
	start := time.Now()
	var s Scorer
	// Building the judge draws its initial weights: under a seed whose
	// generators are put back after, so the training stream is unchanged.
	// Its reference features take a while: a signal stops them.
	err := l.interruptible(func() (err error) {
		torch.WithSeed(evalSeed, func() { s, err = l.r.scorer(path, l.dev, l.st.Geometry) })
		return err
	})
	if errors.Is(err, errStop) {
		if s != nil {
			s.Free()
		}
		return signals.ErrInterrupted
	}
	if err != nil {
		return fmt.Errorf("train.eval_judge: %w", err)
	}
	l.judging = &judging{scorer: s}
	fmt.Fprintf(l.r.Log, "evaluation every %d steps: %d images judged by %s (its reference features took %.1f s)\n",
		t.EvalEvery, t.EvalImages, s.Path(), time.Since(start).Seconds())
	return nil
}

// judge draws train.eval_images with the run's sampling settings from the
// moving average (the model without one), always from the same noise, and
// logs the judge's figures (eval_fid, eval_accuracy, ...) and what the
// evaluation cost. The generators are put back: training goes on as it
// would have without it.
func (l *loop) judge(epoch int) error {
	j := l.judging
	if j == nil {
		return nil
	}
	start := time.Now()
	var figures map[string]float64
	err := l.interruptible(func() error {
		var err error
		torch.WithSeed(evalSeed, func() {
			figures, err = j.scorer.Score(l.ctx, l.entry, l.st.sampler(), l.st.Geometry, models.GridSampling(l.c),
				l.c.Train.EvalImages, evalSeed, sample.DefaultBatch(l.dev))
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("evaluation at step %d: %w", l.st.Step, err)
	}
	took := time.Since(start)
	j.spent += took
	j.n++
	fields := map[string]any{"epoch": epoch, "eval_seconds": took.Seconds()}
	names := make([]string, 0, len(figures))
	for k, v := range figures {
		fields["eval_"+k] = v
		names = append(names, k)
	}
	sort.Strings(names)
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("%s %.4g", k, figures[k])
	}
	l.logf("evaluation at step %d (%d images): %s (%.1f s)\n", l.st.Step, l.c.Train.EvalImages, strings.Join(parts, ", "), took.Seconds())
	return l.r.Metric(l.st.Step, fields)
}

func (j *judging) free() {
	if j != nil {
		j.scorer.Free()
	}
}
