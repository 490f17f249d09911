// Package classifier is the judge of sample quality: a small CNN trained to
// classify MNIST or Fashion-MNIST, whose hidden layer is the feature space
// the evaluation measures distances in (classifier-feature FID, precision
// and recall). Parameter names are those of the equivalent PyTorch module
// (conv1, conv2, fc1, fc2).
package classifier

import (
	"kakusan/models/nn"
	"kakusan/torch"
)

// CNN is conv1 (1→32, 3×3) ReLU max-pool, conv2 (32→64, 3×3) ReLU
// max-pool, fc1 (3136→hidden) ReLU: the features, fc2 (hidden→classes).
// In training, dropout (p/2 before fc1, p before fc2) regularises it.
type CNN struct {
	*nn.Module
	conv1, conv2 *nn.Conv2d
	fc1, fc2     *nn.Linear
	Hidden       int64
	Classes      int64
	Dropout      float64
}

// New builds the judge on dev.
func New(hidden, classes int64, dropout float64, dev torch.Device) *CNN {
	m := nn.NewModule()
	return &CNN{
		Module: m,
		conv1:  nn.NewConv2d(m, "conv1", 1, 32, 3, 1, dev),
		conv2:  nn.NewConv2d(m, "conv2", 32, 64, 3, 1, dev),
		fc1:    nn.NewLinear(m, "fc1", 64*7*7, hidden, dev),
		fc2:    nn.NewLinear(m, "fc2", hidden, classes, dev),
		Hidden: hidden, Classes: classes, Dropout: dropout,
	}
}

// Features are the hidden layer's activations for images (B, 1, 28, 28) in [0, 1].
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
