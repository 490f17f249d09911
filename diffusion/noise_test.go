package diffusion

import (
	"testing"

	"kakusan/torch"
)

func TestSplitMix(t *testing.T) {
	// splitmix64's first outputs from states 0 and 1.
	if got := SplitMix(0); got != 0xe220a8397b1dcdaf {
		t.Errorf("SplitMix(0) = %#x", got)
	}
	if got := SplitMix(0x9e3779b97f4a7c15); got != 0x6e789e6aa1b965f4 {
		t.Errorf("SplitMix(γ) = %#x", got)
	}
}

func TestImageNoiseIsPerImage(t *testing.T) {
	on(t, func() {
		a := ImageNoise(5, []int{0, 1, 2, 3}, []int64{1, 2, 2}, torch.CPU)(7)
		b := ImageNoise(5, []int{3, 9}, []int64{1, 2, 2}, torch.CPU)(7)
		if s := a.Shape(); len(s) != 4 || s[0] != 4 || s[1] != 1 || s[2] != 2 || s[3] != 2 {
			t.Errorf("shape %v", s)
		}
		if !a.Index(torch.At(3)).AllClose(b.Index(torch.At(0)), 0, 0) {
			t.Error("image 3's noise depends on its batch")
		}
		c := ImageNoise(5, []int{3}, []int64{1, 2, 2}, torch.CPU)(8)
		if c.Index(torch.At(0)).AllClose(b.Index(torch.At(0)), 0, 0) {
			t.Error("steps share noise")
		}
		// Image k at step i of seed s is the row of SplitMix(SplitMix(s ^ SplitMix(k)) + i).
		want := torch.RandnRows([]uint64{SplitMix(SplitMix(5^SplitMix(9)) + 7)}, []int64{1, 2, 2})
		if !identical(b.Narrow(0, 1, 1), want) {
			t.Error("image 9's seed is not SplitMix(SplitMix(s ^ SplitMix(9)) + step)")
		}
	})
}
