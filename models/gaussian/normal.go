// Package gaussian holds the classical rungs of the ladder: the normal
// distribution, the multivariate normal and the Gaussian mixture fitted by
// EM. Pure Go over gonum; no libtorch.
package gaussian

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/mat"
)

var log2Pi = math.Log(2 * math.Pi)

// Normal is a one-dimensional normal distribution.
type Normal struct {
	Mu    float64 `json:"mu"`
	Sigma float64 `json:"sigma"`
}

// FitNormal is the maximum-likelihood fit: the sample mean and the standard
// deviation with divisor n (not n-1).
func FitNormal(xs []float64) (Normal, error) {
	if len(xs) < 2 {
		return Normal{}, fmt.Errorf("need at least 2 values to fit a normal, got %d", len(xs))
	}
	var mu float64
	for _, x := range xs {
		mu += x
	}
	mu /= float64(len(xs))
	var v float64
	for _, x := range xs {
		v += (x - mu) * (x - mu)
	}
	sigma := math.Sqrt(v / float64(len(xs)))
	if sigma == 0 {
		return Normal{}, errors.New("all values are equal: the maximum-likelihood sigma is 0")
	}
	return Normal{mu, sigma}, nil
}

// LogPdf is the log density at x.
func (n Normal) LogPdf(x float64) float64 {
	z := (x - n.Mu) / n.Sigma
	return -0.5*z*z - math.Log(n.Sigma) - 0.5*log2Pi
}

// AvgLogLik is the mean log density over xs.
func (n Normal) AvgLogLik(xs []float64) float64 {
	var s float64
	for _, x := range xs {
		s += n.LogPdf(x)
	}
	return s / float64(len(xs))
}

// Sample draws k values.
func (n Normal) Sample(rng *rand.Rand, k int) []float64 {
	out := make([]float64, k)
	for i := range out {
		out[i] = n.Mu + n.Sigma*rng.NormFloat64()
	}
	return out
}

// MVN is a multivariate normal distribution with a full covariance.
type MVN struct {
	Mean []float64   `json:"mean"`
	Cov  [][]float64 `json:"cov"`

	chol *mat.Cholesky // of Cov, made on first use
}

// NewMVN checks that cov is symmetric positive definite and of mean's size.
func NewMVN(mean []float64, cov [][]float64) (*MVN, error) {
	m := &MVN{Mean: mean, Cov: cov}
	if err := m.factor(); err != nil {
		return nil, err
	}
	return m, nil
}

func (m *MVN) factor() error {
	d := len(m.Mean)
	if len(m.Cov) != d {
		return fmt.Errorf("covariance has %d rows for a %d-dimensional mean", len(m.Cov), d)
	}
	s := mat.NewSymDense(d, nil)
	for i := range d {
		if len(m.Cov[i]) != d {
			return fmt.Errorf("covariance row %d has %d entries, want %d", i, len(m.Cov[i]), d)
		}
		for j := range d {
			if math.Abs(m.Cov[i][j]-m.Cov[j][i]) > 1e-9*(1+math.Abs(m.Cov[i][j])) {
				return fmt.Errorf("covariance is not symmetric at (%d, %d)", i, j)
			}
			s.SetSym(i, j, m.Cov[i][j])
		}
	}
	var c mat.Cholesky
	if !c.Factorize(s) {
		return errors.New("covariance is not positive definite")
	}
	m.chol = &c
	return nil
}

// Dim is the dimension.
func (m *MVN) Dim() int { return len(m.Mean) }

// LogPdf is the log density at x.
func (m *MVN) LogPdf(x []float64) float64 {
	if m.chol == nil {
		if err := m.factor(); err != nil {
			return math.NaN()
		}
	}
	d := len(m.Mean)
	diff := mat.NewVecDense(d, nil)
	for i := range d {
		diff.SetVec(i, x[i]-m.Mean[i])
	}
	// Solve L y = diff; the Mahalanobis distance is |y|².
	var l mat.TriDense
	m.chol.LTo(&l)
	var y mat.VecDense
	if err := y.SolveVec(&l, diff); err != nil {
		return math.NaN()
	}
	maha := mat.Dot(&y, &y)
	return -0.5*maha - 0.5*m.chol.LogDet() - 0.5*float64(d)*log2Pi
}

// AvgLogLik is the mean log density over the rows of xs.
func (m *MVN) AvgLogLik(xs [][]float64) float64 {
	var s float64
	for _, x := range xs {
		s += m.LogPdf(x)
	}
	return s / float64(len(xs))
}

// Sample draws k points: mean + L z with z standard normal.
func (m *MVN) Sample(rng *rand.Rand, k int) [][]float64 {
	if m.chol == nil {
		if err := m.factor(); err != nil {
			panic(err)
		}
	}
	d := len(m.Mean)
	var l mat.TriDense
	m.chol.LTo(&l)
	out := make([][]float64, k)
	z := make([]float64, d)
	for n := range out {
		for i := range z {
			z[i] = rng.NormFloat64()
		}
		p := make([]float64, d)
		for i := range d {
			p[i] = m.Mean[i]
			for j := 0; j <= i; j++ {
				p[i] += l.At(i, j) * z[j]
			}
		}
		out[n] = p
	}
	return out
}

// FitMVN is the maximum-likelihood fit: the sample mean and the covariance
// with divisor n.
func FitMVN(xs [][]float64) (*MVN, error) {
	if len(xs) < 2 {
		return nil, fmt.Errorf("need at least 2 points, got %d", len(xs))
	}
	d := len(xs[0])
	mean := make([]float64, d)
	for _, x := range xs {
		for i, v := range x {
			mean[i] += v
		}
	}
	for i := range mean {
		mean[i] /= float64(len(xs))
	}
	cov := make([][]float64, d)
	for i := range cov {
		cov[i] = make([]float64, d)
	}
	for _, x := range xs {
		for i := range d {
			for j := range d {
				cov[i][j] += (x[i] - mean[i]) * (x[j] - mean[j])
			}
		}
	}
	for i := range d {
		for j := range d {
			cov[i][j] /= float64(len(xs))
		}
	}
	m, err := NewMVN(mean, cov)
	if err != nil {
		return nil, fmt.Errorf("fitted covariance: %w (are the columns linearly dependent?)", err)
	}
	return m, nil
}
