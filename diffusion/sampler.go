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
	x, _ := run(sm, &walk{pred: pred, pieces: pieces, noise: noise})
	return x
}

// A corrector is a sampler whose steps take two visits (Heun's): Pending
// reports whether the step begun at the last visit awaits its second.
type corrector interface{ Pending() bool }

// A narrower is a sampler that keeps state of each image between steps
// (a multistep solver's history, half a Heun step): Narrow keeps the rows
// idx (int64, ascending) of it, for a batch that sheds images mid-way.
type narrower interface{ Narrow(idx *torch.Tensor) }

// A walk is what run draws a batch with: the predictor and its pieces, the
// images' noise and an edit (nil: none). A walk that may shed images
// mid-way (DrawWanted) also knows which of the batch's images it draws.
type walk struct {
	pred   Predictor
	pieces Pieces
	noise  Noise
	edit   *edit
	rows   []int // the batch's images it draws, ascending
	// shed, asked between steps, is the walk of those of rows still
	// wanted, nil when all are; nil when the batch never sheds.
	shed func(rows []int) *walk
}

// run is Run, and with an edit, image-to-image and inpainting: the walk
// starts at the edit's visit from its images noised to that timestep, and
// after each whole step the edit may replace the known region and send the
// walk back to the step's start (RePaint). A walk that sheds images
// continues on the rows still wanted (the sampler's state narrowed with
// them): run returns the images of the rows still wanted and those rows
// (nil, nil once none is).
func run(sm Sampler, w *walk) (*torch.Tensor, []int) {
	if f, ok := sm.(interface{ Free() }); ok {
		defer f.Free() // state a multistep sampler kept between steps
	}
	r, multistep := sm.(restarter)
	c, twoVisits := sm.(corrector)
	ts := sm.Timesteps()
	start, x := 0, w.noise(0)
	if w.edit != nil {
		start = w.edit.start
		x = advance(x, func() *torch.Tensor { return w.edit.noised(x, ts[start]) })
	}
	for i, begin, redo := start, start, 0; i < len(ts); {
		if w.shed != nil {
			if next := w.shed(w.rows); next != nil {
				if x = narrowRows(x, sm, w.rows, next.rows); x == nil {
					return nil, nil
				}
				w = next
			}
		}
		e, t := w.edit, ts[i]
		if multistep && w.pieces != nil && i > start && w.pieces(t) != w.pieces(ts[i-1]) {
			r.Restart()
		}
		stepNoise := func() *torch.Tensor { return w.noise(i + 1) }
		if redo > 0 { // a redone step draws its noise afresh
			stepNoise = func() *torch.Tensor { return e.redo(draw(i, redo)) }
		}
		x = advance(x, func() *torch.Tensor { return sm.Step(x, w.pred(x, t), i, stepNoise) })
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
	return x, w.rows
}

// narrowRows is the rows kept (a subset of rows, both ascending) of the
// state x, the sampler's state narrowed with them; nil, x freed, when none
// is.
func narrowRows(x *torch.Tensor, sm Sampler, rows, kept []int) *torch.Tensor {
	if len(kept) == 0 {
		x.Free()
		return nil
	}
	pos := make([]int64, 0, len(kept))
	for i, r := range rows {
		if len(pos) < len(kept) && kept[len(pos)] == r {
			pos = append(pos, int64(i))
		}
	}
	idx := torch.FromSlice(pos, nil, x.Device())
	defer idx.Free()
	if n, ok := sm.(narrower); ok {
		n.Narrow(idx)
	}
	return advance(x, func() *torch.Tensor { return x.IndexSelect(0, idx) })
}

// keepRows is the rows idx of t, a tensor kept between steps (nil stays
// nil), kept in its place: t is freed.
func keepRows(t, idx *torch.Tensor) *torch.Tensor {
	if t == nil {
		return nil
	}
	out := t.IndexSelect(0, idx).Keep()
	t.Free()
	return out
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
