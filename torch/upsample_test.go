package torch

import (
	"fmt"
	"strings"
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
					tol := backwardBoth(t, name, y, want, dt)
					closeTo(t, name+" backward", xc.Grad().To(Float64).Float64s(), xr.Grad().To(Float64).Float64s(), tol)
				})
			}
		}
	})
}

// TestUpsampleCat checks a U-Net up block's input in one op,
// cat([upsample(x), skip], 1) + bias, forward and the three gradients,
// against libtorch's upsampling, concatenation and add in float32 (NCHW),
// for channels-last float32 and bf16 tensors, with and without the bias;
// and that NCHW tensors (libtorch's ops) give the same.
func TestUpsampleCat(t *testing.T) {
	// Batch, the input's and the skip's channels, the input's size: a small
	// case, and the book network's first up block at a batch that splits
	// across threads.
	shapes := [][4]int64{{2, 6, 3, 7}, {16, 32, 16, 7}}
	on(t, func() {
		ManualSeed(9)
		for _, sh := range shapes {
			n, cx, cs, hw := sh[0], sh[1], sh[2], sh[3]
			for _, dt := range []DType{Float32, BFloat16} {
				for _, withBias := range []bool{true, false} {
					for _, cl := range []bool{true, false} {
						Scoped(func() {
							name := fmt.Sprintf("%v %v bias %v channels-last %v", sh, dt, withBias, cl)
							x := Randn([]int64{n, cx, hw, hw}, dev).To(dt)
							skip := Randn([]int64{n, cs, 2 * hw, 2 * hw}, dev).To(dt)
							var bias, br *Tensor
							if withBias {
								bias = Randn([]int64{n, cx + cs}, dev)
								br = bias.Detach()
								bias.SetRequiresGrad(true)
								br.SetRequiresGrad(true)
							}
							if cl {
								x, skip = x.ContiguousAs(ChannelsLast), skip.ContiguousAs(ChannelsLast)
							}
							x.SetRequiresGrad(true)
							skip.SetRequiresGrad(true)
							y := UpsampleCat(x, skip, bias)
							if y.DType() != dt || (cl && !y.IsContiguousAs(ChannelsLast)) {
								t.Fatalf("%s: result %v, channels-last %v", name, y.DType(), y.IsContiguousAs(ChannelsLast))
							}
							xr, sr := x.Detach().To(Float32).Contiguous(), skip.Detach().To(Float32).Contiguous()
							xr.SetRequiresGrad(true)
							sr.SetRequiresGrad(true)
							want := Cat([]*Tensor{UpsampleBilinear(xr, 2*hw, 2*hw, false), sr}, 1)
							if withBias {
								want = want.Add(br.View(n, cx+cs, 1, 1))
							}
							tol := backwardBoth(t, name, y, want, dt)
							closeTo(t, name+" dx", x.Grad().To(Float64).Float64s(), xr.Grad().To(Float64).Float64s(), tol)
							closeTo(t, name+" dskip", skip.Grad().To(Float64).Float64s(), sr.Grad().To(Float64).Float64s(), tol)
							if withBias {
								closeTo(t, name+" dbias", bias.Grad().To(Float64).Float64s(), br.Grad().To(Float64).Float64s(), tol)
							}
						})
					}
				}
			}
		}
	})
}

// TestUpsampleCatErrors: tensors that do not fit are errors naming the op.
func TestUpsampleCatErrors(t *testing.T) {
	cases := []struct {
		name string
		f    func()
		want string
	}{
		{"batch mismatch", func() { UpsampleCat(Zeros([]int64{2, 4, 3, 3}, dev), Zeros([]int64{3, 2, 6, 6}, dev), nil) }, "one batch"},
		{"3-d input", func() { UpsampleCat(Zeros([]int64{2, 4, 3}, dev), Zeros([]int64{2, 2, 6, 6}, dev), nil) }, "(N, C, H, W)"},
		{"bias of the wrong width", func() {
			UpsampleCat(Zeros([]int64{2, 4, 3, 3}, dev), Zeros([]int64{2, 2, 6, 6}, dev), Zeros([]int64{2, 4}, dev))
		}, "bias"},
	}
	for _, c := range cases {
		err := Do(func() error { return Try(func() error { c.f(); return nil }) })
		if err == nil || !strings.Contains(err.Error(), "UpsampleCat") || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one naming UpsampleCat and %q", c.name, err, c.want)
		}
	}
}

// backwardBoth backpropagates one random output gradient through the
// kernel's result y (in dt) and the float32 reference want, checks the
// forward values, and returns the tolerance for dt the gradients get too.
func backwardBoth(t *testing.T, name string, y, want *Tensor, dt DType) float64 {
	t.Helper()
	r := RandnLike(want.Detach()).To(dt)
	y.Mul(r).Sum().Backward()
	want.Mul(r.To(Float32)).Sum().Backward()
	tol := 1e-6
	if dt == BFloat16 {
		tol = 1e-2
	}
	closeTo(t, name+" forward", y.To(Float64).Float64s(), want.To(Float64).Float64s(), tol)
	return tol
}
