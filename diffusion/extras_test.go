package diffusion

import (
	"encoding"
	"math"
	"slices"
	"sort"
	"strings"
	"testing"

	"kakusan/torch"

	"go.yaml.in/yaml/v3"
)

// TestClippedAgainstHandComputation checks static clipping and dynamic
// thresholding on one step in float64: x̂₀ = (x_t - b ε̂)/a is limited by
// hand (the quantile by sorting) and ε̂ recomputed from it.
func TestClippedAgainstHandComputation(t *testing.T) {
	s := ref(t)
	const tt = 400
	ab := s.AlphaBar(tt)
	a, b := math.Sqrt(ab), math.Sqrt(1-ab)
	on(t, func() {
		x := torch.Randn([]int64{3, 1, 4, 5}, torch.Float64).MulScalar(1.5)
		e := torch.Randn([]int64{3, 1, 4, 5}, torch.Float64).MulScalar(2)
		xs, es := x.Float64s(), e.Float64s()
		pred := func(*torch.Tensor, int) *torch.Tensor { return e }
		per := len(xs) / 3
		for _, c := range []struct {
			mode       Clip
			ratio      float64
			lo, hi     float64
			wantChange bool
		}{{"clip", 0, 0, 1, true}, {"clip", 0, -1, 1, true}, {"dynamic", 0.9, -1, 1, true}, {"dynamic", 0.5, 0, 1, true}, {"none", 0, 0, 1, false}} {
			got := s.Clipped(pred, c.mode, c.ratio, c.lo, c.hi)(x, tt).Float64s()
			mid, half := (c.lo+c.hi)/2, (c.hi-c.lo)/2
			changed := false
			for img := range 3 {
				z := make([]float64, per)
				for i := range z {
					j := img*per + i
					z[i] = ((xs[j]-b*es[j])/a - mid) / half
				}
				lim := 1.0
				if c.mode == "dynamic" {
					abs := make([]float64, per)
					for i, v := range z {
						abs[i] = math.Abs(v)
					}
					sort.Float64s(abs)
					lim = max(1, abs[int(math.Ceil(c.ratio*float64(per)))-1])
				}
				for i, v := range z {
					j := img*per + i
					w := v
					switch c.mode {
					case "clip":
						w = max(-1, min(1, v))
					case "dynamic":
						w = max(-lim, min(lim, v)) / lim
					}
					want := (xs[j] - a*(w*half+mid)) / b
					if math.Abs(got[j]-want) > 1e-9*(1+math.Abs(want)) {
						t.Fatalf("%s %g [%g, %g]: ε̂[%d] = %.12g, want %.12g", c.mode, c.ratio, c.lo, c.hi, j, got[j], want)
					}
					changed = changed || math.Abs(got[j]-es[j]) > 1e-6
				}
			}
			if changed != c.wantChange {
				t.Errorf("%s: changed ε̂ = %v, want %v (the test's data must reach outside the range)", c.mode, changed, c.wantChange)
			}
		}
	})
}

// TestClippingKeepsSamplesInRange runs every deterministic sampler with a
// predictor whose x̂₀ lies far outside [0, 1]: with clip or dynamic
// thresholding the samples end inside the range, without either outside.
func TestClippingKeepsSamplesInRange(t *testing.T) {
	s := ref(t)
	on(t, func() {
		wild := func(x *torch.Tensor, tt int) *torch.Tensor { return x.MulScalar(0.3).Sin().MulScalar(-3) }
		noise := func(int) *torch.Tensor { return torch.Randn([]int64{2, 1, 6, 6}, torch.Float64) }
		for _, name := range []string{"ddim", "dpm++2m", "euler", "heun", "ddpm"} {
			for _, mode := range []Clip{None, Clamp, Dynamic} {
				o := Options{Steps: 10}
				if name == "ddpm" {
					o = Options{}
				}
				x := Run(newSampler(t, name, s, o), s.Clipped(wild, mode, 0.9, 0, 1), nil, noise)
				lo, hi := x.Min().Item(), x.Max().Item()
				inside := lo >= -1e-9 && hi <= 1+1e-9
				if name == "ddpm" && mode != "none" {
					// DDPM's last step adds no noise but moves to the
					// posterior mean at t = 1, which blends x_1 in.
					inside = inside || (lo > -0.05 && hi < 1.05)
				}
				if inside != (mode != "none") {
					t.Errorf("%s with %s: samples in [%.3g, %.3g]", name, mode, lo, hi)
				}
			}
		}
	})
}

// TestGuidanceRescaleByHand checks φ-rescaled guidance against Lin et al.'s
// formula computed in float64 per image, and that φ = 0 is plain guidance.
func TestGuidanceRescaleByHand(t *testing.T) {
	on(t, func() {
		x := torch.Randn([]int64{2, 1, 3, 3}, torch.Float64)
		y := torch.FromSlice([]int64{1, 7}, nil)
		const gamma, phi = 3.0, 0.7
		both := fakeNet(torch.Cat([]*torch.Tensor{x, x}, 0), torch.Full([]int64{4}, 10, torch.Int64),
			torch.Cat([]*torch.Tensor{y, y}, 0), torch.FromSlice([]float64{1, 1, 0, 0}, nil)).Float64s()
		got := Guided(fakeNet, y, gamma, phi)(x, 10).Float64s()
		plain := Guided(fakeNet, y, gamma, 0)(x, 10).Float64s()
		per := 9
		std := func(v []float64) float64 {
			m := 0.0
			for _, u := range v {
				m += u
			}
			m /= float64(len(v))
			ss := 0.0
			for _, u := range v {
				ss += (u - m) * (u - m)
			}
			return math.Sqrt(ss / float64(len(v)-1))
		}
		for img := range 2 {
			cond, uncond := both[img*per:(img+1)*per], both[(2+img)*per:(3+img)*per]
			cfg := make([]float64, per)
			for i := range cfg {
				cfg[i] = uncond[i] + gamma*(cond[i]-uncond[i])
			}
			r := std(cond) / std(cfg)
			for i := range cfg {
				want := phi*cfg[i]*r + (1-phi)*cfg[i]
				if g := got[img*per+i]; math.Abs(g-want) > 1e-12 {
					t.Fatalf("image %d [%d]: %.15g, want %.15g", img, i, g, want)
				}
				if math.Abs(plain[img*per+i]-cfg[i]) > 1e-12 {
					t.Fatalf("φ = 0 is not plain guidance")
				}
			}
			if math.Abs(r-1) < 1e-3 {
				t.Errorf("image %d: std ratio %g: the test does not exercise the rescale", img, r)
			}
		}
	})
}

// TestZeroTerminalSNR checks Lin et al.'s rescaled schedule: √ᾱ_1 kept,
// each √ᾱ_t shifted and scaled by the formula, ᾱ_T = 2⁻²⁴ or half ᾱ_{T-1}
// (at T = 1000 ᾱ_{T-1} is about 4e-9 already), and a schedule
// that still decreases.
func TestZeroTerminalSNR(t *testing.T) {
	for _, base := range []*Schedule{ref(t), must(Cosine(1000))} {
		z := ZeroTerminalSNR(base)
		first, last := math.Sqrt(base.AlphaBars[0]), math.Sqrt(base.AlphaBars[999])
		if math.Abs(z.AlphaBars[0]-base.AlphaBars[0]) > 1e-15 {
			t.Errorf("ᾱ_1 %g, want %g", z.AlphaBars[0], base.AlphaBars[0])
		}
		for _, tt := range []int{2, 100, 500, 999} {
			r := (math.Sqrt(base.AlphaBar(tt)) - last) * first / (first - last)
			if math.Abs(z.AlphaBar(tt)-r*r) > 1e-12 {
				t.Errorf("ᾱ_%d %g, want %g", tt, z.AlphaBar(tt), r*r)
			}
		}
		if want := min(TerminalAlphaBar, z.AlphaBar(999)/2); math.Abs(z.AlphaBar(1000)-want) > 1e-12*want {
			t.Errorf("ᾱ_T %g, want %g", z.AlphaBar(1000), want)
		}
		if !slices.IsSortedFunc(z.AlphaBars, func(a, b float64) int { return -cmpF(a, b) }) {
			t.Error("ᾱ does not decrease")
		}
		for i, b := range z.Betas {
			if !(b > 0 && b < 1) {
				t.Fatalf("β_%d = %g", i+1, b)
			}
		}
	}
	// Through the config: v-prediction only.
	c := DefaultConfig()
	c.ZeroTerminalSNR = true
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "zero_terminal_snr") {
		t.Errorf("zero_terminal_snr with eps: %v", err)
	}
	c.Prediction = "v"
	s, err := c.NewSchedule()
	if err != nil || c.Validate() != nil || s.AlphaBar(1000) > TerminalAlphaBar {
		t.Errorf("v with zero_terminal_snr: %v, %v, ᾱ_T %g", err, c.Validate(), s.AlphaBar(1000))
	}
}

func cmpF(a, b float64) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// TestMinSNRWeights checks min(SNR, γ)/SNR, /(SNR+1) and min(SNR, γ)
// against SNR_t = ᾱ_t/(1-ᾱ_t) in float64 at low, middle and high noise.
func TestMinSNRWeights(t *testing.T) {
	s := ref(t)
	ts := []int64{1, 50, 200, 999}
	on(t, func() {
		tt := torch.FromSlice(ts, nil)
		for _, kind := range []Prediction{Eps, V, X0} {
			got := s.LossWeight(kind, tt, 5).Float64s()
			for i, step := range ts {
				snr := s.AlphaBar(int(step)) / (1 - s.AlphaBar(int(step)))
				w := min(snr, 5)
				want := map[Prediction]float64{Eps: w / snr, V: w / (snr + 1), X0: w}[kind]
				if math.Abs(got[i]-want) > 1e-12*(1+want) {
					t.Errorf("%s t=%d: %g, want %g", kind, step, got[i], want)
				}
			}
		}
		// SNR_1 is about 1e4, SNR_999 about 4e-5: the ε weight clips the first only.
		if w := s.LossWeight(Eps, tt, 5).Float64s(); !(w[0] < 1e-3 && w[3] == 1) {
			t.Errorf("ε weights %v", w)
		}
	})
}

// TestSamplingExtrasValidate names each bad setting's key.
func TestSamplingExtrasValidate(t *testing.T) {
	good := DefaultConfig().Sampling
	for key, mod := range map[string]func(*Sampling){
		"clip_x0":          func(s *Sampling) { s.ClipX0 = "clamp" },
		"threshold_ratio":  func(s *Sampling) { s.ClipX0, s.ThresholdRatio = "dynamic", 1.5 },
		"guidance_rescale": func(s *Sampling) { s.GuidanceRescale = -0.1 },
	} {
		s := good
		mod(&s)
		if err := s.Validate(1000); err == nil || !strings.Contains(err.Error(), key) {
			t.Errorf("%s: %v", key, err)
		}
	}
	if err := good.Validate(1000); err != nil {
		t.Errorf("the defaults: %v", err)
	}
	c := DefaultConfig()
	c.MinSNRGamma = -1
	if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "min_snr_gamma") {
		t.Errorf("min_snr_gamma -1: %v", err)
	}
}

// TestGuidedInAnInterval guides exactly the timesteps whose σ_t lies in
// (lo, hi] and runs one conditional pass elsewhere.
func TestGuidedInAnInterval(t *testing.T) {
	on(t, func() {
		s := ref(t)
		x := torch.Randn([]int64{2, 1, 3, 3}, torch.Float64)
		y := torch.FromSlice([]int64{1, 7}, nil)
		var batches []int64
		counting := func(x, ts, y, keep *torch.Tensor) *torch.Tensor {
			batches = append(batches, x.Size(0))
			return fakeNet(x, ts, y, keep)
		}
		iv := Interval{Lo: 0.28, Hi: 5.42}
		p, pieces := s.GuidedIn(counting, y, 3, 0, iv)
		inside := 0
		for _, tt := range []int{1, 60, 82, 83, 300, 579, 580, 1000} { // σ crosses 0.28 between 82 and 83, 5.42 between 579 and 580
			sigma := math.Sqrt((1 - s.AlphaBars[tt-1]) / s.AlphaBars[tt-1])
			in := sigma > iv.Lo && sigma <= iv.Hi
			batches = batches[:0]
			got := p(x, tt)
			want := Conditional(fakeNet, y)(x, tt)
			if in {
				inside++
				want = Guided(fakeNet, y, 3, 0)(x, tt)
			}
			if !identical(got, want) {
				t.Errorf("t = %d (σ %.4g, inside %v): not the expected prediction", tt, sigma, in)
			}
			if (pieces(tt) == guidedPiece) != in {
				t.Errorf("t = %d (inside %v): GuidedIn's pieces say %d", tt, in, pieces(tt))
			}
			n := x.Size(0) // one conditional pass outside, both passes in one batch inside
			if in {
				n *= 2
			}
			if !slices.Equal(batches, []int64{n}) {
				t.Errorf("t = %d (inside %v): network batches %v, want one of %d", tt, in, batches, n)
			}
		}
		if inside != 3 {
			t.Fatalf("%d of the timesteps inside: the test does not straddle the bounds", inside)
		}
		batches = batches[:0]
		everywhere, _ := s.GuidedIn(counting, y, 3, 0, Interval{})
		if !identical(everywhere(x, 1000), Guided(fakeNet, y, 3, 0)(x, 1000)) || len(batches) != 1 || batches[0] != 4 {
			t.Errorf("the zero Interval does not guide everywhere")
		}
		// One piece, so no sampler restarts: guidance everywhere, none, or no labels.
		for name, c := range map[string]struct {
			y     *torch.Tensor
			gamma float64
			iv    Interval
		}{"everywhere": {y, 3, Interval{}}, "gamma 1": {y, 1, iv}, "unconditional": {nil, 3, iv}} {
			if _, p := s.GuidedIn(fakeNet, c.y, c.gamma, 0, c.iv); p != nil {
				t.Errorf("%s: GuidedIn's pieces are not nil", name)
			}
		}
	})
}

// TestGuidanceIntervalKey refuses guidance_interval lists that are not an
// ordered pair of finite, non-negative noise levels where the config is
// read, naming the line, and writes the interval back as the list.
func TestGuidanceIntervalKey(t *testing.T) {
	for _, iv := range []string{"[1]", "[1, 2, 3]", "[2, 1]", "[-1, 2]", "[0, .inf]", "[.nan, 1]", "[a, b]"} {
		c := DefaultConfig()
		err := yaml.Unmarshal([]byte("timesteps: 1000\nguidance_interval: "+iv+"\n"), c)
		if err == nil || !strings.Contains(err.Error(), "line 2") {
			t.Errorf("guidance_interval %s: %v", iv, err)
		}
	}
	c := DefaultConfig()
	if err := yaml.Unmarshal([]byte("guidance_interval: [0, 5.42]"), c); err != nil || c.GuidanceInterval != (Interval{0, 5.42}) {
		t.Errorf("guidance_interval [0, 5.42]: %+v %v", c.GuidanceInterval, err)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("guidance_interval [0, 5.42]: %v", err)
	}
	for iv, want := range map[Interval]string{{0, 5.42}: "guidance_interval: [0, 5.42]\n", {}: "guidance_interval: []\n"} {
		b, err := yaml.Marshal(struct {
			I Interval `yaml:"guidance_interval,flow"`
		}{iv})
		if err != nil || string(b) != want {
			t.Errorf("%+v marshals as %q (%v), want %q", iv, b, err, want)
		}
	}
	for _, bad := range []Interval{{2, 1}, {-1, 2}, {0, math.Inf(1)}, {math.NaN(), 1}} {
		if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "guidance_interval") {
			t.Errorf("%+v: %v", bad, err)
		}
	}
}

// TestSamplingTypesParse refuses unknown names of every enumerated setting
// where the text is read, naming the known names.
func TestSamplingTypesParse(t *testing.T) {
	for _, c := range []struct {
		v        encoding.TextUnmarshaler
		good     []string
		bad, key string
	}{
		{new(Spacing), []string{"", "leading", "trailing", "linspace", "karras"}, "even", `unknown spacing "even" (known: karras, leading, linspace, trailing)`},
		{new(Clip), []string{"", "none", "clip", "dynamic"}, "clamp", `unknown mode "clamp" (known: none, clip, dynamic)`},
		{new(Prediction), []string{"eps", "v", "x0"}, "epsilon", `unknown prediction "epsilon" (known: eps, v, x0)`},
		{new(Prediction), nil, "", "(known: eps, v, x0)"},
		{new(torch.Precision), []string{"", "fp32", "tf32", "bf16", "auto"}, "fp16", `unknown precision "fp16"`},
		{new(Interval), []string{"all", "", "0.28,5.42", " 1 , 2 "}, "2,1", "0 <= lo < hi"},
		{new(Interval), nil, "1;2", "want LO,HI or all"},
	} {
		for _, g := range c.good {
			if err := c.v.UnmarshalText([]byte(g)); err != nil {
				t.Errorf("%T %q: %v", c.v, g, err)
			}
		}
		if err := c.v.UnmarshalText([]byte(c.bad)); err == nil || !strings.Contains(err.Error(), c.key) {
			t.Errorf("%T %q: %v", c.v, c.bad, err)
		}
	}
}

// TestSamplingTable declares every setting once: a flag and help each, a
// config key for all but the prompt, and a record of every setting under
// its flag's name.
func TestSamplingTable(t *testing.T) {
	var keys []string
	for _, f := range SamplingFields() {
		if f.Flag == "" || f.Help == "" {
			t.Errorf("%+v: no flag or help", f)
		}
		for _, name := range Samplers() {
			if f.Flag == "sampler" && !strings.Contains(f.Help, name) {
				t.Errorf("the sampler's help does not name %s: %q", name, f.Help)
			}
		}
		if f.Key != "" {
			keys = append(keys, f.Key)
		}
	}
	want := []string{"sampler", "sample_steps", "eta", "spacing", "guidance", "sample_precision", "clip_x0", "threshold_ratio", "guidance_rescale", "guidance_interval"}
	if !slices.Equal(keys, want) {
		t.Errorf("config keys %v, want %v", keys, want)
	}
	s := Sampling{Sampler: "ddpm", Steps: 5, Spacing: Karras, Guidance: 2, ClipX0: Dynamic, ThresholdRatio: 0.9, GuidanceInterval: Interval{1, 2}, Prompt: "bold"}
	r := s.Record(1000)
	if r["steps"] != 1000 || r["threshold_ratio"] != 0.9 || r["prompt"] != "bold" || !slices.Equal(r["guidance_interval"].([]float64), []float64{1, 2}) || len(r) != 11 {
		t.Errorf("ddpm's record %v", r)
	}
	r = Sampling{Sampler: "ddim", Steps: 5, ClipX0: Clamp, ThresholdRatio: 0.9}.Record(1000)
	for _, gone := range []string{"threshold_ratio", "guidance_interval", "prompt"} {
		if _, ok := r[gone]; ok {
			t.Errorf("ddim's record has %s: %v", gone, r)
		}
	}
	if r["steps"] != 5 || r["clip_x0"] != Clamp || len(r) != 8 {
		t.Errorf("ddim's record %v", r)
	}
}

// TestSamplingOver takes every field from the config's sampling but the
// flags given, so bin/sample and bin/eval sample a checkpoint as its
// config says unless told otherwise.
func TestSamplingOver(t *testing.T) {
	def := Sampling{Sampler: "dpm++2m", Steps: 15, Eta: 0, Spacing: Karras, Guidance: 2, Precision: "auto", ClipX0: Dynamic, ThresholdRatio: 0.99, GuidanceRescale: 0.5, GuidanceInterval: Interval{0.3, 5}, Prompt: "thin"}
	flags := Sampling{Sampler: "ddim", Steps: 50, Eta: 0.3, Spacing: Leading, Guidance: 3, Precision: "fp32", ClipX0: Clamp, ThresholdRatio: 0.9, GuidanceRescale: 0.1, GuidanceInterval: Interval{1, 2}, Prompt: "bold"}
	if got := flags.Over(def, nil); got != def {
		t.Errorf("no flags: %+v, want the config's %+v", got, def)
	}
	if got := flags.Over(def, SamplingFlags()); got != flags {
		t.Errorf("every flag: %+v, want the flags' %+v", got, flags)
	}
	got := flags.Over(def, []string{"steps", "clip-x0"})
	want := def
	want.Steps, want.ClipX0 = 50, Clamp
	if got != want {
		t.Errorf("--steps --clip-x0: %+v, want %+v", got, want)
	}
}
