package train

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"time"

	"github.com/schollz/progressbar/v3"
	"golang.org/x/term"

	"kakusan/datasets"
	"kakusan/internal/atomic"
	"kakusan/internal/signals"
	"kakusan/models"
	"kakusan/sample"
	"kakusan/torch"
)

// newModel builds the model to train (to be loaded from the checkpoint
// from when resuming); tests swap it.
var newModel = models.Build

// afterTrain, when set (by tests), sees a finished run's loop before it is
// freed.
var afterTrain func(l *loop)

// gridSeed seeds the noise of the periodic sample grids, so every grid of
// a run shows the same draws (and sampling leaves the training stream alone).
const gridSeed = 1234

// loop is the training loop around a Stepper: it feeds batches, logs,
// writes checkpoints and sample grids, evaluates each epoch and stops
// cleanly on a signal or a NaN.
type loop struct {
	ctx         context.Context
	r           *Run
	c           *models.Config
	entry       models.Entry // the model's: what it can do
	dev         torch.Device
	geo         models.Geometry
	data        *data
	model, ema  models.Model
	opt         torch.Optimizer
	step        Stepper
	dist        *distributed // nil: one process
	total       int          // steps of the run
	n           int          // steps done
	lossSum     *torch.Tensor
	window      int
	windowStart time.Time
	bar         *progressbar.ProgressBar
	curve       [2][]float64 // logged steps and mean losses, for loss.png
	lastCk      string
}

// trainNeural runs the training loop; it must run on the torch thread.
func trainNeural(ctx context.Context, r *Run, resume string) error {
	l, err := newLoop(ctx, r, resume)
	if l != nil {
		defer l.free()
	}
	if err != nil {
		return err
	}
	if l.n > 0 && l.n >= l.total {
		if !l.dist.leader() {
			return nil
		}
		fmt.Fprintf(r.Log, "the run is complete (step %d of %d): nothing to resume; raise train.epochs or train.max_steps to train on\n", l.n, l.total)
		if _, err := os.Stat(r.Path("samples/final.png")); err != nil { // a signal cut the final grid short
			if err := l.grid("final.png"); errors.Is(err, errStop) {
				return signals.ErrInterrupted
			} else if err != nil {
				return err
			}
		}
		return nil
	}
	if err := l.run(); !errors.Is(err, errStop) {
		if err == nil && afterTrain != nil {
			afterTrain(l)
		}
		return err
	}
	return l.interrupted(l.n / l.data.spe)
}

// newLoop sets a run up: device, data, model, optimizer, moving average,
// the step, and the state of the checkpoint it resumes from.
func newLoop(ctx context.Context, r *Run, resume string) (*loop, error) {
	c, t := r.Config, r.Config.Train
	dev, err := torch.ParseDevice(c.Device)
	if err != nil {
		return nil, fmt.Errorf("device: %w", err)
	}
	if dev, err = distDevice(r.dist, dev); err != nil {
		return nil, err
	}
	if c.Threads > 0 {
		torch.SetNumThreads(c.Threads)
	}
	torch.SetCuDNNBenchmark(t.CuDNNBenchmark)
	torch.ManualSeed(c.Seed)
	entry, _ := models.Lookup(c.Model)
	l := &loop{ctx: ctx, r: r, c: c, entry: entry, dev: dev}
	if r.dist != nil {
		if l.dist, err = joinGroup(r.dist, t, dev); err != nil {
			return nil, err
		}
	}
	rank, world := 0, 1
	if l.dist != nil {
		rank, world = l.dist.env.Rank, l.dist.env.World
	}
	if l.data, err = loadData(c, rank, world); err != nil {
		return l, err
	}
	l.data.holdOnDevice(dev, residentOnAnyDevice)
	l.geo = models.GeometryOf(l.data.train)
	l.total = t.Epochs * l.data.spe
	if t.MaxSteps > 0 && (t.Epochs < 1 || t.MaxSteps < l.total) {
		l.total = t.MaxSteps
	}
	// Rank 0 resumes from a checkpoint: read first, so that the model is
	// built from what it records (a latent model's autoencoder comes with
	// it, not from its own files) and the config takes the values it was
	// trained with (the latent scale, the style thresholds).
	var from *models.Checkpoint
	if resume != "" && l.dist.leader() {
		if from, err = models.ReadCheckpoint(resume, dev); err != nil {
			return l, err
		}
		defer from.Free()
		if err := models.Adopt(c, from); err != nil {
			return l, err
		}
	}
	if l.model, err = newModel(c, l.geo, dev, from); err != nil {
		return l, err
	}
	if err := l.calibrate(from != nil); err != nil {
		return l, err
	}
	l.opt = newOptimizer(c.Optimizer, l.model.Module().ParamTensors())
	var ema *EMA
	if t.EMADecay > 0 {
		if l.ema, err = newModel(c, l.geo, dev, from); err != nil {
			return l, err
		}
		if err := l.ema.Module().Load(l.model.Module().StateDict()); err != nil {
			return l, err
		}
		ema = &EMA{Avg: l.ema, Decay: t.EMADecay, Warmup: t.EMAWarmup}
	}
	step, err := NewStep(l.model, l.opt, ema, t.GradClip, t.Precision)
	if err != nil {
		return l, err
	}
	l.step = step
	if l.dist != nil {
		step.Sync = l.dist.sync(l.model, step.params)
		if t.SyncBatchNorm {
			l.model.Module().SetSyncBatchNorm(l.dist.g)
		}
	}
	if t.CUDAGraph && l.dist != nil {
		fmt.Fprintf(r.Log, "train.cuda_graph: off under data parallelism (the all-reduce runs outside a graph); eager steps\n")
	} else if t.CUDAGraph {
		g, err := NewGraphed(step, dev, r.Log)
		if err != nil {
			return l, err
		}
		l.step = g
	}
	if from != nil {
		if err := l.resume(from, ema); err != nil {
			return l, err
		}
	}
	if l.dist != nil {
		if err := l.collective(func() error { return l.broadcastState(l.opt) }); err != nil {
			return l, err
		}
		if ema != nil {
			ema.Updates = l.n
		}
		bn := ""
		if t.SyncBatchNorm {
			bn = ", batch norm over all ranks"
		}
		fmt.Fprintf(r.Log, "data parallel: %d ranks (%s), %d images a step (%d a rank)%s\n", l.dist.env.World, l.dist.g.Backend, t.BatchSize*l.dist.env.World, t.BatchSize, bn)
	}
	fmt.Fprintf(r.Log, "%s: %d parameters on %s (%s), %d training images %dx%dx%d (%d steps an epoch), %d test images, %d steps\n",
		c.Model, l.model.Module().NumParams(), dev, step.Precision, l.data.train.N, l.geo.C, l.geo.H, l.geo.W, l.data.spe, l.data.test.N, l.total)
	l.lossSum = torch.Zeros([]int64{}, dev).Keep()
	return l, nil
}

// calibrateImages bounds the training images a run measures its model's
// data-dependent constants on.
const calibrateImages = 10000

// calibrator is a model that measures constants on its training data
// before training (diffusion.Model: the latent scale, style thresholds).
type calibrator interface {
	Uncalibrated() bool
	Calibrate(next func() (x, y *torch.Tensor)) (string, error)
}

// calibrate lets the model measure what it takes from the training images
// (a seeded random 10,000 of them, streamed) and, on rank 0 of a fresh run,
// writes the config again: it now records what the model was built with
// and measured (the autoencoder's architecture, the prompt vocabulary, the
// latent scale, the style thresholds).
func (l *loop) calibrate(resuming bool) error {
	if m, ok := l.model.(calibrator); ok && m.Uncalibrated() {
		loader := &datasets.Loader{Set: l.data.train, Seed: l.c.Seed, Shuffle: true}
		order := loader.Order(0)
		order = order[:min(len(order), calibrateImages)]
		msg, err := m.Calibrate(func() (x, y *torch.Tensor) {
			if len(order) == 0 {
				return nil, nil
			}
			n := min(len(order), l.c.Train.BatchSize)
			t := batchTensors(loader.Gather(order[:n]), l.data.train, l.dev)
			order = order[n:]
			return t.X, t.Y
		})
		if err != nil {
			return err
		}
		fmt.Fprintln(l.r.Log, msg)
	}
	if resuming || !l.dist.leader() {
		return nil // a resume writes the config once the checkpoint is restored
	}
	return atomic.WriteFile(l.r.Path("config.yaml"), l.c.Marshal())
}

// resume restores the model, moving average, optimizer and generators
// from a run's latest checkpoint and drops the metrics logged after it.
func (l *loop) resume(ck *models.Checkpoint, ema *EMA) error {
	if err := restore(ck, l.c.Model, l.geo, l.model, l.ema, l.opt); err != nil {
		return err
	}
	// The folder's config becomes the one the run goes on with (--set on
	// resume may have raised train.epochs, say), once the checkpoint fits it.
	if err := atomic.WriteFile(l.r.Path("config.yaml"), l.c.Marshal()); err != nil {
		return err
	}
	if ck.Step < 0 || ck.Step > maxStep {
		return fmt.Errorf("%s: step %d is out of range", ck.Path, ck.Step)
	}
	speOld, bOld, bNew := l.data.train.N/ck.GlobalBatch(), ck.GlobalBatch(), l.globalBatch()
	convert := func(step int) int { return convertStep(step, speOld, bOld, l.data.spe, bNew) }
	l.n = convert(ck.Step)
	if l.n != ck.Step {
		fmt.Fprintf(l.r.Log, "the checkpoint's step %d of %d images is step %d of %d images\n", ck.Step, bOld, l.n, bNew)
	} else {
		convert = nil
	}
	if ema != nil {
		ema.Updates = l.n
	}
	if err := l.r.truncateMetrics(ck.Step, convert); err != nil {
		return err
	}
	fmt.Fprintf(l.r.Log, "resumed from %s at step %d\n", ck.Path, l.n)
	return nil
}

func (l *loop) free() {
	defer l.dist.close()
	if g, ok := l.step.(*Graphed); ok {
		g.Free()
	}
	if l.data != nil {
		l.data.resident.free()
	}
	for _, m := range []models.Model{l.model, l.ema} {
		if m != nil {
			models.Free(m)
		}
	}
	if l.opt != nil {
		l.opt.Free()
	}
	if l.lossSum != nil {
		l.lossSum.Free()
	}
}

// run trains to the last step, then evaluates, checkpoints and draws the
// final grid.
func (l *loop) run() error {
	if f, ok := l.r.Log.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		l.bar = progressbar.NewOptions(l.total, progressbar.OptionSetWriter(f), progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
		l.bar.Set(l.n)
	}
	l.windowStart = time.Now()
	spe := l.data.spe
	for l.n < l.total {
		if err := l.epoch(l.n/spe, l.n%spe); err != nil {
			return err
		}
	}
	if l.bar != nil {
		l.bar.Finish()
	}
	if !l.dist.leader() {
		return nil
	}
	if l.n%spe != 0 {
		if err := l.evaluate(l.n / spe); err != nil {
			return err
		}
	}
	if l.lastCk == "" || filepath.Base(l.lastCk) != checkpointName(l.n) {
		if err := l.checkpoint(l.n / spe); err != nil {
			return err
		}
	}
	if err := l.grid("final.png"); err != nil {
		return err
	}
	if _, ok := l.generator(); ok {
		l.logf("done: %d steps; checkpoint %s, samples %s\n", l.n, l.lastCk, l.r.Path("samples/final.png"))
	} else {
		l.logf("done: %d steps; checkpoint %s\n", l.n, l.lastCk)
	}
	return nil
}

// epoch trains on an epoch's batches from position pos on.
func (l *loop) epoch(epoch, pos int) error {
	batches, stop := l.data.loader.Epoch(epoch, pos)
	defer stop()
	for b := range batches {
		if err := l.onBatch(b, epoch); err != nil || l.n >= l.total {
			return err
		}
	}
	return nil
}

// onBatch trains on one batch and does what falls due after it: logging,
// checkpoints, sample grids and the epoch's evaluation.
func (l *loop) onBatch(b datasets.Batch, epoch int) error {
	if l.ctx.Err() != nil {
		return l.interrupted(epoch)
	}
	lr := learningRate(l.c, l.n, l.total)
	l.step.SetLR(lr)
	train := func() {
		torch.Scoped(func() {
			loss := l.step.Run(l.data.batch(b, l.dev))
			torch.NoGrad(func() { l.lossSum.AddInPlace(loss, 1) })
		})
	}
	if l.dist == nil {
		train()
	} else if err := torch.Try(func() error { train(); return nil }); err != nil {
		// The update had not started (Sync precedes it): the weights, the
		// optimizer and the moving average are step n's, so rank 0 saves
		// them (batch-norm statistics and generators have moved on).
		if l.ctx.Err() != nil {
			return l.interrupted(epoch)
		}
		if l.dist.leader() && l.model.Module().NonFinite() == "" {
			if path, serr := saveCheckpoint(l.r, l.geo, l.model, l.ema, l.opt, l.n, epoch); serr == nil {
				l.lastCk = path
			}
		}
		return l.distError(err)
	}
	l.n++
	l.window++
	if l.bar != nil {
		l.bar.Add(1)
	}
	t, spe := l.c.Train, l.data.spe
	if l.n%t.LogEvery == 0 || l.n == l.total {
		if err := l.log(epoch, lr); err != nil {
			return err
		}
	}
	epochEnd := l.n%spe == 0
	if (t.CheckpointEvery > 0 && l.n%t.CheckpointEvery == 0) || (t.CheckpointEvery == 0 && epochEnd) {
		if err := l.checkpoint(epoch); err != nil {
			return err
		}
	}
	if (t.SampleEvery > 0 && l.n%t.SampleEvery == 0) || (t.SampleEvery == 0 && epochEnd) {
		if err := l.grid(fmt.Sprintf("step-%08d.png", l.n)); err != nil {
			return err
		}
	}
	if epochEnd {
		return l.evaluate(epoch + 1)
	}
	return nil
}

// interrupted saves a checkpoint of the current step (its state is whole:
// signals interrupt only between steps, or grids and evaluations) and
// returns signals.ErrInterrupted.
func (l *loop) interrupted(epoch int) error {
	if !l.dist.leader() {
		return signals.ErrInterrupted
	}
	if bad := l.model.Module().NonFinite(); bad != "" {
		return nanError(l.n, l.lastCk)
	}
	if _, err := saveCheckpoint(l.r, l.geo, l.model, l.ema, l.opt, l.n, epoch); err != nil {
		return fmt.Errorf("interrupted, and the checkpoint failed: %w", err)
	}
	l.logf("interrupted at step %d: checkpoint saved; continue with --resume %s\n", l.n, l.r.Dir)
	return signals.ErrInterrupted
}

// interruptible runs a grid or an evaluation so that a signal stops it
// within one operation; it then returns errStop.
func (l *loop) interruptible(f func() error) error {
	err := torch.Try(func() error {
		var err error
		torch.Interruptible(l.ctx, func() { err = f() })
		return err
	})
	if l.ctx.Err() != nil {
		return errStop
	}
	return err
}

// errStop is a grid or evaluation cut short by a signal.
var errStop = errors.New("stopped by a signal")

// log writes the window's mean loss, the learning rate and the speed: the
// one host read of the loop's steps.
func (l *loop) log(epoch int, lr float64) error {
	if l.dist != nil { // the loss of every rank's images
		if err := l.collective(func() error { l.dist.g.AllReduceMean([]*torch.Tensor{l.lossSum}, 0); return nil }); err != nil {
			return err
		}
	}
	mean := l.lossSum.Item() / float64(l.window)
	if math.IsNaN(mean) || math.IsInf(mean, 0) {
		return nanError(l.n, l.lastCk)
	}
	rate := float64(l.window*l.globalBatch()) / time.Since(l.windowStart).Seconds()
	if l.bar != nil {
		l.bar.Describe(fmt.Sprintf("loss %.4f  %.0f img/s", mean, rate))
	} else {
		l.logf("step %d/%d  epoch %d  loss %.4f  lr %.3g  %.0f img/s\n", l.n, l.total, epoch, mean, lr, rate)
	}
	if err := l.r.Metric(l.n, map[string]any{"epoch": epoch, "loss": mean, "lr": lr, "images_per_s": rate}); err != nil {
		return err
	}
	l.curve[0], l.curve[1] = append(l.curve[0], float64(l.n)), append(l.curve[1], mean)
	l.lossSum.Fill(0)
	l.window, l.windowStart = 0, time.Now()
	return nil
}

func (l *loop) logf(format string, args ...any) {
	if l.bar != nil {
		l.bar.Clear()
	}
	fmt.Fprintf(l.r.Log, format, args...)
}

// checkpoint saves the training state and redraws loss.png; weights
// that have gone NaN or infinite stop the run instead, so every checkpoint
// written is a good one.
func (l *loop) checkpoint(epoch int) error {
	if !l.dist.leader() {
		return nil
	}
	if bad := l.model.Module().NonFinite(); bad != "" {
		return nanError(l.n, l.lastCk)
	}
	path, err := saveCheckpoint(l.r, l.geo, l.model, l.ema, l.opt, l.n, epoch)
	if err != nil {
		return fmt.Errorf("checkpoint at step %d: %w", l.n, err)
	}
	l.lastCk = path
	if len(l.curve[1]) > 0 {
		return stepCurve("training loss", "step", "loss", l.curve[0], l.curve[1], l.r.Path("loss.png"))
	}
	return nil
}

// generator is what draws the grids: the moving average when there is
// one, else the model; ok is false for models that draw nothing.
func (l *loop) generator() (sample.Generator, bool) {
	m := l.model
	if l.ema != nil {
		m = l.ema
	}
	g, err := l.entry.NewGenerator(m, models.GridSampling(l.c))
	return g, err == nil
}

// grid draws samples/name: c.Samples images from fixed noise (classes in
// rows), leaving the training generators where they were.
func (l *loop) grid(name string) error {
	if !l.dist.leader() {
		return nil
	}
	gen, ok := l.generator()
	if !ok {
		return l.reconstructions(name)
	}
	n, classes := l.c.Samples, 0
	if models.Conditional(l.model) {
		classes = l.geo.Classes
	}
	b := sample.Batch{Seed: gridSeed}
	for k := range n {
		b.Images = append(b.Images, k)
		if classes > 0 {
			b.Labels = append(b.Labels, int64(k*classes/n))
		}
	}
	var imgs *sample.Images
	err := l.interruptible(func() error {
		var err error
		torch.WithSeed(gridSeed, func() {
			var x *torch.Tensor
			if x, err = gen.Generate(b); err == nil {
				imgs, err = sample.FromTensor(x)
			}
		})
		return err
	})
	if err != nil {
		return fmt.Errorf("sample grid: %w", err)
	}
	cols := int(math.Ceil(math.Sqrt(float64(n))))
	if classes > 0 && n%classes == 0 {
		cols = n / classes
	}
	if err := os.MkdirAll(l.r.Path("samples"), 0o755); err != nil {
		return err
	}
	return sample.SavePNG(l.r.Path(filepath.Join("samples", name)), imgs.Grid(cols, 2))
}

// reconstructions draws samples/name for a model that reconstructs rather
// than generates (the autoencoders): the first test images in rows of 8,
// each row followed by its reconstructions; nothing for other models.
func (l *loop) reconstructions(name string) error {
	m := l.model
	if l.ema != nil {
		m = l.ema
	}
	n := min(l.c.Samples/2, l.data.test.N)
	cols := min(8, n)
	if !l.entry.Does(models.Reconstructs) || n < 1 {
		return nil
	}
	r := m.(models.Reconstructor)
	n -= n % cols // whole rows: each over its reconstructions
	var imgs *sample.Images
	err := l.interruptible(func() error {
		b := (&datasets.Loader{Set: l.data.test.Subset(n), Batch: n}).All()[0]
		var err error
		imgs, err = sample.FromTensor(models.ReconstructionRows(r, batchTensors(b, l.data.test, l.dev).X, int64(cols)))
		return err
	})
	if err != nil {
		return fmt.Errorf("reconstruction grid: %w", err)
	}
	if err := os.MkdirAll(l.r.Path("samples"), 0o755); err != nil {
		return err
	}
	return sample.SavePNG(l.r.Path(filepath.Join("samples", name)), imgs.Grid(cols, 2))
}

// evaluate logs the test loss (and a scorer's accuracy) at an epoch's end.
func (l *loop) evaluate(epoch int) error {
	if !l.dist.leader() {
		return nil
	}
	var s testScores
	err := l.interruptible(func() error {
		torch.WithSeed(l.c.Seed+uint64(epoch), func() { s = evalLoss(l.entry, l.model, l.data.test, l.c.Train.BatchSize, l.dev) })
		return nil
	})
	if err != nil {
		return err
	}
	loss := s.loss
	fields := map[string]any{"epoch": epoch, "test_loss": loss}
	msg := fmt.Sprintf("epoch %d (step %d): test loss %.4f", epoch, l.n, loss)
	if l.entry.Does(models.Classifies) {
		fields["test_accuracy"] = s.accuracy
		msg += fmt.Sprintf(", accuracy %.4f", s.accuracy)
	}
	if l.entry.Does(models.Reconstructs) && s.mse > 0 && s.mse <= 1 {
		psnr := -10 * math.Log10(s.mse)
		fields["test_mse"], fields["test_psnr"] = s.mse, psnr
		msg += fmt.Sprintf(", reconstruction MSE %.5f (PSNR %.2f dB)", s.mse, psnr)
	}
	l.logf("%s\n", msg)
	if math.IsNaN(loss) || math.IsInf(loss, 0) {
		return nanError(l.n, l.lastCk)
	}
	return l.r.Metric(l.n, fields)
}

func nanError(step int, lastCk string) error {
	if lastCk == "" {
		return fmt.Errorf("loss is NaN or Inf at step %d; stopped (no checkpoint had been written yet). Lower optimizer.lr or set train.grad_clip", step)
	}
	return fmt.Errorf("loss is NaN or Inf at step %d; stopped. The last good checkpoint, %s, is untouched. Lower optimizer.lr or set train.grad_clip", step, lastCk)
}

// learningRate applies linear warm-up and optional cosine decay.
func learningRate(c *models.Config, step, total int) float64 {
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

// globalBatch is the number of images a step trains on: the batch size on
// each rank times the ranks.
func (l *loop) globalBatch() int {
	if l.dist == nil {
		return l.c.Train.BatchSize
	}
	return l.c.Train.BatchSize * l.dist.env.World
}
