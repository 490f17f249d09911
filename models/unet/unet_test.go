package unet

import (
	"math"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"kakusan/torch"
	"kakusan/torch/torchtest"
)

var on = torchtest.Run

func TestPosEncodingClosedForm(t *testing.T) {
	on(t, func() {
		ts := []int64{1, 17, 999}
		got := PosEncoding(torch.FromSlice(ts, nil), 100).Float64s()
		for b, tv := range ts {
			for i := range 100 {
				arg := float64(tv) / math.Pow(10000, float64(i)/100)
				want := math.Cos(arg)
				if i%2 == 0 {
					want = math.Sin(arg)
				}
				if g := got[b*100+i]; math.Abs(g-want) > 2e-4 {
					t.Fatalf("t=%d i=%d: %v, want %v", tv, i, g, want)
				}
			}
		}
	})
}

// loadFixture builds a U-Net of cfg with the weights of a file made by
// scripts/make_unet_fixture.py, and returns it with the file's tensors
// (inputs and PyTorch's outputs).
func loadFixture(t *testing.T, file string, cfg Config) (*UNet, map[string]*torch.Tensor) {
	t.Helper()
	all, meta, err := torch.LoadFile("testdata/"+file, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	sd := map[string]*torch.Tensor{}
	for k, v := range all {
		if name, ok := strings.CutPrefix(k, "model."); ok {
			sd[name] = v
		}
	}
	u, err := New(cfg, torch.CPU)
	if err != nil {
		t.Fatal(err)
	}
	if err := u.Load(sd); err != nil {
		u.Free()
		t.Fatalf("%s (%s): %v", file, meta["config"], err)
	}
	return u, all
}

// fixture runs the Go U-Net on a file made by scripts/make_unet_fixture.py
// with the PyTorch module, and compares outputs.
func fixture(t *testing.T, file string, cfg Config) {
	on(t, func() {
		u, all := loadFixture(t, file, cfg)
		defer u.Free()
		first := "down2.convs.0.weight"
		if cfg.Arch == "adm" {
			first = "down.1.res.0.conv1.weight"
		}
		if w := u.StateDict()[first]; w.IsContiguousAs(torch.ChannelsLast) != cfg.ChannelsLast {
			t.Fatalf("channels_last %v, but the loaded weights are laid out otherwise", cfg.ChannelsLast)
		}
		x, ts, y, keep := all["input.x"], all["input.t"], all["input.y"], all["input.keep"]
		u.SetTraining(false)
		torch.NoGrad(func() {
			got := u.Forward(x, ts, y, keep)
			if !got.AllClose(all["output.eval"], 1e-4, 1e-5) {
				d := got.Sub(all["output.eval"]).Abs().Max().Item()
				t.Errorf("%s: eval output differs from PyTorch's by up to %g", file, d)
			}
			if want, ok := all["output.train"]; ok {
				u.SetTraining(true)
				if got := u.Forward(x, ts, y, keep); !got.AllClose(want, 1e-4, 1e-5) {
					t.Errorf("%s: train-mode output differs from PyTorch's", file)
				}
			}
		})
	})
}

func TestForwardMatchesPyTorchReference(t *testing.T) {
	cfg := Reference()
	cfg.Width = 8
	fixture(t, "unet_reference_w8.safetensors", cfg)
}

func TestForwardMatchesPyTorchWithEveryOption(t *testing.T) {
	fixture(t, "unet_options_w4.safetensors", Config{Channels: 1, Width: 4, Levels: 3, EmbDim: 100, Classes: 10,
		Norm: "group", Groups: 2, Act: "silu", Dropout: 0.1, Attention: true})
}

// Residual blocks: each block's 1×1 skip, in eval and train mode
// (BatchNorm), as PyTorch's twin computes them.
func TestForwardMatchesPyTorchWithResidualBlocks(t *testing.T) {
	cfg := Reference()
	cfg.Width, cfg.Residual = 4, true
	fixture(t, "unet_residual_w4.safetensors", cfg)
	on(t, func() {
		u, err := New(cfg, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Free()
		if s := u.StateDict()["up1.skip.weight"].Shape(); len(s) != 4 || s[0] != 4 || s[1] != 12 || s[2] != 1 {
			t.Errorf("up1.skip.weight %v, want 4×12×1×1", s)
		}
	})
}

// admConfig is the colour network's fixture (scripts/make_unet_fixture.py).
func admConfig() Config {
	return Config{Arch: "adm", Channels: 3, Width: 8, Levels: 3, ChannelMult: []int64{1, 2, 2}, Blocks: 2, AttentionLevels: []int64{1},
		HeadChannels: 8, EmbDim: 32, Classes: 10, Norm: "group", Groups: 4, Act: "silu", Dropout: 0.1}
}

// The adm architecture against its PyTorch twin: odd sides (10 -> 5 -> 3
// and back), two-head attention, FiLM, labels dropped for one image; in
// both memory layouts.
func TestADMMatchesPyTorch(t *testing.T) {
	cfg := admConfig()
	fixture(t, "unet_adm_w8.safetensors", cfg)
	cfg.ChannelsLast = true
	fixture(t, "unet_adm_w8.safetensors", cfg)
}

// A fresh adm network starts with every residual branch's last layer at
// zero, so it predicts 0 whatever its input.
func TestADMStartsAtZero(t *testing.T) {
	on(t, func() {
		u, err := New(admConfig(), torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Free()
		torch.NoGrad(func() {
			out := u.Forward(torch.Randn([]int64{2, 3, 8, 8}, torch.CPU), torch.FromSlice([]int64{1, 500}, nil), torch.FromSlice([]int64{1, 2}, nil), nil)
			if m := out.Abs().Max().Item(); m != 0 {
				t.Errorf("a fresh adm network's output reaches %g, want 0", m)
			}
		})
	})
}

// FLOPs counted by hand for the smallest network: width 4, one level of one
// block, emb 8, a 3×4×4 image (P = 16 pixels): time MLP 4·8+8·8; conv_in
// 4·3·9·P; each 4->4 block 2·(4·4·9·P) + 8·8; middle attention's qkv 12·4·P,
// proj 4·4·P and products 2·P·P·4; the up blocks (8->4) 4·8·9·P + 4·4·9·P +
// the 1×1 skip 4·8·P + 8·8; conv_out 3·4·9·P. A multiply-add is two FLOPs.
func TestADMFLOPs(t *testing.T) {
	on(t, func() {
		cfg := Config{Arch: "adm", Channels: 3, Width: 4, Levels: 1, Blocks: 1, HeadChannels: 4, EmbDim: 8, Norm: "group", Groups: 2, Act: "silu"}
		u, err := New(cfg, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Free()
		const p = 16
		block := 2*4*4*9*p + 64
		up := 4*8*9*p + 4*4*9*p + 4*8*p + 64
		want := 2 * (4*8 + 8*8 + 4*3*9*p + 3*block + 12*4*p + 4*4*p + 2*p*p*4 + 2*up + 3*4*9*p)
		if got := u.FLOPs(4, 4); got != int64(want) {
			t.Errorf("FLOPs(4, 4) = %d, want %d", got, want)
		}
		if got := u.FLOPs(5, 5); got <= int64(want) {
			t.Errorf("FLOPs(5, 5) = %d, no more than at 4×4", got)
		}
	})
}

// Configs adm cannot be built from are refused with the key at fault.
func TestADMValidate(t *testing.T) {
	for _, c := range []struct {
		edit func(*Config)
		want string
	}{
		{func(c *Config) { c.ChannelMult = []int64{1, 2} }, "channel_mult: one multiplier per level"},
		{func(c *Config) { c.Norm = "batch" }, "norm: adm normalises with group norm"},
		{func(c *Config) { c.Groups = 3 }, "groups: must divide every level's channels"},
		{func(c *Config) { c.AttentionLevels = []int64{3} }, "attention_levels: 3 is not a level"},
		{func(c *Config) { c.Blocks = 0 }, "blocks: must be between 1 and 8"},
		{func(c *Config) { c.ChannelMult = []int64{1, 0, 2} }, "channel_mult: level 1's multiplier"},
		{func(c *Config) { c.Arch = "dit" }, `arch: must be book or adm, got "dit"`},
	} {
		cfg := admConfig()
		c.edit(&cfg)
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("got %v, want an error with %q", err, c.want)
		}
	}
}

// promptConfig is the prompted fixture's network (scripts/make_unet_fixture.py).
func promptConfig() Config {
	return Config{Channels: 1, Width: 4, Levels: 3, EmbDim: 100, Classes: 10, Norm: "group", Groups: 2, Act: "silu",
		ContextDim: 8, Heads: 2, TransformerFrom: 0, Vocab: 15, Context: 3}
}

// Cross-attention to prompts (ladder step 9): token and position
// embeddings, a SpatialTransformer after every block, prompts dropped to
// the empty prompt where keep is 0, as the PyTorch twin computes them.
func TestForwardMatchesPyTorchWithPromptConditioning(t *testing.T) {
	fixture(t, "unet_prompt_w4.safetensors", promptConfig())
	c := promptConfig()
	c.ChannelsLast = true
	fixture(t, "unet_prompt_w4.safetensors", c)
	on(t, func() {
		u, err := New(promptConfig(), torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Free()
		sd := u.StateDict()
		if _, ok := sd["label_emb.weight"]; ok {
			t.Error("a prompted network has a label embedding too")
		}
		for _, name := range []string{"text.token_embedding.weight", "down1_transformer.transformer_blocks.0.attn2.to_k.weight", "bot1_transformer.proj_out.bias", "up3_transformer.transformer_blocks.0.ff.net.0.proj.weight"} {
			if _, ok := sd[name]; !ok {
				t.Errorf("no %s", name)
			}
		}
		// A new transformer starts as the identity (proj_out zero), and the
		// prompt then changes nothing: the output cannot depend on it yet.
		x, ts := torch.Randn([]int64{2, 1, 28, 28}), torch.FromSlice([]int64{10, 500}, nil)
		a := u.Forward(x, ts, torch.FromSlice([]int64{1, 11, 13, 2, 12, 14}, []int64{2, 3}), nil)
		b := u.Forward(x, ts, nil, nil)
		if !a.AllClose(b, 0, 0) {
			t.Error("a fresh network's output depends on the prompt: proj_out does not start at zero")
		}
	})
	bad := promptConfig()
	bad.Heads = 3
	if _, err := New(bad, torch.CPU); err == nil || !strings.Contains(err.Error(), "heads") {
		t.Errorf("3 heads over 4 channels: %v", err)
	}
}

// Channels-last changes the layout, not the values: the same fixtures.
func TestChannelsLastMatchesPyTorch(t *testing.T) {
	cfg := Reference()
	cfg.Width, cfg.ChannelsLast = 8, true
	fixture(t, "unet_reference_w8.safetensors", cfg)
	fixture(t, "unet_options_w4.safetensors", Config{Channels: 1, Width: 4, Levels: 3, EmbDim: 100, Classes: 10,
		Norm: "group", Groups: 2, Act: "silu", Dropout: 0.1, Attention: true, ChannelsLast: true})
}

// Under bf16 autocast the reference network's output stays within
// bfloat16's rounding of PyTorch's float32 output.
func TestBF16ForwardNearPyTorchFloat32(t *testing.T) {
	on(t, func() {
		cfg := Reference()
		cfg.Width, cfg.ChannelsLast = 8, true
		u, all := loadFixture(t, "unet_reference_w8.safetensors", cfg)
		defer u.Free()
		u.SetTraining(false)
		want := all["output.eval"]
		torch.NoGrad(func() {
			var got *torch.Tensor
			torch.BF16.Run(torch.CPU, func() { got = u.Forward(all["input.x"], all["input.t"], all["input.y"], all["input.keep"]) })
			if got.DType() != torch.BFloat16 {
				t.Fatalf("output %v, want bfloat16", got.DType())
			}
			rel := got.To(torch.Float32).Sub(want).Norm(2, false).Item() / want.Norm(2, false).Item()
			if !(rel < 0.03) {
				t.Errorf("bf16 output's relative error %.4f, want < 0.03", rel)
			}
		})
	})
}

func TestReferenceNamesAndSize(t *testing.T) {
	on(t, func() {
		u, err := New(Reference(), torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Free()
		sd := u.StateDict()
		for _, name := range []string{"down1.convs.0.weight", "down1.convs.1.running_mean", "down1.convs.1.num_batches_tracked",
			"down1.convs.3.weight", "down1.convs.4.bias", "down1.mlp.0.weight", "down1.mlp.2.bias", "down2.convs.0.weight",
			"bot1.convs.3.weight", "up2.convs.0.weight", "up1.mlp.2.weight", "out.weight", "out.bias", "label_emb.weight"} {
			if _, ok := sd[name]; !ok {
				var names []string
				for k := range sd {
					names = append(names, k)
				}
				sort.Strings(names)
				t.Fatalf("no %s among %v", name, names)
			}
		}
		if s := sd["up2.convs.0.weight"].Shape(); s[0] != 128 || s[1] != 384 {
			t.Errorf("up2 first conv %v, want 128×384×3×3", s)
		}
		if s := sd["label_emb.weight"].Shape(); s[0] != 10 || s[1] != 100 {
			t.Errorf("label_emb %v", s)
		}
		for _, bad := range []Config{{Channels: 1, Width: 0, Levels: 2, EmbDim: 100, Norm: "batch", Act: "relu"},
			{Channels: 1, Width: 8, Levels: 2, EmbDim: 99, Norm: "batch", Act: "relu"},
			{Channels: 1, Width: 8, Levels: 2, EmbDim: 100, Norm: "layer", Act: "relu"},
			{Channels: 1, Width: 8, Levels: 2, EmbDim: 100, Norm: "group", Groups: 3, Act: "relu"}} {
			if _, err := New(bad, torch.CPU); err == nil {
				t.Errorf("config %+v accepted", bad)
			}
		}
	})
}

// Reference is the book's conditional U-Net for MNIST: one channel, ten
// classes.
func Reference() Config {
	c := *Defaults()
	c.Channels, c.Classes = 1, 10
	return c
}

// The other direction: the Go network's weights (perturbed, so that no
// branch is zero) load into the PyTorch twin with strict matching and give
// the Go output.
func TestADMLoadsInPyTorch(t *testing.T) {
	py := "/usr/bin/python3"
	if err := exec.Command(py, "-c", "import torch, numpy").Run(); err != nil {
		t.Skip("Debian's python3-torch is not installed (scripts/setup.sh installs it)")
	}
	dir := t.TempDir()
	on(t, func() {
		u, err := New(admConfig(), torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer u.Free()
		u.SetTraining(false)
		torch.ManualSeed(4)
		torch.NoGrad(func() {
			for _, p := range u.Params() {
				p.T.AddInPlace(torch.RandnLike(p.T), 0.05)
			}
		})
		x, ts := torch.Randn([]int64{3, 3, 12, 12}, torch.CPU), torch.FromSlice([]int64{3, 300, 999}, nil)
		y, keep := torch.FromSlice([]int64{0, 8, 4}, nil), torch.FromSlice([]float32{1, 1, 0}, nil)
		tensors := map[string]*torch.Tensor{"input.x": x, "input.t": ts, "input.y": y, "input.keep": keep}
		for k, v := range u.StateDict() {
			tensors["model."+k] = v
		}
		if err := torch.SaveFile(filepath.Join(dir, "go.safetensors"), tensors, nil); err != nil {
			t.Fatal(err)
		}
		script := `import sys; sys.path.insert(0, '../../scripts')
import torch
from pt_models import ADMUNet, load_safetensors, save_safetensors
d = load_safetensors(sys.argv[1])[0]
m = ADMUNet(channels=3, width=8, channel_mult=(1, 2, 2), blocks=2, attention_levels=(1,), head_channels=8, emb=32, classes=10, groups=4, dropout=0.1)
m.load_state_dict({k[6:]: v for k, v in d.items() if k.startswith('model.')}, strict=True)
m.eval()
with torch.no_grad():
    save_safetensors(sys.argv[2], {'y': m(d['input.x'], d['input.t'], d['input.y'], d['input.keep'])})
`
		if out, err := exec.Command(py, "-c", script, filepath.Join(dir, "go.safetensors"), filepath.Join(dir, "pt.safetensors")).CombinedOutput(); err != nil {
			t.Fatalf("PyTorch: %v\n%s", err, out)
		}
		theirs, _, err := torch.LoadFile(filepath.Join(dir, "pt.safetensors"), torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		torch.NoGrad(func() {
			got := u.Forward(x, ts, y, keep)
			if got.Abs().Max().Item() < 1e-3 {
				t.Fatal("the perturbed network's output is still zero")
			}
			if !got.AllClose(theirs["y"], 1e-4, 1e-5) {
				t.Errorf("PyTorch's output from the Go weights differs by up to %g", got.Sub(theirs["y"]).Abs().Max().Item())
			}
		})
	})
}
