package diffusion

import (
	"errors"
	"fmt"
	"slices"

	"kakusan/models/autoencoder"
	"kakusan/torch"
)

// Config is the `diffusion:` section of a config: the noise schedule, what
// the network predicts, the conditioning, the data codec and how training
// grids (and, by default, sampling jobs) sample.
type Config struct {
	Timesteps  int     `yaml:"timesteps"`  // T (reference 1000)
	Schedule   string  `yaml:"schedule"`   // linear (reference) or cosine
	BetaStart  float64 `yaml:"beta_start"` // linear schedule
	BetaEnd    float64 `yaml:"beta_end"`   // linear schedule
	Prediction string  `yaml:"prediction"` // eps (reference), v or x0
	Codec      string  `yaml:"codec"`      // how pixels map to the model's space: pixels (reference), centered or latent
	// Codec latent (ladder step 9): the trained autoencoder whose latents
	// the model works in (a checkpoint or run folder), frozen; its
	// architecture, recorded here when training starts (the weights go
	// into every checkpoint as first_stage_model.*); and the scale the
	// latents are multiplied by, 0 until measured: 1/std of the training
	// images' latents, as Stable Diffusion's 0.18215 was measured.
	Autoencoder       string              `yaml:"autoencoder,omitempty"`
	AutoencoderConfig *autoencoder.Config `yaml:"autoencoder_config,omitempty"`
	LatentScale       float64             `yaml:"latent_scale,omitempty"`
	Conditional       bool                `yaml:"conditional"` // condition on the data's classes, with classifier-free guidance
	// Conditioning is how a conditional model takes its condition: label
	// (the reference: a label embedding added to the time embedding) or
	// prompt (ladder step 9: cross-attention to the tokens of a prompt of
	// the class word and style words, see package prompt). A prompted
	// model records its vocabulary and the per-class style thresholds
	// measured on the training images when training starts, and leaves
	// each style word out of a training prompt with probability word_drop.
	Conditioning    string      `yaml:"conditioning"`
	WordDrop        float64     `yaml:"word_drop"`
	Vocabulary      []string    `yaml:"vocabulary,flow,omitempty"`
	StyleThresholds [][]float64 `yaml:"style_thresholds,flow,omitempty"`
	CondDrop        float64     `yaml:"cond_drop"`        // probability a label is dropped (to no label)
	CondDropMode    string      `yaml:"cond_drop_mode"`   // sample: per image; batch: the whole batch at once
	Guidance        float64     `yaml:"guidance"`         // γ for sample grids (and bin/sample's default); 1 = none
	Sampler         string      `yaml:"sampler"`          // for sample grids (and bin/sample's default): see Samplers
	SampleSteps     int         `yaml:"sample_steps"`     // steps of the grid's sampler (ddim)
	Eta             float64     `yaml:"eta"`              // DDIM η: 0 deterministic
	Spacing         string      `yaml:"spacing"`          // timestep spacing: leading (reference), trailing, linspace or karras
	Precision       string      `yaml:"sample_precision"` // how sampling computes: fp32 (reference), tf32, bf16 or auto (torch.Precision)

	ZeroTerminalSNR bool    `yaml:"zero_terminal_snr"` // rescale the schedule so that x_T is pure noise (needs prediction v or x0)
	MinSNRGamma     float64 `yaml:"min_snr_gamma"`     // weigh the loss by min(SNR, γ) (Hang et al.; 5 is theirs); 0 = plain MSE
	ClipX0          string  `yaml:"clip_x0"`           // limit the sampler's x̂₀ to the codec's range: none (reference), clip or dynamic
	ThresholdRatio  float64 `yaml:"threshold_ratio"`   // dynamic thresholding's quantile p
	GuidanceRescale float64 `yaml:"guidance_rescale"`  // φ of Lin et al.'s guidance rescale; 0 = none
	// GuidanceInterval [lo, hi]: guide only where the noise level σ_t is in (lo, hi]; empty = every step
	GuidanceInterval []float64 `yaml:"guidance_interval"`
}

// DefaultConfig is the reference: T = 1000, linear betas 1e-4 to 0.02, ε
// prediction on pixels in [0, 1], labels dropped with probability 0.1 per
// image, grids by DDIM in 50 steps with guidance 3.
func DefaultConfig() *Config {
	return &Config{Timesteps: 1000, Schedule: "linear", BetaStart: 1e-4, BetaEnd: 0.02, Prediction: string(Eps),
		Codec: "pixels", Conditional: true, Conditioning: "label", WordDrop: 0.5, CondDrop: 0.1, CondDropMode: "sample", Guidance: 3, Sampler: "ddim",
		SampleSteps: 50, Spacing: "leading", ClipX0: "none", ThresholdRatio: 0.995}
}

// NewSchedule builds the configured noise schedule.
func (c *Config) NewSchedule() (*Schedule, error) {
	s, err := NewSchedule(c.Schedule, c.Timesteps, c.BetaStart, c.BetaEnd)
	if err != nil || !c.ZeroTerminalSNR {
		return s, err
	}
	if s.T < 2 {
		return nil, fmt.Errorf("zero_terminal_snr needs at least 2 timesteps")
	}
	return ZeroTerminalSNR(s), nil
}

// Sampling is how the configured grids sample.
func (c *Config) Sampling() Sampling {
	return Sampling{Sampler: c.Sampler, Steps: c.SampleSteps, Eta: c.Eta, Spacing: c.Spacing, Guidance: c.Guidance, Precision: c.Precision,
		ClipX0: c.ClipX0, ThresholdRatio: c.ThresholdRatio, GuidanceRescale: c.GuidanceRescale, GuidanceInterval: c.interval()}
}

// interval is guidance_interval as an Interval; Validate refuses a list
// that is not a pair.
func (c *Config) interval() Interval {
	if len(c.GuidanceInterval) != 2 {
		return Interval{}
	}
	return Interval{c.GuidanceInterval[0], c.GuidanceInterval[1]}
}

// Validate checks the section, a line "key: problem" for each fault.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, err := c.NewSchedule(); err != nil {
		bad("schedule: %v", err)
	}
	if p, err := ParsePrediction(c.Prediction); err != nil {
		bad("prediction: %v", err)
	} else if p == Eps && c.ZeroTerminalSNR {
		bad("zero_terminal_snr: needs prediction v or x0: at SNR 0 the noise is x_T itself, and an ε-prediction says nothing of the image")
	}
	if !(c.MinSNRGamma >= 0 && c.MinSNRGamma <= 1e6) {
		bad("min_snr_gamma: must be 0 (off) or positive, got %g", c.MinSNRGamma)
	}
	if err := CheckCodec(c.Codec); err != nil {
		bad("codec: %v", err)
	}
	latent := c.Codec == "latent"
	switch {
	case latent && c.Autoencoder == "" && c.AutoencoderConfig == nil:
		bad("autoencoder: codec latent needs the trained autoencoder's checkpoint or run folder (configs/mnist_autoencoder.yaml trains one)")
	case !latent && (c.Autoencoder != "" || c.AutoencoderConfig != nil || c.LatentScale != 0):
		bad("autoencoder, autoencoder_config and latent_scale are for codec latent, not %q", c.Codec)
	}
	if c.AutoencoderConfig != nil {
		if err := c.AutoencoderConfig.Validate(); err != nil {
			bad("autoencoder_config: %v", err)
		}
	}
	if !(c.LatentScale == 0 || (c.LatentScale >= 1e-6 && c.LatentScale <= 1e6)) {
		bad("latent_scale: must be 0 (measure it) or between 1e-6 and 1e6, got %g", c.LatentScale)
	}
	if latent && c.ClipX0 != "" && c.ClipX0 != "none" {
		bad("clip_x0: the latent codec has no bounded range to clip to; use none")
	}
	switch {
	case c.Conditioning != "label" && c.Conditioning != "prompt":
		bad("conditioning: must be label or prompt, got %q", c.Conditioning)
	case c.Conditioning == "prompt" && !c.Conditional:
		bad("conditioning: prompt needs conditional: true")
	case c.Conditioning != "prompt" && (c.Vocabulary != nil || c.StyleThresholds != nil):
		bad("vocabulary and style_thresholds are for conditioning: prompt")
	}
	if !(c.WordDrop >= 0 && c.WordDrop <= 1) {
		bad("word_drop: must be in [0, 1], got %g", c.WordDrop)
	}
	if len(c.Vocabulary) > 1<<16 || len(c.StyleThresholds) > 1<<16 {
		bad("vocabulary, style_thresholds: at most 65536 entries")
	}
	if !(c.CondDrop >= 0 && c.CondDrop <= 1) {
		bad("cond_drop: must be in [0, 1], got %g", c.CondDrop)
	}
	if n := len(c.GuidanceInterval); n != 0 && n != 2 {
		bad("guidance_interval: want two noise levels [lo, hi], got %d values", n)
	}
	if c.CondDropMode != "sample" && c.CondDropMode != "batch" {
		bad("cond_drop_mode: must be sample or batch, got %q", c.CondDropMode)
	}
	if c.Timesteps >= 1 && c.Timesteps <= MaxTimesteps {
		if err := c.Sampling().Validate(c.Timesteps); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Sampling is one way of sampling a model: a registered sampler, its
// options and the guidance scale.
type Sampling struct {
	Sampler  string
	Steps    int // for samplers that take a number of steps (ddim)
	Eta      float64
	Spacing  string
	Guidance float64 // γ; 1 = none
	// Precision is how the network's passes compute (torch.Precision);
	// the sampler's own arithmetic stays float32.
	Precision string
	// ClipX0 limits x̂₀ at each step: none, clip or dynamic (Clipped), the
	// latter at quantile ThresholdRatio.
	ClipX0         string
	ThresholdRatio float64
	// GuidanceRescale is φ of Lin et al.'s guidance rescale (Guided).
	GuidanceRescale float64
	// GuidanceInterval is where guidance applies (Schedule.GuidedIn).
	GuidanceInterval Interval
	// Prompt is style words (package prompt) added to every image's class
	// word, for a model conditioned on prompts; "" adds none.
	Prompt string
}

// SamplingFlags are the names of the command-line flags (bin/sample,
// bin/eval) that set a Sampling's fields.
var SamplingFlags = []string{"guidance", "sampler", "steps", "eta", "spacing", "precision", "clip-x0", "threshold-ratio", "guidance-rescale", "guidance-interval", "prompt"}

// Over returns s with each field whose flag (SamplingFlags) is not in
// given taken from def, a checkpoint config's sampling: a sampling job
// samples as the model's config says unless told otherwise.
func (s Sampling) Over(def Sampling, given []string) Sampling {
	from := map[string]func(){
		"guidance": func() { s.Guidance = def.Guidance }, "sampler": func() { s.Sampler = def.Sampler },
		"steps": func() { s.Steps = def.Steps }, "eta": func() { s.Eta = def.Eta }, "spacing": func() { s.Spacing = def.Spacing },
		"precision": func() { s.Precision = def.Precision }, "clip-x0": func() { s.ClipX0 = def.ClipX0 },
		"threshold-ratio": func() { s.ThresholdRatio = def.ThresholdRatio }, "guidance-rescale": func() { s.GuidanceRescale = def.GuidanceRescale },
		"guidance-interval": func() { s.GuidanceInterval = def.GuidanceInterval },
	}
	for name, use := range from {
		if !slices.Contains(given, name) {
			use()
		}
	}
	return s
}

// Record is s as sampling jobs' metadata and bin/eval's report record it
// (all but the guidance scale, which bin/eval records per result), for a
// model of T timesteps.
func (s Sampling) Record(T int) map[string]any {
	steps := s.Steps
	if s.Sampler == "ddpm" {
		steps = T
	}
	r := map[string]any{"sampler": s.Sampler, "steps": steps, "eta": s.Eta, "spacing": s.Spacing, "precision": s.Precision,
		"clip_x0": s.ClipX0, "guidance_rescale": s.GuidanceRescale}
	if s.ClipX0 == "dynamic" {
		r["threshold_ratio"] = s.ThresholdRatio
	}
	if !s.GuidanceInterval.Everywhere() {
		r["guidance_interval"] = []float64{s.GuidanceInterval.Lo, s.GuidanceInterval.Hi}
	}
	if s.Prompt != "" {
		r["prompt"] = s.Prompt
	}
	return r
}

// Options are the sampler's options.
func (s Sampling) Options() Options { return Options{Steps: s.Steps, Eta: s.Eta, Spacing: s.Spacing} }

// Validate checks a way of sampling for a model of T timesteps; each line
// names its config key (sampler, sample_steps, eta, spacing, guidance,
// sample_precision, clip_x0, threshold_ratio, guidance_rescale,
// guidance_interval).
func (s Sampling) Validate(T int) error {
	var errs []error
	if err := CheckSampler(s.Sampler, T, s.Options()); err != nil {
		errs = append(errs, fmt.Errorf("sampler: %w", err))
	}
	if !(s.Guidance >= 0 && s.Guidance <= 50) {
		errs = append(errs, fmt.Errorf("guidance: must be in [0, 50], got %g", s.Guidance))
	}
	if _, err := torch.ParsePrecision(s.Precision); err != nil {
		errs = append(errs, fmt.Errorf("sample_precision: %w", err))
	}
	if err := checkClip(s.ClipX0, s.ThresholdRatio); err != nil {
		errs = append(errs, err)
	}
	if !(s.GuidanceRescale >= 0 && s.GuidanceRescale <= 1) {
		errs = append(errs, fmt.Errorf("guidance_rescale: must be in [0, 1], got %g", s.GuidanceRescale))
	}
	if err := s.GuidanceInterval.Validate(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
