// Package diffusion is denoising diffusion: its maths apart from any
// network (noise schedules, the forward process and training targets,
// conversions between ε, v and x_0 predictions, classifier-free guidance
// and its interval, x̂₀ clipping, timestep spacings, per-image noise, and
// the samplers behind one interface and registry: DDPM, DDIM,
// DPM-Solver++(2M), Euler and Heun), the sampling settings (Sampling, one
// declaration from which the config keys, flags and job records derive),
// the codecs between pixels and the model's space (pixels, centred
// pixels, an autoencoder's latents), and the model that puts a U-Net under
// all of it (Model). Timesteps run 1..T; ᾱ_0 = 1 is the clean image.
package diffusion

import (
	"fmt"
	"math"

	"kakusan/torch"
)

// MaxTimesteps bounds T, so that a configuration cannot make us allocate
// without limit.
const MaxTimesteps = 100_000

// Schedule is a diffusion noise schedule over timesteps 1..T, kept apart
// from the network as diffusers keeps its schedulers. Index t-1 of each
// slice belongs to timestep t. The slices must not change once the
// schedule is in use: the forward process keeps ᾱ on each device it meets
// (see Free).
type Schedule struct {
	T         int
	Betas     []float64 // β_t
	Alphas    []float64 // α_t = 1 - β_t
	AlphaBars []float64 // ᾱ_t = Π_{s≤t} α_s

	onDevice map[string]*torch.Tensor // ᾱ as kept float64 tensors, by device; touched only on the torch thread
}

// NewSchedule makes the schedule of the given kind: "linear" (β from start
// to end) or "cosine" (start and end unused).
func NewSchedule(kind string, T int, start, end float64) (*Schedule, error) {
	switch kind {
	case "linear":
		return Linear(T, start, end)
	case "cosine":
		return Cosine(T)
	}
	return nil, fmt.Errorf("unknown schedule %q (known: cosine, linear)", kind)
}

func checkT(T int) error {
	if T < 1 || T > MaxTimesteps {
		return fmt.Errorf("timesteps must be between 1 and %d, got %d", MaxTimesteps, T)
	}
	return nil
}

// Linear is the DDPM schedule: β rising linearly from start to end (the
// reference: 1e-4 to 0.02 over T = 1000).
func Linear(T int, start, end float64) (*Schedule, error) {
	if err := checkT(T); err != nil {
		return nil, err
	}
	if !(start > 0 && end >= start && end < 1) {
		return nil, fmt.Errorf("betas must satisfy 0 < beta_start <= beta_end < 1, got %g and %g", start, end)
	}
	b := make([]float64, T)
	for i := range b {
		if T == 1 {
			b[i] = start
		} else {
			b[i] = start + (end-start)*float64(i)/float64(T-1)
		}
	}
	return fromBetas(b), nil
}

// Cosine is Nichol and Dhariwal's schedule: ᾱ_t = f(t)/f(0) with
// f(t) = cos²((t/T + s)/(1 + s) · π/2), s = 0.008, β clipped at 0.999.
func Cosine(T int) (*Schedule, error) {
	if err := checkT(T); err != nil {
		return nil, err
	}
	const s = 0.008
	f := func(t float64) float64 { c := math.Cos((t/float64(T) + s) / (1 + s) * math.Pi / 2); return c * c }
	b := make([]float64, T)
	for i := range b {
		b[i] = math.Min(1-f(float64(i+1))/f(float64(i)), 0.999)
	}
	return fromBetas(b), nil
}

func fromBetas(b []float64) *Schedule {
	s := &Schedule{T: len(b), Betas: b}
	prod := 1.0
	for _, beta := range b {
		prod *= 1 - beta
		s.Alphas = append(s.Alphas, 1-beta)
		s.AlphaBars = append(s.AlphaBars, prod)
	}
	return s
}

// AlphaBar is ᾱ_t, with ᾱ_0 = 1.
func (s *Schedule) AlphaBar(t int) float64 {
	if t == 0 {
		return 1
	}
	return s.AlphaBars[t-1]
}

// PosteriorVariance is β̃_t = (1 - ᾱ_{t-1}) / (1 - ᾱ_t) · β_t, the variance
// of q(x_{t-1} | x_t, x_0).
func (s *Schedule) PosteriorVariance(t int) float64 {
	return (1 - s.AlphaBar(t-1)) / (1 - s.AlphaBar(t)) * s.Betas[t-1]
}

// PosteriorMeanCoefs are the c0, ct of the posterior mean c0·x_0 + ct·x_t.
func (s *Schedule) PosteriorMeanCoefs(t int) (c0, ct float64) {
	ab, abPrev := s.AlphaBar(t), s.AlphaBar(t-1)
	return math.Sqrt(abPrev) * s.Betas[t-1] / (1 - ab), math.Sqrt(s.Alphas[t-1]) * (1 - abPrev) / (1 - ab)
}

// TerminalAlphaBar bounds ᾱ_T after ZeroTerminalSNR: 2⁻²⁴ rather than 0,
// as diffusers' Euler scheduler keeps it, so that σ_T and the conversions
// from ε̂ stay finite.
const TerminalAlphaBar = 1.0 / (1 << 24)

// ZeroTerminalSNR rescales a schedule as Lin et al. (2023, Algorithm 1) do,
// so that the last timestep is pure noise, as sampling assumes it is: √ᾱ_t
// is shifted so that √ᾱ_T = 0 and scaled so that √ᾱ_1 keeps its value
// (then ᾱ_T is set to TerminalAlphaBar, or to half of ᾱ_{T-1} where that is
// smaller, so that ᾱ keeps decreasing: at T = 1000 ᾱ_{T-1} is about 4e-9,
// so ᾱ_T is half of it). Training and sampling then see the
// same x_T; the network must predict v or x_0, since ε at SNR 0 says nothing
// of the image.
func ZeroTerminalSNR(s *Schedule) *Schedule {
	T := s.T
	first, last := math.Sqrt(s.AlphaBars[0]), math.Sqrt(s.AlphaBars[T-1])
	b := make([]float64, T)
	prev := 1.0
	for i := range b {
		r := (math.Sqrt(s.AlphaBars[i]) - last) * first / (first - last)
		ab := r * r
		if i == T-1 {
			ab = min(TerminalAlphaBar, prev/2)
		}
		b[i] = 1 - ab/prev
		prev = ab
	}
	return fromBetas(b)
}
