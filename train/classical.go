package train

import (
	"fmt"
	"kakusan/internal/atomic"
	"math"
	"math/rand/v2"

	"kakusan/datasets"
	"kakusan/models"
	"kakusan/models/gaussian"
)

// fitClassical fits the normal, multivariate normal or Gaussian mixture by
// maximum likelihood and writes params.json, metrics and plots.
func fitClassical(r *Run) error {
	c := r.Config
	cols := c.Data.Columns
	if cols == 0 {
		cols = map[string]int{"normal": 1, "mvn": 2, "gmm": 2}[c.Model]
	}
	if c.Model == "normal" && cols != 1 {
		return fmt.Errorf("data.columns: model normal takes 1 column, got %d", cols)
	}
	rows, err := datasets.LoadTable(c.Data.Path, cols)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(c.Seed, 0x73616d706c65))
	p := &gaussian.Params{Model: c.Model}
	switch c.Model {
	case "normal":
		err = fitNormal(r, rows, rng, p)
	case "mvn":
		err = fitMVN(r, rows, rng, p)
	case "gmm":
		err = fitGMM(r, rows, rng, p)
	}
	if err != nil {
		return err
	}
	return atomic.WriteFile(r.Path("params.json"), p.Marshal())
}

func fitNormal(r *Run, rows [][]float64, rng *rand.Rand, p *gaussian.Params) error {
	xs := datasets.Column(rows, 0)
	n, err := gaussian.FitNormal(xs)
	if err != nil {
		return fmt.Errorf("%s: %w", r.Config.Data.Path, err)
	}
	p.Normal = &n
	ll := n.AvgLogLik(xs)
	fmt.Fprintf(r.Log, "normal fit to %d values of %s: mu %.4f, sigma %.4f, average log-likelihood %.4f\n", len(xs), r.Config.Data.Path, n.Mu, n.Sigma, ll)
	if err := r.Metric(0, map[string]any{"avg_log_likelihood": ll, "mu": n.Mu, "sigma": n.Sigma, "n": len(xs)}); err != nil {
		return err
	}
	pdf := func(x float64) float64 { return math.Exp(n.LogPdf(x)) }
	xl := r.Config.Data.Name(0)
	if err := histWithDensity(fmt.Sprintf("Normal MLE: mu=%.2f sigma=%.2f", n.Mu, n.Sigma), xl, "data", xs, pdf, pdf(n.Mu), r.Path("fit.png")); err != nil {
		return err
	}
	return histWithDensity(fmt.Sprintf("%d samples from the fit", r.Config.Samples), xl, "samples", n.Sample(rng, r.Config.Samples), pdf, pdf(n.Mu), r.Path("samples.png"))
}

func fitMVN(r *Run, rows [][]float64, rng *rand.Rand, p *gaussian.Params) error {
	m, err := gaussian.FitMVN(rows)
	if err != nil {
		return fmt.Errorf("%s: %w", r.Config.Data.Path, err)
	}
	p.MVN = m
	ll := m.AvgLogLik(rows)
	fmt.Fprintf(r.Log, "multivariate normal fit to %d points of %s: mean %.4f, covariance %.4f, average log-likelihood %.4f\n", len(rows), r.Config.Data.Path, m.Mean, m.Cov, ll)
	if err := r.Metric(0, map[string]any{"avg_log_likelihood": ll, "mean": m.Mean, "cov": m.Cov, "n": len(rows)}); err != nil {
		return err
	}
	if m.Dim() != 2 {
		fmt.Fprintf(r.Log, "(no plots: the data has %d columns, plots need 2)\n", m.Dim())
		return nil
	}
	d := r.Config.Data
	if err := scatterWithContours("Multivariate normal MLE: data and fitted density", d.Name(0), d.Name(1), "data", rows, m.LogPdf, r.Path("fit.png")); err != nil {
		return err
	}
	return scatterWithContours(fmt.Sprintf("%d samples from the fit", r.Config.Samples), d.Name(0), d.Name(1), "samples", m.Sample(rng, r.Config.Samples), m.LogPdf, r.Path("samples.png"))
}

func fitGMM(r *Run, rows [][]float64, rng *rand.Rand, p *gaussian.Params) error {
	cfg := *models.Section[*gaussian.EMConfig](r.Config, "gmm")
	cfg.Seed = r.Config.Seed
	res, err := gaussian.FitEM(rows, cfg)
	if err != nil {
		return fmt.Errorf("gmm: %w", err)
	}
	for i, ll := range res.LogLik {
		if err := r.Metric(i, map[string]any{"avg_log_likelihood": ll}); err != nil {
			return err
		}
	}
	g := res.Model
	p.GMM, p.Warnings = g, res.Warnings
	state := "converged"
	if !res.Converged {
		state = "did NOT converge (raise gmm.max_iter or gmm.tol)"
	}
	start := cfg.Init + " start"
	if cfg.Init == "kmeans++" {
		start = fmt.Sprintf("best of %d k-means++ starts", cfg.Restarts)
	}
	fmt.Fprintf(r.Log, "EM on %d points of %s, %d components (%s): %s after %d iterations, average log-likelihood %.6f\n",
		len(rows), r.Config.Data.Path, g.K(), start, state, res.Iterations, res.LogLik[len(res.LogLik)-1])
	for k, comp := range g.Components {
		fmt.Fprintf(r.Log, "  component %d: weight %.4f, mean %.4f, covariance %.4f\n", k, g.Weights[k], comp.Mean, comp.Cov)
	}
	for _, w := range res.Warnings {
		fmt.Fprintf(r.Log, "warning: %s\n", w)
	}
	if err := curve("EM: average log-likelihood per iteration", "iteration", "average log-likelihood", res.LogLik, r.Path("log_likelihood.png")); err != nil {
		return err
	}
	if len(rows[0]) != 2 {
		return nil
	}
	means, covs := make([][]float64, g.K()), make([][][]float64, g.K())
	for k, comp := range g.Components {
		means[k], covs[k] = comp.Mean, comp.Cov
	}
	if err := componentScatter(fmt.Sprintf("Gaussian mixture (K=%d): data by most responsible component, 1σ and 2σ", g.K()), r.Config.Data.Name(0), r.Config.Data.Name(1), rows, g.Assign(rows), means, covs, r.Path("fit.png")); err != nil {
		return err
	}
	pts, labels := g.Sample(rng, r.Config.Samples)
	return componentScatter(fmt.Sprintf("%d samples from the mixture (ancestral sampling)", len(pts)), r.Config.Data.Name(0), r.Config.Data.Name(1), pts, labels, means, covs, r.Path("samples.png"))
}
