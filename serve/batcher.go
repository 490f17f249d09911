package serve

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/procfs"

	"kakusan/diffusion"
	"kakusan/sample"
)

// job is a request in the queue: its images are handed out in order to the
// batches that make them, and come back on done, one result each.
type job struct {
	req     *Request
	ctx     context.Context // the request's: done when its client left or its deadline passed
	arrived time.Time
	next    int // the next image to hand out
	done    chan result
	dropped atomic.Bool // its client is gone: hand out nothing more
}

// gone reports whether the request's client has left or its deadline
// passed: its images are no longer worth making.
func (j *job) gone() bool { return j.dropped.Load() || j.ctx.Err() != nil }

// result is one image of a request (image i of its batch's images, which
// its handler encodes), or the error of its batch.
type result struct {
	index int
	imgs  *sample.Images
	i     int
	err   error
}

// pix is the image's C·H·W values in [0, 1].
func (r result) pix() []float32 {
	n := r.imgs.C * r.imgs.H * r.imgs.W
	return r.imgs.Pix[r.i*n : (r.i+1)*n]
}

// Errors of admission.
var (
	errFull     = errors.New("the queue is full")
	errDraining = errors.New("the server is shutting down")
)

// batcher merges the queued requests' images into sampler batches: the
// oldest request's next images first, then those of later requests it may
// share a batch with (Model.sameKey), up to maxBatch, waiting at most
// maxWait from the oldest request's arrival (or the last batch's end, if
// later) for a batch to fill when requests have been in the server together
// since the last batch formed (concurrent clients), not otherwise. It runs
// one batch at a time (the torch thread runs it): the next forms while the
// queue fills.
type batcher struct {
	m        *Model
	maxBatch int
	maxWait  time.Duration
	maxQueue int
	met      *metrics

	mu     sync.Mutex
	queue  []*job
	queued int // images waiting
	// active is the requests in the server (queued, in a batch or being
	// answered), peak the most there were since the last batch formed:
	// more than one means concurrent clients, whose next requests are worth
	// waiting for.
	active, peak int
	free         time.Time // when the last batch ended
	trimmed      time.Time // when malloc's heap was last trimmed
	last         int       // the requests the last batch answered: clients coming back
	expect       int       // requests worth waiting for: those queued when the last batch ended, and its own
	closed       bool
	wake         chan struct{}
	stopped      chan struct{}
}

func newBatcher(m *Model, l Limits, maxWait time.Duration, met *metrics) *batcher {
	b := &batcher{m: m, maxBatch: l.MaxBatch, maxWait: maxWait, maxQueue: l.MaxQueue, met: met,
		peak: 2, expect: l.MaxBatch + 1, // the first batch waits: nothing says yet that its client is alone
		wake: make(chan struct{}, 1), stopped: make(chan struct{})}
	go b.loop()
	return b
}

// submit queues a request's images; a full queue or a closing server
// refuses it.
func (b *batcher) submit(ctx context.Context, r *Request) (*job, error) {
	j := &job{req: r, ctx: ctx, arrived: time.Now(), done: make(chan result, r.N)}
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return nil, errDraining
	case b.queued+r.N > b.maxQueue:
		return nil, errFull
	}
	b.queue = append(b.queue, j)
	b.queued += r.N
	b.active++
	b.peak = max(b.peak, b.active)
	b.met.queue.Set(float64(b.queued))
	b.signal()
	return j, nil
}

// release is a request's end, answered or not: its images not yet handed
// out are dropped at once (its client may have left), and leave the
// queue's count.
func (b *batcher) release(j *job) {
	j.dropped.Store(true)
	b.mu.Lock()
	b.queued -= j.req.N - j.next
	j.next = j.req.N
	b.active--
	b.met.queue.Set(float64(b.queued))
	b.mu.Unlock()
	b.signal()
}

func (b *batcher) signal() {
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// close refuses new requests; what is queued is still made, then the loop
// ends (wait).
func (b *batcher) close() {
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
	b.signal()
}

// wait blocks until the loop has ended (after close, the queue empty).
func (b *batcher) wait() { <-b.stopped }

// ready reports whether a request of one image would be admitted now.
func (b *batcher) ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return !b.closed && b.queued < b.maxQueue
}

func (b *batcher) loop() {
	defer close(b.stopped)
	for {
		ps, ok := b.next()
		if !ok {
			return
		}
		if len(ps) > 0 {
			b.run(ps)
			if time.Since(b.trimmed) > trimEvery {
				b.m.trimHeap()
				b.trimmed = time.Now()
				if p, err := procfs.Self(); err == nil {
					if st, err := p.Stat(); err == nil {
						b.met.trimmedRSS.Set(float64(st.ResidentMemory()))
					}
				}
			}
			b.mu.Lock()
			b.free, b.expect = time.Now(), len(b.queue)+b.last
			b.mu.Unlock()
		}
	}
}

// next waits for a batch and takes its pieces from the queue; false when
// the batcher is closed and the queue empty.
func (b *batcher) next() ([]piece, bool) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		b.mu.Lock()
		b.prune()
		if len(b.queue) == 0 {
			closed := b.closed
			b.mu.Unlock()
			if closed {
				return nil, false
			}
			<-b.wake
			continue
		}
		head := b.queue[0]
		avail, reqs := 0, 0
		for _, j := range b.queue {
			if b.m.sameKey(j.req, head.req) {
				avail += j.req.N - j.next
				reqs++
			}
		}
		// Wait for companions only where there are any: a lone client's
		// requests come one after another (never two in the server), and
		// waiting would only delay them. The wait runs from the oldest
		// request's arrival or the last batch's end, whichever is later:
		// the clients that batch answered come back within it, and a batch
		// that went without them would split the clients into groups that
		// take turns, each a batch of its own.
		from := head.arrived
		if b.free.After(from) {
			from = b.free
		}
		// Those queued when the last batch ended and those it answered
		// are here: the batch is as full as waiting would make it.
		wait := time.Until(from.Add(b.maxWait))
		if avail >= b.maxBatch || reqs >= b.expect || wait <= 0 || b.closed || b.peak < 2 {
			ps := b.take(head)
			b.peak, b.last = b.active, requests(ps)
			b.mu.Unlock()
			return ps, true
		}
		b.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(wait)
		} else {
			timer.Reset(wait)
		}
		select {
		case <-b.wake:
		case <-timer.C:
		}
	}
}

// trimEvery is how often the batcher returns malloc's free heap to the
// system: batches of every size leave holes that would keep resident
// memory growing (torch.TrimHeap); once a second costs little.
const trimEvery = time.Second

// requests is the number of requests whose images ps holds (in queue
// order, each request's together).
func requests(ps []piece) int {
	n := 0
	for i, p := range ps {
		if i == 0 || p.j != ps[i-1].j {
			n++
		}
	}
	return n
}

// prune removes the requests whose images are all handed out (or
// dropped: release). A request whose deadline passed is dropped here
// already, before its handler gets to release it. b.mu is held.
func (b *batcher) prune() {
	kept := b.queue[:0]
	for _, j := range b.queue {
		if j.ctx.Err() != nil {
			b.queued -= j.req.N - j.next
			j.next = j.req.N
		}
		if j.next < j.req.N {
			kept = append(kept, j)
		}
	}
	clear(b.queue[len(kept):])
	b.queue = kept
	b.met.queue.Set(float64(b.queued))
}

// take hands out up to maxBatch images of head and of the requests that
// may share its batch, in queue order. b.mu is held.
func (b *batcher) take(head *job) []piece {
	var ps []piece
	for _, j := range b.queue {
		if !b.m.sameKey(j.req, head.req) {
			continue
		}
		for j.next < j.req.N && len(ps) < b.maxBatch {
			ps = append(ps, piece{j, j.next})
			j.next++
			b.queued--
		}
	}
	b.met.queue.Set(float64(b.queued))
	return ps
}

// run makes a batch and hands each request its images (its handler
// encodes them, so that the next batch starts at once); a panic of the
// batch is its requests' error, not the server's end. The images of a
// request that goes mid-way are cut out of the batch between steps
// (counted as dropped); a batch whose every request has gone stops within
// one torch operation (abandoned).
func (b *batcher) run(ps []piece) {
	t0 := time.Now()
	ctx, stop := allGone(ps)
	imgs, rows, err := b.draw(ctx, ps)
	stop()
	took := time.Since(t0)
	b.met.batch.Observe(float64(len(ps)))
	if err != nil && (ctx.Err() != nil || errors.Is(err, diffusion.ErrNoneWanted)) {
		b.met.abandoned.Inc()
		b.met.shed.Add(float64(len(ps)))
		err = fmt.Errorf("abandoned: every request in the batch had gone")
	}
	made := 0
	for i, p := range ps {
		res := result{index: p.index, imgs: imgs, err: err}
		if err == nil {
			if res.i = rows[i]; res.i < 0 {
				res.err = errGone
			} else {
				made++
			}
		}
		p.j.done <- res // buffered: one slot an image
	}
	if err == nil {
		b.met.images.Add(float64(made))
		b.met.shed.Add(float64(len(ps) - made))
		b.met.rate.Set(float64(made) / took.Seconds())
	}
}

// errGone is the result of an image cut out of its batch: its request had
// gone (nobody reads it).
var errGone = errors.New("dropped: the request had gone")

// draw is the model's draw of a batch, a panic in it returned as an error.
func (b *batcher) draw(ctx context.Context, ps []piece) (imgs *sample.Images, rows []int, err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the batch failed (a bug: please report it): %v", r)
		}
	}()
	return b.m.draw(ctx, ps)
}

// allGone is a context that ends once every request with images in ps has
// gone (its client left, or its deadline passed): the batch then stops
// within one torch operation instead of making images nobody will read.
// A batch some of whose requests are still there runs to its end. stop
// releases it.
func allGone(ps []piece) (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	var jobs []*job
	for i, p := range ps {
		if i == 0 || p.j != ps[i-1].j {
			jobs = append(jobs, p.j)
		}
	}
	var left atomic.Int64
	left.Store(int64(len(jobs)))
	stops := make([]func() bool, len(jobs))
	for i, j := range jobs {
		stops[i] = context.AfterFunc(j.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, s := range stops {
			s()
		}
		cancel()
	}
}
