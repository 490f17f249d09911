package diffusion

import (
	"errors"
	"fmt"

	"kakusan/models/autoencoder"
)

// Config is the `diffusion:` section of a config: the noise schedule, what
// the network predicts, the conditioning, the data codec and how training
// grids (and, by default, sampling jobs) sample.
type Config struct {
	Timesteps  int        `yaml:"timesteps"`  // T (reference 1000)
	Schedule   string     `yaml:"schedule"`   // linear (reference) or cosine
	BetaStart  float64    `yaml:"beta_start"` // linear schedule
	BetaEnd    float64    `yaml:"beta_end"`   // linear schedule
	Prediction Prediction `yaml:"prediction"` // eps (reference), v or x0
	Codec      string     `yaml:"codec"`      // how pixels map to the model's space: pixels (reference), centered or latent
	// Autoencoder is, for codec latent (ladder step 9), the trained
	// autoencoder whose latents the model works in: a checkpoint or run
	// folder, read when a fresh run starts. Frozen, it goes into every
	// checkpoint (first_stage_model.*, its architecture in the metadata),
	// so that a checkpoint samples and resumes without it.
	Autoencoder string `yaml:"autoencoder,omitempty"`
	// AutoencoderConfig is the autoencoder's architecture as earlier
	// versions recorded it here; given, it must be the autoencoder's.
	AutoencoderConfig *autoencoder.Config `yaml:"autoencoder_config,omitempty"`
	// LatentScale is what the latents are multiplied by: 0 (the default)
	// measures it when a fresh run starts, 1/std of the training images'
	// latents, as Stable Diffusion's 0.18215 was measured; the model holds
	// it (scale_factor). A value fixes it instead.
	LatentScale float64 `yaml:"latent_scale,omitempty"`
	Conditional bool    `yaml:"conditional"` // condition on the data's classes, with classifier-free guidance
	// Conditioning is how a conditional model takes its condition: label
	// (the reference: a label embedding added to the time embedding) or
	// prompt (ladder step 9: cross-attention to the tokens of a prompt of
	// the class word and style words, see package prompt).
	Conditioning string  `yaml:"conditioning"`
	WordDrop     float64 `yaml:"word_drop"` // prompt: the probability each style word is left out of a training prompt
	// Vocabulary is a prompted model's words as earlier versions recorded
	// them here; they follow from the data's class names, and given they
	// must be those.
	Vocabulary []string `yaml:"vocabulary,flow,omitempty"`
	// StyleThresholds are a prompted model's per-class tertiles of ink
	// mass and slant (package prompt), a row of four per class: empty (the
	// default) measures them on the training images when a fresh run
	// starts, and the model holds them (style_thresholds); given, they are
	// used as they are.
	StyleThresholds [][]float64 `yaml:"style_thresholds,flow,omitempty"`
	CondDrop        float64     `yaml:"cond_drop"`      // probability a label is dropped (to no label)
	CondDropMode    string      `yaml:"cond_drop_mode"` // sample: per image; batch: the whole batch at once

	ZeroTerminalSNR bool    `yaml:"zero_terminal_snr"` // rescale the schedule so that x_T is pure noise (needs prediction v or x0)
	MinSNRGamma     float64 `yaml:"min_snr_gamma"`     // weigh the loss by min(SNR, γ) (Hang et al.; 5 is theirs); 0 = plain MSE

	// Sampling is how the training grids sample, and sampling jobs by
	// default: its keys (sampler, sample_steps, eta, spacing, guidance,
	// sample_precision, clip_x0, threshold_ratio, guidance_rescale,
	// guidance_interval) are this section's.
	Sampling `yaml:",inline"`
}

// DefaultConfig is the reference: T = 1000, linear betas 1e-4 to 0.02, ε
// prediction on pixels in [0, 1], labels dropped with probability 0.1 per
// image, grids by DDIM in 50 steps with guidance 3.
func DefaultConfig() *Config {
	return &Config{Timesteps: 1000, Schedule: "linear", BetaStart: 1e-4, BetaEnd: 0.02, Prediction: Eps,
		Codec: "pixels", Conditional: true, Conditioning: "label", WordDrop: 0.5, CondDrop: 0.1, CondDropMode: "sample",
		Sampling: Sampling{Guidance: 3, Sampler: "ddim", Steps: 50, Spacing: Leading, ClipX0: None, ThresholdRatio: 0.995}}
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

// Validate checks the section, a line "key: problem" for each fault.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if _, err := c.NewSchedule(); err != nil {
		bad("schedule: %v", err)
	}
	if err := new(Prediction).UnmarshalText([]byte(c.Prediction)); err != nil {
		bad("prediction: %v", err)
	} else if c.Prediction == Eps && c.ZeroTerminalSNR {
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
	if c.CondDropMode != "sample" && c.CondDropMode != "batch" {
		bad("cond_drop_mode: must be sample or batch, got %q", c.CondDropMode)
	}
	if c.Timesteps >= 1 && c.Timesteps <= MaxTimesteps {
		if err := c.Sampling.Validate(c.Timesteps); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
