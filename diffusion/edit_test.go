package diffusion

import (
	"math"
	"testing"

	"kakusan/torch"
)

func TestStartVisit(t *testing.T) {
	ten := []int{901, 801, 701, 601, 501, 401, 301, 201, 101, 1}
	heun := []int{901, 501, 501, 1, 1} // three timesteps: predictor, corrector, predictor, ...
	for _, c := range []struct {
		ts       []int
		strength float64
		want     int
	}{
		{ten, 1, 0}, {ten, 0.5, 5}, {ten, 0.8, 2}, {ten, 0.01, 9}, {ten, 0.04, 9}, {ten, 0.06, 9}, {ten, 0.16, 8},
		{heun, 1, 0}, {heun, 2.0 / 3, 2}, {heun, 1.0 / 3, 4}, {heun, 0.01, 4},
	} {
		if got := startVisit(c.ts, c.strength); got != c.want {
			t.Errorf("startVisit(%v, %g) = %d, want %d", c.ts, c.strength, got, c.want)
		}
	}
}

// gaussEps is the exact ε-prediction for data x0 ~ N(mu, sd²) in every
// pixel: E[ε | x_t] = √(1-ᾱ)(x_t - √ᾱ mu)/(ᾱ sd² + 1 - ᾱ).
func gaussEps(s *Schedule, mu, sd float64) Predictor {
	return func(x *torch.Tensor, t int) *torch.Tensor {
		ab := s.AlphaBar(t)
		return x.SubScalar(math.Sqrt(ab) * mu).MulScalar(math.Sqrt(1-ab) / (ab*sd*sd + 1 - ab))
	}
}

// Image-to-image follows the probability-flow ODE from the init image
// noised to the start timestep: for Gaussian data that ODE is linear and
// its end has a closed form, x_0 = mu + sd·(x_t - √ᾱ mu)/√(ᾱ sd² + 1 - ᾱ),
// with x_t = √ᾱ z0 + √(1-ᾱ) ε, ε the run's starting noise. DPM-Solver++
// (second order) with 100 steps lands within 2e-3 of it from the
// strength's start, and a start one visit later misses by far more.
func TestImageToImageFollowsTheFlowFromItsStart(t *testing.T) {
	s := ref(t)
	const mu, sd = 0.3, 0.5
	on(t, func() {
		shape := []int64{1, 2, 3}
		images := []int{0, 1}
		z0 := torch.FromSlice([]float32{1.5, -1, 0.2, 0.9, 2, -0.4, 0, 0.1, -2, 1, 0.5, 0.7}, []int64{2, 1, 2, 3})
		noise := ImageNoise(SameSeed(4, 2), images, shape, torch.CPU)
		for _, strength := range []float64{0.2, 0.4, 0.6} {
			sm := newSampler(t, "dpm++2m", s, Options{Steps: 100, Spacing: Trailing})
			ts := sm.Timesteps()
			e := &edit{s: s, start: startVisit(ts, strength), z0: z0, resample: 1}
			got, _ := run(sm, &walk{pred: gaussEps(s, mu, sd), noise: noise, edit: e})
			flow := func(t0 int) float64 {
				ab := s.AlphaBar(t0)
				xt := z0.MulScalar(math.Sqrt(ab)).Add(noise(0).MulScalar(math.Sqrt(1 - ab)))
				want := xt.SubScalar(math.Sqrt(ab) * mu).MulScalar(sd / math.Sqrt(ab*sd*sd+1-ab)).AddScalar(mu)
				return got.Sub(want).Abs().Max().Item()
			}
			t0 := ts[e.start]
			if want := 1000 - 10*(100-int(math.Round(strength*100))); t0 != want {
				t.Errorf("strength %g starts at t=%d, want %d", strength, t0, want)
			}
			if d, miss := flow(t0), flow(ts[e.start+1]); !(d < 2e-3) || !(miss > 1e-2) {
				t.Errorf("strength %g (from t=%d): %g from the flow's closed form (a visit later: %g)", strength, t0, d, miss)
			}
		}
	})
}

// Inpainting keeps the known region exactly (the last replacement is the
// init image itself) with every sampler, resampled or not, and RePaint
// runs each step but the last `resample` times.
func TestInpaintingKeepsTheKnownRegion(t *testing.T) {
	s := ref(t)
	on(t, func() {
		shape := []int64{1, 2, 2}
		images := []int{0, 1}
		z0 := torch.FromSlice([]float32{0.5, -0.5, 0.25, 1, -1, 0.75, 0, 0.125}, []int64{2, 1, 2, 2})
		mask := torch.FromSlice([]float32{1, 0, 0, 1, 0, 0, 1, 1}, []int64{2, 1, 2, 2})
		keep := mask.RSubScalar(1)
		for _, name := range Samplers() {
			for _, resample := range []int{1, 3} {
				o := Options{Steps: 6, Spacing: Trailing}
				if name == "ddpm" {
					o = Options{}
				}
				sm := newSampler(t, name, s, o)
				ts := sm.Timesteps()
				calls := 0
				pred := func(x *torch.Tensor, t int) *torch.Tensor {
					calls++
					return gaussEps(s, 0, 1)(x, t)
				}
				e := testEdit(s, SameSeed(2, 2), images, shape, z0, mask, startVisit(ts, 0.5), resample)
				got, _ := run(sm, &walk{pred: pred, noise: ImageNoise(SameSeed(2, 2), images, shape, torch.CPU), edit: e})
				if got.Sub(z0).Mul(keep).Abs().Max().Item() != 0 {
					t.Errorf("%s, resample %d: the known region moved by %g", name, resample, got.Sub(z0).Mul(keep).Abs().Max().Item())
				}
				if got.Sub(z0).Mul(mask).Abs().Max().Item() == 0 {
					t.Errorf("%s, resample %d: the painted region is the init image", name, resample)
				}
				// Every step is redone but the last, of one visit (to x_0).
				visits := len(ts) - e.start
				if want := resample*visits - (resample - 1); calls != want {
					t.Errorf("%s, resample %d: %d network calls for %d visits, want %d", name, resample, calls, visits, want)
				}
			}
		}
	})
}

// testEdit is an edit of z0 under mask with its noise streams, as newEdit
// makes them, on the CPU.
func testEdit(s *Schedule, seeds []uint64, images []int, shape []int64, z0, mask *torch.Tensor, start, resample int) *edit {
	return &edit{s: s, start: start, z0: z0, mask: mask, resample: resample,
		kn:   ImageNoise(tagged(seeds, knownTag), images, shape, torch.CPU),
		rn:   ImageNoise(tagged(seeds, renoiseTag), images, shape, torch.CPU),
		redo: ImageNoise(tagged(seeds, redoTag), images, shape, torch.CPU)}
}

// An edit's images come out alike whatever batch they are in: the init
// noise, the known region's and the re-noising's are drawn per image.
func TestEditNoiseIsPerImage(t *testing.T) {
	s := ref(t)
	on(t, func() {
		shape := []int64{1, 2, 2}
		z0 := torch.FromSlice([]float32{0.5, -0.5, 0.25, 1, -1, 0.75, 0, 0.125}, []int64{2, 1, 2, 2})
		mask := torch.FromSlice([]float32{1, 0, 0, 1, 0, 0, 1, 1}, []int64{2, 1, 2, 2})
		edit := func(seeds []uint64, images []int, z0, mask *torch.Tensor) *torch.Tensor {
			sm := newSampler(t, "ddim", s, Options{Steps: 5, Eta: 1})
			e := testEdit(s, seeds, images, shape, z0, mask, 1, 2)
			x, _ := run(sm, &walk{pred: gaussEps(s, 0, 1), noise: ImageNoise(seeds, images, shape, torch.CPU), edit: e})
			return x
		}
		both := edit([]uint64{7, 9}, []int{3, 0}, z0, mask)
		alone := edit([]uint64{9}, []int{0}, z0.Narrow(0, 1, 1), mask.Narrow(0, 1, 1))
		if d := both.Narrow(0, 1, 1).Sub(alone).Abs().Max().Item(); d > 1e-6 {
			t.Errorf("image 0 of seed 9 differs by %g between a merged batch and its own", d)
		}
	})
}
