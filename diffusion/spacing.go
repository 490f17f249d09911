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
//   - "leading" (the default, ""): k·⌊T/N⌋ + 1 for k = N-1..0, ending at 1.
//     These are the numbers diffusers lists with steps_offset 1, and the
//     timesteps it visits with steps_offset 0 (with steps_offset 1 it
//     visits each one timestep later, counting from 0). When N divides T
//     they are the old DDIMTimesteps, ⌊k·T/N⌋ + 1. It starts at
//     T-⌊T/N⌋+1, not at T.
//   - "trailing": round(T - k·T/N), diffusers' round(arange(T, 0, -T/N)) - 1
//     plus one, starting at T.
//   - "linspace": round(k·(T-1)/(N-1)) + 1 for k = N-1..0, diffusers'
//     round(linspace(0, T-1, N)) reversed plus one, from T down to 1. One
//     step is [T] (numpy's one-point linspace would give [1]).
func (s *Schedule) Timesteps(steps int, spacing string) ([]int, error) {
	return timesteps(s.T, steps, spacing)
}

func timesteps(T, steps int, spacing string) ([]int, error) {
	if err := checkSpacing(T, steps, spacing); err != nil {
		return nil, err
	}
	ts := make([]int, steps)
	switch spacing {
	case "", "leading":
		r := T / steps
		for i := range ts {
			ts[i] = (steps-1-i)*r + 1
		}
	case "trailing":
		r := float64(T) / float64(steps)
		for i := range ts {
			ts[i] = int(math.RoundToEven(float64(T) - float64(i)*r))
		}
	case "linspace":
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
func checkSpacing(T, steps int, spacing string) error {
	switch spacing {
	case "", "leading", "trailing", "linspace":
	default:
		return fmt.Errorf("unknown spacing %q (known: leading, linspace, trailing)", spacing)
	}
	if steps < 1 || steps > T {
		return fmt.Errorf("steps must be between 1 and %d, got %d", T, steps)
	}
	return nil
}
