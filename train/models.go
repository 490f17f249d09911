package train

import (
	"fmt"

	"kakusan/models/classifier"
	"kakusan/models/nn"
	"kakusan/models/vae"
	"kakusan/torch"
)

// Model is what the neural training loop trains.
type Model interface {
	// Module holds the parameters and buffers under their PyTorch names.
	Module() *nn.Module
	// Loss is the scalar training loss of a batch: images (B, 1, H, W) in
	// [0, 1] and int64 labels (B).
	Loss(x, y *torch.Tensor) *torch.Tensor
}

// Sampler is a model that generates images.
type Sampler interface {
	Model
	// Sample generates n images (n, 1, H, W) in [0, 1].
	Sample(n int64) *torch.Tensor
}

// Scorer is a model whose test evaluation also counts correct answers.
type Scorer interface {
	Correct(x, y *torch.Tensor) int64
}

// NewModel builds the configured model on dev.
func NewModel(c *Config, dev torch.Device) (Model, error) {
	switch c.Model {
	case "vae":
		return &vaeModel{vae.NewVAE(28*28, int64(c.VAE.Hidden), int64(c.VAE.Latent), dev), dev}, nil
	case "hvae":
		return &hvaeModel{vae.NewHVAE(28*28, int64(c.HVAE.Hidden), int64(c.HVAE.Latent), dev), dev}, nil
	case "diffusion":
		return newDiffusion(c, dev)
	case "classifier":
		return &Judge{classifier.New(int64(c.Classifier.Hidden), 10, c.Classifier.Dropout, dev)}, nil
	}
	return nil, fmt.Errorf("model %q is not a neural model", c.Model)
}

type vaeModel struct {
	*vae.VAE
	dev torch.Device
}

func (m *vaeModel) Module() *nn.Module { return m.VAE.Module }
func (m *vaeModel) VAEModel() *vae.VAE { return m.VAE }
func (m *vaeModel) Loss(x, _ *torch.Tensor) *torch.Tensor {
	return m.VAE.Loss(x.Flatten(1, -1), nil)
}
func (m *vaeModel) Sample(n int64) *torch.Tensor { return m.VAE.Sample(n, m.dev).View(n, 1, 28, 28) }

type hvaeModel struct {
	*vae.HVAE
	dev torch.Device
}

func (m *hvaeModel) Module() *nn.Module   { return m.HVAE.Module }
func (m *hvaeModel) HVAEModel() *vae.HVAE { return m.HVAE }
func (m *hvaeModel) Loss(x, _ *torch.Tensor) *torch.Tensor {
	return m.HVAE.Loss(x.Flatten(1, -1), nil, nil)
}
func (m *hvaeModel) Sample(n int64) *torch.Tensor { return m.HVAE.Sample(n, m.dev).View(n, 1, 28, 28) }

// Judge is the classifier trained to judge samples.
type Judge struct{ *classifier.CNN }

func (j *Judge) Module() *nn.Module { return j.CNN.Module }
func (j *Judge) Loss(x, y *torch.Tensor) *torch.Tensor {
	return torch.CrossEntropyLoss(j.Logits(x), y, torch.ReduceMean, 0)
}
func (j *Judge) Correct(x, y *torch.Tensor) int64 {
	return int64(j.Logits(x).Argmax(1, false).Eq(y).To(torch.Int64).Sum().Item())
}
