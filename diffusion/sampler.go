package diffusion

import (
	"fmt"
	"slices"
	"strings"

	"kakusan/torch"
)

// A Sampler walks x_T to x_0 over the timesteps it visits. It may keep state
// between steps (multistep solvers such as DPM-Solver++ do), so make a new one per run.
type Sampler interface {
	// Timesteps are the timesteps visited, in the order visited (descending, within 1..T).
	Timesteps() []int
	// Step moves x from Timesteps()[i] to the next visited timestep (to x_0 after the last), given ε̂ at x;
	// noise draws the fresh noise of step i+1 when the sampler needs it.
	Step(x, eps *torch.Tensor, i int, noise func() *torch.Tensor) *torch.Tensor
}

// Options are a sampler's settings; each sampler reads those it needs.
type Options struct {
	Steps   int     // timesteps visited, 1..T (all but ddpm)
	Eta     float64 // η in [0, 1]: 0 deterministic, 1 DDPM's variance (ddim)
	Spacing Spacing // see Schedule.Timesteps (all but ddpm)
}

// A registration is a sampler's entry in the registry: check validates the
// options for a schedule of T timesteps, and build, called only with
// options check passed, makes the sampler.
type registration struct {
	check func(T int, o Options) error
	build func(s *Schedule, o Options) Sampler
}

var registry = map[string]registration{}

// register adds a sampler; each sampler's file calls it from init.
func register(name string, check func(T int, o Options) error, build func(s *Schedule, o Options) Sampler) {
	if _, ok := registry[name]; ok {
		panic("diffusion: sampler " + name + " registered twice")
	}
	registry[name] = registration{check, build}
}

// Samplers are the known samplers' names, sorted.
func Samplers() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}

// CheckSampler validates a sampler's name and options for a schedule of T
// timesteps, as NewSampler does, without a schedule (for configs and flags).
func CheckSampler(name string, T int, o Options) error {
	r, ok := registry[name]
	if !ok {
		return fmt.Errorf("unknown sampler %q (known: %s)", name, strings.Join(Samplers(), ", "))
	}
	if err := checkT(T); err != nil {
		return err
	}
	if err := r.check(T, o); err != nil {
		return fmt.Errorf("sampler %s: %w", name, err)
	}
	return nil
}

// NewSampler makes the named sampler over s, after CheckSampler.
func NewSampler(name string, s *Schedule, o Options) (Sampler, error) {
	if err := CheckSampler(name, s.T, o); err != nil {
		return nil, err
	}
	return registry[name].build(s, o), nil
}

// Pieces numbers the pieces of a predictor made of several: Pieces(t) is
// the one that serves timestep t. Guidance limited to an interval has two,
// guided and not (Schedule.GuidedIn); a nil Pieces is one piece.
type Pieces func(t int) int

// A restarter is a sampler that extrapolates each step from the
// predictions of the steps before it (a multistep solver). Restart drops
// them, so that its next step is first order, as its first one is: Run
// calls it where the predictor changes from one piece to another between
// two visited timesteps, since the difference of two pieces' predictions
// is no derivative of either (extrapolated, the jump from guided to
// unguided would steer against the guidance). Heun's corrector is not
// restarted: within one step it averages the two pieces' slopes, as the
// guidance interval's authors' own sampler (EDM's Heun) does.
type restarter interface{ Restart() }

// Run is the sampling loop: x = noise(0), then for each visited timestep
// t_i, x = Step(x, pred(x, t_i), i, noise(i+1)), restarting a multistep
// sampler where pieces changes between t_{i-1} and t_i. Each step's
// temporaries are freed at its end, and so is the state it replaces
// (noise(0) included); the result belongs to the caller's scope.
func Run(sm Sampler, pred Predictor, pieces Pieces, noise Noise) *torch.Tensor {
	return run(sm, pred, pieces, noise, nil)
}

// A corrector is a sampler whose steps take two visits (Heun's): Pending
// reports whether the step begun at the last visit awaits its second.
type corrector interface{ Pending() bool }

// run is Run, and with an edit, image-to-image and inpainting: the walk
// starts at the edit's visit from its images noised to that timestep, and
// after each whole step the edit may replace the known region and send the
// walk back to the step's start (RePaint).
func run(sm Sampler, pred Predictor, pieces Pieces, noise Noise, e *edit) *torch.Tensor {
	if f, ok := sm.(interface{ Free() }); ok {
		defer f.Free() // state a multistep sampler kept between steps
	}
	r, multistep := sm.(restarter)
	c, twoVisits := sm.(corrector)
	ts := sm.Timesteps()
	start, x := 0, noise(0)
	if e != nil {
		start = e.start
		x = advance(x, func() *torch.Tensor { return e.noised(x, ts[start]) })
	}
	for i, begin, redo := start, start, 0; i < len(ts); {
		t := ts[i]
		if multistep && pieces != nil && i > start && pieces(t) != pieces(ts[i-1]) {
			r.Restart()
		}
		stepNoise := func() *torch.Tensor { return noise(i + 1) }
		if redo > 0 { // a redone step draws its noise afresh
			stepNoise = func() *torch.Tensor { return e.redo(draw(i, redo)) }
		}
		x = advance(x, func() *torch.Tensor { return sm.Step(x, pred(x, t), i, stepNoise) })
		if e == nil || twoVisits && c.Pending() {
			i++
			continue
		}
		next := 0 // the timestep x is at, now that the step is whole
		if i+1 < len(ts) {
			next = ts[i+1]
		}
		x = advance(x, func() *torch.Tensor { return e.known(x, next, i, redo) })
		if redo+1 < e.resample && next != 0 {
			x = advance(x, func() *torch.Tensor { return e.renoise(x, next, ts[begin], i, redo) })
			if multistep {
				r.Restart() // its history is of the step being redone: DPM-Solver++ resampled is first order
			}
			i, redo = begin, redo+1
			continue
		}
		i++
		begin, redo = i, 0
	}
	return x
}

// advance computes the next state in a scope of its own, so each step's
// temporaries are freed at once, and frees the state it replaces.
func advance(x *torch.Tensor, step func() *torch.Tensor) *torch.Tensor {
	sc := torch.NewScope()
	next := sc.Escape(step())
	sc.Close()
	if next != x {
		x.Free()
	}
	return next
}

// checkNothing accepts any options: for samplers that read none.
func checkNothing(int, Options) error { return nil }
