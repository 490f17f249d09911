package datasets

import (
	"math"
	"math/rand/v2"
	"sort"
)

// Batch is one batch on the host: pixels scaled to [0, 1] in the set's
// layout, N×C×H×W (the shape of a PyTorch image batch), and labels.
type Batch struct {
	Pixels []float32 // nil when the loader gives indices only
	Labels []int64
	Index  []int // the set's images in the batch, in order
	N      int
}

// Loader cuts an image set into batches. The order of each epoch is a
// permutation drawn from (seed, epoch), so any (epoch, position) can be
// replayed exactly: a resumed run sees the batches the interrupted one
// would have. A partial last batch is dropped.
type Loader struct {
	Set     *Images
	Batch   int
	Seed    uint64
	Shuffle bool
	// Balance, with Shuffle, weighs the classes: each epoch is Set.N draws
	// with replacement, an image of a class of n images drawn with weight
	// n^-Balance (PyTorch's WeightedRandomSampler); 0 is a plain shuffle,
	// 1 draws every class equally often. Sharding under data parallelism
	// is as for a shuffle: every rank draws the same sequence.
	Balance float64
	// IndicesOnly leaves Pixels nil: for a trainer holding the whole set
	// on its device, which gathers the batch there.
	IndicesOnly bool
	// Rank and World shard each epoch for data-parallel training, as
	// PyTorch's DistributedSampler does: every rank draws the same
	// permutation and takes every World-th image of it from its Rank on, so
	// the ranks' batches at one step are disjoint and together are one
	// process's batch of World×Batch at that step. World 0 or 1: unsharded.
	Rank, World int
}

// world is the number of shards.
func (l *Loader) world() int { return max(l.World, 1) }

// StepsPerEpoch is the number of whole (global) batches in one pass.
func (l *Loader) StepsPerEpoch() int { return l.Set.N / (l.Batch * l.world()) }

// Order is the image order of an epoch.
func (l *Loader) Order(epoch int) []int {
	if !l.Shuffle {
		order := make([]int, l.Set.N)
		for i := range order {
			order[i] = i
		}
		return order
	}
	r := rand.New(rand.NewPCG(l.Seed, uint64(epoch)+1))
	if l.Balance == 0 {
		return r.Perm(l.Set.N)
	}
	count := l.Set.ClassCounts()
	cum := make([]float64, l.Set.N) // cumulative weights
	total := 0.0
	for i, y := range l.Set.Labels[:l.Set.N] {
		total += math.Pow(float64(count[y]), -l.Balance)
		cum[i] = total
	}
	order := make([]int, l.Set.N)
	for i := range order {
		order[i] = min(sort.SearchFloat64s(cum, r.Float64()*total), l.Set.N-1)
	}
	return order
}

// Epoch streams the batches of an epoch from batch index start on. A
// goroutine prepares the next batches (gathering and scaling pixels) while
// the caller trains on the current one; stop ends it early.
func (l *Loader) Epoch(epoch, start int) (batches <-chan Batch, stop func()) {
	out := make(chan Batch, 2)
	done := make(chan struct{})
	order := l.Order(epoch)
	go func() {
		defer close(out)
		w := l.world()
		for b := start; b < l.StepsPerEpoch(); b++ {
			global := order[b*l.Batch*w : (b+1)*l.Batch*w]
			index := global
			if w > 1 {
				index = make([]int, l.Batch)
				for j := range index {
					index[j] = global[l.Rank+w*j]
				}
			}
			batch := l.batch(index, !l.IndicesOnly)
			select {
			case out <- batch:
			case <-done:
				return
			}
		}
	}()
	var stopped bool
	return out, func() {
		if !stopped {
			stopped = true
			close(done)
			for range out {
			}
		}
	}
}

// All cuts the whole set, in order, in batches of the loader's size, the
// last one partial (for evaluation).
func (l *Loader) All() []Batch {
	var out []Batch
	for start := 0; start < l.Set.N; start += l.Batch {
		index := make([]int, min(l.Batch, l.Set.N-start))
		for i := range index {
			index[i] = start + i
		}
		out = append(out, l.batch(index, true))
	}
	return out
}

// Gather is the batch of the set's images index, in that order, pixels
// included unless IndicesOnly.
func (l *Loader) Gather(index []int) Batch { return l.batch(index, !l.IndicesOnly) }

// batch gathers the set's images index into a batch: labels always,
// pixels scaled to [0, 1] when asked.
func (l *Loader) batch(index []int, pixels bool) Batch {
	n, size := len(index), l.Set.ImageSize()
	b := Batch{Labels: make([]int64, n), Index: index, N: n}
	if pixels {
		b.Pixels = make([]float32, n*size)
	}
	for i, idx := range index {
		if pixels {
			dst := b.Pixels[i*size : (i+1)*size]
			for j, v := range l.Set.Image(idx) {
				dst[j] = float32(v) / 255
			}
		}
		b.Labels[i] = int64(l.Set.Labels[idx])
	}
	return b
}
