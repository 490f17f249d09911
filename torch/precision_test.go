package torch

import (
	"strings"
	"testing"
)

// bf16 keeps 8 significant bits: a relative error of 2^-8 per rounding.
const bf16Tol = 1.0 / 64

func TestAutocastComputesInBFloat16(t *testing.T) {
	on(t, func() {
		x := Randn([]int64{4, 8}, dev)
		w := Param(Randn([]int64{3, 8}, dev))
		defer w.Free()
		want := Linear(x, w, nil).Float64s()
		if got := Linear(x, w, nil).DType(); got != Float32 {
			t.Fatalf("outside autocast: %v, want float32", got)
		}
		var out *Tensor
		Autocast(dev.Type, BFloat16, func() {
			out = Linear(x, w, nil)
			Autocast(dev.Type, BFloat16, func() {}) // a nested region leaves the outer one on
			if got := Linear(x, w, nil).DType(); got != BFloat16 {
				t.Errorf("after a nested region: %v, want bfloat16", got)
			}
			WithoutAutocast(dev.Type, func() { // a float32 island, exact
				if got := Linear(x, w, nil); got.DType() != Float32 || !got.AllClose(FromSlice(want, got.Shape(), dev).To(Float32), 0, 0) {
					t.Errorf("WithoutAutocast: %v, want float32 as outside", got.DType())
				}
			})
			if got := Linear(x, w, nil).DType(); got != BFloat16 {
				t.Errorf("after a float32 island: %v, want bfloat16 again", got)
			}
			// Precision-sensitive ops stay float32 (libtorch's lists).
			if got := Softmax(out, 1).DType(); got == BFloat16 && dev.Type == CUDADevice {
				t.Errorf("softmax under CUDA autocast: %v, want float32", got)
			}
		})
		if out.DType() != BFloat16 {
			t.Fatalf("inside autocast: %v, want bfloat16", out.DType())
		}
		near(t, "bf16 linear", out.To(Float32).Float64s(), want, 4*bf16Tol)
		if got := Linear(x, w, nil).DType(); got != Float32 {
			t.Fatalf("after autocast: %v, want float32", got)
		}
		// The gradient reaches the float32 parameter in float32:
		// d/dw sum(x wᵀ) is every row equal to the column sums of x.
		out.To(Float32).Sum().Backward()
		g := w.Grad()
		if g.DType() != Float32 {
			t.Fatalf("gradient %v, want float32", g.DType())
		}
		col := x.SumDims(true, 0).Expand(3, 8).Float64s()
		near(t, "gradient", g.Float64s(), col, 4*bf16Tol)
	})
}

func TestAutocastRestoresAfterPanicAndRefusesOtherTypes(t *testing.T) {
	on(t, func() {
		err := Try(func() error {
			Autocast(dev.Type, BFloat16, func() { fail("test", "boom") })
			return nil
		})
		if err == nil || !strings.Contains(err.Error(), "boom") {
			t.Fatalf("err = %v, want boom", err)
		}
		x := Randn([]int64{2, 2}, dev)
		if got := Matmul(x, x).DType(); got != Float32 {
			t.Fatalf("after a panicking region: %v, want float32", got)
		}
		err = Try(func() error { Autocast(dev.Type, Int64, func() {}); return nil })
		if err == nil || !strings.Contains(err.Error(), "bfloat16, float16 or float32 (off)") {
			t.Fatalf("autocast to int64: err = %v", err)
		}
	})
}

// TestOneChannelChannelsLast: an image of one channel is contiguous in
// both layouts, so contiguous() leaves its NCHW strides, and a convolution
// of it (with a one-channel weight) wrote NCHW through oneDNN's reorders.
// ContiguousAs and SetMemoryFormat give such tensors channels-last strides,
// so the first convolution of a channels-last U-Net writes channels-last.
func TestOneChannelChannelsLast(t *testing.T) {
	on(t, func() {
		x := Randn([]int64{2, 1, 6, 6}, dev)
		w := Param(Randn([]int64{8, 1, 3, 3}, dev))
		defer w.Free()
		want := Conv2d(x, w, nil, Conv2dOpts{Padding: [2]int64{1, 1}}).Float64s()
		w.SetMemoryFormat(ChannelsLast)
		y := Conv2d(x.ContiguousAs(ChannelsLast), w, nil, Conv2dOpts{Padding: [2]int64{1, 1}})
		if !y.IsContiguousAs(ChannelsLast) || y.IsContiguousAs(ContiguousFormat) {
			t.Fatal("the convolution of a one-channel channels-last image is not channels-last")
		}
		near(t, "values", y.Float64s(), want, 1e-5)
	})
}

func TestSetMemoryFormatKeepsTheParameter(t *testing.T) {
	on(t, func() {
		w := Param(Randn([]int64{4, 3, 3, 3}, dev))
		defer w.Free()
		before := w.Float64s()
		if w.IsContiguousAs(ChannelsLast) {
			t.Fatal("a fresh tensor is already channels-last")
		}
		x := Randn([]int64{2, 3, 8, 8}, dev)
		want := Conv2d(x, w, nil, Conv2dOpts{Padding: [2]int64{1, 1}}).Float64s()
		if w.SetMemoryFormat(ChannelsLast); !w.IsContiguousAs(ChannelsLast) {
			t.Fatal("SetMemoryFormat did not lay the tensor out channels-last")
		}
		if !w.RequiresGrad() {
			t.Fatal("SetMemoryFormat dropped requires_grad")
		}
		near(t, "values", w.Float64s(), before, 0)
		xc := x.ContiguousAs(ChannelsLast)
		if !xc.IsContiguousAs(ChannelsLast) || !x.IsContiguousAs(ContiguousFormat) {
			t.Fatal("ContiguousAs: wrong layouts")
		}
		y := Conv2d(xc, w, nil, Conv2dOpts{Padding: [2]int64{1, 1}})
		near(t, "channels-last conv", y.Float64s(), want, 1e-5)
		y.Sum().Backward()
		if w.Grad() == nil {
			t.Fatal("no gradient reached the converted parameter")
		}
		v := Randn([]int64{5}, dev)
		if v.SetMemoryFormat(ChannelsLast); !v.IsContiguousAs(ContiguousFormat) {
			t.Fatal("a 1-d tensor changed layout")
		}
	})
}

func TestCUDASwitchesReturnThePreviousSetting(t *testing.T) {
	on(t, func() {
		orig := SetTF32(true)
		if !SetTF32(false) {
			t.Error("SetTF32 did not report the setting it replaced")
		}
		SetTF32(orig)
		orig = SetCuDNNBenchmark(true)
		if !SetCuDNNBenchmark(false) {
			t.Error("SetCuDNNBenchmark did not report the setting it replaced")
		}
		SetCuDNNBenchmark(orig)
	})
}

func TestPrecisionPolicies(t *testing.T) {
	on(t, func() {
		x := Randn([]int64{3, 4}, dev)
		for _, c := range []struct {
			name string
			want DType
		}{{"", Float32}, {"fp32", Float32}, {"tf32", Float32}, {"bf16", BFloat16}} {
			p, err := ParsePrecision(c.name)
			if err != nil {
				t.Fatal(err)
			}
			var got DType
			p.Run(dev, func() { got = Matmul(x, x.Transpose(0, 1)).DType() })
			if got != c.want {
				t.Errorf("%q: matmul in %v, want %v", c.name, got, c.want)
			}
		}
		auto := Auto.On(dev)
		if dev.Type == CUDADevice && auto != BF16 || auto != BF16 && auto != FP32 {
			t.Errorf("auto on %v is %q", dev, auto)
		}
		var got DType
		Auto.Run(dev, func() { got = Matmul(x, x.Transpose(0, 1)).DType() })
		if want := map[Precision]DType{BF16: BFloat16, FP32: Float32}[auto]; got != want {
			t.Errorf("auto (%s): matmul in %v, want %v", auto, got, want)
		}
		if _, err := ParsePrecision("fp16"); err == nil || !strings.Contains(err.Error(), "fp32, tf32, bf16 or auto") {
			t.Errorf("fp16: err = %v", err)
		}
	})
}

// TestNormsTakeBFloat16Activations runs GroupNorm and LayerNorm on a bf16
// activation with float32 affine parameters, as a bf16 convolution feeds
// them under autocast: they compute in float32 (libtorch 1.13's CPU
// kernels refuse the mix) and match the float32 norm of the same rounded
// input, GroupNorm rounded back to the input's bf16 (what the convolution
// after it would cast it to), LayerNorm kept in float32.
func TestNormsTakeBFloat16Activations(t *testing.T) {
	on(t, func() {
		x := Randn([]int64{2, 4, 3, 3}, dev).To(BFloat16)
		w, b := Randn([]int64{4}, dev), Randn([]int64{4}, dev)
		xf := x.To(Float32)
		got := GroupNorm(x, 2, w, b, 1e-5)
		if got.DType() != BFloat16 {
			t.Errorf("group norm of bf16: %v, want bfloat16", got.DType())
		}
		near(t, "group norm", got.Float64s(), GroupNorm(xf, 2, w, b, 1e-5).To(BFloat16).Float64s(), 1e-6)
		lw, lb := Randn([]int64{3}, dev), Randn([]int64{3}, dev)
		near(t, "layer norm", LayerNorm(x, []int64{3}, lw, lb, 1e-5).Float64s(), LayerNorm(xf, []int64{3}, lw, lb, 1e-5).Float64s(), 1e-6)
	})
}
