package torch

import (
	"errors"
	"strings"
	"testing"
)

func TestBadInputIsAnError(t *testing.T) {
	cases := []struct {
		name string
		f    func()
		want string
	}{
		{"shape mismatch", func() { Matmul(Ones([]int64{2, 3}, dev), Ones([]int64{2, 3}, dev)) }, "Matmul"},
		{"broadcast mismatch", func() { Ones([]int64{2, 3}, dev).Add(Ones([]int64{4}, dev)) }, "size of tensor"},
		{"mse shapes", func() { MSELoss(Ones([]int64{2}, dev), Ones([]int64{3}, dev), ReduceMean) }, "differ in shape"},
		{"wrong dtype", func() { Embedding(Ones([]int64{3, 2}, dev), Ones([]int64{2}, dev)) }, "Embedding"},
		{"float index", func() { Ones([]int64{3}, dev).IndexSelect(0, Ones([]int64{1}, dev)) }, "IndexSelect"},
		{"view of bad size", func() { Ones([]int64{6}, dev).View(4, 2) }, "invalid for input of size 6"},
		{"fromslice size", func() { FromSlice([]float32{1, 2, 3}, []int64{2, 2}) }, "do not fill shape"},
		{"freed tensor", func() { x := Ones([]int64{2}, dev); x.Free(); x.Exp() }, "freed tensor"},
		{"tensor of closed scope", func() {
			var x *Tensor
			Scoped(func() { x = Ones([]int64{2}, dev) })
			x.Sum()
		}, "freed tensor"},
		{"escape from closed scope", func() {
			s := NewScope()
			x := Ones([]int64{1}, dev)
			s.Close()
			s.Escape(x)
		}, "scope is closed"},
		{"nil tensor", func() { Ones([]int64{2}, dev).Add(nil) }, "nil tensor"},
		{"backward of non-scalar", func() { Ones([]int64{2}, dev).SetRequiresGrad(true).MulScalar(2).Backward() }, "scalar"},
		{"dropout p", func() { Dropout(Ones([]int64{2}, dev), 2, true) }, "probability"},
		{"bad dtype", func() { Ones([]int64{2}, DType(99)) }, "unknown dtype"},
	}
	for _, c := range cases {
		err := Do(func() error { c.f(); return nil })
		var te *Error
		if !errors.As(err, &te) {
			t.Errorf("%s: err = %v, want a *torch.Error", c.name, err)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %q does not mention %q", c.name, err, c.want)
		}
	}
	// The process and the torch thread survive all of the above.
	on(t, func() {
		if got := Ones([]int64{2}, dev).Sum().Item(); got != 2 {
			t.Errorf("after errors, sum = %v", got)
		}
	})
}

func TestUnknownDevice(t *testing.T) {
	for _, s := range []string{"tpu", "cuda:x", "cuda:-1", "gpu0"} {
		if _, err := ParseDevice(s); err == nil || !strings.Contains(err.Error(), "unknown device") {
			t.Errorf("ParseDevice(%q) err = %v", s, err)
		}
	}
	if !CUDAAvailable() {
		if _, err := ParseDevice("cuda"); err == nil || !strings.Contains(err.Error(), "not available") {
			t.Errorf("ParseDevice(cuda) on a CPU build: err = %v", err)
		}
		if d, err := ParseDevice("auto"); err != nil || d != CPU {
			t.Errorf("auto = %v, %v", d, err)
		}
	}
	if _, err := ParseDType("float8"); err == nil {
		t.Error("ParseDType(float8) succeeded")
	}
}

func TestOffThreadCallFails(t *testing.T) {
	// Touching libtorch from a goroutine other than the torch thread must be a
	// clear *Error, not a crash or silent use of another thread's state.
	var x *Tensor
	on(t, func() { x = Ones([]int64{1}, dev).Keep() })
	defer on(t, x.Free)
	func() {
		defer func() {
			r := recover()
			e, ok := r.(*Error)
			if !ok || !strings.Contains(e.Msg, "torch thread") {
				t.Errorf("off-thread call: recovered %v", r)
			}
		}()
		x.Exp()
	}()
}

func TestOtherPanicsPassThrough(t *testing.T) {
	defer func() {
		p, ok := recover().(*ThreadPanic)
		if !ok || p.Value != "boom" || !strings.Contains(p.Stack, "TestOtherPanicsPassThrough") {
			t.Errorf("recovered %#v, want the original panic with the torch thread's stack", p)
		}
	}()
	Do(func() error { panic("boom") })
}

func TestScopesFreeDeterministically(t *testing.T) {
	on(t, func() {
		before := LiveTensors()
		var kept, escaped *Tensor
		Scoped(func() {
			Ones([]int64{3}, dev).Exp().Sum()
			kept = Ones([]int64{3}, dev).Keep()
			escaped = ScopedValue(func() *Tensor { return Ones([]int64{2}, dev).MulScalar(3) })
			if LiveTensors() <= before {
				t.Error("live count did not grow")
			}
		})
		if got := LiveTensors(); got != before+1 {
			t.Errorf("after scope: %d live, want %d (only the kept tensor)", got, before+1)
		}
		if !escaped.Freed() {
			t.Error("escaped tensor outlived the outer scope it escaped into")
		}
		if kept.Freed() {
			t.Error("kept tensor was freed by its scope")
		}
		kept.Free()
		kept.Free() // twice is fine
		if got := LiveTensors(); got != before {
			t.Errorf("after Free: %d live, want %d", got, before)
		}
		// A nested scope left open is closed with its parent.
		Scoped(func() {
			NewScope()
			Ones([]int64{1}, dev)
		})
		if got := LiveTensors(); got != before {
			t.Errorf("after unclosed inner scope: %d live, want %d", got, before)
		}
	})
}
