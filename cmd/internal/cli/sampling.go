package cli

import (
	"slices"
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
}

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
