// Package prompt is the text side of ladder step 9's cross-attention
// conditioning: a small vocabulary of words, prompts parsed into tokens,
// and the style words each training image earns from measurements of its
// pixels. A prompt names a class ("seven", "sandal") and, to show what
// text says that a class label cannot, how it is drawn: "thin" or "bold"
// (ink mass in the lower or upper third of its class), "upright" or
// "slanted" (the shear of its second moments, |μ11/μ02|, in the lower or
// upper third). "bold slanted seven" is three tokens; word order is free.
package prompt

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"kakusan/torch"
)

// Context is the tokens of a prompt, one slot per kind of word: the class,
// the thickness and the slant; token 0 (the empty word) fills an unused
// slot, and a prompt of three 0s is the empty prompt that classifier-free
// guidance drops to.
const Context = 3

// Slots of a prompt's tokens.
const (
	ClassSlot = iota
	InkSlot
	SlantSlot
)

// Styles are the style words by slot (InkSlot, SlantSlot): the first is the
// lower third of the class, the second the upper third.
var Styles = [Context][2]string{InkSlot: {"thin", "bold"}, SlantSlot: {"upright", "slanted"}}

var digits = []string{"zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"}

// ClassWord is the word for a class name: lower case, spaces as hyphens,
// a single digit spelled out ("7" is "seven", "Ankle boot" "ankle-boot").
func ClassWord(name string) string {
	if len(name) == 1 && name[0] >= '0' && name[0] <= '9' {
		return digits[name[0]-'0']
	}
	return strings.Join(strings.Fields(strings.ToLower(name)), "-")
}

// Vocabulary is the words a model knows, by token: "" (token 0), the
// class words in label order, then the style words.
func Vocabulary(classNames []string) []string {
	v := []string{""}
	for _, n := range classNames {
		v = append(v, ClassWord(n))
	}
	for _, s := range []int{InkSlot, SlantSlot} {
		v = append(v, Styles[s][0], Styles[s][1])
	}
	return v
}

// CheckVocabulary validates a vocabulary for classes classes: the empty
// word, one distinct word per class and the style words, in that order.
func CheckVocabulary(v []string, classes int) error {
	if len(v) != 1+classes+4 || v[0] != "" {
		return fmt.Errorf("want the empty word, %d class words and the 4 style words, got %d words", classes, len(v))
	}
	seen := make(map[string]bool, len(v))
	for i, w := range v[1:] {
		if w == "" || strings.ContainsAny(w, " \t\n") || seen[w] {
			return fmt.Errorf("word %d (%q) is empty, has spaces or repeats", i+1, w)
		}
		seen[w] = true
	}
	if want := Vocabulary(make([]string, 0))[1:]; !slices.Equal(v[1+classes:], want) {
		return fmt.Errorf("the style words must be %v, got %v", want, v[1+classes:])
	}
	return nil
}

// Prompt is a parsed prompt: its class (-1: none) and each style slot's
// word (0: none, 1: the lower third's, 2: the upper third's).
type Prompt struct {
	Class int
	Style [Context]int // InkSlot and SlantSlot; ClassSlot unused
}

// maxPrompt bounds a prompt's text.
const maxPrompt = 1000

// Parse reads a prompt in vocabulary v (of classes classes): words
// separated by spaces, in any order, at most one per slot. A class name
// of several words may be written with spaces ("ankle boot").
func Parse(v []string, classes int, text string) (Prompt, error) {
	p := Prompt{Class: -1}
	if len(text) > maxPrompt {
		return p, fmt.Errorf("prompt of %d bytes: at most %d", len(text), maxPrompt)
	}
	norm := " " + strings.Join(strings.Fields(strings.ToLower(text)), " ") + " "
	for _, w := range v[1 : 1+classes] { // multi-word class names to their hyphenated words
		if spaced := strings.ReplaceAll(w, "-", " "); spaced != w {
			norm = strings.ReplaceAll(norm, " "+spaced+" ", " "+w+" ")
		}
	}
	var errs []error
	for _, w := range strings.Fields(norm) {
		if len(errs) == 3 {
			errs = append(errs, errors.New("..."))
			break
		}
		tok := slices.Index(v, w)
		switch {
		case tok < 1:
			errs = append(errs, fmt.Errorf("unknown word %q (known: %s)", w, known(v[1:])))
		case tok <= classes:
			if p.Class >= 0 {
				errs = append(errs, fmt.Errorf("two classes: %q and %q", v[1+p.Class], w))
			}
			p.Class = tok - 1
		default:
			slot, which := InkSlot+(tok-1-classes)/2, 1+(tok-1-classes)%2
			if p.Style[slot] != 0 {
				errs = append(errs, fmt.Errorf("%q and %q describe the same thing: one at most", Styles[slot][p.Style[slot]-1], w))
			}
			p.Style[slot] = which
		}
	}
	return p, errors.Join(errs...)
}

// known lists a vocabulary for an error message, the first 30 words.
func known(words []string) string {
	if len(words) > 30 {
		return strings.Join(words[:30], ", ") + fmt.Sprintf(" and %d more", len(words)-30)
	}
	return strings.Join(words, ", ")
}

// styleToken is the token of style slot slot's word which (1: the lower
// third's, 2: the upper third's) in a vocabulary of classes classes.
func styleToken(classes, slot, which int64) int64 { return classes + 2*(slot-InkSlot) + which }

// StyleTokens are the tokens of p's style slots for a vocabulary of
// classes classes (0 where p has no word).
func (p Prompt) StyleTokens(classes int) [Context]int64 {
	var t [Context]int64
	for _, s := range []int{InkSlot, SlantSlot} {
		if p.Style[s] > 0 {
			t[s] = styleToken(int64(classes), int64(s), int64(p.Style[s]))
		}
	}
	return t
}

// Words is p's style words, "" for none.
func (p Prompt) Words() string {
	var w []string
	for _, s := range []int{InkSlot, SlantSlot} {
		if p.Style[s] > 0 {
			w = append(w, Styles[s][p.Style[s]-1])
		}
	}
	return strings.Join(w, " ")
}

// Measure returns, for images x (B, C, H, W) in [0, 1], each image's ink
// mass (the sum of its pixels, channels averaged) and its slant, |μ11/μ02|
// of its second central moments: how far x moves per row, 0 for an
// upright stroke. Both (B) float32; an empty image has slant 0.
func Measure(x *torch.Tensor) (ink, slant *torch.Tensor) {
	s := x.Shape()
	h, w, dev := s[2], s[3], x.Device()
	img := x.To(torch.Float32).MeanDims(false, 1) // B, H, W
	ink = img.SumDims(false, 1, 2)
	mass := ink.AddScalar(1e-6)
	ys := torch.Arange(0, float64(h), 1, dev).View(1, -1, 1)
	xs := torch.Arange(0, float64(w), 1, dev).View(1, 1, -1)
	cy := img.Mul(ys).SumDims(false, 1, 2).Div(mass).View(-1, 1, 1)
	cx := img.Mul(xs).SumDims(false, 1, 2).Div(mass).View(-1, 1, 1)
	dy, dx := ys.Sub(cy), xs.Sub(cx)
	mu11 := img.Mul(dx).Mul(dy).SumDims(false, 1, 2)
	mu02 := img.Mul(dy.Square()).SumDims(false, 1, 2).AddScalar(1e-6)
	return ink, mu11.Div(mu02).Abs()
}

// MeasureValues is Measure read back to the host, as float64s.
func MeasureValues(x *torch.Tensor) (ink, slant []float64) {
	i, s := Measure(x)
	return torch.Values[float64](i.To(torch.Float64)), torch.Values[float64](s.To(torch.Float64))
}

// ByClass groups values by their labels: out[c] holds the values of label
// c, in order; labels outside 0..classes-1 are left out.
func ByClass(values []float64, labels []int64, classes int) [][]float64 {
	out := make([][]float64, classes)
	for i, l := range labels {
		if l >= 0 && int(l) < classes {
			out[l] = append(out[l], values[i])
		}
	}
	return out
}

// Thresholds are, per class, the lower and upper tertiles of the training
// images' ink mass and slant: rows {ink 1/3, ink 2/3, slant 1/3, slant 2/3}.
// An image earns the first style word of a slot below the lower tertile
// and the second above the upper one.
func Thresholds(ink, slant []float64, labels []int64, classes int) ([][]float64, error) {
	rows := make([][]float64, classes)
	inks, slants := ByClass(ink, labels, classes), ByClass(slant, labels, classes)
	for c := range classes {
		in, sl := inks[c], slants[c]
		if len(in) < 3 {
			return nil, fmt.Errorf("class %d has %d images: the style words need at least 3 to measure tertiles", c, len(in))
		}
		rows[c] = []float64{Quantile(in, 1.0/3), Quantile(in, 2.0/3), Quantile(sl, 1.0/3), Quantile(sl, 2.0/3)}
	}
	return rows, nil
}

// Quantile is the q-quantile of v by linear interpolation between order
// statistics (numpy's default); v is sorted in place.
func Quantile(v []float64, q float64) float64 {
	slices.Sort(v)
	pos := q * float64(len(v)-1)
	i := int(pos)
	if i+1 >= len(v) {
		return v[len(v)-1]
	}
	return v[i] + (pos-float64(i))*(v[i+1]-v[i])
}

// CheckThresholds validates thresholds for classes classes.
func CheckThresholds(th [][]float64, classes int) error {
	if len(th) != classes {
		return fmt.Errorf("want a row per class (%d), got %d rows", classes, len(th))
	}
	for c, r := range th {
		if len(r) != 4 || !(r[0] <= r[1]) || !(r[2] <= r[3]) || r[0] < 0 || r[2] < 0 || r[1] > 1e9 || r[3] > 1e9 {
			return fmt.Errorf("class %d: want {ink 1/3, ink 2/3, slant 1/3, slant 2/3}, non-negative and ordered, got %v", c, r)
		}
	}
	return nil
}

// Tokens are the training prompts (B, Context) of images x (B, C, H, W) in
// [0, 1] with int64 labels y (B): each image's class word and the style
// words its measurements earn against th (classes, 4, float32, from
// Thresholds), each style word left out with probability drop. It reads
// nothing back from the device.
func Tokens(x, y, th *torch.Tensor, classes int64, drop float64) *torch.Tensor {
	ink, slant := Measure(x)
	t := th.IndexSelect(0, y) // B, 4
	word := func(v *torch.Tensor, col, slot int64) *torch.Tensor {
		lo := v.Lt(t.Narrow(1, col, 1).SqueezeDim(1))
		hi := v.Gt(t.Narrow(1, col+1, 1).SqueezeDim(1))
		tok := torch.Where(lo, torch.Scalar(float64(styleToken(classes, slot, 1)), x.Device()), torch.Scalar(0, x.Device()))
		tok = torch.Where(hi, torch.Scalar(float64(styleToken(classes, slot, 2)), x.Device()), tok)
		kept := torch.Rand([]int64{y.Size(0)}, x.Device()).GeScalar(drop).To(torch.Float32)
		return tok.Mul(kept).To(torch.Int64)
	}
	return torch.Stack([]*torch.Tensor{y.AddScalar(1).To(torch.Int64), word(ink, 0, InkSlot), word(slant, 2, SlantSlot)}, 1)
}
