package diffusion

import (
	"fmt"
	"slices"
	"strings"

	"kakusan/torch"
)

// A Codec maps images to the space the diffusion model works in and back:
// the identity on pixels in [0, 1], pixels centred to [-1, 1], and (ladder
// step 9) an autoencoder's latents. Training encodes every batch; sampling
// decodes what the sampler ends with.
type Codec interface {
	// Encode maps images (B, C, H, W) in [0, 1] to the model's space.
	Encode(x *torch.Tensor) *torch.Tensor
	// Decode maps the model's space back to images in [0, 1] (not clamped).
	Decode(z *torch.Tensor) *torch.Tensor
}

var codecs = map[string]func() Codec{
	"pixels":   func() Codec { return pixels{} },
	"centered": func() Codec { return centered{} },
}

// NewCodec makes a codec by name.
func NewCodec(name string) (Codec, error) {
	if f, ok := codecs[name]; ok {
		return f(), nil
	}
	known := make([]string, 0, len(codecs))
	for n := range codecs {
		known = append(known, n)
	}
	slices.Sort(known)
	return nil, fmt.Errorf("unknown codec %q (known: %s)", name, strings.Join(known, ", "))
}

// pixels is the identity: the model works on pixels in [0, 1] (the book's).
type pixels struct{}

func (pixels) Encode(x *torch.Tensor) *torch.Tensor { return x }
func (pixels) Decode(z *torch.Tensor) *torch.Tensor { return z }

// centered maps pixels to [-1, 1], as DDPM and most diffusion models do.
type centered struct{}

func (centered) Encode(x *torch.Tensor) *torch.Tensor { return x.MulScalar(2).SubScalar(1) }
func (centered) Decode(z *torch.Tensor) *torch.Tensor { return z.AddScalar(1).DivScalar(2) }
