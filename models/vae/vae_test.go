package vae

import (
	"math"
	"math/rand/v2"
	"reflect"
	"sort"
	"testing"

	"kakusan/models/nn"
	"kakusan/torch"
	"kakusan/torch/torchtest"
)

var on = torchtest.Run

// dense is a plain-Go linear layer for the hand computations.
type dense struct {
	w    [][]float64
	b    []float64
	name string
}

func (d dense) apply(x []float64) []float64 {
	y := make([]float64, len(d.b))
	for i := range y {
		y[i] = d.b[i]
		for j, v := range x {
			y[i] += d.w[i][j] * v
		}
	}
	return y
}

func randDense(rng *rand.Rand, name string, in, out int) dense {
	d := dense{name: name, b: make([]float64, out)}
	for i := range out {
		row := make([]float64, in)
		for j := range row {
			row[j] = rng.NormFloat64() * 0.5
		}
		d.w = append(d.w, row)
		d.b[i] = rng.NormFloat64() * 0.1
	}
	return d
}

// install copies the plain-Go layers into the module under their names.
func install(t *testing.T, m *nn.Module, layers []dense) {
	t.Helper()
	sd := map[string]*torch.Tensor{}
	for _, d := range layers {
		var flat []float64
		for _, r := range d.w {
			flat = append(flat, r...)
		}
		sd[d.name+".weight"] = torch.FromSlice(flat, []int64{int64(len(d.w)), int64(len(d.w[0]))})
		sd[d.name+".bias"] = torch.FromSlice(d.b, nil)
	}
	if err := m.Load(sd); err != nil {
		t.Fatal(err)
	}
}

func relu(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = math.Max(x, 0)
	}
	return out
}

func sigmoid(v []float64) []float64 {
	out := make([]float64, len(v))
	for i, x := range v {
		out[i] = 1 / (1 + math.Exp(-x))
	}
	return out
}

// kl is the book's KL term Σ (σ² + (μ-c)² - 1 - log σ²) with σ = exp(logvar/2).
func kl(mu, logvar, c []float64) float64 {
	var s float64
	for i := range mu {
		ci := 0.0
		if c != nil {
			ci = c[i]
		}
		s += (math.Exp(logvar[i]) + (mu[i]-ci)*(mu[i]-ci) - 1 - logvar[i])
	}
	return s
}

func TestVAELossByHand(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	const in, hidden, latent = 5, 4, 3
	layers := []dense{
		randDense(rng, "encoder.linear", in, hidden), randDense(rng, "encoder.linear_mu", hidden, latent),
		randDense(rng, "encoder.linear_logvar", hidden, latent),
		randDense(rng, "decoder.linear1", latent, hidden), randDense(rng, "decoder.linear2", hidden, in),
	}
	xs := [][]float64{{0, 0.2, 0.9, 1, 0.5}, {0.3, 0.3, 0, 0.1, 0.8}}
	eps := [][]float64{{0.5, -1, 0.2}, {-0.3, 0.7, 1.1}}
	var want, klSum float64
	for n, x := range xs {
		h := relu(layers[0].apply(x))
		mu, logvar := layers[1].apply(h), layers[2].apply(h)
		z := make([]float64, latent)
		for i := range z {
			z[i] = mu[i] + math.Exp(0.5*logvar[i])*eps[n][i]
		}
		xhat := sigmoid(layers[4].apply(relu(layers[3].apply(z))))
		for i := range x {
			want += (xhat[i] - x[i]) * (xhat[i] - x[i])
		}
		want += kl(mu, logvar, nil)
		klSum += kl(mu, logvar, nil)
	}
	want /= float64(len(xs))
	// kl_weight 0.5: the textbook KL divergence, half the book's term.
	wantHalf := want - 0.5*klSum/float64(len(xs))
	on(t, func() {
		v := NewVAE(in, hidden, latent, torch.CPU)
		defer v.Free()
		install(t, v.Module, layers)
		x := torch.FromSlice(append(append([]float64(nil), xs[0]...), xs[1]...), []int64{2, in}).To(torch.Float32)
		e := torch.FromSlice(append(append([]float64(nil), eps[0]...), eps[1]...), []int64{2, latent}).To(torch.Float32)
		got := v.Loss(x, e).Item()
		if math.Abs(got-want) > 1e-5*math.Abs(want) {
			t.Errorf("loss %.8f, hand-computed %.8f", got, want)
		}
		v.KLWeight = 0.5
		if got := v.Loss(x, e).Item(); math.Abs(got-wantHalf) > 1e-5*math.Abs(wantHalf) {
			t.Errorf("kl_weight 0.5: loss %.8f, hand-computed %.8f", got, wantHalf)
		}
	})
}

func TestHVAELossByHand(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	const in, hidden, latent = 4, 3, 2
	layers := []dense{
		randDense(rng, "encoder1.linear", in, hidden), randDense(rng, "encoder1.linear_mu", hidden, latent), randDense(rng, "encoder1.linear_logvar", hidden, latent),
		randDense(rng, "encoder2.linear", latent, hidden), randDense(rng, "encoder2.linear_mu", hidden, latent), randDense(rng, "encoder2.linear_logvar", hidden, latent),
		randDense(rng, "decoder1.linear1", latent, hidden), randDense(rng, "decoder1.linear2", hidden, in),
		randDense(rng, "decoder2.linear1", latent, hidden), randDense(rng, "decoder2.linear2", hidden, latent),
	}
	x := []float64{0.1, 0.9, 0.4, 0}
	e1, e2 := []float64{0.3, -0.8}, []float64{1.2, 0.1}
	h := relu(layers[0].apply(x))
	mu1, lv1 := layers[1].apply(h), layers[2].apply(h)
	z1 := []float64{mu1[0] + math.Exp(0.5*lv1[0])*e1[0], mu1[1] + math.Exp(0.5*lv1[1])*e1[1]}
	h2 := relu(layers[3].apply(z1))
	mu2, lv2 := layers[4].apply(h2), layers[5].apply(h2)
	z2 := []float64{mu2[0] + math.Exp(0.5*lv2[0])*e2[0], mu2[1] + math.Exp(0.5*lv2[1])*e2[1]}
	z1hat := layers[9].apply(relu(layers[8].apply(z2)))
	xhat := sigmoid(layers[7].apply(relu(layers[6].apply(z1))))
	var want float64
	for i := range x {
		want += (xhat[i] - x[i]) * (xhat[i] - x[i])
	}
	want += kl(mu2, lv2, nil) + kl(mu1, lv1, z1hat)
	on(t, func() {
		m := NewHVAE(in, hidden, latent, torch.CPU)
		defer m.Free()
		install(t, m.Module, layers)
		f := func(v []float64, s ...int64) *torch.Tensor { return torch.FromSlice(v, s).To(torch.Float32) }
		got := m.Loss(f(x, 1, in), f(e1, 1, latent), f(e2, 1, latent)).Item()
		if math.Abs(got-want) > 1e-5*math.Abs(want) {
			t.Errorf("loss %.8f, hand-computed %.8f", got, want)
		}
	})
}

func TestParameterNamesMatchPyTorch(t *testing.T) {
	on(t, func() {
		v := NewVAE(784, 200, 20, torch.CPU)
		defer v.Free()
		var names []string
		shapes := map[string][]int64{}
		for _, p := range v.Params() {
			names = append(names, p.Name)
			shapes[p.Name] = p.T.Shape()
		}
		sort.Strings(names)
		want := []string{"decoder.linear1.bias", "decoder.linear1.weight", "decoder.linear2.bias", "decoder.linear2.weight",
			"encoder.linear.bias", "encoder.linear.weight", "encoder.linear_logvar.bias", "encoder.linear_logvar.weight",
			"encoder.linear_mu.bias", "encoder.linear_mu.weight"}
		if !reflect.DeepEqual(names, want) {
			t.Errorf("names %v", names)
		}
		if s := shapes["encoder.linear.weight"]; !reflect.DeepEqual(s, []int64{200, 784}) {
			t.Errorf("encoder.linear.weight shape %v (PyTorch stores out×in)", s)
		}
		if n := v.NumParams(); n != 784*200+200+2*(200*20+20)+20*200+200+200*784+784 {
			t.Errorf("%d parameters", n)
		}
		// Strict loading names the first problem.
		sd := v.StateDict()
		delete(sd, "decoder.linear2.bias")
		if err := v.Load(sd); err == nil || err.Error() != `missing tensor "decoder.linear2.bias"` {
			t.Errorf("missing: %v", err)
		}
		sd = v.StateDict()
		sd["encoder.linear.weight"] = torch.Zeros([]int64{3, 3})
		if err := v.Load(sd); err == nil || err.Error() != `tensor "encoder.linear.weight" has shape [3 3], the model wants [200 784]` {
			t.Errorf("shape: %v", err)
		}
		sd = v.StateDict()
		sd["extra.weight"] = torch.Zeros([]int64{1})
		if err := v.Load(sd); err == nil {
			t.Error("extra tensor accepted")
		}
		if err := v.Load(sd, "extra."); err != nil {
			t.Errorf("ignored prefix: %v", err)
		}
	})
}
