package diffusion

import (
	"errors"
	"fmt"
	"slices"
	"testing"

	"kakusan/models/unet"
	"kakusan/torch"
)

// shedModel is a small randomly initialised conditional model of 3
// classes on 1×8×8 images, with T = 100.
func shedModel(t *testing.T) *Model {
	t.Helper()
	nc := unet.Defaults()
	nc.Width, nc.EmbDim, nc.Channels, nc.Classes = 8, 16, 1, 3
	net, err := unet.New(*nc, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	c := DefaultConfig()
	c.Timesteps = 100
	m, err := NewModel(net, c, nil, []int64{1, 8, 8}, nil, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// A batch that sheds images mid-way (a server's clients that left) goes
// on with the rest: each image kept comes out as the whole batch makes it,
// with every sampler (the multistep solver's history and half a Heun step
// narrowed with the rows), guided only in an interval (restarts), and in
// image-to-image and inpainting with RePaint's resampling (the edit's
// images, mask and noise narrowed). Wrong rows kept anywhere (the state,
// the labels, the noise) would move an image by far more than rounding.
func TestDrawWantedShedsImagesMidWay(t *testing.T) {
	on(t, func() {
		m := shedModel(t)
		defer m.Free()
		init := torch.Rand([]int64{4, 1, 8, 8})
		mask := torch.Rand([]int64{4, 1, 8, 8}).GtScalar(0.5).To(torch.Float32)
		type edit struct {
			name       string
			init, mask *torch.Tensor
			resample   int
		}
		for _, sampler := range Samplers() {
			for _, ed := range []edit{{name: "draw"}, {"img2img", init, nil, 0}, {"inpaint", init, mask, 2}} {
				name := fmt.Sprintf("%s/%s", sampler, ed.name)
				s := m.Cfg.Sampling
				s.Sampler, s.Steps, s.Precision, s.Resample = sampler, 6, torch.FP32, ed.resample
				s.GuidanceInterval = Interval{Lo: 0.5, Hi: 1e9}
				b := Batch{Images: []int{0, 5, 1, 2}, Seeds: []uint64{3, 3, 8, 3}, Labels: []int64{0, 1, 2, 0}, Init: ed.init, Mask: ed.mask}
				full, err := m.Draw(b, s)
				if err != nil {
					t.Fatal(name, err)
				}
				asks := make([]int, 4)
				x, rows, err := m.DrawWanted(b, s, func(i int) bool {
					asks[i]++
					return !(i == 1 && asks[i] > 1) && !(i == 3 && asks[i] > 3)
				})
				if err != nil {
					t.Fatal(name, err)
				}
				if !slices.Equal(rows, []int{0, 2}) || x.Size(0) != 2 {
					t.Fatalf("%s: rows %v of %d images, want [0 2]", name, rows, x.Size(0))
				}
				if asks[1] != 2 || asks[3] != 4 {
					t.Errorf("%s: images 1 and 3 asked %d and %d times, want 2 and 4 (once a step until dropped)", name, asks[1], asks[3])
				}
				want := full.IndexSelect(0, torch.FromSlice([]int64{0, 2}, nil))
				if d := x.Sub(want).Abs().Max().Item(); !(d < 1e-4) {
					t.Errorf("%s: the images kept differ by %g from the whole batch's", name, d)
				}
			}
		}
	})
}

// A batch whose every image is dropped stops with ErrNoneWanted and keeps
// no tensor.
func TestDrawWantedNoneWanted(t *testing.T) {
	on(t, func() {
		m := shedModel(t)
		defer m.Free()
		s := m.Cfg.Sampling
		s.Sampler, s.Steps, s.Precision = "dpm++2m", 5, torch.FP32
		b := Batch{Images: []int{0, 1}, Seeds: SameSeed(1, 2), Labels: []int64{0, 1}}
		before := torch.LiveTensors()
		steps := 0
		torch.Scoped(func() {
			_, _, err := m.DrawWanted(b, s, func(i int) bool {
				if i == 0 {
					steps++
				}
				return steps < 3
			})
			if !errors.Is(err, ErrNoneWanted) {
				t.Errorf("every image dropped: %v, want ErrNoneWanted", err)
			}
		})
		if steps != 3 {
			t.Errorf("asked %d times, want 3: it stopped at the first step none was wanted", steps)
		}
		if after := torch.LiveTensors(); after != before {
			t.Errorf("%d live tensors before, %d after", before, after)
		}
	})
}

// Warming a model for a batch size (a server's start) runs its network
// and keeps nothing: no tensor, no draw from a generator (what it draws
// after is what it drew before, bit for bit), its training mode as it was;
// for conditional and unconditional models.
func TestWarmChangesNothing(t *testing.T) {
	on(t, func() {
		for _, classes := range []int64{3, 0} {
			nc := unet.Defaults()
			nc.Width, nc.EmbDim, nc.Channels, nc.Classes = 8, 16, 1, classes
			net, err := unet.New(*nc, torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			c := DefaultConfig()
			c.Timesteps, c.Conditional = 100, classes > 0
			m, err := NewModel(net, c, nil, []int64{1, 8, 8}, nil, torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			s := m.Cfg.Sampling
			s.Steps, s.Precision = 4, torch.FP32
			b := Batch{Images: []int{0, 1}, Seeds: SameSeed(2, 2)}
			if classes > 0 {
				b.Labels = []int64{2, 0}
			}
			first, err := m.Draw(b, s)
			if err != nil {
				t.Fatal(err)
			}
			m.Net.SetTraining(true)
			before := torch.LiveTensors()
			torch.ManualSeed(5)
			for n := 1; n <= 3; n++ {
				m.Warm(n, s)
			}
			drawn := torch.Rand([]int64{4}).Float64s()
			torch.ManualSeed(5)
			if want := torch.Rand([]int64{4}).Float64s(); !slices.Equal(drawn, want) {
				t.Errorf("classes %d: warming drew from the generator", classes)
			}
			if after := torch.LiveTensors(); after != before+2 { // the two draws
				t.Errorf("classes %d: %d live tensors before warming, %d after", classes, before, after-2)
			}
			if !m.Net.Training() {
				t.Errorf("classes %d: warming left the network in eval mode", classes)
			}
			second, err := m.Draw(b, s)
			if err != nil {
				t.Fatal(err)
			}
			if !identical(first, second) {
				t.Errorf("classes %d: the images drawn after warming differ", classes)
			}
			m.Free()
		}
	})
}
