package diffusion

import (
	"fmt"
	"math"

	"kakusan/torch"
)

// Prediction is what the network is trained to output.
type Prediction string

const (
	Eps Prediction = "eps" // the noise ε
	V   Prediction = "v"   // v = √ᾱ_t ε - √(1-ᾱ_t) x_0
	X0  Prediction = "x0"  // the clean image x_0
)

var predictions = []Prediction{Eps, V, X0}

// UnmarshalText parses a prediction's name.
func (p *Prediction) UnmarshalText(b []byte) error {
	if len(b) == 0 {
		return fmt.Errorf("empty prediction (known: eps, v, x0)")
	}
	return parseEnum(p, string(b), predictions, "prediction")
}

func badPrediction(op string, p Prediction) {
	panic(&torch.Error{Op: op, Msg: fmt.Sprintf("unknown prediction %q (known: eps, v, x0)", p)})
}

// Convert turns out, a prediction of kind from at x_t and timestep t in
// 1..T, into one of kind to. With a = √ᾱ_t and b = √(1-ᾱ_t), so that
// x_t = a x_0 + b ε and v = a ε - b x_0:
//
//	ε   = (x_t - a x_0)/b = a v + b x_t
//	v   = (ε - b x_t)/a   = (a x_t - x_0)/b
//	x_0 = (x_t - b ε)/a   = a x_t - b v
//
// from == to returns out itself. An unknown kind panics with *torch.Error.
func (s *Schedule) Convert(out, x *torch.Tensor, t int, from, to Prediction) *torch.Tensor {
	ab := s.AlphaBar(t)
	a, b := math.Sqrt(ab), math.Sqrt(1-ab)
	for _, p := range []Prediction{from, to} {
		if p != Eps && p != V && p != X0 {
			badPrediction("diffusion.Convert", p)
		}
	}
	switch {
	case from == to:
		return out
	case from == V && to == Eps:
		return out.MulScalar(a).Add(x.MulScalar(b))
	case from == X0 && to == Eps:
		return x.Sub(out.MulScalar(a)).DivScalar(b)
	case from == Eps && to == V:
		return out.Sub(x.MulScalar(b)).DivScalar(a)
	case from == X0 && to == V:
		return x.MulScalar(a).Sub(out).DivScalar(b)
	case from == Eps && to == X0:
		return x.Sub(out.MulScalar(b)).DivScalar(a)
	default: // V to X0
		return x.MulScalar(a).Sub(out.MulScalar(b))
	}
}

// Target is what a network of the given kind is trained to output for the
// noise eps added to x0 at int64 timesteps t (B): ε, v (VTarget) or x_0.
func (s *Schedule) Target(kind Prediction, x0, t, eps *torch.Tensor) *torch.Tensor {
	switch kind {
	case Eps:
		return eps
	case V:
		return s.VTarget(x0, t, eps)
	case X0:
		return x0
	}
	badPrediction("diffusion.Target", kind)
	return nil
}
