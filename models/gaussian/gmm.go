package gaussian

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/mat"
)

// GMM is a mixture of multivariate normals.
type GMM struct {
	Weights    []float64 `json:"weights"`
	Components []*MVN    `json:"components"`
}

// K is the number of components.
func (g *GMM) K() int { return len(g.Weights) }

// logJoint fills lp[k] = log w_k + log N(x | k) and returns logsumexp(lp) = log p(x).
func (g *GMM) logJoint(x []float64, lp []float64) float64 {
	for k, c := range g.Components {
		lp[k] = math.Log(g.Weights[k]) + c.LogPdf(x)
	}
	return logSumExp(lp)
}

// LogPdf is the log density of the mixture at x.
func (g *GMM) LogPdf(x []float64) float64 {
	return g.logJoint(x, make([]float64, g.K()))
}

// AvgLogLik is the mean log density over xs.
func (g *GMM) AvgLogLik(xs [][]float64) float64 {
	lp := make([]float64, g.K())
	var s float64
	for _, x := range xs {
		s += g.logJoint(x, lp)
	}
	return s / float64(len(xs))
}

// Assign returns each point's most responsible component.
func (g *GMM) Assign(xs [][]float64) []int {
	lp := make([]float64, g.K())
	out := make([]int, len(xs))
	for n, x := range xs {
		g.logJoint(x, lp)
		for k := range lp {
			if lp[k] > lp[out[n]] {
				out[n] = k
			}
		}
	}
	return out
}

// Sample draws k points by ancestral sampling: a component from the
// weights, then a point from that component. It returns the components too.
func (g *GMM) Sample(rng *rand.Rand, n int) ([][]float64, []int) {
	pts := make([][]float64, n)
	labels := make([]int, n)
	for i := range pts {
		u, k := rng.Float64(), 0
		for acc := g.Weights[0]; u > acc && k < g.K()-1; acc += g.Weights[k] {
			k++
		}
		labels[i] = k
		pts[i] = g.Components[k].Sample(rng, 1)[0]
	}
	return pts, labels
}

func logSumExp(v []float64) float64 {
	m := math.Inf(-1)
	for _, x := range v {
		m = math.Max(m, x)
	}
	if math.IsInf(m, -1) {
		return m
	}
	var s float64
	for _, x := range v {
		s += math.Exp(x - m)
	}
	return m + math.Log(s)
}

// EMConfig controls FitEM; it is the `gmm:` section of a config.
type EMConfig struct {
	K        int         `yaml:"components"`           // mixture components
	Init     string      `yaml:"init"`                 // "kmeans++" (default) or "book"
	Means    [][]float64 `yaml:"init_means,omitempty"` // initial means for "book": weights 1/K, identity covariances
	Restarts int         `yaml:"restarts"`             // kmeans++ starts; the best final likelihood wins
	Tol      float64     `yaml:"tol"`                  // stop when the average log-likelihood gains less
	MaxIter  int         `yaml:"max_iter"`             // EM iterations at most
	CovFloor float64     `yaml:"cov_floor"`            // smallest eigenvalue a covariance may have
	Seed     uint64      `yaml:"-"`                    // the run's seed
}

// DefaultEM is the gmm section's defaults.
func DefaultEM() *EMConfig {
	return &EMConfig{K: 2, Init: "kmeans++", Restarts: 5, Tol: 1e-6, MaxIter: 200, CovFloor: 1e-6}
}

// Validate bounds the section, a line "key: problem" for each fault.
func (c *EMConfig) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.K < 1 || c.K > 100 {
		bad("components: must be between 1 and 100, got %d", c.K)
	}
	switch c.Init {
	case "kmeans++":
	case "book":
		if len(c.Means) != c.K {
			bad("init_means: init: book needs one mean per component (%d), got %d", c.K, len(c.Means))
		}
	default:
		bad("init: unknown initialisation %q (want kmeans++ or book)", c.Init)
	}
	if c.Restarts < 1 || c.Restarts > 1000 {
		bad("restarts: must be between 1 and 1000, got %d", c.Restarts)
	}
	if !(c.Tol > 0) || math.IsInf(c.Tol, 0) {
		bad("tol: must be positive and finite, got %g", c.Tol)
	}
	if c.MaxIter < 1 || c.MaxIter > 1_000_000 {
		bad("max_iter: must be between 1 and 1000000, got %d", c.MaxIter)
	}
	if !(c.CovFloor >= 0 && c.CovFloor <= 1e6) {
		bad("cov_floor: must be between 0 and 1e6, got %g", c.CovFloor)
	}
	return errors.Join(errs...)
}

// EMResult is a fitted mixture with its history.
type EMResult struct {
	Model      *GMM
	LogLik     []float64 // average log-likelihood per point before each M-step, then the final one
	Iterations int
	Converged  bool
	Restart    int      // which start won
	Warnings   []string // collapsed or emptied components, and similar
}

// FitEM fits a K-component mixture with full covariances by expectation
// maximisation, in log space so no density underflows.
func FitEM(xs [][]float64, cfg EMConfig) (*EMResult, error) {
	if len(xs) == 0 {
		return nil, errors.New("no data")
	}
	if cfg.K < 1 || cfg.K > len(xs) {
		return nil, fmt.Errorf("components must be between 1 and the number of points (%d), got %d", len(xs), cfg.K)
	}
	if cfg.MaxIter < 1 {
		cfg.MaxIter = 100
	}
	if cfg.Restarts < 1 {
		cfg.Restarts = 1
	}
	d := len(xs[0])
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x6b616b7573616e))
	var starts []*GMM
	switch cfg.Init {
	case "book":
		if len(cfg.Means) != cfg.K {
			return nil, fmt.Errorf("book initialisation needs %d initial means, got %d", cfg.K, len(cfg.Means))
		}
		g := &GMM{}
		for _, m := range cfg.Means {
			if len(m) != d {
				return nil, fmt.Errorf("initial mean %v has %d values, data has %d columns", m, len(m), d)
			}
			g.Weights = append(g.Weights, 1/float64(cfg.K))
			g.Components = append(g.Components, &MVN{Mean: append([]float64(nil), m...), Cov: identity(d)})
		}
		starts = []*GMM{g}
	case "", "kmeans++":
		for range cfg.Restarts {
			starts = append(starts, kmeansStart(xs, cfg.K, cfg.CovFloor, rng))
		}
	default:
		return nil, fmt.Errorf("unknown initialisation %q (want kmeans++ or book)", cfg.Init)
	}
	var best *EMResult
	for i, g := range starts {
		r, err := runEM(xs, g, cfg)
		if err != nil {
			return nil, err
		}
		r.Restart = i
		if best == nil || r.LogLik[len(r.LogLik)-1] > best.LogLik[len(best.LogLik)-1] {
			best = r
		}
	}
	return best, nil
}

func identity(d int) [][]float64 {
	c := make([][]float64, d)
	for i := range c {
		c[i] = make([]float64, d)
		c[i][i] = 1
	}
	return c
}

func runEM(xs [][]float64, g *GMM, cfg EMConfig) (*EMResult, error) {
	n, k := len(xs), g.K()
	for _, c := range g.Components {
		if err := c.factor(); err != nil {
			return nil, fmt.Errorf("initial component: %w", err)
		}
	}
	resp := make([][]float64, n)
	for i := range resp {
		resp[i] = make([]float64, k)
	}
	res := &EMResult{}
	warned := map[string]bool{}
	warn := func(msg string) {
		if !warned[msg] {
			warned[msg] = true
			res.Warnings = append(res.Warnings, msg)
		}
	}
	eStep := func() float64 {
		var ll float64
		for i, x := range xs {
			lse := g.logJoint(x, resp[i])
			for j := range resp[i] {
				resp[i][j] = math.Exp(resp[i][j] - lse)
			}
			ll += lse
		}
		return ll / float64(n)
	}
	ll := eStep()
	if math.IsNaN(ll) || math.IsInf(ll, 0) {
		return nil, fmt.Errorf("initial log-likelihood is %v: the starting components give the data no density", ll)
	}
	res.LogLik = append(res.LogLik, ll)
	for it := 1; it <= cfg.MaxIter; it++ {
		mStep(xs, resp, g, cfg.CovFloor, it, warn)
		next := eStep()
		res.LogLik = append(res.LogLik, next)
		res.Iterations = it
		if math.Abs(next-ll) < cfg.Tol {
			res.Converged = true
			break
		}
		ll = next
	}
	res.Model = g
	return res, nil
}

// mStep sets weights, means and covariances from responsibilities.
func mStep(xs, resp [][]float64, g *GMM, floor float64, it int, warn func(string)) {
	n, d := len(xs), len(xs[0])
	for k, c := range g.Components {
		var nk float64
		for i := range xs {
			nk += resp[i][k]
		}
		if nk < 1e-10 {
			// Nothing is left to estimate from: keep the component where it
			// was and let its weight go to (nearly) zero.
			warn(fmt.Sprintf("component %d lost all its points at iteration %d; it keeps its last mean and covariance with weight ~0", k, it))
			g.Weights[k] = math.Max(nk/float64(n), 1e-300)
			continue
		}
		g.Weights[k] = nk / float64(n)
		mean := make([]float64, d)
		for i, x := range xs {
			for j := range d {
				mean[j] += resp[i][k] * x[j]
			}
		}
		for j := range mean {
			mean[j] /= nk
		}
		cov := make([][]float64, d)
		for a := range cov {
			cov[a] = make([]float64, d)
		}
		for i, x := range xs {
			r := resp[i][k]
			for a := range d {
				da := x[a] - mean[a]
				for b := 0; b <= a; b++ {
					cov[a][b] += r * da * (x[b] - mean[b])
				}
			}
		}
		for a := range d {
			for b := 0; b <= a; b++ {
				cov[a][b] /= nk
				cov[b][a] = cov[a][b]
			}
		}
		if floorCov(cov, floor) {
			warn(fmt.Sprintf("component %d collapsed (a covariance eigenvalue fell below cov_floor %g at iteration %d, %.3g points); its covariance is floored", k, floor, it, nk))
		}
		c.Mean, c.Cov = mean, cov
		if err := c.factor(); err != nil {
			// Only reachable with cov_floor 0 on degenerate data.
			floorCov(cov, 1e-12)
			c.factor()
			warn(fmt.Sprintf("component %d became singular at iteration %d; set cov_floor above 0", k, it))
		}
	}
}

// floorCov raises every eigenvalue of the symmetric matrix c to at least
// floor, in place, and reports whether any was raised.
func floorCov(c [][]float64, floor float64) bool {
	if floor <= 0 {
		return false
	}
	d := len(c)
	s := mat.NewSymDense(d, nil)
	for i := range d {
		for j := range d {
			s.SetSym(i, j, c[i][j])
		}
	}
	var eig mat.EigenSym
	if !eig.Factorize(s, true) {
		return false
	}
	vals := eig.Values(nil)
	raised := false
	for i, v := range vals {
		if v < floor {
			vals[i], raised = floor, true
		}
	}
	if !raised {
		return false
	}
	var vecs mat.Dense
	eig.VectorsTo(&vecs)
	for i := range d {
		for j := range d {
			var x float64
			for l := range d {
				x += vecs.At(i, l) * vals[l] * vecs.At(j, l)
			}
			c[i][j] = x
		}
	}
	return true
}

// kmeansStart seeds K centres by k-means++, refines them with a few Lloyd
// iterations, and turns the hard clusters into a starting mixture.
func kmeansStart(xs [][]float64, k int, floor float64, rng *rand.Rand) *GMM {
	n, d := len(xs), len(xs[0])
	dist2 := func(a, b []float64) float64 {
		var s float64
		for i := range a {
			s += (a[i] - b[i]) * (a[i] - b[i])
		}
		return s
	}
	centres := [][]float64{xs[rng.IntN(n)]}
	best := make([]float64, n)
	for len(centres) < k {
		var total float64
		for i, x := range xs {
			best[i] = math.Inf(1)
			for _, c := range centres {
				best[i] = math.Min(best[i], dist2(x, c))
			}
			total += best[i]
		}
		u := rng.Float64() * total
		pick := n - 1
		for i, b := range best {
			if u -= b; u <= 0 {
				pick = i
				break
			}
		}
		centres = append(centres, xs[pick])
	}
	assign := make([]int, n)
	for range 20 {
		for i, x := range xs {
			for c := range centres {
				if dist2(x, centres[c]) < dist2(x, centres[assign[i]]) {
					assign[i] = c
				}
			}
		}
		sums := make([][]float64, k)
		counts := make([]int, k)
		for c := range sums {
			sums[c] = make([]float64, d)
		}
		for i, x := range xs {
			counts[assign[i]]++
			for j := range d {
				sums[assign[i]][j] += x[j]
			}
		}
		for c := range centres {
			if counts[c] == 0 {
				continue
			}
			m := make([]float64, d)
			for j := range d {
				m[j] = sums[c][j] / float64(counts[c])
			}
			centres[c] = m
		}
	}
	resp := make([][]float64, n)
	for i := range resp {
		resp[i] = make([]float64, k)
		resp[i][assign[i]] = 1
	}
	g := &GMM{Weights: make([]float64, k)}
	for c := range k {
		g.Components = append(g.Components, &MVN{Mean: centres[c], Cov: identity(d)})
	}
	if floor <= 0 {
		floor = 1e-6
	}
	mStep(xs, resp, g, floor, 0, func(string) {})
	return g
}
