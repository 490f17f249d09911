// Package eval measures generated images with a judge classifier: the
// share the judge assigns to the class they were generated for, the
// Fréchet distance between Gaussians fitted to the judge's features of
// generated and real images, and precision and recall on k-nearest-neighbour
// manifolds in that feature space.
package eval

import (
	"errors"
	"fmt"
	"math"

	"gonum.org/v1/gonum/mat"

	"kakusan/torch"
)

// Gaussian is a feature set's mean and covariance (divisor n-1).
type Gaussian struct {
	Mean []float64
	Cov  *mat.SymDense
}

// Fit fits a Gaussian to the rows of feats (N, D).
func Fit(feats *torch.Tensor) (Gaussian, error) {
	s := feats.Shape()
	if len(s) != 2 || s[0] < 2 {
		return Gaussian{}, fmt.Errorf("need at least 2 feature rows, got shape %v", s)
	}
	n, d := int(s[0]), int(s[1])
	f := feats.To(torch.Float64, torch.CPU)
	mean := f.MeanDims(false, 0)
	c := f.Sub(mean)
	cov := torch.Matmul(c.Transpose(0, 1), c).DivScalar(float64(n - 1)).Float64s()
	sym := mat.NewSymDense(d, nil)
	for i := range d {
		for j := i; j < d; j++ {
			sym.SetSym(i, j, 0.5*(cov[i*d+j]+cov[j*d+i]))
		}
	}
	return Gaussian{Mean: mean.Float64s(), Cov: sym}, nil
}

// FrechetDistance is ‖μ₁-μ₂‖² + tr(Σ₁ + Σ₂ - 2(Σ₁^½ Σ₂ Σ₁^½)^½). The
// square roots go through symmetric eigendecompositions, negative
// eigenvalues from rounding clamped to 0, so it stays real and stable.
//
// The eigendecompositions are cyclic Jacobi rotations (eigSym), not
// gonum's LAPACK: a judge with dead features (a Fashion-MNIST judge had 51
// of 128) gives covariances with exact zeros, and gonum v0.17's
// tridiagonal QL/QR scales a block of tiny norm wrongly: its values-only
// path panicked ("lapack: insufficient length of a") and its vectors path
// returned eigenvalues of 1e131, a floor FID of -7e65.
func FrechetDistance(a, b Gaussian) (float64, error) {
	if len(a.Mean) != len(b.Mean) {
		return 0, fmt.Errorf("feature sizes %d and %d differ", len(a.Mean), len(b.Mean))
	}
	var d2 float64
	for i := range a.Mean {
		d2 += (a.Mean[i] - b.Mean[i]) * (a.Mean[i] - b.Mean[i])
	}
	sa, err := sqrtPSD(a.Cov)
	if err != nil {
		return 0, err
	}
	var m mat.Dense
	m.Mul(sa, b.Cov)
	m.Mul(&m, sa)
	n := len(a.Mean)
	ms := make([]float64, n*n)
	for i := range n {
		for j := range n {
			ms[i*n+j] = 0.5 * (m.At(i, j) + m.At(j, i))
		}
	}
	vals, _, err := eigSym(ms, n, false)
	if err != nil {
		return 0, err
	}
	var trSqrt float64
	for _, v := range vals {
		trSqrt += math.Sqrt(math.Max(v, 0))
	}
	return d2 + mat.Trace(a.Cov) + mat.Trace(b.Cov) - 2*trSqrt, nil
}

// sqrtPSD is the symmetric square root of a positive semi-definite matrix.
func sqrtPSD(s *mat.SymDense) (*mat.Dense, error) {
	n := s.SymmetricDim()
	a := make([]float64, n*n)
	for i := range n {
		for j := range n {
			a[i*n+j] = s.At(i, j)
		}
	}
	vals, vecs, err := eigSym(a, n, true)
	if err != nil {
		return nil, err
	}
	v := mat.NewDense(n, n, vecs)
	d := mat.NewDiagDense(n, nil)
	for i, x := range vals {
		d.SetDiag(i, math.Sqrt(math.Max(x, 0)))
	}
	var out mat.Dense
	out.Mul(v, d)
	out.Mul(&out, v.T())
	return &out, nil
}

// eigSym returns the eigenvalues of the symmetric n×n matrix a (row-major,
// overwritten) and, with vectors, its eigenvectors as the columns of an
// n×n row-major matrix: cyclic Jacobi rotations with Rutishauser's
// thresholds (as Numerical Recipes' jacobi). Each rotation zeroes one
// off-diagonal element; none scales anything, so zeros and tiny entries
// are exact, and it converges quadratically (under 10 sweeps for the
// judges' 128×128 covariances).
func eigSym(a []float64, n int, vectors bool) (vals, vecs []float64, err error) {
	if vectors {
		vecs = make([]float64, n*n)
		for i := range n {
			vecs[i*n+i] = 1
		}
	}
	d, b, z := make([]float64, n), make([]float64, n), make([]float64, n)
	for i := range n {
		d[i], b[i] = a[i*n+i], a[i*n+i]
	}
	for sweep := range 100 {
		off := 0.0
		for p := range n {
			for q := p + 1; q < n; q++ {
				off += math.Abs(a[p*n+q])
			}
		}
		if off == 0 {
			return d, vecs, nil
		}
		if math.IsNaN(off) || math.IsInf(off, 0) {
			return nil, nil, errors.New("eigendecomposition: the matrix is not finite")
		}
		thresh := 0.0
		if sweep < 3 {
			thresh = 0.2 * off / float64(n*n)
		}
		for p := range n {
			for q := p + 1; q < n; q++ {
				apq := a[p*n+q]
				g := 100 * math.Abs(apq)
				if sweep > 3 && math.Abs(d[p])+g == math.Abs(d[p]) && math.Abs(d[q])+g == math.Abs(d[q]) {
					a[p*n+q] = 0 // below the diagonal's precision
					continue
				}
				if math.Abs(apq) <= thresh {
					continue
				}
				h := d[q] - d[p]
				var t float64
				if math.Abs(h)+g == math.Abs(h) {
					t = apq / h
				} else {
					theta := 0.5 * h / apq
					t = 1 / (math.Abs(theta) + math.Sqrt(1+theta*theta))
					if theta < 0 {
						t = -t
					}
				}
				c := 1 / math.Sqrt(1+t*t)
				s := t * c
				tau := s / (1 + c)
				h = t * apq
				z[p] -= h
				z[q] += h
				d[p] -= h
				d[q] += h
				a[p*n+q] = 0
				rotate(a, vecs, n, p, q, s, tau)
			}
		}
		for p := range n {
			b[p] += z[p]
			d[p] = b[p]
			z[p] = 0
		}
	}
	return nil, nil, errors.New("eigendecomposition: no convergence in 100 Jacobi sweeps")
}

// rotate applies eigSym's rotation of (p, q), of sine s and tau =
// s/(1+cos), to the rest of the upper triangle of the n×n matrix a and,
// when there are some, to the eigenvectors' columns p and q.
func rotate(a, vecs []float64, n, p, q int, s, tau float64) {
	rot := func(i, j, k, l int) {
		g, h := a[i*n+j], a[k*n+l]
		a[i*n+j] = g - s*(h+g*tau)
		a[k*n+l] = h + s*(g-h*tau)
	}
	for j := 0; j < p; j++ {
		rot(j, p, j, q)
	}
	for j := p + 1; j < q; j++ {
		rot(p, j, j, q)
	}
	for j := q + 1; j < n; j++ {
		rot(p, j, q, j)
	}
	for j := 0; vecs != nil && j < n; j++ {
		g, h := vecs[j*n+p], vecs[j*n+q]
		vecs[j*n+p] = g - s*(h+g*tau)
		vecs[j*n+q] = h + s*(g-h*tau)
	}
}

// chunk bounds the rows of a distance matrix held at once.
const chunk = 1024

// Radii is each row's distance to its k-th nearest other row (N), computed
// a chunk of rows at a time.
func Radii(x *torch.Tensor, k int64) *torch.Tensor {
	n := x.Size(0)
	var parts []*torch.Tensor
	for start := int64(0); start < n; start += chunk {
		sc := torch.NewScope()
		d := pairwise(x.Narrow(0, start, min(chunk, n-start)), x)
		parts = append(parts, sc.Escape(d.KthValue(k+1, 1, false))) // +1: a row's nearest row is itself
		sc.Close()
	}
	return torch.Cat(parts, 0)
}

// pairwise is the (N, M) matrix of Euclidean distances, in float64.
func pairwise(a, b *torch.Tensor) *torch.Tensor {
	a2 := a.Square().SumDims(true, 1)
	b2 := b.Square().SumDims(true, 1).Transpose(0, 1)
	return a2.Add(b2).Sub(torch.Matmul(a, b.Transpose(0, 1)).MulScalar(2)).Clamp(0, math.Inf(1)).Sqrt()
}

// coverage is the share of rows of q inside at least one ball around a row
// of p, the balls' radii being pRadii (p's k-NN radii); rows go in chunks.
func coverage(p, pRadii, q *torch.Tensor) float64 {
	r := pRadii.View(1, -1)
	n := q.Size(0)
	var inside float64
	for start := int64(0); start < n; start += chunk {
		torch.Scoped(func() {
			part := q.Narrow(0, start, min(chunk, n-start))
			slack := pairwise(part, p).Sub(r).MinDims(false, 1)
			inside += slack.LeScalar(0).To(torch.Float64).Sum().Item()
		})
	}
	return inside / float64(n)
}

// PrecisionRecall is Kynkäänniemi et al.'s improved precision (the share
// of generated samples inside the real manifold) and recall (the share of
// real samples inside the generated one), each manifold the union of balls
// reaching every point's k-th nearest neighbour.
func PrecisionRecall(real, fake *torch.Tensor, k int64) (precision, recall float64, err error) {
	if real.Size(0) <= k || fake.Size(0) <= k {
		return 0, 0, fmt.Errorf("need more than k=%d points in each set, got %d and %d", k, real.Size(0), fake.Size(0))
	}
	real, fake = real.To(torch.Float64), fake.To(torch.Float64)
	return coverage(real, Radii(real, k), fake), coverage(fake, Radii(fake, k), real), nil
}

// Interval is a share with its 95% Wilson score interval.
type Interval struct {
	Value, Low, High float64
	N                int
}

// Wilson is the 95% Wilson interval of hits out of n.
func Wilson(hits, n int) Interval {
	if n == 0 {
		return Interval{}
	}
	const z = 1.959963984540054
	p := float64(hits) / float64(n)
	den := 1 + z*z/float64(n)
	centre := (p + z*z/(2*float64(n))) / den
	half := z * math.Sqrt(p*(1-p)/float64(n)+z*z/(4*float64(n)*float64(n))) / den
	return Interval{Value: p, Low: max(centre-half, 0), High: min(centre+half, 1), N: n} // clamped: rounding leaves ±1e-17
}
