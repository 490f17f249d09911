package diffusion

import (
	"kakusan/torch"
)

// Net is a denoising network: x_t (B, C, H, W), timesteps (B, int64),
// labels (B, int64, or nil) and a keep mask (B, 1 = use the label, 0 = drop
// it; nil keeps every label). Its output is its Prediction.
type Net func(x, t, y, keep *torch.Tensor) *torch.Tensor

// Predictor gives a prediction at x_t for the whole batch at timestep t:
// the network's raw output, or ε̂ once through AsEps.
type Predictor func(x *torch.Tensor, t int) *torch.Tensor

// Conditional runs net in a single pass, with the labels y (nil for an
// unconditional model) and every label kept.
func Conditional(net Net, y *torch.Tensor) Predictor {
	return func(x *torch.Tensor, t int) *torch.Tensor {
		ts := torch.Full([]int64{x.Size(0)}, float64(t), torch.Int64, x.Device())
		return net(x, ts, y, nil)
	}
}

// Guided is classifier-free guidance on the raw outputs:
// o = o_u + γ (o_c - o_u), the conditional and unconditional passes in one
// batched forward. γ = 1 (or nil labels, an unconditional model) takes a
// single pass. For ε, v and x_0 outputs alike this is guidance on ε
// (up to rounding): the conversion to ε is affine in the output with the
// same x_t for both passes, and the weights 1-γ and γ sum to 1.
//
// rescale φ in [0, 1] is Lin et al.'s guidance rescale (2023, eq. 15-16,
// diffusers' guidance_rescale): the guided output scaled to the
// conditional output's standard deviation (per image), mixed in with
// weight φ, which undoes the over-exposure large γ causes. 0 is plain
// guidance.
func Guided(net Net, y *torch.Tensor, gamma, rescale float64) Predictor {
	if y == nil || gamma == 1 {
		return Conditional(net, y)
	}
	return func(x *torch.Tensor, t int) *torch.Tensor {
		n := x.Size(0)
		ts := torch.Full([]int64{n}, float64(t), torch.Int64, x.Device())
		ones := torch.Ones([]int64{n}, x.Device())
		both := net(torch.Cat([]*torch.Tensor{x, x}, 0), torch.Cat([]*torch.Tensor{ts, ts}, 0),
			torch.Cat([]*torch.Tensor{y, y}, 0), torch.Cat([]*torch.Tensor{ones, torch.ZerosLike(ones)}, 0))
		cond, uncond := both.Narrow(0, 0, n), both.Narrow(0, n, n)
		out := uncond.Add(cond.Sub(uncond).MulScalar(gamma))
		if rescale == 0 {
			return out
		}
		dims := make([]int64, 0, out.Dim()-1)
		for d := 1; d < out.Dim(); d++ {
			dims = append(dims, int64(d))
		}
		ratio := cond.Std(false, true, dims...).Div(out.Std(false, true, dims...))
		return out.Lerp(out.Mul(ratio), rescale)
	}
}

// GuidedIn is Guided at the timesteps whose σ_t lies in iv and the
// conditional prediction alone elsewhere, one network pass instead of two.
// Its Pieces say which is which: guidedPiece where it guides, 0 elsewhere,
// nil when it is one piece (guidance everywhere, or no guidance).
func (s *Schedule) GuidedIn(net Net, y *torch.Tensor, gamma, rescale float64, iv Interval) (Predictor, Pieces) {
	guided := Guided(net, y, gamma, rescale)
	if iv.Everywhere() || y == nil || gamma == 1 {
		return guided, nil
	}
	plain := Conditional(net, y)
	pieces := func(t int) int {
		if sigma := s.sigma(t); sigma > iv.Lo && sigma <= iv.Hi {
			return guidedPiece
		}
		return 0
	}
	return func(x *torch.Tensor, t int) *torch.Tensor {
		if pieces(t) == guidedPiece {
			return guided(x, t)
		}
		return plain(x, t)
	}, pieces
}

// guidedPiece is the piece GuidedIn guides at.
const guidedPiece = 1

// AsEps turns p's outputs, predictions of the given kind, into ε̂ (Convert).
func (s *Schedule) AsEps(p Predictor, kind Prediction) Predictor {
	if kind == Eps {
		return p
	}
	return func(x *torch.Tensor, t int) *torch.Tensor {
		return s.Convert(p(x, t), x, t, kind, Eps)
	}
}
