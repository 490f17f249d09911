package torch

/*
#include "csrc/kakusan.h"
*/
import "C"

import "fmt"

// Graph is a captured CUDA graph: a sequence of kernels recorded once and
// launched again as a whole by Replay, without a kernel launch (or a Go
// call) per op.
type Graph struct{ h C.kk_graph }

// CUDAGraphsAvailable reports whether the shim was built with CUDA graph
// support and a GPU is visible.
func CUDAGraphsAvailable() bool { return C.kk_cuda_graphs_available() != 0 }

// CaptureGraph records the CUDA work f queues on dev into a graph, without
// running it. f must not read anything back from the device (Item, Values,
// copies to the CPU), and the tensors it reads and writes are the graph's
// from then on: replays read the same input tensors (copy new values into
// them) and overwrite the same outputs. Random numbers come from dev's
// default generator, registered with the graph, so each replay draws new
// ones. Tensors f makes keep their memory for the replays; keep the ones you
// read after a replay. A failure inside f ends the capture and is returned.
func CaptureGraph(dev Device, f func()) (*Graph, error) {
	if dev.Type != CUDADevice {
		return nil, fmt.Errorf("CUDA graphs need a CUDA device, not %v", dev)
	}
	var h C.kk_graph
	var cerr *C.char
	C.kk_graph_begin(C.int(dev.Index), &h, &cerr)
	if err := errFrom("CaptureGraph", cerr); err != nil {
		return nil, err
	}
	g := &Graph{h}
	// Autocast's cache of cast weights must be off under capture (a cached
	// cast would outlive the region that made it, inside the graph's pool).
	cache := C.kk_autocast_cache(0)
	defer C.kk_autocast_cache(cache)
	err := Try(func() error { f(); return nil })
	if err == nil {
		C.kk_graph_end(h, &cerr)
		err = errFrom("CaptureGraph", cerr)
	}
	if err != nil {
		g.Free() // ends a capture that failed half-way
		return nil, err
	}
	return g, nil
}

// Replay launches the captured graph on the current stream.
func (g *Graph) Replay() {
	var err *C.char
	C.kk_graph_replay(g.h, &err)
	check("Graph.Replay", err)
}

// Free releases the graph and the memory its tensors used. Freeing twice
// is a no-op.
func (g *Graph) Free() {
	if g != nil && g.h != nil {
		C.kk_graph_free(g.h)
		g.h = nil
	}
}
