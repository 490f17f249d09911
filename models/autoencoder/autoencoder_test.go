package autoencoder

import (
	"math"
	"slices"
	"strings"
	"testing"

	"kakusan/torch"
	"kakusan/torch/torchtest"
)

var on = torchtest.Run

// Three levels make a 28×28 image a 7×7 latent; an odd side rounds up on
// the way down and decodes back to its own size.
func TestShapes(t *testing.T) {
	on(t, func() {
		for _, c := range []struct {
			h, w   int64
			latent []int64
		}{{28, 28, []int64{4, 7, 7}}, {30, 17, []int64{4, 8, 5}}} {
			a, err := New(*Defaults(), 1, c.h, c.w, torch.CPU)
			if err != nil {
				t.Fatal(err)
			}
			if got, want := a.NumParams(), Defaults().Params(1); got != want {
				t.Errorf("%d parameters, the config counts %d", got, want)
			}
			if got := a.LatentShape(); !slices.Equal(got, c.latent) {
				t.Errorf("%dx%d: latent %v, want %v", c.h, c.w, got, c.latent)
			}
			x := torch.Rand([]int64{2, 1, c.h, c.w})
			mean, logvar := a.Encode(x)
			if want := append([]int64{2}, c.latent...); !slices.Equal(mean.Shape(), want) || !slices.Equal(logvar.Shape(), want) {
				t.Errorf("%dx%d: moments %v and %v, want %v", c.h, c.w, mean.Shape(), logvar.Shape(), want)
			}
			if got := a.Reconstruct(x).Shape(); !slices.Equal(got, x.Shape()) {
				t.Errorf("%dx%d: reconstruction %v", c.h, c.w, got)
			}
			a.Free()
		}
	})
}

// With the latent drawn at its mean (eps = 0) the loss is, per image, the
// summed squared error of Decode(mean) against x in [-1, 1] plus kl_weight
// times ½ Σ (μ² + σ² - 1 - log σ²), computed here on the host in float64.
func TestLossClosedForm(t *testing.T) {
	on(t, func() {
		cfg := *Defaults()
		cfg.KLWeight = 0.3
		a, err := New(cfg, 1, 28, 28, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer a.Free()
		torch.ManualSeed(1)
		x := torch.Rand([]int64{3, 1, 28, 28})
		mean, logvar := a.Encode(x)
		rec := torch.Values[float64](a.Decode(mean).To(torch.Float64))
		px := torch.Values[float64](x.To(torch.Float64))
		mu, lv := torch.Values[float64](mean.To(torch.Float64)), torch.Values[float64](logvar.To(torch.Float64))
		var sq, kl float64
		for i := range px {
			sq += (rec[i] - (2*px[i] - 1)) * (rec[i] - (2*px[i] - 1))
		}
		for i := range mu {
			kl += 0.5 * (mu[i]*mu[i] + math.Exp(lv[i]) - 1 - lv[i])
		}
		want := (sq + 0.3*kl) / 3
		got := a.Loss(x, torch.ZerosLike(mean)).Item()
		if math.Abs(got-want) > 1e-4*math.Abs(want) {
			t.Errorf("loss %g, want %g (squared error %g, KL %g)", got, want, sq/3, kl/3)
		}
	})
}

func TestValidate(t *testing.T) {
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.Channels = nil }, "channels: want 1 to 5 levels"},
		{func(c *Config) { c.Channels = []int64{16, 30} }, "channels[1]: 30 is not a multiple of groups (8)"},
		{func(c *Config) { c.Latent = 0 }, "latent_channels"},
		{func(c *Config) { c.KLWeight = -1 }, "kl_weight"},
		{func(c *Config) { c.KLWeight = math.NaN() }, "kl_weight"},
		{func(c *Config) { c.Blocks = 100 }, "blocks"},
		{func(c *Config) { c.Channels, c.Blocks = []int64{4096, 4096, 4096, 4096, 4096}, 8 }, "parameters (for 4-channel images) is more than"},
	} {
		cfg := Defaults()
		c.edit(cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want one containing %q", cfg, err, c.want)
		}
	}
	if err := Defaults().Validate(); err != nil {
		t.Error(err)
	}
}
