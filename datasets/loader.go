package datasets

import "math/rand/v2"

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
	// IndicesOnly leaves Pixels nil: for a trainer holding the whole set
	// on its device, which gathers the batch there.
	IndicesOnly bool
}

// StepsPerEpoch is the number of whole batches in one pass.
func (l *Loader) StepsPerEpoch() int { return l.Set.N / l.Batch }

// Order is the image order of an epoch.
func (l *Loader) Order(epoch int) []int {
	if !l.Shuffle {
		order := make([]int, l.Set.N)
		for i := range order {
			order[i] = i
		}
		return order
	}
	return rand.New(rand.NewPCG(l.Seed, uint64(epoch)+1)).Perm(l.Set.N)
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
		size := l.Set.ImageSize()
		for b := start; b < l.StepsPerEpoch(); b++ {
			index := order[b*l.Batch : (b+1)*l.Batch]
			batch := Batch{Labels: make([]int64, l.Batch), Index: index, N: l.Batch}
			if !l.IndicesOnly {
				batch.Pixels = make([]float32, l.Batch*size)
			}
			for i, idx := range index {
				if !l.IndicesOnly {
					dst := batch.Pixels[i*size : (i+1)*size]
					for j, v := range l.Set.Image(idx) {
						dst[j] = float32(v) / 255
					}
				}
				batch.Labels[i] = int64(l.Set.Labels[idx])
			}
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
	size := l.Set.ImageSize()
	for start := 0; start < l.Set.N; start += l.Batch {
		n := min(l.Batch, l.Set.N-start)
		b := Batch{Pixels: make([]float32, n*size), Labels: make([]int64, n), N: n}
		for i := range n {
			for j, v := range l.Set.Image(start + i) {
				b.Pixels[i*size+j] = float32(v) / 255
			}
			b.Labels[i] = int64(l.Set.Labels[start+i])
		}
		out = append(out, b)
	}
	return out
}
