package cli

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"kakusan/diffusion"
)

// SamplingFlags registers the flags bin/sample and bin/eval share that set a
// diffusion model's way of sampling (all but guidance, which bin/eval takes
// as a list). Each defaults to the checkpoint config's value: see
// SamplingGiven and diffusion.Sampling.Over.
func SamplingFlags(fs *pflag.FlagSet, s *diffusion.Sampling) {
	fs.StringVar(&s.Sampler, "sampler", "", "diffusion: "+strings.Join(diffusion.Samplers(), " or ")+" (default: the checkpoint config's)")
	fs.IntVar(&s.Steps, "steps", 0, "diffusion: sampler steps, for every sampler but ddpm (default: the checkpoint config's sample_steps)")
	fs.Float64Var(&s.Eta, "eta", 0, "diffusion: DDIM η, 0 = deterministic (default: the checkpoint config's)")
	fs.StringVar(&s.Spacing, "spacing", "", "diffusion: timestep spacing: leading, trailing, linspace or karras (default: the checkpoint config's)")
	fs.StringVar(&s.Precision, "precision", "", "diffusion: how the network computes: fp32, tf32 (CUDA), bf16 or auto (default: the checkpoint config's sample_precision)")
	fs.StringVar(&s.ClipX0, "clip-x0", "", "diffusion: limit each step's x̂₀ to the data's range: none, clip or dynamic (default: the checkpoint config's clip_x0)")
	fs.Float64Var(&s.ThresholdRatio, "threshold-ratio", 0, "diffusion: the quantile of dynamic thresholding (default: the checkpoint config's threshold_ratio, 0.995)")
	fs.Float64Var(&s.GuidanceRescale, "guidance-rescale", 0, "diffusion: φ of guidance rescale, 0-1 (default: the checkpoint config's guidance_rescale)")
	fs.StringVar(&s.Prompt, "prompt", "", "diffusion conditioned on prompts: `words` for every image, e.g. \"bold slanted\" (thin/bold, upright/slanted); in bin/sample a class word (\"bold seven\") also sets every image's class")
	fs.Var((*intervalFlag)(&s.GuidanceInterval), "guidance-interval", "diffusion: LO,HI: guide only at noise levels σ in (LO, HI]; all = every step (default: the checkpoint config's guidance_interval)")
}

// intervalFlag is a diffusion.Interval as a flag: "LO,HI", or "all" for
// the zero Interval.
type intervalFlag diffusion.Interval

func (f *intervalFlag) String() string {
	if diffusion.Interval(*f).Everywhere() {
		return "" // all; empty keeps pflag from printing a default
	}
	return fmt.Sprintf("%g,%g", f.Lo, f.Hi)
}

func (f *intervalFlag) Set(v string) error {
	if v == "all" {
		*f = intervalFlag{}
		return nil
	}
	lo, hi, ok := strings.Cut(v, ",")
	if !ok {
		return fmt.Errorf("want LO,HI or all, got %q", v)
	}
	a, err1 := strconv.ParseFloat(strings.TrimSpace(lo), 64)
	b, err2 := strconv.ParseFloat(strings.TrimSpace(hi), 64)
	if err := errors.Join(err1, err2); err != nil {
		return fmt.Errorf("want LO,HI or all: %w", err)
	}
	iv := diffusion.Interval{Lo: a, Hi: b}
	if err := iv.Validate(); err != nil {
		return err
	}
	*f = intervalFlag(iv)
	return nil
}

func (f *intervalFlag) Type() string { return "interval" }

// SamplingGiven lists the flags of diffusion.SamplingFlags given on the
// command line.
func SamplingGiven(fs *pflag.FlagSet) []string {
	var given []string
	for _, name := range diffusion.SamplingFlags {
		if fs.Changed(name) {
			given = append(given, name)
		}
	}
	return slices.Clip(given)
}
