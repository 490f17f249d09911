// Package vae holds the variational autoencoder and its two-level
// hierarchical variant (ladder steps 5 and 6), as MLPs over flattened
// images of any geometry. Parameter names follow the equivalent PyTorch modules, so
// checkpoints load into them with strict matching.
package vae

import (
	"errors"
	"fmt"

	"kakusan/models/nn"
	"kakusan/torch"
)

// Encoder maps x to the mean and log-variance of a diagonal Gaussian:
// h = relu(linear(x)), mu = linear_mu(h), logvar = linear_logvar(h).
type Encoder struct{ linear, mu, logvar *nn.Linear }

func newEncoder(m *nn.Module, name string, in, hidden, latent int64, dev torch.Device) *Encoder {
	return &Encoder{
		nn.NewLinear(m, name+".linear", in, hidden, dev),
		nn.NewLinear(m, name+".linear_mu", hidden, latent, dev),
		nn.NewLinear(m, name+".linear_logvar", hidden, latent, dev),
	}
}

// Forward returns mu and sigma = exp(logvar/2).
func (e *Encoder) Forward(x *torch.Tensor) (mu, sigma *torch.Tensor) {
	h := e.linear.Forward(x).Relu()
	return e.mu.Forward(h), e.logvar.Forward(h).MulScalar(0.5).Exp()
}

// Decoder maps z back: linear2(relu(linear1(z))), through a sigmoid when the
// output is pixels.
type Decoder struct {
	l1, l2  *nn.Linear
	sigmoid bool
}

func newDecoder(m *nn.Module, name string, latent, hidden, out int64, sigmoid bool, dev torch.Device) *Decoder {
	return &Decoder{nn.NewLinear(m, name+".linear1", latent, hidden, dev), nn.NewLinear(m, name+".linear2", hidden, out, dev), sigmoid}
}

// Forward decodes z.
func (d *Decoder) Forward(z *torch.Tensor) *torch.Tensor {
	y := d.l2.Forward(d.l1.Forward(z).Relu())
	if d.sigmoid {
		return y.Sigmoid()
	}
	return y
}

// reparameterize is mu + sigma*eps; eps is drawn when nil.
func reparameterize(mu, sigma, eps *torch.Tensor) *torch.Tensor {
	if eps == nil {
		eps = torch.RandnLike(sigma)
	}
	return mu.Add(sigma.Mul(eps))
}

// Config sizes a (hierarchical) VAE: the `vae:` or `hvae:` section of a
// config.
type Config struct {
	Hidden int `yaml:"hidden"` // the hidden layer's width (the encoder's and the decoder's)
	Latent int `yaml:"latent"` // latent dimensions (each level's, for the hierarchical VAE)
	// KLWeight multiplies Σ (σ² + (μ - c)² - 1 - log σ²) in the loss: 1 is
	// the book's loss (step07/step08: L1 + L2 (+ L3)); 0.5 makes that term
	// the KL divergence itself (with the summed squared error, the negative
	// ELBO of a decoder of variance ½).
	KLWeight float64 `yaml:"kl_weight"`
}

// Validate bounds the section, a line "key: problem" for each fault.
func (c *Config) Validate() error {
	var errs []error
	if c.Hidden < 1 || c.Hidden > 1<<16 {
		errs = append(errs, fmt.Errorf("hidden: must be between 1 and 65536, got %d", c.Hidden))
	}
	if c.Latent < 1 || c.Latent > 1<<12 {
		errs = append(errs, fmt.Errorf("latent: must be between 1 and 4096, got %d", c.Latent))
	}
	if !(c.KLWeight > 0 && c.KLWeight <= 100) {
		errs = append(errs, fmt.Errorf("kl_weight: must be in (0, 100], got %g", c.KLWeight))
	}
	return errors.Join(errs...)
}

// gaussKL is the KL term of the book's loss over every element,
// Σ (sigma² + (mu - center)² - 1 - log sigma²), which is twice
// Σ KL(N(mu, sigma²) || N(center, 1)); center nil means 0.
func gaussKL(mu, sigma, center *torch.Tensor) *torch.Tensor {
	d := mu
	if center != nil {
		d = mu.Sub(center)
	}
	s2 := sigma.Square()
	return s2.Add(d.Square()).SubScalar(1).Sub(s2.Log()).Sum()
}

// VAE is the variational autoencoder of ladder step 5.
type VAE struct {
	*nn.Module
	Encoder  *Encoder
	Decoder  *Decoder
	Latent   int64
	KLWeight float64 // the KL term's weight in Loss: 1 (the book's) unless set
}

// NewVAE builds in→hidden→latent and back (the reference: 784, 200, 20).
func NewVAE(in, hidden, latent int64, dev torch.Device) *VAE {
	m := nn.NewModule()
	return &VAE{m, newEncoder(m, "encoder", in, hidden, latent, dev), newDecoder(m, "decoder", latent, hidden, in, true, dev), latent, 1}
}

// Loss is the book's loss per image: the summed squared error of the
// reconstruction plus KLWeight·Σ (σ² + μ² - 1 - log σ²), divided by the
// batch size; KLWeight 0.5 makes the KL part the KL divergence itself. x is (B, 784) in [0, 1]; eps fixes the reparameterisation
// noise (nil draws it).
func (v *VAE) Loss(x, eps *torch.Tensor) *torch.Tensor {
	mu, sigma := v.Encoder.Forward(x)
	xhat := v.Decoder.Forward(reparameterize(mu, sigma, eps))
	rec := torch.MSELoss(xhat, x, torch.ReduceSum)
	return rec.Add(gaussKL(mu, sigma, nil).MulScalar(v.KLWeight)).DivScalar(float64(x.Size(0)))
}

// Sample decodes n draws from the prior.
func (v *VAE) Sample(n int64, dev torch.Device) *torch.Tensor {
	return v.Decoder.Forward(torch.Randn([]int64{n, v.Latent}, dev))
}

// Reconstruct encodes and decodes x through the posterior mean.
func (v *VAE) Reconstruct(x *torch.Tensor) *torch.Tensor {
	mu, _ := v.Encoder.Forward(x)
	return v.Decoder.Forward(mu)
}

// Interpolate decodes steps points on the line between the posterior means of a and b (each 1×784).
func (v *VAE) Interpolate(a, b *torch.Tensor, steps int64) *torch.Tensor {
	ma, _ := v.Encoder.Forward(a)
	mb, _ := v.Encoder.Forward(b)
	w := torch.Linspace(0, 1, steps, a.Device()).View(-1, 1)
	return v.Decoder.Forward(ma.Add(mb.Sub(ma).Mul(w)))
}

// HVAE is the two-level hierarchical VAE of ladder step 6:
// x → z1 → z2 on the way in, z2 → ẑ1 (the mean of p(z1|z2), unit variance)
// and z1 → x on the way out.
type HVAE struct {
	*nn.Module
	Encoder1, Encoder2 *Encoder
	Decoder1, Decoder2 *Decoder
	Latent             int64
	KLWeight           float64 // the KL terms' weight in Loss: 1 (the book's) unless set
}

// NewHVAE builds the reference shape: 784, hidden 100, latents 20 and 20.
func NewHVAE(in, hidden, latent int64, dev torch.Device) *HVAE {
	m := nn.NewModule()
	return &HVAE{
		Module:   m,
		Encoder1: newEncoder(m, "encoder1", in, hidden, latent, dev),
		Encoder2: newEncoder(m, "encoder2", latent, hidden, latent, dev),
		Decoder1: newDecoder(m, "decoder1", latent, hidden, in, true, dev),
		Decoder2: newDecoder(m, "decoder2", latent, hidden, latent, false, dev),
		Latent:   latent,
		KLWeight: 1,
	}
}

// Loss is the book's step08 loss L1 + L2 + L3: the reconstruction error
// plus KLWeight times the KL terms of q(z2|z1) against N(0, I) and of
// q(z1|x) against N(ẑ1, I) in gaussKL's form, divided by the batch size. eps1 and eps2 fix the noise (nil draws it).
func (h *HVAE) Loss(x, eps1, eps2 *torch.Tensor) *torch.Tensor {
	mu1, sigma1 := h.Encoder1.Forward(x)
	z1 := reparameterize(mu1, sigma1, eps1)
	mu2, sigma2 := h.Encoder2.Forward(z1)
	z2 := reparameterize(mu2, sigma2, eps2)
	z1hat := h.Decoder2.Forward(z2)
	xhat := h.Decoder1.Forward(z1)
	rec := torch.MSELoss(xhat, x, torch.ReduceSum)
	kl := gaussKL(mu2, sigma2, nil).Add(gaussKL(mu1, sigma1, z1hat))
	return rec.Add(kl.MulScalar(h.KLWeight)).DivScalar(float64(x.Size(0)))
}

// Sample draws z2 from the prior, z1 from N(ẑ1, I), and decodes.
func (h *HVAE) Sample(n int64, dev torch.Device) *torch.Tensor {
	z2 := torch.Randn([]int64{n, h.Latent}, dev)
	z1 := h.Decoder2.Forward(z2).Add(torch.Randn([]int64{n, h.Latent}, dev))
	return h.Decoder1.Forward(z1)
}

// Reconstruct encodes x to the mean of q(z1|x) and decodes.
func (h *HVAE) Reconstruct(x *torch.Tensor) *torch.Tensor {
	mu, _ := h.Encoder1.Forward(x)
	return h.Decoder1.Forward(mu)
}
