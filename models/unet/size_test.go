package unet

import (
	"strings"
	"testing"
	"time"

	"kakusan/torch"
)

// Params counts, from the config alone, the parameters New makes: the
// book's network with each option, prompted, and adm's.
func TestParamsCountedBeforeBuilding(t *testing.T) {
	book := func(edit func(*Config)) Config { c := Reference(); edit(&c); return c }
	adm := func(edit func(*Config)) Config { c := admConfig(); edit(&c); return c }
	for name, cfg := range map[string]Config{
		"reference":     Reference(),
		"unconditional": book(func(c *Config) { c.Classes = 0 }),
		"group norm, residual, dropout, attention": book(func(c *Config) {
			c.Norm, c.Groups, c.Residual, c.Dropout, c.Attention, c.Width, c.Levels = "group", 4, true, 0.1, true, 8, 3
		}),
		"prompted":           promptConfig(),
		"prompted from 1":    func() Config { c := promptConfig(); c.TransformerFrom = 1; return c }(),
		"adm":                admConfig(),
		"adm default mult":   adm(func(c *Config) { c.ChannelMult, c.AttentionLevels, c.Classes = nil, []int64{0, 2}, 0 }),
		"adm one level":      adm(func(c *Config) { c.Levels, c.ChannelMult, c.AttentionLevels, c.Blocks = 1, []int64{3}, nil, 1 }),
		"adm 4-channel, odd": adm(func(c *Config) { c.Channels, c.HeadChannels = 4, 3 }),
	} {
		on(t, func() {
			u, err := New(cfg, torch.CPU)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			defer u.Free()
			if got, want := cfg.Params(), u.NumParams(); got != want {
				t.Errorf("%s: Params() = %d, the network has %d", name, got, want)
			}
		})
	}
}

// A network too big to build (a checkpoint's or a --set's unet.width:
// 4096 grew to 5.5 GB and ended in libtorch's allocation error) is
// refused by Validate and New before any tensor is made, naming the keys
// and the figures, in both architectures, and so is one whose label or
// prompt embeddings alone are too big.
func TestSizeIsBoundedBeforeBuilding(t *testing.T) {
	for _, c := range []struct {
		name string
		cfg  Config
		want []string
	}{
		{"book width 4096", func() Config { c := *Defaults(); c.Width = 4096; return c }(), []string{"width", "levels", "parameters", "more than the 268435456"}},
		{"book width 1024 levels 4", func() Config { c := Reference(); c.Width, c.Levels = 1024, 4; return c }(), []string{"width", "parameters"}},
		{"adm width 4096", func() Config { c := admConfig(); c.Width, c.Groups = 4096, 32; return c }(), []string{"width", "channel_mult", "blocks", "parameters"}},
		{"adm multipliers", func() Config { c := admConfig(); c.Width, c.ChannelMult = 256, []int64{1, 64, 64}; return c }(), []string{"channel_mult", "parameters"}},
		{"labels", func() Config { c := Reference(); c.Classes, c.EmbDim = 1<<16, 1<<14; return c }(), []string{"emb_dim", "classes", "parameters"}},
	} {
		err := c.cfg.Validate()
		if err == nil {
			t.Errorf("%s: Validate accepts %d parameters", c.name, c.cfg.Params())
		}
		for _, w := range c.want {
			if err != nil && !strings.Contains(err.Error(), w) {
				t.Errorf("%s: %v, want it to name %q", c.name, err, w)
			}
		}
		on(t, func() {
			live, start := torch.LiveTensors(), time.Now()
			u, err := New(c.cfg, torch.CPU)
			if err == nil {
				u.Free()
				t.Errorf("%s: built", c.name)
			}
			if torch.LiveTensors() != live || time.Since(start) > time.Second {
				t.Errorf("%s: refused after making tensors (%d live, %s)", c.name, torch.LiveTensors()-live, time.Since(start))
			}
		})
	}
	// The shipped sizes pass.
	for _, cfg := range []Config{*Defaults(), Reference(), admConfig(), promptConfig()} {
		if err := cfg.Validate(); err != nil {
			t.Errorf("%+v: %v", cfg, err)
		}
	}
}

// A training batch's activations are estimated from the config, growing
// with the batch, the width and the image's pixels.
func TestActivationBytes(t *testing.T) {
	for _, cfg := range []Config{Reference(), admConfig()} {
		a := cfg.ActivationBytes(128, 28, 28)
		if a < 128*28*28*cfg.Width*4 {
			t.Errorf("%s: %d bytes for 128 images of 28x28, less than one feature map", cfg.Arch, a)
		}
		if b := cfg.ActivationBytes(256, 28, 28); b < 2*a-2*a/100 {
			t.Errorf("%s: twice the batch, %d bytes against %d", cfg.Arch, b, a)
		}
		if b := cfg.ActivationBytes(128, 56, 56); b < 3*a {
			t.Errorf("%s: four times the pixels, %d bytes against %d", cfg.Arch, b, a)
		}
	}
}
