package models

import (
	"fmt"
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
	if d.AutoencoderConfig != nil && !reflect.DeepEqual(*d.AutoencoderConfig, cfg) {
		Free(m)
		return nil, fmt.Errorf("diffusion.autoencoder_config: the config says %+v, but %s is %+v; leave it out (it is recorded from the checkpoint)", *d.AutoencoderConfig, ck.Path, cfg)
	}
	d.AutoencoderConfig = &cfg
	return ae.AutoencoderKL, nil
}

// promptVocabulary sets a fresh prompted model's vocabulary from the
// data's class names, or checks the vocabulary a model about to be loaded
// from the checkpoint from recorded; and checks the style thresholds
// wherever they come from (a checkpoint, a config, a resume).
func promptVocabulary(d *diffusion.Config, g Geometry, from *Checkpoint) error {
	names := g.ClassNames
	if len(names) != g.Classes {
		names = make([]string, g.Classes)
		for i := range names {
			names[i] = fmt.Sprint(i)
		}
	}
	words := prompt.Vocabulary(names)
	if err := prompt.CheckVocabulary(words, g.Classes); err != nil {
		return fmt.Errorf("the data's class names as prompt words: %w", err)
	}
	if from != nil {
		if err := prompt.CheckVocabulary(d.Vocabulary, g.Classes); err != nil {
			return fmt.Errorf("diffusion.vocabulary: %w", err)
		}
	}
	if d.Vocabulary != nil && !slices.Equal(d.Vocabulary, words) {
		return fmt.Errorf("diffusion.vocabulary: %.200q does not name the data's classes %v in order (want %.200q); leave it out, it is recorded from the data", d.Vocabulary, names, words)
	}
	d.Vocabulary = words
	if from == nil && d.StyleThresholds == nil {
		return nil // measured before training (diffusion.Model.Calibrate)
	}
	if err := prompt.CheckThresholds(d.StyleThresholds, g.Classes); err != nil {
		return fmt.Errorf("diffusion.style_thresholds: %w", err)
	}
	return nil
}

// Adopt gives c, the config a run resumes with, what the checkpoint ck it
// resumes from recorded when its run started (a latent model's autoencoder
// architecture and latent scale, a prompted model's vocabulary and style
// thresholds), so the run goes on with the model it trained; a config that
// sets another value is refused, naming the key.
func Adopt(c *Config, ck *Checkpoint) error {
	d, ok := c.Sections["diffusion"].(*diffusion.Config)
	old, ok2 := ck.Config.Sections["diffusion"].(*diffusion.Config)
	if !ok || !ok2 {
		return nil
	}
	conflict := func(key string, ours, theirs any) error {
		return fmt.Errorf("diffusion.%s: the config says %v, but %s was trained with %v; leave it out (or as measured) to resume", key, ours, ck.Path, theirs)
	}
	if old.LatentScale != 0 {
		if d.LatentScale != 0 && d.LatentScale != old.LatentScale {
			return conflict("latent_scale", d.LatentScale, old.LatentScale)
		}
		d.LatentScale = old.LatentScale
	}
	if old.AutoencoderConfig != nil {
		if d.AutoencoderConfig != nil && !reflect.DeepEqual(*d.AutoencoderConfig, *old.AutoencoderConfig) {
			return conflict("autoencoder_config", *d.AutoencoderConfig, *old.AutoencoderConfig)
		}
		a := *old.AutoencoderConfig
		d.AutoencoderConfig = &a
		d.Autoencoder = old.Autoencoder // the weights are the checkpoint's: so is their provenance
	}
	if old.Vocabulary != nil {
		if d.Vocabulary != nil && !slices.Equal(d.Vocabulary, old.Vocabulary) {
			return conflict("vocabulary", d.Vocabulary, old.Vocabulary)
		}
		d.Vocabulary = slices.Clone(old.Vocabulary)
	}
	if old.StyleThresholds != nil {
		if d.StyleThresholds != nil && !slices.EqualFunc(d.StyleThresholds, old.StyleThresholds, slices.Equal[[]float64]) {
			return conflict("style_thresholds", d.StyleThresholds, old.StyleThresholds)
		}
		d.StyleThresholds = old.StyleThresholds
	}
	return nil
}

// Recorded are the values c's model measured on its training data when its
// run started, flattened: the latent scale and the style thresholds (none
// for other models). A data-parallel run sends rank 0's to every rank
// (SetRecorded), so that every rank trains the model rank 0 records.
func Recorded(c *Config) []float64 {
	d, ok := c.Sections["diffusion"].(*diffusion.Config)
	if !ok {
		return nil
	}
	out := []float64{d.LatentScale}
	for _, r := range d.StyleThresholds {
		out = append(out, r...)
	}
	return out
}

// SetRecorded sets what Recorded returns from v, of the same length.
func SetRecorded(c *Config, v []float64) {
	d, ok := c.Sections["diffusion"].(*diffusion.Config)
	if !ok || len(v) == 0 {
		return
	}
	d.LatentScale, v = v[0], v[1:]
	for _, r := range d.StyleThresholds {
		v = v[copy(r, v):]
	}
}
