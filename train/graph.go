package train

import (
	"fmt"
	"io"

	"kakusan/torch"
)

// graphWarmup is how many eager steps run before the capture: cuDNN's
// algorithm search, lazily made state and the optimizer's moments happen
// there, outside the graph.
const graphWarmup = 3

// Graphed is a Stepper that captures a Step in a CUDA graph after a few
// eager steps and from then on replays it: forward, backward, clipping, the
// optimizer (learning rate and step count on the device) and the moving
// average in one launch. Each batch is copied into the graph's static input
// tensors first; batches must keep one shape (the loop's do). Where capture
// is impossible (not CUDA, a shim without graphs) or fails, it says so once
// on log and runs the step eagerly.
type Graphed struct {
	step    *Step
	dev     torch.Device
	log     io.Writer
	graph   *torch.Graph
	x, y    *torch.Tensor // the graph's inputs
	loss    *torch.Tensor // its output
	warm    int
	refused bool
}

// NewGraphed wraps s, whose optimizer must keep its learning rate on the
// device (Adam.UseDeviceState) and whose moving average, if any, must not
// ramp its decay: anything the host computes per step would be frozen into
// the graph.
func NewGraphed(s *Step, dev torch.Device, log io.Writer) (*Graphed, error) {
	adam, ok := s.Opt.(*torch.Adam)
	if !ok {
		return nil, fmt.Errorf("train.cuda_graph: the optimizer must be adam or adamw (their learning rate can live on the device)")
	}
	if s.EMA != nil && s.EMA.Warmup {
		return nil, fmt.Errorf("train.cuda_graph with train.ema_warmup: the ramped decay changes every step, and a graph replays the captured one; turn one off")
	}
	g := &Graphed{step: s, dev: dev, log: log}
	switch {
	case dev.Type != torch.CUDADevice:
		g.refuse("the CPU has no CUDA graphs")
	case !torch.CUDAGraphsAvailable():
		g.refuse("this shim was built without CUDA graphs (see build_shim.sh's output)")
	default:
		adam.UseDeviceState() // eager steps keep the default arithmetic
	}
	return g, nil
}

func (g *Graphed) refuse(why string) {
	g.refused = true
	fmt.Fprintf(g.log, "train.cuda_graph: %s; training with eager steps\n", why)
}

// Run trains on one batch; the loss it returns is the graph's output
// tensor, overwritten by the next replay.
func (g *Graphed) Run(b Batch) *torch.Tensor {
	if g.refused || g.warm < graphWarmup {
		g.warm++
		return g.step.Run(b)
	}
	if g.graph == nil && !g.capture(b) {
		return g.step.Run(b)
	}
	g.x.CopyFrom(b.X)
	g.y.CopyFrom(b.Y)
	g.graph.Replay()
	return g.loss
}

// capture records one step on copies of b; false (after saying why) when
// that failed and the steps go on eagerly.
func (g *Graphed) capture(b Batch) bool {
	g.x, g.y = b.X.Clone().Keep(), b.Y.Clone().Keep()
	graph, err := torch.CaptureGraph(g.dev, func() {
		g.loss = g.step.Run(Batch{X: g.x, Y: g.y}).Keep()
	})
	if err != nil {
		g.loss.Free()
		g.refuse(fmt.Sprintf("capture failed (%v)", err))
		return false
	}
	g.graph = graph
	return true
}

// SetLR sets the learning rate; it lives on the device, so replays read it.
func (g *Graphed) SetLR(lr float64) { g.step.SetLR(lr) }

// Free releases the graph and its static tensors.
func (g *Graphed) Free() {
	g.graph.Free()
	for _, t := range []*torch.Tensor{g.x, g.y, g.loss} {
		t.Free()
	}
}
