package diffusion

import (
	"math"

	"kakusan/torch"
)

// How a sampler's estimate of the clean image x̂₀ is kept within the data's
// range at every step (Sampling.ClipX0, a Clip):
//
//	none     the network's estimate as it is (the reference)
//	clip     clamped to the codec's range (DDPM's and diffusers' clip_sample)
//	dynamic  Imagen's dynamic thresholding (Saharia et al. 2022): with x̂₀
//	         mapped to [-1, 1] by the codec's range, s is the per-image
//	         p-quantile of |x̂₀| (p = threshold_ratio; the ⌈pN⌉-th smallest
//	         of its N values), at least 1; x̂₀ is clamped to [-s, s] and
//	         divided by s
//
// Every sampler sees the result as ε̂ = (x_t - √ᾱ_t x̂₀)/√(1-ᾱ_t), so each
// of them (DDPM's posterior mean, DDIM's and DPM-Solver++'s x̂₀, Euler's
// denoised image) steps from the limited estimate.

// Ranged is a codec whose space is bounded, so that x̂₀ can be limited to it.
type Ranged interface {
	Range() (lo, hi float64)
}

func (pixels) Range() (lo, hi float64)   { return 0, 1 }
func (centered) Range() (lo, hi float64) { return -1, 1 }

// Clipped limits the x̂₀ implied by p, a predictor of ε̂, to [lo, hi] as
// mode says (see Clip), and returns the ε̂ of the limited estimate.
// Modes none and "" return p itself.
func (s *Schedule) Clipped(p Predictor, mode Clip, ratio, lo, hi float64) Predictor {
	if mode == "" || mode == None {
		return p
	}
	mid, half := (lo+hi)/2, (hi-lo)/2
	return func(x *torch.Tensor, t int) *torch.Tensor {
		z := s.Convert(p(x, t), x, t, Eps, X0).SubScalar(mid).DivScalar(half)
		if mode == Dynamic {
			n := z.Size(0)
			flat := z.Abs().Reshape(n, -1)
			k := max(1, int64(math.Ceil(ratio*float64(flat.Size(1)))))
			shape := make([]int64, z.Dim())
			for i := range shape {
				shape[i] = 1
			}
			shape[0] = n
			q := flat.KthValue(k, 1, true).Clamp(1, math.Inf(1)).Reshape(shape...)
			z = z.Minimum(q).Maximum(q.Neg()).Div(q)
		} else {
			z = z.Clamp(-1, 1)
		}
		return s.Convert(z.MulScalar(half).AddScalar(mid), x, t, X0, Eps)
	}
}
