package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/signal"
	"path/filepath"
	"syscall"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"kakusan/datasets"
	"kakusan/sample"
	"kakusan/torch"
)

// newModel builds the model to train; tests swap it.
var newModel = NewModel

// ErrInterrupted reports a run stopped by SIGINT or SIGTERM after saving a
// checkpoint.
var ErrInterrupted = errors.New("interrupted")

// gridSeed seeds the noise of the periodic sample grids, so every grid of
// a run shows the same draws (and sampling leaves the training stream alone).
const gridSeed = 1234

// trainNeural runs the training loop; it must run on the torch thread.
func trainNeural(ctx context.Context, r *Run, resume string) error {
	c, t := r.Config, r.Config.Train
	dev, err := torch.ParseDevice(c.Device)
	if err != nil {
		return fmt.Errorf("device: %w", err)
	}
	if c.Threads > 0 {
		torch.SetNumThreads(c.Threads)
	}
	torch.ManualSeed(c.Seed)
	dir, err := datasets.DatasetDir(c.Data.Dataset, c.Data.Dir)
	if err != nil {
		return err
	}
	trainSet, err := datasets.LoadImages(dir, "train")
	if err != nil {
		return err
	}
	testSet, err := datasets.LoadImages(dir, "test")
	if err != nil {
		return err
	}
	trainSet, testSet = trainSet.Subset(c.Data.Subset), testSet.Subset(c.Data.TestSubset)
	loader := &datasets.Loader{Set: trainSet, Batch: t.BatchSize, Seed: c.Seed, Shuffle: true}
	spe := loader.StepsPerEpoch()
	if spe == 0 {
		return fmt.Errorf("train.batch_size %d is larger than the %d training images", t.BatchSize, trainSet.N)
	}
	total := t.Epochs * spe
	if t.MaxSteps > 0 && (t.Epochs < 1 || t.MaxSteps < total) {
		total = t.MaxSteps
	}

	model, err := newModel(c, dev)
	if err != nil {
		return err
	}
	defer model.Module().Free()
	opt := newOptimizer(c.Optimizer, model.Module().ParamTensors())
	defer opt.Free()
	var ema Model // the weights' moving average, used for sampling
	if t.EMADecay > 0 {
		if ema, err = newModel(c, dev); err != nil {
			return err
		}
		defer ema.Module().Free()
		if err := ema.Module().Load(model.Module().StateDict()); err != nil {
			return err
		}
	}
	sampler, canSample := model.(Sampler)
	if ema != nil {
		sampler = ema.(Sampler)
		if c.UNet != nil && c.UNet.Norm == "batch" {
			fmt.Fprintln(r.Log, "warning: train.ema_decay with unet.norm: batch: the average borrows the live batch-norm statistics, which can make samples worse; prefer norm: group")
		}
	}

	step := 0
	if resume != "" {
		ck, err := LoadCheckpoint(resume, dev)
		if err != nil {
			return err
		}
		if err := ck.restore(c.Model, model, ema, opt); err != nil {
			return err
		}
		step = ck.Step
		if err := r.truncateMetrics(step); err != nil {
			return err
		}
		fmt.Fprintf(r.Log, "resumed from %s at step %d\n", ck.Path, step)
	}
	fmt.Fprintf(r.Log, "%s: %d parameters on %s, %d training images (%d steps an epoch), %d test images, %d steps\n",
		c.Model, model.Module().NumParams(), dev, trainSet.N, spe, testSet.N, total)

	var bar *progressbar.ProgressBar
	if f, ok := r.Log.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		bar = progressbar.NewOptions(total, progressbar.OptionSetWriter(f), progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
		bar.Set(step)
	}
	logf := func(format string, args ...any) {
		if bar != nil {
			bar.Clear()
		}
		fmt.Fprintf(r.Log, format, args...)
	}

	var curve []float64
	var curveSteps []float64
	lastCk := ""
	checkpoint := func(epoch int) error {
		path, err := saveCheckpoint(r, model, ema, opt, step, epoch, t.KeepCheckpoints)
		if err != nil {
			return fmt.Errorf("checkpoint at step %d: %w", step, err)
		}
		lastCk = path
		if len(curve) > 0 {
			if err := stepCurve("training loss", "step", "loss", curveSteps, curve, r.Path("loss.png")); err != nil {
				return err
			}
		}
		return nil
	}
	grid := func(name string) error {
		if !canSample {
			return nil
		}
		var imgs *sample.Images
		withSeed(gridSeed, func() {
			sampler.Module().SetTraining(false)
			torch.NoGrad(func() { imgs = sample.FromTensor(sampler.Sample(int64(c.Samples))) })
			sampler.Module().SetTraining(true)
		})
		if err := os.MkdirAll(r.Path("samples"), 0o755); err != nil {
			return err
		}
		return sample.SavePNG(r.Path(filepath.Join("samples", name)), imgs.Grid(gridCols(sampler, c.Samples), 2))
	}
	evaluate := func(epoch int) error {
		var loss, acc float64
		withSeed(c.Seed+uint64(epoch), func() { loss, acc = evalLoss(model, testSet, t.BatchSize, dev) })
		fields := map[string]any{"epoch": epoch, "test_loss": loss}
		if _, ok := model.(Scorer); ok {
			fields["test_accuracy"] = acc
			logf("epoch %d (step %d): test loss %.4f, accuracy %.4f\n", epoch, step, loss, acc)
		} else {
			logf("epoch %d (step %d): test loss %.4f\n", epoch, step, loss)
		}
		if math.IsNaN(loss) || math.IsInf(loss, 0) {
			return nanError(step, lastCk)
		}
		return r.Metric(step, fields)
	}

	lossSum := torch.Zeros([]int64{}, dev).Keep()
	defer lossSum.Free()
	window, windowStart := 0, time.Now()
	// onBatch trains on one batch and does what falls due after it: logging,
	// checkpoints, sample grids and the epoch's evaluation.
	onBatch := func(b datasets.Batch, epoch int) error {
		if err := ctx.Err(); err != nil {
			if _, err := saveCheckpoint(r, model, ema, opt, step, epoch, t.KeepCheckpoints); err != nil {
				return fmt.Errorf("interrupted, and the checkpoint failed: %w", err)
			}
			logf("interrupted at step %d: checkpoint saved; continue with --resume %s\n", step, r.Dir)
			return ErrInterrupted
		}
		lr := learningRate(c, step, total)
		opt.SetLR(lr)
		torch.Scoped(func() {
			x, y := batchTensors(b, trainSet, dev)
			loss := model.Loss(x, y)
			opt.ZeroGrad()
			loss.Backward()
			if t.GradClip > 0 {
				torch.ClipGradNorm(model.Module().ParamTensors(), t.GradClip)
			}
			opt.Step()
			torch.NoGrad(func() {
				lossSum.AddInPlace(loss.Detach(), 1)
				if ema != nil {
					updateEMA(ema, model, t.EMADecay, t.EMAWarmup, step)
				}
			})
		})
		step++
		window++
		if bar != nil {
			bar.Add(1)
		}
		if step%t.LogEvery == 0 || step == total {
			mean := lossSum.Item() / float64(window)
			if math.IsNaN(mean) || math.IsInf(mean, 0) {
				return nanError(step, lastCk)
			}
			rate := float64(window*t.BatchSize) / time.Since(windowStart).Seconds()
			if bar != nil {
				bar.Describe(fmt.Sprintf("loss %.4f  %.0f img/s", mean, rate))
			} else {
				logf("step %d/%d  epoch %d  loss %.4f  lr %.3g  %.0f img/s\n", step, total, epoch, mean, lr, rate)
			}
			if err := r.Metric(step, map[string]any{"epoch": epoch, "loss": mean, "lr": lr, "images_per_s": rate}); err != nil {
				return err
			}
			curve, curveSteps = append(curve, mean), append(curveSteps, float64(step))
			lossSum.Fill(0)
			window, windowStart = 0, time.Now()
		}
		epochEnd := step%spe == 0
		if (t.CheckpointEvery > 0 && step%t.CheckpointEvery == 0) || (t.CheckpointEvery == 0 && epochEnd) {
			if err := checkpoint(epoch); err != nil {
				return err
			}
		}
		if (t.SampleEvery > 0 && step%t.SampleEvery == 0) || (t.SampleEvery == 0 && epochEnd) {
			if err := grid(fmt.Sprintf("step-%08d.png", step)); err != nil {
				return err
			}
		}
		if epochEnd {
			if err := evaluate(epoch + 1); err != nil {
				return err
			}
		}
		return nil
	}
	for step < total {
		epoch, pos := step/spe, step%spe
		err := func() error {
			batches, stop := loader.Epoch(epoch, pos)
			defer stop()
			for b := range batches {
				if err := onBatch(b, epoch); err != nil || step >= total {
					return err
				}
			}
			return nil
		}()
		if err != nil {
			return err
		}
	}
	if bar != nil {
		bar.Finish()
	}
	if step%spe != 0 {
		if err := evaluate(step / spe); err != nil {
			return err
		}
	}
	if lastCk == "" || filepath.Base(lastCk) != fmt.Sprintf("step-%08d.safetensors", step) {
		if err := checkpoint(step / spe); err != nil {
			return err
		}
	}
	if err := grid("final.png"); err != nil {
		return err
	}
	if canSample {
		logf("done: %d steps; checkpoint %s, samples %s\n", step, lastCk, r.Path("samples/final.png"))
	} else {
		logf("done: %d steps; checkpoint %s\n", step, lastCk)
	}
	return nil
}

// gridCols is the model's preferred layout, else a square.
func gridCols(m Sampler, n int) int {
	if g, ok := m.(interface{ GridCols(int) int }); ok && g.GridCols(n) > 0 {
		return g.GridCols(n)
	}
	return int(math.Ceil(math.Sqrt(float64(n))))
}

func nanError(step int, lastCk string) error {
	if lastCk == "" {
		return fmt.Errorf("loss is NaN or Inf at step %d; stopped (no checkpoint had been written yet). Lower optimizer.lr or set train.grad_clip", step)
	}
	return fmt.Errorf("loss is NaN or Inf at step %d; stopped. The last good checkpoint, %s, is untouched. Lower optimizer.lr or set train.grad_clip", step, lastCk)
}

// updateEMA moves the average towards the weights, ema += (1-d)(w - ema),
// with d ramped up as min(decay, (1+n)/(10+n)) under warm-up; buffers
// (batch-norm statistics) are copied.
func updateEMA(ema, m Model, decay float64, warmup bool, step int) {
	d := decay
	if warmup {
		d = min(decay, float64(1+step)/float64(10+step))
	}
	ps, eps := m.Module().Params(), ema.Module().Params()
	for i := range ps {
		eps[i].T.LerpInPlace(ps[i].T, 1-d)
	}
	bs, ebs := m.Module().Buffers(), ema.Module().Buffers()
	for i := range bs {
		ebs[i].T.CopyFrom(bs[i].T)
	}
}

// withSeed runs f with the CPU generator seeded, then puts the generator
// back where it was.
func withSeed(seed uint64, f func()) {
	state := torch.RNGState()
	torch.ManualSeed(seed)
	defer torch.SetRNGState(state)
	f()
}

// evalLoss is the mean per-image loss over a set, and for a Scorer the
// share it gets right, in eval mode without gradients.
func evalLoss(m Model, set *datasets.Images, batch int, dev torch.Device) (loss, accuracy float64) {
	m.Module().SetTraining(false)
	defer m.Module().SetTraining(true)
	scorer, _ := m.(Scorer)
	var total float64
	var correct int64
	torch.NoGrad(func() {
		for _, b := range (&datasets.Loader{Set: set, Batch: batch}).All() {
			torch.Scoped(func() {
				x, y := batchTensors(b, set, dev)
				total += m.Loss(x, y).Item() * float64(b.N)
				if scorer != nil {
					correct += scorer.Correct(x, y)
				}
			})
		}
	})
	return total / float64(set.N), float64(correct) / float64(set.N)
}

// batchTensors moves a host batch of set's images to dev: pixels
// (B, 1, H, W) and int64 labels (B).
func batchTensors(b datasets.Batch, set *datasets.Images, dev torch.Device) (x, y *torch.Tensor) {
	x = torch.FromSlice(b.Pixels, []int64{int64(b.N), 1, int64(set.H), int64(set.W)}).To(dev)
	return x, torch.FromSlice(b.Labels, nil).To(dev)
}

// learningRate applies linear warm-up and optional cosine decay.
func learningRate(c *Config, step, total int) float64 {
	lr, t := c.Optimizer.LR, c.Train
	if t.WarmupSteps > 0 && step < t.WarmupSteps {
		return lr * float64(step+1) / float64(t.WarmupSteps)
	}
	if t.Cosine && total > t.WarmupSteps {
		p := float64(step-t.WarmupSteps) / float64(total-t.WarmupSteps)
		return t.MinLR + 0.5*(lr-t.MinLR)*(1+math.Cos(math.Pi*p))
	}
	return lr
}

func newOptimizer(o *OptimConfig, params []*torch.Tensor) torch.Optimizer {
	switch o.Name {
	case "sgd":
		return torch.NewSGD(params, torch.SGDConfig{LR: o.LR, Momentum: o.Momentum, WeightDecay: o.WeightDecay, Nesterov: o.Nesterov})
	case "adamw":
		return torch.NewAdamW(params, torch.AdamConfig{LR: o.LR, Beta1: o.Betas[0], Beta2: o.Betas[1], Eps: o.Eps, WeightDecay: o.WeightDecay})
	}
	return torch.NewAdam(params, torch.AdamConfig{LR: o.LR, Beta1: o.Betas[0], Beta2: o.Betas[1], Eps: o.Eps, WeightDecay: o.WeightDecay})
}

// signalContext is cancelled by the first SIGINT or SIGTERM; a second one
// kills the process as usual.
func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-ch:
			cancel()
			signal.Stop(ch)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}
