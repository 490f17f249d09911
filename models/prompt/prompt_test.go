package prompt

import (
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"kakusan/torch"
	"kakusan/torch/torchtest"
)

var on = torchtest.Run

var fashion = []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}

func TestVocabulary(t *testing.T) {
	v := Vocabulary([]string{"0", "1", "2", "3", "4", "5", "6", "7", "8", "9"})
	want := []string{"", "zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "thin", "bold", "upright", "slanted"}
	if !slices.Equal(v, want) {
		t.Fatalf("MNIST vocabulary %q, want %q", v, want)
	}
	if err := CheckVocabulary(v, 10); err != nil {
		t.Fatal(err)
	}
	f := Vocabulary(fashion)
	if f[1] != "t-shirt/top" || f[10] != "ankle-boot" {
		t.Errorf("Fashion-MNIST class words %q", f[1:11])
	}
	for _, bad := range [][]string{
		v[:14],                          // a style word short
		append([]string{"x"}, v[1:]...), // token 0 not empty
		append([]string{"", "zero", "zero"}, v[3:]...), // a repeated word
	} {
		if CheckVocabulary(bad, 10) == nil {
			t.Errorf("CheckVocabulary(%q) passed", bad)
		}
	}
}

func TestParse(t *testing.T) {
	v := Vocabulary(fashion)
	for _, c := range []struct {
		text  string
		class int
		ink   int
		slant int
	}{
		{"sandal", 5, 0, 0},
		{"bold slanted sandal", 5, 2, 2},
		{"  Sandal   SLANTED bold ", 5, 2, 2}, // any order, any case, any spacing
		{"thin", -1, 1, 0},
		{"upright ankle boot", 9, 0, 1}, // a class name of two words, with its space
		{"ankle-boot thin", 9, 1, 0},
		{"", -1, 0, 0},
	} {
		p, err := Parse(v, 10, c.text)
		if err != nil {
			t.Errorf("%q: %v", c.text, err)
			continue
		}
		if p.Class != c.class || p.Style[InkSlot] != c.ink || p.Style[SlantSlot] != c.slant {
			t.Errorf("%q: %+v, want class %d, ink %d, slant %d", c.text, p, c.class, c.ink, c.slant)
		}
	}
	for text, want := range map[string]string{
		"bold purple sandal":      `unknown word "purple" (known: t-shirt/top, trouser`,
		"sandal bag":              `two classes: "sandal" and "bag"`,
		"thin bold dress":         `"thin" and "bold" describe the same thing`,
		strings.Repeat("a", 2000): "at most 1000",
	} {
		if _, err := Parse(v, 10, text); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%.30q: error %v, want one containing %q", text, err, want)
		}
	}
	// An error lists the vocabulary once, shortened, for a few words at most.
	huge := make([]string, 0, 70000)
	huge = append(huge, "")
	for i := range 70000 {
		huge = append(huge, fmt.Sprint("w", i))
	}
	if _, err := Parse(huge, 69996, strings.Repeat("x ", 400)); err == nil || len(err.Error()) > 2000 || !strings.Contains(err.Error(), "and 69970 more") {
		t.Errorf("%d unknown words in a vocabulary of 70,000: an error of %d bytes", 400, len(fmt.Sprint(err)))
	}
	p, _ := Parse(v, 10, "slanted bold")
	if p.Words() != "bold slanted" {
		t.Errorf("Words() = %q, want the canonical order \"bold slanted\"", p.Words())
	}
	if got, want := p.StyleTokens(10), [Context]int64{0, 12, 14}; got != want {
		t.Errorf("StyleTokens = %v, want %v (bold = 12, slanted = 14 in %q)", got, want, v)
	}
}

func TestQuantileAndThresholds(t *testing.T) {
	// numpy.quantile([1..10], q): linear interpolation between order statistics.
	v := []float64{10, 1, 9, 2, 8, 3, 7, 4, 6, 5}
	for q, want := range map[float64]float64{0: 1, 0.5: 5.5, 1.0 / 3: 4, 2.0 / 3: 7, 1: 10} {
		if got := Quantile(slices.Clone(v), q); math.Abs(got-want) > 1e-12 {
			t.Errorf("Quantile(q=%g) = %g, want %g", q, got, want)
		}
	}
	ink := []float64{1, 2, 3, 4, 10, 20, 30, 40}
	slant := []float64{0.4, 0.3, 0.2, 0.1, 1, 2, 3, 4}
	th, err := Thresholds(ink, slant, []int64{0, 0, 0, 0, 1, 1, 1, 1}, 2)
	if err != nil {
		t.Fatal(err)
	}
	// Class 0: ink 1..4 -> tertiles 2, 3; slant 0.1..0.4 -> 0.2, 0.3.
	want := [][]float64{{2, 3, 0.2, 0.3}, {20, 30, 2, 3}}
	for c := range want {
		for i := range want[c] {
			if math.Abs(th[c][i]-want[c][i]) > 1e-12 {
				t.Fatalf("thresholds %v, want %v", th, want)
			}
		}
	}
	if err := CheckThresholds(th, 2); err != nil {
		t.Error(err)
	}
	if _, err := Thresholds(ink, slant, []int64{0, 0, 0, 0, 1, 1, 1, 1}, 3); err == nil {
		t.Error("a class without images measured tertiles")
	}
	for _, bad := range [][][]float64{{{2, 3, 0.2, 0.3}}, {{3, 2, 0, 1}, {0, 1, 0, 1}}, {{0, 1, 0}, {0, 1, 0, 1}}, {{-1, 1, 0, 1}, {0, 1, 0, 1}}} {
		if CheckThresholds(bad, 2) == nil {
			t.Errorf("CheckThresholds(%v) passed", bad)
		}
	}
}

// image draws a one-pixel stroke on a 28×28 canvas: x = x0 + k·(y - 14)
// for the rows from 4 to 23, at intensity a.
func image(x0, k, a float64) []float32 {
	img := make([]float32, 28*28)
	for y := 4; y < 24; y++ {
		x := int(math.Round(x0 + k*float64(y-14)))
		img[y*28+x] = float32(a)
	}
	return img
}

func TestMeasureClosedForms(t *testing.T) {
	on(t, func() {
		var pix []float32
		pix = append(pix, image(14, 0, 1)...)      // upright, 20 pixels of ink
		pix = append(pix, image(14, -0.5, 1)...)   // top to the right: |Δx/Δy| = 0.5
		pix = append(pix, image(14, 0.25, 0.5)...) // top to the left, half the ink
		pix = append(pix, make([]float32, 28*28)...)
		ink, slant := Measure(torch.FromSlice(pix, []int64{4, 1, 28, 28}))
		gotInk, gotSlant := torch.Values[float32](ink), torch.Values[float32](slant)
		for i, want := range []float64{20, 20, 10, 0} {
			if math.Abs(float64(gotInk[i])-want) > 1e-3 {
				t.Errorf("image %d: ink %g, want %g", i, gotInk[i], want)
			}
		}
		// The rounded stroke's slope, by least squares of x on y.
		for i, want := range []float64{0, 0.5, 0.25, 0} {
			if math.Abs(float64(gotSlant[i])-want) > 0.02 {
				t.Errorf("image %d: slant %g, want %g", i, gotSlant[i], want)
			}
		}
	})
}

func TestTokens(t *testing.T) {
	on(t, func() {
		var pix []float32
		pix = append(pix, image(14, 0, 0.2)...)   // class 1: thin (ink 4 < 10), upright (0 < 0.1)
		pix = append(pix, image(14, 0, 1)...)     // class 1: bold (20 > 15), upright
		pix = append(pix, image(14, 0.5, 0.6)...) // class 0: middle ink (12), slanted (0.5 > 0.3)
		x := torch.FromSlice(pix, []int64{3, 1, 28, 28})
		y := torch.FromSlice([]int64{1, 1, 0}, nil)
		th := torch.FromSlice([]float32{10, 15, 0.1, 0.3, 10, 15, 0.1, 0.3}, []int64{2, 4})
		got := torch.Values[int64](Tokens(x, y, th, 2, 0))
		// Vocabulary of 2 classes: 0 "", 1-2 classes, 3 thin, 4 bold, 5 upright, 6 slanted.
		want := []int64{2, 3, 5, 2, 4, 5, 1, 0, 6}
		if !slices.Equal(got, want) {
			t.Errorf("tokens %v, want %v", got, want)
		}
		got = torch.Values[int64](Tokens(x, y, th, 2, 1))
		if want := []int64{2, 0, 0, 2, 0, 0, 1, 0, 0}; !slices.Equal(got, want) {
			t.Errorf("tokens with every style word dropped %v, want %v", got, want)
		}
	})
}
