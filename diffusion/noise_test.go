package diffusion

import (
	"testing"

	"kakusan/internal/splitmix"
	"kakusan/torch"
)

func TestImageNoiseIsPerImage(t *testing.T) {
	on(t, func() {
		a := ImageNoise(SameSeed(5, 4), []int{0, 1, 2, 3}, []int64{1, 2, 2}, torch.CPU)(7)
		b := ImageNoise(SameSeed(5, 2), []int{3, 9}, []int64{1, 2, 2}, torch.CPU)(7)
		if s := a.Shape(); len(s) != 4 || s[0] != 4 || s[1] != 1 || s[2] != 2 || s[3] != 2 {
			t.Errorf("shape %v", s)
		}
		if !a.Index(torch.At(3)).AllClose(b.Index(torch.At(0)), 0, 0) {
			t.Error("image 3's noise depends on its batch")
		}
		c := ImageNoise(SameSeed(5, 1), []int{3}, []int64{1, 2, 2}, torch.CPU)(8)
		if c.Index(torch.At(0)).AllClose(b.Index(torch.At(0)), 0, 0) {
			t.Error("steps share noise")
		}
		// Image k at step i of seed s is the row of Mix(Mix(s ^ Mix(k)) + i).
		want := torch.RandnRows([]uint64{splitmix.Mix(splitmix.Mix(5^splitmix.Mix(9)) + 7)}, []int64{1, 2, 2})
		if !identical(b.Narrow(0, 1, 1), want) {
			t.Error("image 9's seed is not Mix(Mix(s ^ Mix(9)) + step)")
		}
		// A batch of two jobs' images (a server's merged requests): each row
		// is its own job's.
		mixed := ImageNoise([]uint64{5, 6}, []int{3, 3}, []int64{1, 2, 2}, torch.CPU)(7)
		other := ImageNoise(SameSeed(6, 1), []int{3}, []int64{1, 2, 2}, torch.CPU)(7)
		if !identical(mixed.Narrow(0, 0, 1), b.Narrow(0, 0, 1)) || !identical(mixed.Narrow(0, 1, 1), other) {
			t.Error("a batch of two seeds does not draw each image as its own job does")
		}
	})
}
