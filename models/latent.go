package models

import (
	"fmt"
	"path/filepath"
	"reflect"
	"slices"

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
// trained on images of g's shape; a model about to be loaded from the
// checkpoint from is built from the architecture that checkpoint records,
// its weights to come from there.
func latentAutoencoder(d *diffusion.Config, g Geometry, dev torch.Device, from *Checkpoint) (*autoencoder.AutoencoderKL, error) {
	if from != nil {
		if from.FirstStage == nil {
			return nil, fmt.Errorf("diffusion: codec latent, but the checkpoint records no autoencoder architecture (%s)", MetaFirstStage)
		}
		if was := diffusionSection(from.Config); was != nil && d.Autoencoder != "" && filepath.Clean(d.Autoencoder) != filepath.Clean(was.Autoencoder) {
			return nil, fmt.Errorf("diffusion.autoencoder: %s trained on the latents of %s, whose autoencoder it holds; the config now names %s, which a resume cannot use: leave diffusion.autoencoder as it was, or start a new run", from.Path, was.Autoencoder, d.Autoencoder)
		}
		if d.AutoencoderConfig != nil && !reflect.DeepEqual(*d.AutoencoderConfig, *from.FirstStage) {
			return nil, fmt.Errorf("diffusion.autoencoder_config: the config says %+v, but %s holds %+v; leave it out (the checkpoints record the autoencoder's architecture)", *d.AutoencoderConfig, from.Path, *from.FirstStage)
		}
		return autoencoder.New(*from.FirstStage, int64(g.C), int64(g.H), int64(g.W), dev)
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
	if cfg := ae.Cfg; d.AutoencoderConfig != nil && !reflect.DeepEqual(*d.AutoencoderConfig, cfg) {
		Free(m)
		return nil, fmt.Errorf("diffusion.autoencoder_config: the config says %+v, but %s is %+v; leave it out (the checkpoints record the autoencoder's architecture)", *d.AutoencoderConfig, ck.Path, cfg)
	}
	return ae.AutoencoderKL, nil
}

// promptVocabulary is a prompted model's vocabulary: the empty word, the
// data's class names as words, the style words. It checks what a config
// gives of it (earlier versions recorded the vocabulary and the style
// thresholds there): a vocabulary must be the data's, thresholds a row of
// four ordered numbers per class.
func promptVocabulary(d *diffusion.Config, g Geometry) ([]string, error) {
	names := g.ClassNames
	if len(names) != g.Classes {
		names = make([]string, g.Classes)
		for i := range names {
			names[i] = fmt.Sprint(i)
		}
	}
	words := prompt.Vocabulary(names)
	if err := prompt.CheckVocabulary(words, g.Classes); err != nil {
		return nil, fmt.Errorf("the data's class names as prompt words: %w", err)
	}
	if d.Vocabulary != nil && !slices.Equal(d.Vocabulary, words) {
		return nil, fmt.Errorf("diffusion.vocabulary: %.200q does not name the data's classes %v in order (want %.200q); leave it out, it follows from the data", d.Vocabulary, names, words)
	}
	if d.StyleThresholds != nil {
		if err := prompt.CheckThresholds(d.StyleThresholds, g.Classes); err != nil {
			return nil, fmt.Errorf("diffusion.style_thresholds: %w", err)
		}
	}
	return words, nil
}
