package torch

import "context"

// interruptCtx is the context of the innermost open Interruptible call on
// the torch thread (nil outside one); only the torch thread touches it.
var interruptCtx context.Context

// MsgInterrupted is the Msg of the *Error an interrupted operation panics with.
const MsgInterrupted = "interrupted"

// Interruptible runs f so that once ctx is done (a signal arrived), the
// next torch operation inside f fails with an *Error whose Msg is
// MsgInterrupted, which Do and Try return: a long sampling loop or
// evaluation stops within one operation instead of running to its end.
// Outside Interruptible nothing is interrupted, so a training step can
// finish and be checkpointed cleanly.
func Interruptible(ctx context.Context, f func()) {
	outer := interruptCtx
	interruptCtx = ctx
	defer func() { interruptCtx = outer }()
	f()
}

// interruptedNow reports whether an open Interruptible's context has ended.
func interruptedNow() bool { return interruptCtx != nil && interruptCtx.Err() != nil }
