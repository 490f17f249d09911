package models

import (
	"fmt"

	"kakusan/diffusion"
	"kakusan/models/autoencoder"
	"kakusan/models/prompt"
	"kakusan/torch"
)

// FirstStagePrefix names a latent diffusion model's frozen autoencoder
// inside its state dict, as Stable Diffusion's checkpoints name theirs:
// the U-Net's tensors load into the PyTorch U-Net once these are dropped,
// and these, prefix removed, into the PyTorch AutoencoderKL.
const FirstStagePrefix = "first_stage_model."

// latentAutoencoder is the frozen autoencoder of a latent diffusion model
// of the diffusion section d for data of geometry g. A fresh model reads it
// from its own checkpoint (d.Autoencoder), which must be an autoencoder
// trained on images of g's shape, and records its architecture in d; a
// model about to be loaded from the checkpoint from is built from the
// architecture d recorded, its weights to come from that checkpoint.
func latentAutoencoder(d *diffusion.Config, g Geometry, dev torch.Device, from *Checkpoint) (*autoencoder.AutoencoderKL, error) {
	if from != nil {
		if d.AutoencoderConfig == nil || d.LatentScale <= 0 {
			return nil, fmt.Errorf("diffusion: codec latent, but the checkpoint records no autoencoder_config or latent_scale")
		}
		return autoencoder.New(*d.AutoencoderConfig, int64(g.C), int64(g.H), int64(g.W), dev)
	}
	if d.Autoencoder == "" {
		return nil, fmt.Errorf("diffusion.autoencoder: codec latent needs the trained autoencoder's checkpoint or run folder")
	}
	m, ck, err := Load(d.Autoencoder, dev, true)
	if err != nil {
		return nil, fmt.Errorf("diffusion.autoencoder: %w", err)
	}
	ae, ok := m.(*aeModel)
	if !ok {
		Free(m)
		return nil, fmt.Errorf("diffusion.autoencoder: %s is a %s checkpoint; latent diffusion needs an autoencoder's (model: autoencoder)", ck.Path, ck.Config.Model)
	}
	if a := ck.Geometry; a.C != g.C || a.H != g.H || a.W != g.W {
		Free(m)
		return nil, fmt.Errorf("diffusion.autoencoder: %s was trained on %dx%dx%d images; the data has %dx%dx%d", ck.Path, a.C, a.H, a.W, g.C, g.H, g.W)
	}
	cfg := *Section[*autoencoder.Config](ck.Config, "autoencoder")
	d.AutoencoderConfig = &cfg
	return ae.AutoencoderKL, nil
}

// promptVocabulary sets a fresh prompted model's vocabulary from the
// data's class names, or checks the vocabulary and style thresholds a
// model about to be loaded from the checkpoint from recorded.
func promptVocabulary(d *diffusion.Config, g Geometry, from *Checkpoint) error {
	if from == nil {
		names := g.ClassNames
		if len(names) != g.Classes {
			names = make([]string, g.Classes)
			for i := range names {
				names[i] = fmt.Sprint(i)
			}
		}
		d.Vocabulary = prompt.Vocabulary(names)
		if err := prompt.CheckVocabulary(d.Vocabulary, g.Classes); err != nil {
			return fmt.Errorf("the data's class names as prompt words: %w", err)
		}
		return nil
	}
	if err := prompt.CheckVocabulary(d.Vocabulary, g.Classes); err != nil {
		return fmt.Errorf("diffusion.vocabulary: %w", err)
	}
	if err := prompt.CheckThresholds(d.StyleThresholds, g.Classes); err != nil {
		return fmt.Errorf("diffusion.style_thresholds: %w", err)
	}
	return nil
}
