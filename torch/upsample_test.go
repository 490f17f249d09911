package torch

import (
	"fmt"
	"testing"
)

// TestUpsampleBilinearChannelsLast checks the shim's channels-last
// bilinear kernel, forward and backward, against libtorch's own kernel in
// float32 (on the same values in NCHW) for the U-Net's odd sizes (3 -> 7,
// 7 -> 14, 14 -> 28), a non-square one, the identity and a downsampling,
// for float32 and bf16 tensors (computed in float32, rounded once).
func TestUpsampleBilinearChannelsLast(t *testing.T) {
	cases := []struct{ c, h, w, oh, ow int64 }{
		{128, 3, 3, 7, 7}, {64, 7, 7, 14, 14}, {32, 14, 14, 28, 28}, {5, 4, 6, 9, 13}, {3, 5, 5, 5, 5}, {8, 9, 9, 4, 5},
	}
	on(t, func() {
		ManualSeed(5)
		for _, c := range cases {
			for _, dt := range []DType{Float32, BFloat16} {
				Scoped(func() {
					name := fmt.Sprintf("%dx%dx%d -> %dx%d %v", c.c, c.h, c.w, c.oh, c.ow, dt)
					x := Randn([]int64{3, c.c, c.h, c.w}, dev).To(dt)
					xc, xr := x.ContiguousAs(ChannelsLast), x.To(Float32).Contiguous()
					xc.SetRequiresGrad(true)
					xr.SetRequiresGrad(true)
					y, want := UpsampleBilinear(xc, c.oh, c.ow, false), UpsampleBilinear(xr, c.oh, c.ow, false)
					if y.DType() != dt || !y.IsContiguousAs(ChannelsLast) {
						t.Fatalf("%s: result %v, channels-last %v; want %v channels-last", name, y.DType(), y.IsContiguousAs(ChannelsLast), dt)
					}
					r := RandnLike(want.Detach()).To(dt)
					y.Mul(r).Sum().Backward()
					want.Mul(r.To(Float32)).Sum().Backward()
					tol := 1e-6
					if dt == BFloat16 {
						tol = 1e-2
					}
					closeTo(t, name+" forward", y.To(Float64).Float64s(), want.To(Float64).Float64s(), tol)
					closeTo(t, name+" backward", xc.Grad().To(Float64).Float64s(), xr.Grad().To(Float64).Float64s(), tol)
				})
			}
		}
	})
}
