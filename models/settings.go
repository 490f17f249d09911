package models

import (
	"fmt"
	"slices"

	"kakusan/diffusion"
	"kakusan/models/prompt"
)

// CheckSettings refuses the sampling settings a job gives (given, by their
// flag names: diffusion.SamplingFields, and "labels") that do nothing for
// model m of entry e and config c: sampling settings for a model that does
// not diffuse, labels for an unconditional one, an edit's settings without
// its images (edit: an init image; masked: a mask with it). name renders a
// setting in messages: "--steps" on a command line, "steps" in a request.
// bin/sample and bin/serve check a job alike with it.
func CheckSettings(e Entry, m Model, c *Config, s diffusion.Sampling, given []string, edit, masked bool, name func(flag string) string) error {
	isDiffusion := e.Does(Diffuses)
	sampler := s.Sampler
	if !slices.Contains(given, "sampler") {
		sampler = GridSampling(c).Sampler
	}
	ddpm := sampler == "ddpm"
	switch {
	case edit && !isDiffusion:
		return fmt.Errorf("%s: image-to-image and inpainting are for diffusion models", name("init"))
	case masked && !edit:
		return fmt.Errorf("%s: inpainting needs the image too (%s)", name("mask"), name("init"))
	}
	for _, flag := range given {
		n := name(flag)
		switch {
		case flag == "labels" && e.ReconstructsOnly():
			return fmt.Errorf("%s: an autoencoder reconstructs the first n training images, with their own labels", n)
		case flag != "labels" && !isDiffusion:
			return fmt.Errorf("%s is for diffusion models; this one does not sample by diffusion", n)
		case (flag == "labels" || flag == "guidance") && !Conditional(m):
			return fmt.Errorf("%s: the model is unconditional", n)
		case ddpm && (flag == "steps" || flag == "eta" || flag == "spacing"):
			return fmt.Errorf("%s is for the step-skipping samplers (ddim, dpm++2m, euler, heun): ddpm visits every timestep with its own noise", n)
		case flag == "eta" && sampler != "ddim" && slices.Contains(diffusion.Samplers(), sampler):
			return fmt.Errorf("%s is for ddim: %s is deterministic", n, sampler)
		case flag == "strength" && !edit:
			return fmt.Errorf("%s is for image-to-image and inpainting (%s)", n, name("init"))
		case flag == "resample" && !masked:
			return fmt.Errorf("%s is for inpainting (%s with %s)", n, name("init"), name("mask"))
		}
	}
	return nil
}

// PromptClass splits a job's prompt for model m (of the given classes)
// into its class word's label (-1 for none) and its style words, which stay
// the sampling's prompt: "bold seven" draws sevens, bold. A model that
// takes no prompts returns the prompt as it is, for its CheckSampling to
// refuse.
func PromptClass(m Model, classes int, text string) (label int, style string, err error) {
	words := Vocabulary(m)
	if text == "" || words == nil {
		return -1, text, nil
	}
	p, err := prompt.Parse(words, classes, text)
	if err != nil {
		return -1, "", err
	}
	return p.Class, p.Words(), nil
}
