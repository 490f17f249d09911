package torch

import "testing"

func TestWithSeedLeavesTheStreamAlone(t *testing.T) {
	on(t, func() {
		ManualSeed(7)
		want := Randn([]int64{5})
		ManualSeed(7)
		var inside, again *Tensor
		WithSeed(1, func() { inside = Randn([]int64{5}) })
		got := Randn([]int64{5})
		WithSeed(1, func() { again = Randn([]int64{5}) })
		if !got.AllClose(want, 0, 0) {
			t.Error("WithSeed moved the generator it was called in")
		}
		if !inside.AllClose(again, 0, 0) || inside.AllClose(want, 0, 0) {
			t.Error("WithSeed does not seed the draws inside it")
		}
	})
}
