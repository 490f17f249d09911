package diffusion

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"

	"kakusan/torch"
)

// Sampling is how a diffusion model draws images: the one declaration of
// every sampling setting. Each field's tags say where it is set: yaml, its
// key in a config's diffusion: section (the training grids' sampling and
// a sampling job's default); flag, the bin/sample and bin/eval flag that
// overrides it (Over); help, the flag's help. A job records each setting
// under its flag's name with underscores (Record). Adding a setting is a
// field here and its use.
//
// Enumerated settings are typed values that parse themselves (an unknown
// name is an error where the text is read: a config line, a flag), so
// their uses switch on the values; Validate checks them again for values
// a program set.
type Sampling struct {
	Sampler          string          `yaml:"sampler" flag:"sampler" help:"the sampler: ddim, ddpm, dpm++2m, euler or heun"`
	Steps            int             `yaml:"sample_steps" flag:"steps" help:"sampler steps, for every sampler but ddpm"`
	Eta              float64         `yaml:"eta" flag:"eta" help:"DDIM's η: 0 is deterministic, 1 DDPM's variance"`
	Spacing          Spacing         `yaml:"spacing" flag:"spacing" help:"timestep spacing: leading, trailing, linspace or karras"`
	Guidance         float64         `yaml:"guidance" flag:"guidance" help:"classifier-free guidance γ; 1 = none"`
	Precision        torch.Precision `yaml:"sample_precision" flag:"precision" help:"how the network computes: fp32, tf32 (CUDA), bf16 or auto; the sampler's own arithmetic stays float32"`
	ClipX0           Clip            `yaml:"clip_x0" flag:"clip-x0" help:"limit each step's x̂₀ to the data's range: none, clip or dynamic"`
	ThresholdRatio   float64         `yaml:"threshold_ratio" flag:"threshold-ratio" help:"the quantile of dynamic thresholding (clip_x0 dynamic)"`
	GuidanceRescale  float64         `yaml:"guidance_rescale" flag:"guidance-rescale" help:"φ of Lin et al.'s guidance rescale, 0-1; 0 = none"`
	GuidanceInterval Interval        `yaml:"guidance_interval" flag:"guidance-interval" help:"guide only at noise levels σ in (LO, HI], as [lo, hi] in a config and LO,HI as a flag; empty or all = every step"`
	// Prompt is style words (package prompt) added to every image's class
	// word, for a model conditioned on prompts: a sampling job's, not a
	// config's.
	Prompt string `yaml:"-" flag:"prompt" help:"for a model conditioned on prompts: style words for every image, e.g. \"bold slanted\" (thin/bold, upright/slanted); in bin/sample a class word (\"bold seven\") also sets every image's class"`
	// Strength and Resample shape image-to-image and inpainting (Batch.Init,
	// Batch.Mask): a job's settings, not a config's; 0 is each one's
	// default (ForEdit).
	Strength float64 `yaml:"-" flag:"strength" help:"image-to-image and inpainting (--init): how far towards noise the image goes before the sampler draws it back, in (0, 1]; 1 starts from noise, 0.5 runs the last half of the steps; default 0.8, 1 with --mask"`
	Resample int     `yaml:"-" flag:"resample" help:"inpainting (--mask): RePaint's resampling, each step run this many times with the image re-noised between (1-20; default 1, none)"`
}

// The defaults of the edit settings (Sampling.ForEdit).
const (
	DefaultStrength        = 0.8 // image-to-image: SDEdit's and diffusers' usual
	DefaultInpaintStrength = 1.0 // inpainting: the painted region starts from noise
	MaxResample            = 20
)

// ForEdit is s with the edit settings' defaults filled in for an
// image-to-image run (masked: inpainting): Strength DefaultStrength (or
// DefaultInpaintStrength), Resample 1.
func (s Sampling) ForEdit(masked bool) Sampling {
	if s.Strength == 0 {
		s.Strength = DefaultStrength
		if masked {
			s.Strength = DefaultInpaintStrength
		}
	}
	if s.Resample == 0 {
		s.Resample = 1
	}
	return s
}

// SamplingField is one setting of Sampling as its tags declare it.
type SamplingField struct {
	Key   string // its key in a config's diffusion: section; "" when a config does not set it
	Flag  string // its bin/sample and bin/eval flag
	Help  string
	index int
}

// Record is the name a job's record gives the setting: its flag's, with
// underscores.
func (f SamplingField) Record() string { return strings.ReplaceAll(f.Flag, "-", "_") }

// Ptr is a pointer to the setting in s: *string, *int, *float64, or a type
// that parses its own text (encoding.TextUnmarshaler).
func (f SamplingField) Ptr(s *Sampling) any {
	return reflect.ValueOf(s).Elem().Field(f.index).Addr().Interface()
}

// samplingFields reads Sampling's tags once.
var samplingFields = func() []SamplingField {
	t := reflect.TypeOf(Sampling{})
	out := make([]SamplingField, t.NumField())
	for i := range out {
		f := t.Field(i)
		key, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if key == "-" {
			key = ""
		}
		out[i] = SamplingField{Key: key, Flag: f.Tag.Get("flag"), Help: f.Tag.Get("help"), index: i}
	}
	return out
}()

// SamplingFields are Sampling's settings in declaration order.
func SamplingFields() []SamplingField { return slices.Clone(samplingFields) }

// SamplingFlags are the names of the flags that set a Sampling.
func SamplingFlags() []string {
	out := make([]string, len(samplingFields))
	for i, f := range samplingFields {
		out[i] = f.Flag
	}
	return out
}

// Over returns s with each setting whose flag is not in given taken from
// def, a checkpoint config's sampling: a sampling job samples as the
// model's config says unless told otherwise.
func (s Sampling) Over(def Sampling, given []string) Sampling {
	v, d := reflect.ValueOf(&s).Elem(), reflect.ValueOf(def)
	for _, f := range samplingFields {
		if !slices.Contains(given, f.Flag) {
			v.Field(f.index).Set(d.Field(f.index))
		}
	}
	return s
}

// Record is s as a sampling job's job.json and bin/eval's report record it,
// for a model of T timesteps: every setting under its Record name, but for
// those that do nothing here (the threshold ratio without dynamic
// thresholding, guidance at every step, no prompt, no edit); ddpm's steps
// are T.
func (s Sampling) Record(T int) map[string]any {
	v := reflect.ValueOf(s)
	r := map[string]any{}
	for _, f := range samplingFields {
		r[f.Record()] = v.Field(f.index).Interface()
	}
	if s.Sampler == "ddpm" {
		r["steps"] = T
	}
	if s.ClipX0 != Dynamic {
		delete(r, "threshold_ratio")
	}
	if s.GuidanceInterval.Everywhere() {
		delete(r, "guidance_interval")
	} else {
		r["guidance_interval"] = []float64{s.GuidanceInterval.Lo, s.GuidanceInterval.Hi}
	}
	if s.Prompt == "" {
		delete(r, "prompt")
	}
	if s.Strength == 0 {
		delete(r, "strength")
	}
	if s.Resample == 0 {
		delete(r, "resample")
	}
	return r
}

// Options are the sampler's options.
func (s Sampling) Options() Options { return Options{Steps: s.Steps, Eta: s.Eta, Spacing: s.Spacing} }

// Validate checks a way of sampling for a model of T timesteps; each line
// names its config key.
func (s Sampling) Validate(T int) error {
	var errs []error
	if err := CheckSampler(s.Sampler, T, s.Options()); err != nil {
		errs = append(errs, fmt.Errorf("sampler: %w", err))
	}
	if !(s.Guidance >= 0 && s.Guidance <= 50) {
		errs = append(errs, fmt.Errorf("guidance: must be in [0, 50], got %g", s.Guidance))
	}
	if _, err := torch.ParsePrecision(string(s.Precision)); err != nil {
		errs = append(errs, fmt.Errorf("sample_precision: %w", err))
	}
	if err := parseEnum(new(Clip), string(s.ClipX0), clipModes, "mode"); err != nil {
		errs = append(errs, fmt.Errorf("clip_x0: %w", err))
	}
	if s.ClipX0 == Dynamic && !(s.ThresholdRatio > 0 && s.ThresholdRatio <= 1) {
		errs = append(errs, fmt.Errorf("threshold_ratio: must be in (0, 1], got %g", s.ThresholdRatio))
	}
	if !(s.GuidanceRescale >= 0 && s.GuidanceRescale <= 1) {
		errs = append(errs, fmt.Errorf("guidance_rescale: must be in [0, 1], got %g", s.GuidanceRescale))
	}
	if err := s.GuidanceInterval.Validate(); err != nil {
		errs = append(errs, err)
	}
	if !(s.Strength >= 0 && s.Strength <= 1) {
		errs = append(errs, fmt.Errorf("strength: must be in (0, 1] (0: the default), got %g", s.Strength))
	}
	if s.Resample < 0 || s.Resample > MaxResample {
		errs = append(errs, fmt.Errorf("resample: must be 1-%d (0: the default, 1), got %d", MaxResample, s.Resample))
	}
	return errors.Join(errs...)
}

// Spacing is how a sampler lays out the timesteps it visits
// (Schedule.Timesteps).
type Spacing string

// The spacings; "" is Leading.
const (
	Leading  Spacing = "leading"
	Trailing Spacing = "trailing"
	Linspace Spacing = "linspace"
	Karras   Spacing = "karras"
)

var spacings = []Spacing{Karras, Leading, Linspace, Trailing}

// UnmarshalText parses a spacing's name ("" is leading).
func (s *Spacing) UnmarshalText(b []byte) error {
	return parseEnum(s, string(b), spacings, "spacing")
}

// Clip is how a sampler's x̂₀ is limited at each step (Schedule.Clipped).
type Clip string

// The clipping modes; "" is None.
const (
	None    Clip = "none"
	Clamp   Clip = "clip"
	Dynamic Clip = "dynamic"
)

var clipModes = []Clip{None, Clamp, Dynamic}

// UnmarshalText parses a clipping mode's name ("" is none).
func (c *Clip) UnmarshalText(b []byte) error {
	return parseEnum(c, string(b), clipModes, "mode")
}

// parseEnum sets *dst to s, one of known or "" (each type's default);
// otherwise it is an error "unknown noun s (known: ...)". Where it is read,
// a config's loader adds the line and key, a flag's parser the flag.
func parseEnum[T ~string](dst *T, s string, known []T, noun string) error {
	if s != "" && !slices.Contains(known, T(s)) {
		names := make([]string, len(known))
		for i, k := range known {
			names[i] = string(k)
		}
		return fmt.Errorf("unknown %s %q (known: %s)", noun, s, strings.Join(names, ", "))
	}
	*dst = T(s)
	return nil
}

// Interval is the band of noise levels σ_t = √((1-ᾱ_t)/ᾱ_t) in (Lo, Hi]
// where guidance applies (Kynkäänniemi et al. 2024, "Applying guidance in a
// limited interval"): guidance at high noise narrows the samples' variety
// towards a few prototypes, and at low noise it no longer changes the
// class. The zero Interval means everywhere. A config writes it [lo, hi]
// (empty: everywhere), a flag LO,HI (all: everywhere).
type Interval struct{ Lo, Hi float64 }

// Everywhere reports whether iv is the zero Interval, guidance at every step.
func (iv Interval) Everywhere() bool { return iv == Interval{} }

// Validate checks 0 <= Lo < Hi < ∞.
func (iv Interval) Validate() error {
	if err := iv.check(); err != nil {
		return fmt.Errorf("guidance_interval: %w", err)
	}
	return nil
}

func (iv Interval) check() error {
	if !iv.Everywhere() && (!(iv.Lo >= 0 && iv.Hi > iv.Lo) || math.IsInf(iv.Hi, 0)) {
		return fmt.Errorf("want [lo, hi] with 0 <= lo < hi (noise levels σ), got [%g, %g]", iv.Lo, iv.Hi)
	}
	return nil
}

// interval makes the Interval of a list of noise levels: none is
// everywhere, two are [lo, hi].
func interval(v []float64) (Interval, error) {
	switch len(v) {
	case 0:
		return Interval{}, nil
	case 2:
		iv := Interval{v[0], v[1]}
		return iv, iv.check()
	}
	return Interval{}, fmt.Errorf("want two noise levels [lo, hi], got %d values", len(v))
}

// UnmarshalText parses "LO,HI", or "all" (and "") for everywhere.
func (iv *Interval) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "all" || s == "" {
		*iv = Interval{}
		return nil
	}
	lo, hi, ok := strings.Cut(s, ",")
	a, err1 := strconv.ParseFloat(strings.TrimSpace(lo), 64)
	b2, err2 := strconv.ParseFloat(strings.TrimSpace(hi), 64)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("want LO,HI or all, got %q", s)
	}
	v, err := interval([]float64{a, b2})
	if err == nil {
		*iv = v
	}
	return err
}

// String is the flag form: LO,HI, or "" for everywhere.
func (iv Interval) String() string {
	if iv.Everywhere() {
		return ""
	}
	return fmt.Sprintf("%g,%g", iv.Lo, iv.Hi)
}

// MarshalYAML writes [lo, hi], or [] for everywhere.
func (iv Interval) MarshalYAML() (any, error) {
	if iv.Everywhere() {
		return []float64{}, nil
	}
	return []float64{iv.Lo, iv.Hi}, nil
}

// UnmarshalYAML reads a config's [lo, hi] (or []); a problem is a
// yaml.TypeError naming the line, as the config's other errors do.
func (iv *Interval) UnmarshalYAML(n *yaml.Node) error {
	var v []float64
	if err := n.Decode(&v); err != nil {
		return err
	}
	parsed, err := interval(v)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*iv = parsed
	return nil
}
