package diffusion

import (
	"fmt"
	"slices"
	"strings"

	"kakusan/models/autoencoder"
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
	"latent":   nil, // NewLatent: it needs an autoencoder
}

// CheckCodec validates a codec's name.
func CheckCodec(name string) error {
	if _, ok := codecs[name]; ok {
		return nil
	}
	known := make([]string, 0, len(codecs))
	for n := range codecs {
		known = append(known, n)
	}
	slices.Sort(known)
	return fmt.Errorf("unknown codec %q (known: %s)", name, strings.Join(known, ", "))
}

// NewCodec makes a codec of pixels by name (pixels or centered).
func NewCodec(name string) (Codec, error) {
	if err := CheckCodec(name); err != nil {
		return nil, err
	}
	if codecs[name] == nil {
		return nil, fmt.Errorf("codec %q is built from its model (NewLatent)", name)
	}
	return codecs[name](), nil
}

// pixels is the identity: the model works on pixels in [0, 1] (the book's).
type pixels struct{}

func (pixels) Encode(x *torch.Tensor) *torch.Tensor { return x }
func (pixels) Decode(z *torch.Tensor) *torch.Tensor { return z }

// centered maps pixels to [-1, 1], as DDPM and most diffusion models do.
type centered struct{}

func (centered) Encode(x *torch.Tensor) *torch.Tensor { return x.MulScalar(2).SubScalar(1) }
func (centered) Decode(z *torch.Tensor) *torch.Tensor { return z.AddScalar(1).DivScalar(2) }

// Latent is the codec of latent diffusion (Rombach et al. 2022): an image
// is the mean of its frozen autoencoder's q(z|x) times the latent scale,
// and a latent decodes through the autoencoder's decoder. The scale is the
// model's constant (NewModel), a scalar on the device, so that neither way
// reads anything back.
type Latent struct {
	AE    *autoencoder.AutoencoderKL
	scale *torch.Tensor
}

// NewLatent makes the latent codec of ae; NewModel gives it its scale.
func NewLatent(ae *autoencoder.AutoencoderKL) *Latent { return &Latent{AE: ae} }

// Encode is scale·mean(q(z|x)), without gradients (the autoencoder is
// frozen) and in float32 whatever the training precision, so the latents
// trained on are the ones the scale was measured on and sampling decodes.
func (l *Latent) Encode(x *torch.Tensor) (z *torch.Tensor) {
	torch.NoGrad(func() {
		torch.WithoutAutocast(x.Device().Type, func() {
			mean, _ := l.AE.Encode(x.To(torch.Float32))
			z = mean.Mul(l.scale)
		})
	})
	return z
}

// Decode is the decoder's image of z/scale, mapped to [0, 1], in float32.
func (l *Latent) Decode(z *torch.Tensor) (x *torch.Tensor) {
	torch.WithoutAutocast(z.Device().Type, func() {
		x = l.AE.Decode(z.To(torch.Float32).Div(l.scale)).AddScalar(1).DivScalar(2)
	})
	return x
}
