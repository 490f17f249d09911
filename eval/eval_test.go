package eval

import (
	"bufio"
	"encoding/json"
	"image"
	"image/png"
	"kakusan/internal/longtest"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gonum.org/v1/gonum/mat"

	"kakusan/datasets"
	"kakusan/models"
	"kakusan/torch"
	"kakusan/torch/torchtest"
	"kakusan/train"
)

var on = torchtest.Run

// mnist is the geometry of the judges these tests train.
var mnist = models.Geometry{C: 1, H: 28, W: 28, Classes: 10}

func gauss(mean []float64, cov [][]float64) Gaussian {
	n := len(mean)
	s := mat.NewSymDense(n, nil)
	for i := range n {
		for j := range n {
			s.SetSym(i, j, cov[i][j])
		}
	}
	return Gaussian{Mean: mean, Cov: s}
}

func TestFrechetDistanceClosedForms(t *testing.T) {
	a := gauss([]float64{1, 2}, [][]float64{{2, 0.5}, {0.5, 1}})
	if d, _ := FrechetDistance(a, a); math.Abs(d) > 1e-9 {
		t.Errorf("FD of a Gaussian with itself = %g", d)
	}
	shifted := gauss([]float64{4, -2}, [][]float64{{2, 0.5}, {0.5, 1}})
	if d, _ := FrechetDistance(a, shifted); math.Abs(d-25) > 1e-9 {
		t.Errorf("FD against a copy shifted by (3, -4) = %g, want 25", d)
	}
	// Two general 2-D Gaussians: tr √(Σ₁Σ₂) = √(tr Σ₁Σ₂ + 2√(det Σ₁ det Σ₂)) in two dimensions.
	c1, c2 := [][]float64{{2, 0.5}, {0.5, 1}}, [][]float64{{1, -0.3}, {-0.3, 3}}
	b := gauss([]float64{0, 1}, c2)
	trProd := c1[0][0]*c2[0][0] + c1[0][1]*c2[1][0] + c1[1][0]*c2[0][1] + c1[1][1]*c2[1][1]
	det := func(c [][]float64) float64 { return c[0][0]*c[1][1] - c[0][1]*c[1][0] }
	want := 1 + 1 + (2 + 1) + (1 + 3) - 2*math.Sqrt(trProd+2*math.Sqrt(det(c1)*det(c2)))
	if d, _ := FrechetDistance(a, b); math.Abs(d-want) > 1e-9 {
		t.Errorf("FD = %.12g, closed form %.12g", d, want)
	}
	// Diagonal covariances: Σ (σ₁ - σ₂)² plus the mean term.
	d1 := gauss([]float64{0, 0, 0}, [][]float64{{4, 0, 0}, {0, 1, 0}, {0, 0, 9}})
	d2 := gauss([]float64{1, 0, 0}, [][]float64{{1, 0, 0}, {0, 1, 0}, {0, 0, 1}})
	if d, _ := FrechetDistance(d1, d2); math.Abs(d-(1+1+0+4)) > 1e-9 {
		t.Errorf("diagonal FD %g, want 6", d)
	}
}

// TestFrechetDistanceNearDeadFeatures: features that are all but constant
// (a judge's dead ReLUs, variances of 1e-130 from rounding) make blocks of
// tiny norm in the eigensolver, on which gonum's values-only path panicked
// ("lapack: insufficient length of a": a Fashion-MNIST judge's floor FID).
// The distance is the closed form of the live features; the dead ones add
// (√1e-130 - √2e-130)² ≈ 0.
func TestFrechetDistanceNearDeadFeatures(t *testing.T) {
	const v = 1e-130
	a := gauss([]float64{0, 0, 0, 0}, [][]float64{{4, 0, 0, 0}, {0, v, v / 3, 0}, {0, v / 3, 2 * v, 0}, {0, 0, 0, 1}})
	b := gauss([]float64{1, 0, 0, 0}, [][]float64{{1, 0, 0, 0}, {0, 2 * v, v / 4, 0}, {0, v / 4, v, 0}, {0, 0, 0, 9}})
	d, err := FrechetDistance(a, b)
	if want := 1 + 1 + 4.0; err != nil || math.Abs(d-want) > 1e-9 {
		t.Errorf("FD = %g (err %v), want %g", d, err, want)
	}
}

// TestFrechetDistanceDeadFeatures fits features of which 8 of 20 are
// always 0 (dead ReLUs, as a Fashion-MNIST judge had 51 of 128): against
// the same features shifted, the distance is the shift's squared length
// (equal covariances), and against themselves 0. gonum's eigensolver gave
// a floor FID of -7e65 on such a judge.
func TestFrechetDistanceDeadFeatures(t *testing.T) {
	on(t, func() {
		torch.ManualSeed(4)
		x := torch.Randn([]int64{300, 20}, torch.Float64).Mul(torch.Randn([]int64{20, 20}, torch.Float64).Narrow(0, 0, 1)).Relu()
		live := make([]float64, 20)
		for i := range live {
			if i < 6 || i >= 14 {
				live[i] = 1
			}
		}
		x = x.Mul(torch.FromSlice(live, []int64{1, 20}))
		shift := torch.Full([]int64{1, 20}, 0.5, torch.Float64).Mul(torch.FromSlice(live, []int64{1, 20}))
		a, err := Fit(x)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := Fit(x.Add(shift))
		if d, err := FrechetDistance(a, a); err != nil || math.Abs(d) > 1e-9 {
			t.Errorf("FD with itself = %g (err %v)", d, err)
		}
		if d, err := FrechetDistance(a, b); err != nil || math.Abs(d-12*0.25) > 1e-9 {
			t.Errorf("FD against the shifted copy = %g (err %v), want 3", d, err)
		}
	})
}

// TestEigSym: the Jacobi eigendecomposition of a random symmetric matrix
// satisfies A v = λ v with orthonormal v, and tr A = Σ λ.
func TestEigSym(t *testing.T) {
	const n = 30
	r := rand.New(rand.NewPCG(1, 2))
	a := make([]float64, n*n)
	for i := range n {
		for j := i; j < n; j++ {
			a[i*n+j] = r.NormFloat64()
			a[j*n+i] = a[i*n+j]
		}
	}
	orig := append([]float64(nil), a...)
	vals, v, err := eigSym(a, n, true)
	if err != nil {
		t.Fatal(err)
	}
	for k := range n {
		for i := range n {
			av := 0.0
			for j := range n {
				av += orig[i*n+j] * v[j*n+k]
			}
			if math.Abs(av-vals[k]*v[i*n+k]) > 1e-10 {
				t.Fatalf("(A v)[%d] = %g, λ v = %g for eigenpair %d", i, av, vals[k]*v[i*n+k], k)
			}
		}
		for l := range n {
			dot := 0.0
			for i := range n {
				dot += v[i*n+k] * v[i*n+l]
			}
			if want := map[bool]float64{true: 1, false: 0}[k == l]; math.Abs(dot-want) > 1e-10 {
				t.Fatalf("v%d·v%d = %g", k, l, dot)
			}
		}
	}
}

func TestFitAndPrecisionRecall(t *testing.T) {
	on(t, func() {
		torch.ManualSeed(0)
		x := torch.Randn([]int64{20000, 2}, torch.Float64).Mul(torch.FromSlice([]float64{2, 0.5}, []int64{1, 2}))
		g, err := Fit(x)
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(g.Cov.At(0, 0)-4) > 0.15 || math.Abs(g.Cov.At(1, 1)-0.25) > 0.01 || math.Abs(g.Cov.At(0, 1)) > 0.05 {
			t.Errorf("fitted covariance %v", mat.Formatted(g.Cov))
		}
		a := torch.Randn([]int64{1500, 8}, torch.Float64)
		p, r, err := PrecisionRecall(a, a, 3)
		if err != nil || p < 0.999 || r < 0.999 {
			t.Errorf("identical sets: precision %v recall %v (%v)", p, r, err)
		}
		b := torch.Randn([]int64{1500, 8}, torch.Float64)
		if p, r, _ := PrecisionRecall(a, b, 3); p < 0.8 || r < 0.8 {
			t.Errorf("two draws of one distribution: precision %v recall %v", p, r)
		}
		far := b.AddScalar(100)
		if p, r, _ := PrecisionRecall(a, far, 3); p != 0 || r != 0 {
			t.Errorf("disjoint clouds: precision %v recall %v", p, r)
		}
		// A collapsed generator: high precision, low recall.
		collapsed := a.Narrow(0, 0, 50).Repeat(30, 1)
		if p, r, _ := PrecisionRecall(a, collapsed, 3); p < 0.99 || r > 0.3 {
			t.Errorf("collapsed: precision %v recall %v", p, r)
		}
	})
	w := Wilson(90, 100)
	if math.Abs(w.Low-0.8256) > 1e-3 || math.Abs(w.High-0.9448) > 1e-3 {
		t.Errorf("Wilson(90/100) = %+v", w)
	}
}

// trainJudge trains a judge on 10,000 images for one epoch (about 91%, with
// the shipped config's dropout and learning-rate decay squeezed into it).
func trainJudge(t *testing.T) (string, float64) {
	t.Helper()
	c, err := models.LoadConfig("../configs/mnist_classifier.yaml", []string{"device=cpu", "data.subset=10000", "train.epochs=1", "train.log_every=50"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := train.Train(c, train.Options{Out: filepath.Join(t.TempDir(), "judge")})
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Open(r.Path("metrics.jsonl"))
	defer f.Close()
	var acc float64
	s := bufio.NewScanner(f)
	for s.Scan() {
		var m struct {
			Acc *float64 `json:"test_accuracy"`
		}
		json.Unmarshal(s.Bytes(), &m)
		if m.Acc != nil {
			acc = *m.Acc
		}
	}
	return r.Dir, acc
}

func TestLongJudgeOnRealAndNoise(t *testing.T) {
	longtest.Skip(t)
	dir, reported := trainJudge(t)
	on(t, func() {
		j, err := LoadJudge(dir, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer j.Free()
		ref, err := j.NewReference()
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(ref.Accuracy-reported) > 1e-9 || ref.Accuracy < 0.9 {
			t.Errorf("judge accuracy on the test images %v, training reported %v", ref.Accuracy, reported)
		}
		// Real (held-out training images) against the test set: near the floor.
		real, err := j.Evaluate(ref, imagesOf(t, 2000), nil)
		if err != nil {
			t.Fatal(err)
		}
		noise, _ := j.Evaluate(ref, torch.Rand([]int64{2000, 1, 28, 28}), nil)
		if !(real.FID*20 < noise.FID) || real.Precision < 0.6 || noise.Precision > 0.05 {
			t.Errorf("real: FID %.3f P %.3f; noise: FID %.3f P %.3f", real.FID, real.Precision, noise.FID, noise.Precision)
		}
		labelled, _ := j.Evaluate(ref, imagesOf(t, 500), labelsOf(t, 500))
		if labelled.Accuracy == nil || labelled.Accuracy.Value < 0.9 || len(labelled.PerClass) != 10 {
			t.Errorf("conditional accuracy on real labelled images: %+v", labelled.Accuracy)
		}
	})
}

func imagesOf(t *testing.T, n int) *torch.Tensor {
	imgs, _ := realTrain(t, n)
	return imgs
}

func labelsOf(t *testing.T, n int) []int64 {
	_, labels := realTrain(t, n)
	return labels
}

// realTrain returns training images 50,000 onwards, which the judge (trained
// on the first 10,000) never saw.
func realTrain(t *testing.T, n int) (*torch.Tensor, []int64) {
	t.Helper()
	dir, _ := datasets.DatasetDir("mnist", "")
	s, err := datasets.LoadImages(dir, "train")
	if err != nil {
		t.Fatal(err)
	}
	pix := make([]float32, 0, n*784)
	var labels []int64
	for i := 50000; i < 50000+n; i++ {
		for _, v := range s.Image(i) {
			pix = append(pix, float32(v)/255)
		}
		labels = append(labels, int64(s.Labels[i]))
	}
	return torch.FromSlice(pix, []int64{int64(n), 1, 28, 28}), labels
}

func TestBadInputs(t *testing.T) {
	on(t, func() {
		// A judge of another kind.
		c, _ := models.LoadConfig("../configs/mnist_vae.yaml", []string{"device=cpu", "data.subset=256", "train.max_steps=2"})
		r, err := train.Train(c, train.Options{Out: filepath.Join(t.TempDir(), "vae")})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := LoadJudge(r.Dir, torch.CPU); err == nil || !strings.Contains(err.Error(), `a "vae" checkpoint; the judge must be a classifier`) {
			t.Errorf("vae judge: %v", err)
		}
	})
	dir := t.TempDir()
	if _, _, err := LoadSamples(dir, mnist); err == nil || !strings.Contains(err.Error(), "no manifest.jsonl") {
		t.Errorf("no manifest: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "manifest.jsonl"), []byte(`{"file":"a.png","label":3}`+"\n"), 0o644)
	f, _ := os.Create(filepath.Join(dir, "a.png"))
	png.Encode(f, image.NewGray(image.Rect(0, 0, 32, 32)))
	f.Close()
	if _, _, err := LoadSamples(dir, mnist); err == nil || !strings.Contains(err.Error(), "a.png: a 32x32") {
		t.Errorf("wrong size: %v", err)
	}
	os.WriteFile(filepath.Join(dir, "manifest.jsonl"), []byte("not json\n"), 0o644)
	if _, _, err := LoadSamples(dir, mnist); err == nil || !strings.Contains(err.Error(), "manifest.jsonl:1") {
		t.Errorf("bad manifest: %v", err)
	}
}

// Samples' labels follow an uneven test split's proportions, interleaved,
// and cycle over the classes of an even one.
func TestMixedLabels(t *testing.T) {
	count := func(l []int64, k int) []int {
		n := make([]int, k)
		for _, v := range l {
			n[v]++
		}
		return n
	}
	if got := MixedLabels(7, []int{1135, 892, 1000}); !slices.Equal(got, []int64{0, 1, 2, 0, 1, 2, 0}) {
		t.Errorf("even split: %v, want the classes in turn", got)
	}
	got := MixedLabels(100, []int{452, 10, 38})
	if n := count(got, 3); !slices.Equal(n, []int{90, 2, 8}) {
		t.Errorf("uneven split: %v of each class, want 90, 2, 8", n)
	}
	if n := count(got[:50], 3); n[2] < 3 || n[2] > 5 {
		t.Errorf("the first half holds %v: the classes must be interleaved", n)
	}
	if got := MixedLabels(4, []int{5, 0}); !slices.Equal(got, []int64{0, 1, 0, 1}) {
		t.Errorf("a split with an empty class: %v, want the classes in turn", got)
	}
}
