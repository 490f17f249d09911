package train

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"image"
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

// afterTrain, when set (by tests), sees a finished run's loop before it is
// freed.
var afterTrain func(l *loop)

// gridSeed seeds the noise of the periodic sample grids, so every grid of
// a run shows the same draws (and sampling leaves the training stream alone).
const gridSeed = 1234

// loop is the training loop around a Stepper: it feeds batches, logs,
// writes checkpoints and sample grids, evaluates each epoch and stops
// cleanly on a signal or a NaN. The training state (model, moving
// average, optimizer, step) is st's.
type loop struct {
	ctx         context.Context
	r           *Run
	c           *models.Config
	entry       models.Entry // the model's: what it can do
	dev         torch.Device
	data        *data
	st          *State
	step        Stepper
	dist        *distributed // nil: one process
	resumed     *resumed     // the checkpoint the run resumed from; nil: a fresh run (or a rank other than 0)
	total       int          // steps of the run
	lossSum     *torch.Tensor
	window      int
	windowStart time.Time
	bar         *progressbar.ProgressBar
	curve       [2][]float64 // logged steps and mean losses, for loss.png
	lastCk      string
	judging     *judging // evaluation during training; nil: none (or a rank other than 0)
}

// trainNeural runs the training loop; it must run on the torch thread.
func trainNeural(ctx context.Context, r *Run, resume string) error {
	l, err := newLoop(ctx, r, resume)
	defer l.free()
	if err != nil {
		return err
	}
	if l.st.Step > 0 && l.st.Step >= l.total {
		if !l.dist.leader() {
			return nil
		}
		fmt.Fprintf(r.Log, "the run is complete (step %d of %d): nothing to resume; raise train.epochs or train.max_steps to train on\n", l.st.Step, l.total)
		// Nothing trained: no event file of its own.
		r.board.discard()
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
	return l.interrupted(l.st.Step / l.data.spe)
}

// newLoop sets a run up, phase by phase; the loop it returns, set up or
// not, is to be freed.
func newLoop(ctx context.Context, r *Run, resume string) (*loop, error) {
	entry, _ := models.Lookup(r.Config.Model)
	l := &loop{ctx: ctx, r: r, c: r.Config, entry: entry}
	for _, phase := range []func() error{
		l.setDevice,
		l.joinGroup,
		l.loadData,
		func() error { return l.buildState(resume) },
		l.buildStep,
		l.syncRanks,
		l.loadJudge,
		l.continueRun,
	} {
		if err := phase(); err != nil {
			return l, err
		}
	}
	flops := ""
	if f, ok := l.st.Model.(interface{ FLOPs() int64 }); ok && f.FLOPs() > 0 {
		flops = fmt.Sprintf(" (%.3g GFLOPs an image's forward pass)", float64(f.FLOPs())/1e9)
	}
	fmt.Fprintf(r.Log, "%s: %d parameters%s on %s (%s), %d training images %dx%dx%d (%d steps an epoch), %d test images, %d steps\n",
		l.c.Model, l.st.Model.Module().NumParams(), flops, l.dev, l.precision(), l.data.train.N, l.st.Geometry.C, l.st.Geometry.H, l.st.Geometry.W, l.data.spe, l.data.test.N, l.total)
	l.lossSum = torch.Zeros([]int64{}, l.dev).Keep()
	return l, nil
}

// setDevice picks the device (a rank's GPU under data parallelism), the
// threads, cuDNN's algorithm search and the seed.
func (l *loop) setDevice() error {
	c := l.c
	dev, err := torch.ParseDevice(c.Device)
	if err != nil {
		return fmt.Errorf("device: %w", err)
	}
	if l.dev, err = distDevice(l.r.dist, dev); err != nil {
		return err
	}
	if c.Threads > 0 {
		torch.SetNumThreads(c.Threads)
	}
	torch.SetCuDNNBenchmark(c.Train.CuDNNBenchmark)
	torch.ManualSeed(c.Seed)
	return nil
}

// joinGroup joins the data-parallel job's process group, if the run is one
// of its ranks, within train.dist_timeout (and a grace) or a signal.
func (l *loop) joinGroup() (err error) {
	if l.r.dist == nil {
		return nil
	}
	defer watchRendezvous(l.ctx, l.r.dist, l.c.Train.DistTimeout)()
	l.dist, err = joinGroup(l.r.dist, l.c.Train, l.dev)
	return err
}

// loadData reads the training and test images (this rank's share of each
// batch) and sizes the run.
func (l *loop) loadData() (err error) {
	rank, world := 0, 1
	if l.dist != nil {
		rank, world = l.dist.env.Rank, l.dist.env.World
	}
	if l.data, err = loadData(l.c, rank, world, l.r.Log); err != nil {
		return err
	}
	l.data.holdOnDevice(l.dev, residentOnAnyDevice)
	t := l.c.Train
	l.total = t.Epochs * l.data.spe
	if t.MaxSteps > 0 && (t.Epochs < 1 || t.MaxSteps < l.total) {
		l.total = t.MaxSteps
	}
	return nil
}

// buildState builds the training state: restored from the checkpoint of
// the run folder resume on rank 0 (read first, so that the model is built
// from what it records: a latent model's autoencoder comes with it, not
// from its own files), else fresh, its constants measured on the
// training images. Other ranks measure too, so that a model that cannot
// be measured stops every rank at once, but they train with rank 0's
// state (syncRanks). A fresh run with train.init_from starts from that
// run's weights (initFrom).
func (l *loop) buildState(resume string) error {
	var from *models.Checkpoint
	if resume != "" && l.dist.leader() {
		var err error
		if from, err = models.ReadCheckpoint(resume, l.dev); err != nil {
			return err
		}
		defer from.Free()
	}
	var err error
	if l.st, err = NewState(l.c, models.GeometryOf(l.data.train), l.dev, from); err != nil {
		return err
	}
	if l.dist != nil {
		l.st.World = l.dist.env.World
	}
	if from != nil {
		return l.resume(from)
	}
	if err := l.calibrate(); err != nil {
		return err
	}
	if l.c.Train.InitFrom != "" && l.dist.leader() { // other ranks get rank 0's weights
		if err := l.initFrom(); err != nil {
			return err
		}
	}
	return l.st.StartEMA()
}

// buildStep makes the training step over the state, its gradients
// all-reduced under data parallelism, captured in a CUDA graph when asked.
func (l *loop) buildStep() error {
	t := l.c.Train
	p := t.Precision
	if p == torch.Auto && l.dist == nil {
		// Ranks could measure differently; under data parallelism auto
		// is the unmeasured guess (torch.Precision.On), the same on each.
		p = l.measuredPrecision()
	}
	step, err := NewStep(l.st, t.GradClip, p)
	if err != nil {
		return err
	}
	step.Accumulate = t.Accumulate
	l.step = step
	if t.Accumulate > 1 {
		fmt.Fprintf(l.r.Log, "gradient accumulation: %d batches of %d images a step\n", t.Accumulate, t.BatchSize)
	}
	if l.dist != nil {
		step.Sync = l.dist.sync(l.st.Model, step.params)
		step.NoSync = l.dist.reducer.Pause
		if t.SyncBatchNorm {
			l.st.Model.Module().SetSyncBatchNorm(l.dist.g)
		}
	}
	if t.CUDAGraph && l.dist != nil {
		fmt.Fprintf(l.r.Log, "train.cuda_graph: off under data parallelism (the all-reduce runs outside a graph); eager steps\n")
	} else if t.CUDAGraph {
		g, err := NewGraphed(step, l.dev, l.r.Log)
		if err != nil {
			return err
		}
		l.step = g
	}
	return nil
}

// measuredPrecision resolves train.precision auto on this device by
// timing one forward and backward pass of the model on the training set's
// first batch in each candidate policy (torch.Precision.Measured). The
// passes run in eval mode (no running statistics move) with the random
// generators put back, and the step zeroes the gradients they leave: a
// run trains the same whether the choice was measured or cached.
func (l *loop) measuredPrecision() torch.Precision {
	n := min(l.c.Train.BatchSize, l.data.train.N)
	index := make([]int, n)
	for i := range index {
		index[i] = i
	}
	m := l.st.Model
	sections, _ := json.Marshal(l.c.Sections)
	g := l.st.Geometry
	key := fmt.Sprintf("train %s, batch %d of %dx%dx%d, sections %x", l.c.Model, n, g.C, g.H, g.W, sha256.Sum256(sections))
	return torch.Auto.Measured(l.dev, key, l.r.Log, func() {
		m.Module().SetTraining(false)
		defer m.Module().SetTraining(true)
		b := batchTensors((&datasets.Loader{Set: l.data.train, Batch: n}).Gather(index), l.data.train, l.dev)
		m.Loss(b.X, b.Y).Backward()
	})
}

// precision is the training step's precision policy in force.
func (l *loop) precision() torch.Precision {
	if g, ok := l.step.(*Graphed); ok {
		return g.step.Precision
	}
	return l.step.(*Step).Precision
}

// syncRanks gives every rank rank 0's state under data parallelism.
func (l *loop) syncRanks() error {
	if l.dist == nil {
		return nil
	}
	if err := torch.Try(l.compareRanks); err != nil {
		if errors.As(err, new(mismatch)) {
			return err
		}
		return l.distError(err)
	}
	if err := l.collective(l.broadcastState); err != nil {
		return err
	}
	if l.st.EMA != nil {
		l.st.EMA.Updates = l.st.Step
	}
	t := l.c.Train
	bn := ""
	if t.SyncBatchNorm {
		bn = ", batch norm over all ranks"
	}
	fmt.Fprintf(l.r.Log, "data parallel: %d ranks (%s), %d images a step (%d a rank)%s\n", l.dist.env.World, l.dist.g.Backend, t.StepImages()*l.dist.env.World, t.StepImages(), bn)
	return nil
}

// calibrateImages bounds the training images a run measures its model's
// data-dependent constants on.
const calibrateImages = 10000

// calibrator is a model that measures constants on its training data
// before training (diffusion.Model: the latent scale, style thresholds),
// drawing images from next only when it has something to measure.
type calibrator interface {
	Calibrate(next func() (x, y *torch.Tensor)) (string, error)
}

// calibrate lets a fresh model measure what it takes from the training
// images (a seeded random 10,000 of them, streamed): constants the model
// holds, saved in its checkpoints.
func (l *loop) calibrate() error {
	m, ok := l.st.Model.(calibrator)
	if !ok {
		return nil
	}
	loader := &datasets.Loader{Set: l.data.train, Seed: l.c.Seed, Shuffle: true}
	var order []int
	msg, err := m.Calibrate(func() (x, y *torch.Tensor) {
		if order == nil { // the first call
			order = loader.Order(0)
			order = order[:min(len(order), calibrateImages)]
		}
		if len(order) == 0 {
			return nil, nil
		}
		n := min(len(order), l.c.Train.BatchSize)
		t := batchTensors(loader.Gather(order[:n]), l.data.train, l.dev)
		order = order[n:]
		return t.X, t.Y
	})
	if err == nil && msg != "" {
		fmt.Fprintln(l.r.Log, msg)
	}
	return err
}

// resume restores the state from a run's latest checkpoint, its step
// converted to this run's global batch; continueRun records the resume in
// the folder once the whole run is set up.
func (l *loop) resume(ck *models.Checkpoint) error {
	if err := l.st.Restore(ck); err != nil {
		return err
	}
	speOld, bOld, bNew := l.data.train.N/ck.GlobalBatch(), ck.GlobalBatch(), l.globalBatch()
	convert := func(step int) int { return convertStep(step, speOld, bOld, l.data.spe, bNew) }
	l.st.Step = convert(ck.Step)
	if l.st.Step != ck.Step {
		fmt.Fprintf(l.r.Log, "the checkpoint's step %d of %d images is step %d of %d images\n", ck.Step, bOld, l.st.Step, bNew)
	} else {
		convert = nil
	}
	if l.st.EMA != nil {
		l.st.EMA.Updates = l.st.Step
	}
	l.resumed = &resumed{path: ck.Path, step: ck.Step, convert: convert}
	return nil
}

// resumed is the checkpoint a run resumed from: its file, its step, and
// how its steps convert to this run's (nil: they do not change).
type resumed struct {
	path    string
	step    int
	convert func(int) int
}

// continueRun records in the run folder that the run goes on, once every
// phase before it succeeded (a resume refused then changes nothing): its
// config.yaml becomes the config the run goes on with (--set on a resume
// may have raised train.epochs, say), and the metrics logged after the
// checkpoint are dropped.
func (l *loop) continueRun() error {
	if l.resumed == nil {
		return nil
	}
	// Another global batch renumbers the steps logged so far: once, even
	// where a resume stopped half-way is retried (.renumbered).
	ckStep, convert := l.resumed.step, l.resumed.convert
	var rec *renumbered
	if convert != nil {
		rec = readRenumbered(l.r, l.resumed.path)
		if err := renumberEvents(l.r, rec, ckStep, convert); err != nil {
			return err
		}
		if rec.Metrics {
			ckStep, convert = l.st.Step, nil // converted already
		}
	}
	if err := l.r.truncateMetrics(ckStep, convert); err != nil {
		return err
	}
	if rec != nil && !rec.Metrics {
		rec.Metrics = true
		if err := rec.save(l.r); err != nil {
			return err
		}
	}
	if err := atomic.WriteFile(l.r.Path("config.yaml"), l.c.Marshal()); err != nil {
		return err
	}
	if err := l.r.board.resume(l.st.Step); err != nil {
		return err
	}
	if err := l.r.board.config(l.st.Step, l.c.Marshal()); err != nil {
		return err
	}
	fmt.Fprintf(l.r.Log, "resumed from %s at step %d\n", l.resumed.path, l.st.Step)
	if l.c.Train.InitFrom != "" {
		fmt.Fprintf(l.r.Log, "train.init_from (%s) is for a fresh run: a resume goes on from its checkpoint and ignores it\n", l.c.Train.InitFrom)
	}
	return nil
}

func (l *loop) free() {
	defer l.dist.close()
	l.judging.free()
	if g, ok := l.step.(*Graphed); ok {
		g.Free()
	}
	if l.data != nil {
		l.data.resident.free()
	}
	if l.st != nil {
		l.st.Free()
	}
	if l.lossSum != nil {
		l.lossSum.Free()
	}
}

// missedEval reports whether a resumed run's checkpoint falls on an
// evaluation step whose figures metrics.jsonl lacks (a signal stopped the
// evaluation, and the run checkpointed that step): it is made first.
func (l *loop) missedEval() bool {
	t := l.c.Train
	if l.resumed == nil || l.judging == nil || l.st.Step == 0 || l.st.Step%t.EvalEvery != 0 {
		return false
	}
	b, err := os.ReadFile(l.r.Path("metrics.jsonl"))
	if err != nil {
		return false
	}
	for _, line := range bytes.Split(b, []byte("\n")) {
		var rec struct {
			Step int      `json:"step"`
			FID  *float64 `json:"eval_fid"`
		}
		if json.Unmarshal(line, &rec) == nil && rec.Step == l.st.Step && rec.FID != nil {
			return false
		}
	}
	l.logf("the evaluation at step %d was cut short: making it now\n", l.st.Step)
	return true
}

// run trains to the last step, then evaluates, checkpoints and draws the
// final grid.
func (l *loop) run() error {
	if f, ok := l.r.Log.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		l.bar = progressbar.NewOptions(l.total, progressbar.OptionSetWriter(f), progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30), progressbar.OptionThrottle(200*time.Millisecond), progressbar.OptionClearOnFinish())
		l.bar.Set(l.st.Step)
	}
	l.windowStart = time.Now()
	start := l.windowStart
	spe := l.data.spe
	if l.missedEval() { // a signal cut the resumed run's evaluation at this step short
		if err := l.judge(l.st.Step / spe); err != nil {
			return err
		}
	}
	for l.st.Step < l.total {
		if err := l.epoch(l.st.Step/spe, l.st.Step%spe); err != nil {
			return err
		}
	}
	if l.bar != nil {
		l.bar.Finish()
	}
	if !l.dist.leader() {
		return nil
	}
	if l.st.Step%spe != 0 {
		if err := l.evaluate(l.st.Step / spe); err != nil {
			return err
		}
	}
	if l.lastCk == "" || filepath.Base(l.lastCk) != checkpointName(l.st.Step) {
		if err := l.checkpoint(l.st.Step / spe); err != nil {
			return err
		}
	}
	if err := l.grid("final.png"); err != nil {
		return err
	}
	took := time.Since(start)
	if b := l.r.board; b != nil {
		l.logf("tensorboard: %d writes took %.0f ms, %.2f%% of the run's %.1f s\n", b.n, b.spent.Seconds()*1000, 100*b.spent.Seconds()/took.Seconds(), took.Seconds())
	}
	if j := l.judging; j != nil && j.n > 0 {
		l.logf("evaluation during training: %d evaluations took %.1f s, %.1f%% of the run's %.1f s\n", j.n, j.spent.Seconds(), 100*j.spent.Seconds()/took.Seconds(), took.Seconds())
	}
	if _, ok := l.generator(); ok {
		l.logf("done: %d steps; checkpoint %s, samples %s\n", l.st.Step, l.lastCk, l.r.Path("samples/final.png"))
	} else {
		l.logf("done: %d steps; checkpoint %s\n", l.st.Step, l.lastCk)
	}
	return nil
}

// epoch trains on an epoch's batches from position pos on.
func (l *loop) epoch(epoch, pos int) error {
	batches, stop := l.data.loader.Epoch(epoch, pos)
	defer stop()
	for b := range batches {
		if err := l.onBatch(b, epoch); err != nil || l.st.Step >= l.total {
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
	lr := learningRate(l.c, l.st.Step, l.total)
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
		if l.dist.leader() && l.st.Model.Module().NonFinite() == "" {
			if path, serr := l.save(epoch); serr == nil {
				l.lastCk = path
			}
		}
		return l.distError(err)
	}
	l.st.Step++
	l.window++
	if l.bar != nil {
		l.bar.Add(1)
	}
	t, spe := l.c.Train, l.data.spe
	if l.st.Step%t.LogEvery == 0 || l.st.Step == l.total {
		if err := l.log(epoch, lr); err != nil {
			return err
		}
	}
	epochEnd := l.st.Step%spe == 0
	if (t.CheckpointEvery > 0 && l.st.Step%t.CheckpointEvery == 0) || (t.CheckpointEvery == 0 && epochEnd) {
		if err := l.checkpoint(epoch); err != nil {
			return err
		}
	}
	if (t.SampleEvery > 0 && l.st.Step%t.SampleEvery == 0) || (t.SampleEvery == 0 && epochEnd) {
		if err := l.grid(fmt.Sprintf("step-%08d.png", l.st.Step)); err != nil {
			return err
		}
	}
	if t.EvalEvery > 0 && (l.st.Step%t.EvalEvery == 0 || l.st.Step == l.total) {
		if err := l.judge(epoch); err != nil {
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
	if bad := l.st.Model.Module().NonFinite(); bad != "" {
		return nanError(l.st.Step, l.lastCk)
	}
	if _, err := l.save(epoch); err != nil {
		return fmt.Errorf("interrupted, and the checkpoint failed: %w", err)
	}
	l.logf("interrupted at step %d: checkpoint saved; continue with --resume %s\n", l.st.Step, l.r.Dir)
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
		return nanError(l.st.Step, l.lastCk)
	}
	rate := float64(l.window*l.globalBatch()) / time.Since(l.windowStart).Seconds()
	if l.bar != nil {
		l.bar.Describe(fmt.Sprintf("loss %.4f  %.0f img/s", mean, rate))
	} else {
		l.logf("step %d/%d  epoch %d  loss %.4f  lr %.3g  %.0f img/s\n", l.st.Step, l.total, epoch, mean, lr, rate)
	}
	if err := l.r.Metric(l.st.Step, map[string]any{"epoch": epoch, "loss": mean, "lr": lr, "images_per_s": rate}); err != nil {
		return err
	}
	l.curve[0], l.curve[1] = append(l.curve[0], float64(l.st.Step)), append(l.curve[1], mean)
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

// save writes a checkpoint of the state at a step of epoch into the run
// folder.
func (l *loop) save(epoch int) (string, error) {
	l.st.Epoch = epoch
	return l.st.Save(l.r.Path("checkpoints"), l.c.Train.KeepCheckpoints)
}

// checkpoint saves the training state and redraws loss.png; weights
// that have gone NaN or infinite stop the run instead, so every checkpoint
// written is a good one.
func (l *loop) checkpoint(epoch int) error {
	if !l.dist.leader() {
		return nil
	}
	if bad := l.st.Model.Module().NonFinite(); bad != "" {
		return nanError(l.st.Step, l.lastCk)
	}
	path, err := l.save(epoch)
	if err != nil {
		return fmt.Errorf("checkpoint at step %d: %w", l.st.Step, err)
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
	m := l.st.sampler()
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
	if models.Conditional(l.st.Model) {
		classes = l.st.Geometry.Classes
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
	return l.saveGrid(name, imgs.Grid(cols, 2))
}

// saveGrid writes samples/name and shows it in TensorBoard at this step.
func (l *loop) saveGrid(name string, grid image.Image) error {
	if err := os.MkdirAll(l.r.Path("samples"), 0o755); err != nil {
		return err
	}
	png, err := sample.EncodePNG(grid)
	if err != nil {
		return err
	}
	if err := atomic.WriteFile(l.r.Path(filepath.Join("samples", name)), png); err != nil {
		return err
	}
	return l.r.board.image("samples", l.st.Step, grid, png)
}

// reconstructions draws samples/name for a model that reconstructs rather
// than generates (the autoencoders): the first test images in rows of 8,
// each row followed by its reconstructions; nothing for other models.
func (l *loop) reconstructions(name string) error {
	m := l.st.sampler()
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
	return l.saveGrid(name, imgs.Grid(cols, 2))
}

// evaluate logs the test loss (and a scorer's accuracy) at an epoch's end.
func (l *loop) evaluate(epoch int) error {
	if !l.dist.leader() {
		return nil
	}
	var s testScores
	err := l.interruptible(func() error {
		torch.WithSeed(l.c.Seed+uint64(epoch), func() { s = evalLoss(l.entry, l.st.Model, l.data.test, l.c.Train.BatchSize, l.dev) })
		return nil
	})
	if err != nil {
		return err
	}
	loss := s.loss
	fields := map[string]any{"epoch": epoch, "test_loss": loss}
	msg := fmt.Sprintf("epoch %d (step %d): test loss %.4f", epoch, l.st.Step, loss)
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
		return nanError(l.st.Step, l.lastCk)
	}
	return l.r.Metric(l.st.Step, fields)
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
// each rank times the accumulated batches times the ranks.
func (l *loop) globalBatch() int {
	if l.dist == nil {
		return l.c.Train.StepImages()
	}
	return l.c.Train.StepImages() * l.dist.env.World
}
