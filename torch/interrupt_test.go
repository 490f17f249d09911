package torch

import (
	"context"
	"errors"
	"testing"
)

func TestInterruptibleStopsAtTheNextOperation(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	ops := 0
	err := Do(func() error {
		Interruptible(ctx, func() {
			for i := 0; i < 1000; i++ {
				Ones([]int64{2}).AddScalar(1)
				ops++
				if i == 10 {
					cancel()
				}
			}
		})
		return nil
	})
	var e *Error
	if !errors.As(err, &e) || e.Msg != MsgInterrupted || ops != 11 {
		t.Fatalf("err %v after %d loop bodies, want %q after 11", err, ops, MsgInterrupted)
	}
	// Outside Interruptible, and after it, operations run as usual.
	err = Do(func() error {
		Ones([]int64{2}).AddScalar(1)
		Interruptible(context.Background(), func() { Ones([]int64{1}) })
		return nil
	})
	if err != nil {
		t.Errorf("after an interruption: %v", err)
	}
}
