// Package classifier is the judge of sample quality: a small CNN trained to
// classify MNIST or Fashion-MNIST, whose hidden layer is the feature space
// the evaluation measures distances in (classifier-feature FID, precision
// and recall). Parameter names are those of the equivalent PyTorch module
// (conv1, conv2, fc1, fc2).
package classifier

import (
	"errors"
	"fmt"

	"kakusan/models/nn"
	"kakusan/torch"
)

// Config sizes the judge: the `classifier:` section of a config.
type Config struct {
	Hidden  int     `yaml:"hidden"`  // size of the feature layer
	Dropout float64 `yaml:"dropout"` // in training: p before the last layer, p/2 before the feature layer
}

// Validate bounds the section, a line "key: problem" for each fault.
func (c *Config) Validate() error {
	var errs []error
	if c.Hidden < 2 || c.Hidden > 1<<14 {
		errs = append(errs, fmt.Errorf("hidden: must be between 2 and 16384, got %d", c.Hidden))
	}
	if !(c.Dropout >= 0 && c.Dropout < 1) {
		errs = append(errs, fmt.Errorf("dropout: must be in [0, 1), got %g", c.Dropout))
	}
	return errors.Join(errs...)
}

// CNN is conv1 (C→32, 3×3) ReLU max-pool, conv2 (32→64, 3×3) ReLU
// max-pool, fc1 (64·⌊H/4⌋·⌊W/4⌋→hidden) ReLU: the features, fc2
// (hidden→classes). In training, dropout (p/2 before fc1, p before fc2)
// regularises it. On MNIST fc1 takes 64·7·7 = 3136 inputs.
type CNN struct {
	*nn.Module
	conv1, conv2 *nn.Conv2d
	fc1, fc2     *nn.Linear
	Hidden       int64
	Classes      int64
	Dropout      float64
}

// New builds the judge for images of shape (C, H, W) on dev.
func New(c Config, shape []int64, classes int64, dev torch.Device) (*CNN, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if len(shape) != 3 || shape[0] < 1 || shape[1] < 4 || shape[2] < 4 {
		return nil, fmt.Errorf("classifier: images of shape %v; want (C, H, W) with sides of at least 4", shape)
	}
	m := nn.NewModule()
	hidden := int64(c.Hidden)
	return &CNN{
		Module: m,
		conv1:  nn.NewConv2d(m, "conv1", shape[0], 32, 3, 1, dev),
		conv2:  nn.NewConv2d(m, "conv2", 32, 64, 3, 1, dev),
		fc1:    nn.NewLinear(m, "fc1", 64*(shape[1]/4)*(shape[2]/4), hidden, dev),
		fc2:    nn.NewLinear(m, "fc2", hidden, classes, dev),
		Hidden: hidden, Classes: classes, Dropout: c.Dropout,
	}, nil
}

// Features are the hidden layer's activations for images (B, C, H, W) in [0, 1].
func (c *CNN) Features(x *torch.Tensor) *torch.Tensor {
	h := torch.MaxPool2d(c.conv1.Forward(x).Relu(), 2, 0, 0)
	h = torch.MaxPool2d(c.conv2.Forward(h).Relu(), 2, 0, 0)
	h = torch.Dropout(h.Flatten(1, -1), c.Dropout/2, c.Training())
	return c.fc1.Forward(h).Relu()
}

// Logits are the class scores.
func (c *CNN) Logits(x *torch.Tensor) *torch.Tensor { return c.Head(c.Features(x)) }

// Head turns features into class scores.
func (c *CNN) Head(features *torch.Tensor) *torch.Tensor {
	return c.fc2.Forward(torch.Dropout(features, c.Dropout, c.Training()))
}
