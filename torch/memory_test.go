package torch

import (
	"bufio"
	"kakusan/internal/longtest"
	"os"
	"strconv"
	"strings"
	"testing"
)

// convNet is a small CNN used by the memory test and the benchmarks.
type convNet struct {
	c1w, c1b, c2w, c2b, bnw, bnb, rm, rv, fw, fb *Tensor
}

func newConvNet(d Device) *convNet {
	p := func(s ...int64) *Tensor { return Param(Randn(s, d).MulScalar(0.1)) }
	return &convNet{
		c1w: p(8, 1, 3, 3), c1b: p(8), c2w: p(16, 8, 3, 3), c2b: p(16),
		bnw: Param(Ones([]int64{16}, d)), bnb: Param(Zeros([]int64{16}, d)),
		rm: Zeros([]int64{16}, d).Keep(), rv: Ones([]int64{16}, d).Keep(),
		fw: p(10, 16*7*7), fb: p(10),
	}
}

func (n *convNet) params() []*Tensor {
	return []*Tensor{n.c1w, n.c1b, n.c2w, n.c2b, n.bnw, n.bnb, n.fw, n.fb}
}

func (n *convNet) free() { freeAll(append(n.params(), n.rm, n.rv)) }

func (n *convNet) forward(x *Tensor) *Tensor {
	pad := Conv2dOpts{Padding: [2]int64{1, 1}}
	h := MaxPool2d(Conv2d(x, n.c1w, n.c1b, pad).Relu(), 2, 0, 0)
	h = BatchNorm(Conv2d(h, n.c2w, n.c2b, pad), n.bnw, n.bnb, n.rm, n.rv, true, 0.1, 1e-5).Relu()
	h = MaxPool2d(h, 2, 0, 0)
	return Linear(h.Flatten(1, -1), n.fw, n.fb)
}

// trainStep is one forward/backward/update on a fresh random batch.
func (n *convNet) trainStep(opt Optimizer, batch int64, d Device) {
	Scoped(func() {
		x := Randn([]int64{batch, 1, 28, 28}, d)
		y := RandInt(0, 10, []int64{batch}, d)
		loss := CrossEntropyLoss(n.forward(x), y, ReduceMean, 0)
		opt.ZeroGrad()
		loss.Backward()
		opt.Step()
	})
}

func rssKiB(t *testing.T) int64 {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Skip("no /proc/self/status")
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if rest, ok := strings.CutPrefix(s.Text(), "VmRSS:"); ok {
			v, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			return v
		}
	}
	t.Skip("no VmRSS")
	return 0
}

func TestLongMemoryFlatOverTrainingSteps(t *testing.T) {
	longtest.Skip(t)
	on(t, func() {
		ManualSeed(0)
		net := newConvNet(dev)
		defer net.free()
		opt := NewAdam(net.params(), AdamConfig{LR: 1e-3})
		defer opt.Free()
		// Warm up allocator caches and the graph machinery first.
		for range 200 {
			net.trainStep(opt, 8, dev)
		}
		live, rss := LiveTensors(), rssKiB(t)
		for range 2000 {
			net.trainStep(opt, 8, dev)
		}
		if got := LiveTensors(); got != live {
			t.Errorf("live tensors %d -> %d over 2000 steps", live, got)
		}
		if got := rssKiB(t); float64(got) > 1.05*float64(rss) {
			t.Errorf("RSS grew %d -> %d KiB (more than 5%%) over 2000 steps", rss, got)
		}
	})
}
