package train

import (
	"context"
	"fmt"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"time"

	"kakusan/internal/signals"
	"kakusan/models"
	"kakusan/torch"
)

// Data-parallel training on c10d, with DistributedDataParallel's semantics:
// every rank starts from rank 0's parameters, buffers and optimizer state;
// each trains on its own share of every batch (datasets.Loader's Rank and
// World); the training step's Sync seam averages the gradients over the
// ranks in buckets before clipping and the update, so clipping, the
// optimizer, the moving average and the learning-rate schedule see what one
// process would; buffers (batch-norm statistics) follow rank 0's, as DDP's
// broadcast_buffers does; only rank 0 writes metrics, grids and
// checkpoints.

// DistEnv is where a process stands in a data-parallel job: the variables
// torchrun sets for each process (and a Kubeflow PyTorchJob, and any
// launcher that sets the same).
type DistEnv struct {
	Rank, World int
	LocalRank   int    // the process's index on its machine: its GPU
	Addr        string // MASTER_ADDR, where the store is served
	Port        int    // MASTER_PORT
	// AgentStore: torchrun's agent serves the store
	// (TORCHELASTIC_USE_AGENT_STORE=True) and Attempt is its restart count;
	// otherwise rank 0 serves it.
	AgentStore bool
	Attempt    string
}

// maxWorld bounds WORLD_SIZE; maxStep a checkpoint's step (a trillion
// steps: no run gets there, and step arithmetic cannot overflow below it).
const (
	maxWorld = 1 << 16
	maxStep  = 1 << 40
)

// DistFromEnv reads the launcher's variables through getenv (os.Getenv);
// with no WORLD_SIZE the process trains alone and it returns nil.
func DistFromEnv(getenv func(string) string) (*DistEnv, error) {
	if getenv("WORLD_SIZE") == "" {
		return nil, nil
	}
	num := func(name string, lo, hi int, def string) (int, error) {
		s := getenv(name)
		if s == "" {
			s = def
		}
		if s == "" {
			return 0, fmt.Errorf("%s is not set (data-parallel training: WORLD_SIZE is set)", name)
		}
		v, err := strconv.Atoi(s)
		if err != nil || v < lo || v > hi {
			return 0, fmt.Errorf("%s=%q: want an integer from %d to %d", name, s, lo, hi)
		}
		return v, nil
	}
	var e DistEnv
	var err error
	if e.World, err = num("WORLD_SIZE", 1, maxWorld, ""); err != nil {
		return nil, err
	}
	if e.Rank, err = num("RANK", 0, e.World-1, ""); err != nil {
		return nil, err
	}
	if e.LocalRank, err = num("LOCAL_RANK", 0, e.World-1, "0"); err != nil {
		return nil, err
	}
	if e.Port, err = num("MASTER_PORT", 1, 65535, ""); err != nil {
		return nil, err
	}
	if e.Addr = getenv("MASTER_ADDR"); e.Addr == "" {
		return nil, fmt.Errorf("MASTER_ADDR is not set (data-parallel training: WORLD_SIZE is set)")
	}
	if getenv("TORCHELASTIC_USE_AGENT_STORE") == "True" {
		e.AgentStore, e.Attempt = true, getenv("TORCHELASTIC_RESTART_COUNT")
		if e.Attempt == "" {
			e.Attempt = "0"
		}
	}
	return &e, nil
}

// distributed is a run's process group and its place in it.
type distributed struct {
	env         *DistEnv
	g           *torch.Group
	reducer     *torch.Reducer // the model's gradients, all-reduced during the backward pass
	bucketBytes int64
	timeout     time.Duration
}

// leader reports whether this process writes the run's files: rank 0, or
// the only process.
func (d *distributed) leader() bool { return d == nil || d.env.Rank == 0 }

// distDevice is a rank's device: its LOCAL_RANK's GPU when the config's
// device is CUDA.
func distDevice(e *DistEnv, dev torch.Device) (torch.Device, error) {
	if e == nil || dev.Type != torch.CUDADevice {
		return dev, nil
	}
	if n := torch.CUDADeviceCount(); e.LocalRank >= n {
		return dev, fmt.Errorf("LOCAL_RANK %d: this machine has %d GPUs (one process per GPU)", e.LocalRank, n)
	}
	return torch.CUDA(e.LocalRank), nil
}

// rendezvousGrace is how long past train.dist_timeout a rendezvous may
// take before watchRendezvous ends the process.
var rendezvousGrace = 5 * time.Second

// watchRendezvous guards a rendezvous, which blocks the torch thread in
// c10d and cannot be interrupted there: a store that accepts connections
// but never answers would hold it past train.dist_timeout, deaf to
// signals. If the rendezvous has not returned (the function this returns
// is called) within timeout seconds and rendezvousGrace, or a signal
// arrives first, the process says why and exits: 1, or the signal's
// status.
func watchRendezvous(ctx context.Context, e *DistEnv, timeout float64) (done func()) {
	stop := make(chan struct{})
	go func() {
		limit := time.Duration(timeout*float64(time.Second)) + rendezvousGrace
		select {
		case <-stop:
		case <-time.After(limit):
			fmt.Fprintf(os.Stderr, "train: rank %d of %d: the rendezvous at %s:%d did not complete within train.dist_timeout = %gs (and %v): is MASTER_ADDR:MASTER_PORT rank 0's store, and is rank 0 up?\n",
				e.Rank, e.World, e.Addr, e.Port, timeout, rendezvousGrace)
			os.Exit(1)
		case <-ctx.Done():
			fmt.Fprintf(os.Stderr, "train: rank %d of %d: interrupted during the rendezvous at %s:%d\n", e.Rank, e.World, e.Addr, e.Port)
			os.Exit(signals.ExitCode)
		}
	}()
	return func() { close(stop) }
}

// joinGroup joins the job's process group on the torch thread.
func joinGroup(e *DistEnv, t *models.TrainConfig, dev torch.Device) (*distributed, error) {
	backend := t.DistBackend
	if backend == "auto" {
		backend = "gloo"
		if dev.Type == torch.CUDADevice {
			backend = "nccl"
		}
	}
	if backend == "nccl" && dev.Type != torch.CUDADevice {
		return nil, fmt.Errorf("train.dist_backend nccl: the device is %s; NCCL needs CUDA (use gloo or auto)", dev)
	}
	if !torch.HasBackend(backend) {
		return nil, fmt.Errorf("train.dist_backend %s: this shim (bin/libkakusan_torch.so) was built without it", backend)
	}
	timeout := time.Duration(t.DistTimeout * float64(time.Second))
	prefix := "kakusan"
	if e.AgentStore {
		prefix = "/worker/attempt_" + e.Attempt + "/kakusan"
	}
	g, err := torch.NewGroup(torch.GroupOptions{Backend: backend, Host: e.Addr, Port: e.Port, Rank: e.Rank, World: e.World,
		AgentStore: e.AgentStore, Prefix: prefix, Timeout: timeout, Device: dev})
	if err != nil {
		return nil, fmt.Errorf("rank %d of %d: joining the process group at %s:%d (%s, train.dist_timeout %gs): %w",
			e.Rank, e.World, e.Addr, e.Port, backend, t.DistTimeout, err)
	}
	return &distributed{env: e, g: g, bucketBytes: int64(t.DistBucketMB * (1 << 20)), timeout: timeout}, nil
}

func (d *distributed) close() {
	if d != nil {
		d.reducer.Close()
		d.g.Close()
	}
}

// sync is the training step's Sync: the gradients averaged (their
// all-reduce began during the backward pass), then rank 0's buffers to
// every rank. In that order: the reducer's last buckets may launch only now,
// and every rank must issue its collectives in the same order.
func (d *distributed) sync(m models.Model, params []*torch.Tensor) func([]*torch.Tensor) {
	bufs := buffers(m)
	d.reducer = d.g.NewReducer(params, d.bucketBytes)
	return func([]*torch.Tensor) {
		d.reducer.Finish()
		if len(bufs) > 0 {
			d.g.Broadcast(bufs, 0)
		}
	}
}

// buffers are a model's buffers, all broadcast (integer batch counts too:
// Broadcast keeps dtypes).
func buffers(m models.Model) []*torch.Tensor {
	var out []*torch.Tensor
	for _, b := range m.Module().Buffers() {
		out = append(out, b.T)
	}
	return out
}

// broadcastState makes every rank's training state rank 0's: the model's
// parameters, buffers and frozen tensors (a latent model's autoencoder, the
// constants rank 0 measured or resumed with), the moving average's, the
// optimizer's state and the step counts (rank 0's after a resume). Other ranks' generators are
// seeded apart from rank 0's, from the seed, their rank and the step, so no
// two ranks draw the same noise.
func (l *loop) broadcastState() error {
	d, optimizer := l.dist, l.st.Opt
	var ts []*torch.Tensor
	ms := []models.Model{l.st.Model}
	if l.st.EMA != nil {
		ms = append(ms, l.st.EMA.Avg)
	}
	for _, m := range ms {
		for _, p := range append(m.Module().Params(), m.Module().Frozen()...) {
			ts = append(ts, p.T)
		}
		ts = append(ts, buffers(m)...)
	}
	state, optStep := optimizer.State()
	keys := make([]string, 0, len(state))
	for k := range state {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		ts = append(ts, state[k])
	}
	// Every rank must train the same model on the same data in the same
	// steps, or the collectives below would pair tensors of other shapes:
	// rank 0's description is compared with each rank's first.
	desc := []float64{float64(len(ts)), float64(l.data.train.N), float64(l.data.spe), float64(l.total), float64(l.c.Train.StepImages())}
	for _, t := range ts {
		desc = append(desc, float64(t.Numel()))
	}
	theirs := torch.FromSlice(desc, nil).To(l.dev)
	d.g.Broadcast([]*torch.Tensor{theirs}, 0)
	if got := theirs.Float64s(); !slices.Equal(got, desc) {
		names := []string{"tensors", "training images", "steps an epoch", "steps", "images a step"}
		for i := range desc {
			if got[i] != desc[i] {
				what := "elements of tensor " + fmt.Sprint(i-len(names))
				if i < len(names) {
					what = names[i]
				}
				return fmt.Errorf("rank %d trains another model or data than rank 0: %s %g here, %g on rank 0; every rank needs the same config and dataset", d.env.Rank, what, desc[i], got[i])
			}
		}
	}
	torch.NoGrad(func() { d.g.Broadcast(ts, 0) }) // the measured constants with the frozen tensors: rank 0's
	counts := torch.FromSlice([]float64{float64(l.st.Step), float64(optStep)}, nil).To(l.dev)
	d.g.Broadcast([]*torch.Tensor{counts}, 0)
	c := counts.Float64s()
	if d.env.Rank != 0 {
		l.st.Step = int(c[0])
		if err := optimizer.LoadState(state, int64(c[1])); err != nil {
			return err
		}
		torch.ManualSeed(l.c.Seed + uint64(d.env.Rank)*0x9E3779B97F4A7C15 + uint64(l.st.Step))
	}
	return nil
}

// collective runs f, which holds collectives, turning a failure into an
// error that explains it (distError).
func (l *loop) collective(f func() error) error {
	if err := torch.Try(f); err != nil {
		return l.distError(err)
	}
	return nil
}

// convertStep maps a checkpoint's step, counted in global batches of
// batchOld images an epoch of speOld steps, to global batches of
// batchNew (spe new steps an epoch): the same epoch, the same images into it
// (rounded down to a whole batch), so a run resumes with another world size
// or per-rank batch.
func convertStep(step, speOld, batchOld, speNew, batchNew int) int {
	if speOld <= 0 || batchOld == batchNew {
		return step
	}
	epoch, into := step/speOld, (step%speOld)*batchOld
	return epoch*speNew + min(into/batchNew, speNew)
}

// distError explains a step that failed under data parallelism.
func (l *loop) distError(err error) error {
	e := l.dist.env
	ck := "no checkpoint had been written yet"
	if l.lastCk != "" {
		ck = "the last checkpoint, " + l.lastCk + ", is intact"
	} else if !l.dist.leader() {
		ck = "rank 0 keeps the checkpoints"
	}
	return fmt.Errorf("rank %d of %d at step %d: %w\n(another rank failed, or did not answer within train.dist_timeout = %gs; %s)",
		e.Rank, e.World, l.st.Step, err, math.Round(l.dist.timeout.Seconds()), ck)
}
