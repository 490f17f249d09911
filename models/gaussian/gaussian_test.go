package gaussian

import (
	"math"
	"math/rand/v2"
	"sort"
	"testing"

	"kakusan/datasets"
)

func load(t *testing.T, name string, cols int) [][]float64 {
	t.Helper()
	rows, err := datasets.LoadTable("../../third_party/dlfs5/"+name, cols)
	if err != nil {
		t.Fatal(err)
	}
	return rows
}

func TestNormalMLEOnHeights(t *testing.T) {
	xs := datasets.Column(load(t, "height.txt", 1), 0)
	n, err := FitNormal(xs)
	if err != nil {
		t.Fatal(err)
	}
	if math.Abs(n.Mu-172.7025) > 5e-5 || math.Abs(n.Sigma-4.8302) > 5e-5 {
		t.Errorf("fit %+v, want mu 172.7025 sigma 4.8302", n)
	}
	// The MLE maximises the likelihood: nudging either parameter lowers it.
	ll := n.AvgLogLik(xs)
	for _, m := range []Normal{{n.Mu + 0.01, n.Sigma}, {n.Mu - 0.01, n.Sigma}, {n.Mu, n.Sigma * 1.01}, {n.Mu, n.Sigma * 0.99}} {
		if m.AvgLogLik(xs) >= ll {
			t.Errorf("%+v has likelihood %v >= the MLE's %v", m, m.AvgLogLik(xs), ll)
		}
	}
	// Closed form of the average log-likelihood at the MLE: -½ log(2πσ²) - ½.
	if want := -0.5*math.Log(2*math.Pi*n.Sigma*n.Sigma) - 0.5; math.Abs(ll-want) > 1e-9 {
		t.Errorf("avg log-lik %v, want %v", ll, want)
	}
	if _, err := FitNormal([]float64{3, 3, 3}); err == nil {
		t.Error("fit of constant data succeeded")
	}
}

func TestMVNMLEMatchesDirectComputation(t *testing.T) {
	xs := load(t, "height_weight.txt", 2)
	m, err := FitMVN(xs)
	if err != nil {
		t.Fatal(err)
	}
	// Direct two-pass computation.
	var mx, my float64
	for _, r := range xs {
		mx += r[0]
		my += r[1]
	}
	n := float64(len(xs))
	mx, my = mx/n, my/n
	var sxx, sxy, syy float64
	for _, r := range xs {
		sxx += (r[0] - mx) * (r[0] - mx)
		sxy += (r[0] - mx) * (r[1] - my)
		syy += (r[1] - my) * (r[1] - my)
	}
	want := [][]float64{{sxx / n, sxy / n}, {sxy / n, syy / n}}
	if math.Abs(m.Mean[0]-mx) > 1e-9 || math.Abs(m.Mean[1]-my) > 1e-9 {
		t.Errorf("mean %v, want [%v %v]", m.Mean, mx, my)
	}
	for i := range 2 {
		for j := range 2 {
			if math.Abs(m.Cov[i][j]-want[i][j]) > 1e-9*math.Abs(want[i][j]) {
				t.Errorf("cov[%d][%d] = %v, want %v", i, j, m.Cov[i][j], want[i][j])
			}
		}
	}
	// The log density agrees with the 2-D closed form.
	det := want[0][0]*want[1][1] - want[0][1]*want[0][1]
	x := []float64{170, 60}
	dx, dy := x[0]-mx, x[1]-my
	maha := (want[1][1]*dx*dx - 2*want[0][1]*dx*dy + want[0][0]*dy*dy) / det
	if got, w := m.LogPdf(x), -0.5*maha-0.5*math.Log(det)-math.Log(2*math.Pi); math.Abs(got-w) > 1e-10 {
		t.Errorf("log pdf %v, want %v", got, w)
	}
	// Samples reproduce the moments.
	s := m.Sample(rand.New(rand.NewPCG(1, 2)), 200000)
	fit, _ := FitMVN(s)
	for i := range 2 {
		if math.Abs(fit.Mean[i]-m.Mean[i]) > 5*math.Sqrt(m.Cov[i][i]/200000) {
			t.Errorf("sample mean %v vs %v", fit.Mean, m.Mean)
		}
		for j := range 2 {
			if math.Abs(fit.Cov[i][j]-m.Cov[i][j]) > 0.02*math.Sqrt(m.Cov[i][i]*m.Cov[j][j]) {
				t.Errorf("sample cov %v vs %v", fit.Cov, m.Cov)
			}
		}
	}
}

func knownMixture() *GMM {
	g := &GMM{Weights: []float64{0.5, 0.3, 0.2}}
	for _, c := range []struct {
		mean []float64
		cov  [][]float64
	}{
		{[]float64{0, 0}, [][]float64{{1, 0.3}, {0.3, 0.5}}},
		{[]float64{6, 1}, [][]float64{{0.5, 0}, {0, 2}}},
		{[]float64{2, 7}, [][]float64{{1.5, -0.6}, {-0.6, 1}}},
	} {
		m, err := NewMVN(c.mean, c.cov)
		if err != nil {
			panic(err)
		}
		g.Components = append(g.Components, m)
	}
	return g
}

func nonDecreasing(t *testing.T, ll []float64) {
	t.Helper()
	for i := 1; i < len(ll); i++ {
		if ll[i] < ll[i-1]-1e-12*math.Abs(ll[i-1]) {
			t.Fatalf("log-likelihood fell at iteration %d: %v -> %v", i, ll[i-1], ll[i])
		}
	}
}

// byMeanX orders components by the first coordinate of their mean.
func byMeanX(g *GMM) []int {
	idx := []int{0, 1, 2}[:g.K()]
	sort.Slice(idx, func(a, b int) bool { return g.Components[idx[a]].Mean[0] < g.Components[idx[b]].Mean[0] })
	return idx
}

func TestEMRecoversKnownMixture(t *testing.T) {
	truth := knownMixture()
	xs, _ := truth.Sample(rand.New(rand.NewPCG(7, 7)), 6000)
	for _, init := range []string{"kmeans++", "book"} {
		r, err := FitEM(xs, EMConfig{K: 3, Init: init, Means: [][]float64{{-1, -1}, {5, 0}, {1, 5}}, Restarts: 3, Tol: 1e-9, MaxIter: 500, CovFloor: 1e-6, Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		if !r.Converged {
			t.Errorf("%s: not converged in %d iterations", init, r.Iterations)
		}
		nonDecreasing(t, r.LogLik)
		got, want := byMeanX(r.Model), byMeanX(truth)
		for i := range 3 {
			g, w := got[i], want[i]
			if d := math.Abs(r.Model.Weights[g] - truth.Weights[w]); d > 0.02 {
				t.Errorf("%s: weight %v, want %v", init, r.Model.Weights[g], truth.Weights[w])
			}
			for a := range 2 {
				if d := math.Abs(r.Model.Components[g].Mean[a] - truth.Components[w].Mean[a]); d > 0.1 {
					t.Errorf("%s: component %d mean %v, want %v", init, i, r.Model.Components[g].Mean, truth.Components[w].Mean)
				}
				for b := range 2 {
					if d := math.Abs(r.Model.Components[g].Cov[a][b] - truth.Components[w].Cov[a][b]); d > 0.15 {
						t.Errorf("%s: component %d cov %v, want %v", init, i, r.Model.Components[g].Cov, truth.Components[w].Cov)
					}
				}
			}
		}
		if len(r.Warnings) > 0 {
			t.Errorf("%s: unexpected warnings %v", init, r.Warnings)
		}
	}
}

func TestEMOldFaithfulTwoComponents(t *testing.T) {
	xs := load(t, "old_faithful.txt", 2)
	for _, cfg := range []EMConfig{
		{K: 2, Restarts: 5, Tol: 1e-8, MaxIter: 500, CovFloor: 1e-6, Seed: 0},
		{K: 2, Init: "book", Means: [][]float64{{0, 50}, {0, 100}}, Tol: 1e-8, MaxIter: 500, CovFloor: 1e-6},
	} {
		r, err := FitEM(xs, cfg)
		if err != nil {
			t.Fatal(err)
		}
		nonDecreasing(t, r.LogLik)
		idx := byMeanX(r.Model)
		short, long := r.Model.Components[idx[0]], r.Model.Components[idx[1]]
		if math.Abs(short.Mean[0]-2.04) > 0.02 || math.Abs(short.Mean[1]-54.5) > 0.3 {
			t.Errorf("%s: short eruptions at %v, want near (2.04, 54.5)", cfg.Init, short.Mean)
		}
		if math.Abs(long.Mean[0]-4.29) > 0.02 || math.Abs(long.Mean[1]-80.0) > 0.3 {
			t.Errorf("%s: long eruptions at %v, want near (4.29, 80.0)", cfg.Init, long.Mean)
		}
		if w := r.Model.Weights[idx[0]]; math.Abs(w-0.356) > 0.01 {
			t.Errorf("%s: short-eruption weight %v, want about 0.356", cfg.Init, w)
		}
	}
}

func TestMixtureSamplingReproducesWeightsAndMoments(t *testing.T) {
	g := knownMixture()
	const n = 100000
	xs, labels := g.Sample(rand.New(rand.NewPCG(3, 4)), n)
	counts := make([]float64, 3)
	for _, l := range labels {
		counts[l]++
	}
	for k, w := range g.Weights {
		se := math.Sqrt(w * (1 - w) / n)
		if got := counts[k] / n; math.Abs(got-w) > 5*se {
			t.Errorf("component %d drawn %.4f of the time, want %.4f ± %.4f", k, got, w, 5*se)
		}
	}
	// Mixture mean: Σ w_k μ_k; mixture covariance: Σ w_k (Σ_k + μ_k μ_kᵀ) - μ μᵀ.
	mu := make([]float64, 2)
	for k, c := range g.Components {
		for i := range 2 {
			mu[i] += g.Weights[k] * c.Mean[i]
		}
	}
	fit, _ := FitMVN(xs)
	for i := range 2 {
		for j := range 2 {
			var want float64
			for k, c := range g.Components {
				want += g.Weights[k] * (c.Cov[i][j] + c.Mean[i]*c.Mean[j])
			}
			want -= mu[i] * mu[j]
			if math.Abs(fit.Cov[i][j]-want) > 0.03*math.Sqrt(fit.Cov[i][i]*fit.Cov[j][j]) {
				t.Errorf("sample cov[%d][%d] = %v, want %v", i, j, fit.Cov[i][j], want)
			}
		}
		if se := math.Sqrt(fit.Cov[i][i] / n); math.Abs(fit.Mean[i]-mu[i]) > 5*se {
			t.Errorf("sample mean %v, want %v", fit.Mean, mu)
		}
	}
}

func TestCollapsingComponentIsAWarningNotNaN(t *testing.T) {
	// Five copies of one point beside a cloud: a component that settles on
	// the copies has zero variance. The floor must keep every number finite.
	rng := rand.New(rand.NewPCG(9, 9))
	var xs [][]float64
	for range 200 {
		xs = append(xs, []float64{rng.NormFloat64(), rng.NormFloat64()})
	}
	for range 5 {
		xs = append(xs, []float64{10, 10})
	}
	r, err := FitEM(xs, EMConfig{K: 2, Init: "book", Means: [][]float64{{0, 0}, {10, 10}}, Tol: 1e-10, MaxIter: 200, CovFloor: 1e-4})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Warnings) == 0 {
		t.Error("no warning for a collapsed component")
	}
	for _, ll := range r.LogLik {
		if math.IsNaN(ll) || math.IsInf(ll, 0) {
			t.Fatalf("log-likelihood %v", r.LogLik)
		}
	}
	for _, c := range r.Model.Components {
		for _, row := range c.Cov {
			for _, v := range row {
				if math.IsNaN(v) {
					t.Fatal("NaN covariance")
				}
			}
		}
	}
}

func TestEMConfigErrors(t *testing.T) {
	xs := [][]float64{{0, 0}, {1, 1}, {2, 2}}
	for _, cfg := range []EMConfig{{K: 0}, {K: 4}, {K: 2, Init: "magic"}, {K: 2, Init: "book"}, {K: 1, Init: "book", Means: [][]float64{{1}}}} {
		if _, err := FitEM(xs, cfg); err == nil {
			t.Errorf("FitEM(%+v) succeeded", cfg)
		}
	}
}
