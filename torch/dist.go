package torch

/*
#include <stdlib.h>
#include "kakusan.h"
*/
import "C"

import (
	"fmt"
	"time"
	"unsafe"
)

// Group is a c10d process group, as torch.distributed.init_process_group
// makes one: rank 0 serves a TCPStore, every rank joins it, and collectives
// run on PyTorch's own backends (Gloo on the CPU, NCCL on CUDA). Its
// methods run on the torch thread like every other call; a collective that
// fails (a peer gone, the timeout passed) panics with an *Error, which Do
// returns as an error.
type Group struct {
	h           C.kk_dist
	Backend     string
	Rank, World int
}

// HasBackend reports whether the shim was built with the backend ("gloo",
// "nccl").
func HasBackend(name string) bool {
	s := C.CString(name)
	defer C.free(unsafe.Pointer(s))
	return C.kk_dist_has_backend(s) != 0
}

// GroupOptions say how a process joins its group.
type GroupOptions struct {
	Backend     string // "gloo" or "nccl"
	Host        string // the store's address (MASTER_ADDR)
	Port        int    // and port (MASTER_PORT)
	Rank, World int
	// AgentStore: the launcher serves the store (torchrun's agent); else
	// rank 0 does.
	AgentStore bool
	Prefix     string        // the group's keys in the store; "" is "kakusan"
	Timeout    time.Duration // for the rendezvous and every collective
	Device     Device        // an NCCL rank's GPU
}

// NewGroup joins the group. It waits at most o.Timeout for the others, and
// any later collective fails after o.Timeout without its peers.
func NewGroup(o GroupOptions) (*Group, error) {
	if o.Timeout <= 0 {
		return nil, fmt.Errorf("torch: process group timeout %v: must be positive", o.Timeout)
	}
	if o.Prefix == "" {
		o.Prefix = "kakusan"
	}
	b, h, p := C.CString(o.Backend), C.CString(o.Host), C.CString(o.Prefix)
	defer C.free(unsafe.Pointer(b))
	defer C.free(unsafe.Pointer(h))
	defer C.free(unsafe.Pointer(p))
	var d C.kk_dist
	var err *C.char
	C.kk_dist_new(b, h, C.int(o.Port), b2i(!o.AgentStore), p, C.int(o.Rank), C.int(o.World),
		C.int64_t(o.Timeout.Milliseconds()), C.int(o.Device.Index), &d, &err)
	if e := errFrom("NewGroup", err); e != nil {
		return nil, e
	}
	return &Group{h: d, Backend: o.Backend, Rank: o.Rank, World: o.World}, nil
}

// Close leaves the group.
func (g *Group) Close() {
	if g != nil && g.h != nil {
		C.kk_dist_free(g.h)
		g.h = nil
	}
}

func (g *Group) handle(op string) C.kk_dist {
	if g == nil || g.h == nil {
		fail(op, "closed process group")
	}
	return g.h
}

// AllReduceMean replaces each tensor with its mean over the group, in
// flattened buckets of at most bucketBytes (0: 25 MiB, DDP's default).
func (g *Group) AllReduceMean(ts []*Tensor, bucketBytes int64) {
	if len(ts) == 0 {
		return
	}
	hs := handles("AllReduceMean", ts)
	var err *C.char
	C.kk_dist_allreduce_mean(g.handle("AllReduceMean"), &hs[0], C.int(len(hs)), C.int64_t(bucketBytes), &err)
	check("AllReduceMean", err)
}

// Broadcast overwrites the tensors with root's.
func (g *Group) Broadcast(ts []*Tensor, root int) {
	if len(ts) == 0 {
		return
	}
	hs := handles("Broadcast", ts)
	var err *C.char
	C.kk_dist_broadcast(g.handle("Broadcast"), &hs[0], C.int(len(hs)), C.int(root), &err)
	check("Broadcast", err)
}

// Barrier waits until every rank reaches it (or the timeout passes).
func (g *Group) Barrier() {
	var err *C.char
	C.kk_dist_barrier(g.handle("Barrier"), &err)
	check("Barrier", err)
}

// SyncBatchNorm is BatchNorm in training mode with the statistics of the
// whole group's batch, as torch.nn.SyncBatchNorm computes them; w, b and the
// running statistics are required, and the running statistics are updated
// (with the group's unbiased variance).
func (g *Group) SyncBatchNorm(x, w, b, runningMean, runningVar *Tensor, momentum, eps float64) *Tensor {
	var out C.kk_tensor
	var err *C.char
	C.kk_sync_batch_norm(g.handle("SyncBatchNorm"), x.handle("SyncBatchNorm"), w.handle("SyncBatchNorm"), b.handle("SyncBatchNorm"),
		runningMean.handle("SyncBatchNorm"), runningVar.handle("SyncBatchNorm"), C.double(momentum), C.double(eps), &out, &err)
	return wrap("SyncBatchNorm", out, err)
}

// Reducer averages a model's gradients over the group as the backward pass
// produces them, as DistributedDataParallel's Reducer does: each bucket's
// all-reduce starts as soon as the pass has accumulated all its gradients,
// while the pass goes on with earlier layers. Finish, after the backward
// pass, completes it.
type Reducer struct{ h C.kk_ddp }

// NewReducer hooks the parameters' gradient accumulators; buckets after
// the first (1 MiB) hold at most bucketBytes (0: 25 MiB).
func (g *Group) NewReducer(params []*Tensor, bucketBytes int64) *Reducer {
	if len(params) == 0 {
		fail("NewReducer", "no parameters")
	}
	hs := handles("NewReducer", params)
	var r C.kk_ddp
	var err *C.char
	C.kk_ddp_new(g.handle("NewReducer"), &hs[0], C.int(len(hs)), C.int64_t(bucketBytes), &r, &err)
	check("NewReducer", err)
	return &Reducer{h: r}
}

// Finish launches the buckets the backward pass left, waits for every
// bucket and leaves the averaged gradients in the parameters' .grad. It
// returns how many buckets the backward pass launched, of how many.
func (r *Reducer) Finish() (early, buckets int) {
	if r == nil || r.h == nil {
		fail("Reducer.Finish", "closed reducer")
	}
	var e, b C.int64_t
	var err *C.char
	C.kk_ddp_finish(r.h, &e, &b, &err)
	check("Reducer.Finish", err)
	return int(e), int(b)
}

// Pause stops (true) or restarts (false) the all-reduce the backward pass
// launches: paused, backward passes only accumulate gradients, as under
// DDP's no_sync. Gradient accumulation pauses it for every micro-batch but
// the last, whose pass then reduces the sum of them all.
func (r *Reducer) Pause(paused bool) {
	if r == nil || r.h == nil {
		fail("Reducer.Pause", "closed reducer")
	}
	p := 0
	if paused {
		p = 1
	}
	var err *C.char
	C.kk_ddp_pause(r.h, C.int(p), &err)
	check("Reducer.Pause", err)
}

// Close removes the hooks.
func (r *Reducer) Close() {
	if r != nil && r.h != nil {
		C.kk_ddp_free(r.h)
		r.h = nil
	}
}
