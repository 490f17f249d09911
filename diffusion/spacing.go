package diffusion

import (
	"fmt"
	"math"
)

// Timesteps are the steps timesteps a sampler visits, in descending order
// within 1..T, laid out by one of diffusers' spacings (diffusers counts its
// timestep t_d from 0: ours is t_d + 1; rounding is numpy's, half to even).
// With k = 0..N-1 for N = steps:
//
//   - Leading (the default, ""): k·⌊T/N⌋ + 1 for k = N-1..0, ending at 1.
//     These are the numbers diffusers lists with steps_offset 1, and the
//     timesteps it visits with steps_offset 0 (with steps_offset 1 it
//     visits each one timestep later, counting from 0). When N divides T
//     they are the old DDIMTimesteps, ⌊k·T/N⌋ + 1. It starts at
//     T-⌊T/N⌋+1, not at T.
//   - Trailing: round(T - k·T/N), diffusers' round(arange(T, 0, -T/N)) - 1
//     plus one, starting at T.
//   - Linspace: round(k·(T-1)/(N-1)) + 1 for k = N-1..0, diffusers'
//     round(linspace(0, T-1, N)) reversed plus one, from T down to 1. One
//     step is [T] (numpy's one-point linspace would give [1]).
//   - Karras: Karras et al.'s σ_i = (σ_max^{1/ρ} + i/(N-1)(σ_min^{1/ρ} -
//     σ_max^{1/ρ}))^ρ with ρ = 7 between the schedule's σ_T and σ_1
//     (σ_t = √((1-ᾱ_t)/ᾱ_t)), each mapped to the timestep nearest in log σ,
//     repeats dropped (so at most N): more steps at low noise.
func (s *Schedule) Timesteps(steps int, spacing Spacing) ([]int, error) {
	if spacing == Karras {
		if err := checkSpacing(s.T, steps, spacing); err != nil {
			return nil, err
		}
		return s.karras(steps, 7), nil
	}
	return timesteps(s.T, steps, spacing)
}

// karras is the Karras spacing with exponent rho.
func (s *Schedule) karras(steps int, rho float64) []int {
	hi, lo := math.Pow(s.sigma(s.T), 1/rho), math.Pow(s.sigma(1), 1/rho)
	var ts []int
	for i := range steps {
		f := 0.0
		if steps > 1 {
			f = float64(i) / float64(steps-1)
		}
		logSigma := rho * math.Log(hi+f*(lo-hi))
		// σ_t grows with t: find the nearest timestep in log σ.
		best, bestD := 1, math.Inf(1)
		for t := 1; t <= s.T; t++ {
			if d := math.Abs(math.Log(s.sigma(t)) - logSigma); d < bestD {
				best, bestD = t, d
			}
		}
		if len(ts) == 0 || ts[len(ts)-1] != best {
			ts = append(ts, best)
		}
	}
	return ts
}

func timesteps(T, steps int, spacing Spacing) ([]int, error) {
	if err := checkSpacing(T, steps, spacing); err != nil {
		return nil, err
	}
	ts := make([]int, steps)
	switch spacing {
	case "", Leading:
		r := T / steps
		for i := range ts {
			ts[i] = (steps-1-i)*r + 1
		}
	case Trailing:
		r := float64(T) / float64(steps)
		for i := range ts {
			ts[i] = int(math.RoundToEven(float64(T) - float64(i)*r))
		}
	case Linspace:
		if steps == 1 {
			ts[0] = T
			break
		}
		r := float64(T-1) / float64(steps-1)
		for i := range ts {
			k := steps - 1 - i
			ts[i] = int(math.RoundToEven(float64(k)*r)) + 1
		}
		ts[0] = T // numpy sets the end point exactly
	}
	return ts, nil
}

// checkSpacing validates steps and spacing for a schedule of T timesteps.
func checkSpacing(T, steps int, spacing Spacing) error {
	if err := parseEnum(new(Spacing), string(spacing), spacings, "spacing"); err != nil {
		return err
	}
	if steps < 1 || steps > T {
		return fmt.Errorf("steps must be between 1 and %d, got %d", T, steps)
	}
	return nil
}
