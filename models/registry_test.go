package models

import (
	"slices"
	"strings"
	"testing"

	"kakusan/sample"
	"kakusan/torch"
	"kakusan/torch/torchtest"
)

// TestEntriesDoWhatTheySay builds every neural entry's model for small
// data and checks it is what the entry's capabilities promise: a
// Reconstructor where it reconstructs, a Classifier where it classifies,
// a generator of images of the data's shape where it draws them; where it
// does not, NewGenerator refuses, saying what the model does instead.
func TestEntriesDoWhatTheySay(t *testing.T) {
	g := Geometry{C: 1, H: 8, W: 8, Classes: 2, ClassNames: []string{"a", "b"}}
	small := map[string][]string{"diffusion": {"unet.width=8", "diffusion.sample_steps=2"}}
	for _, name := range Names() {
		e, _ := Lookup(name)
		if e.About == "" || e.Can == 0 {
			t.Errorf("%s: no About or capabilities", name)
		}
		if !Neural(name) {
			if !e.Does(FitsPoints) || e.Generator != nil {
				t.Errorf("%s: a classical model that can %v", name, e.Can)
			}
			continue
		}
		c, err := ParseConfig("x.yaml", []byte("model: "+name+"\n"), small[name])
		if err != nil {
			t.Fatal(err)
		}
		torchtest.Run(t, func() {
			m, err := New(c, g, torch.CPU)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			defer Free(m)
			_, rec := m.(Reconstructor)
			_, cls := m.(Classifier)
			if rec != e.Does(Reconstructs) || cls != e.Does(Classifies) {
				t.Errorf("%s can %v, but reconstructs %v, classifies %v", name, e.Can, rec, cls)
			}
			gen, err := e.NewGenerator(m, GridSampling(c))
			if !e.Does(DrawsImages) {
				if err == nil || !strings.Contains(err.Error(), "does not generate images") {
					t.Errorf("%s: a generator of a model that draws nothing: %v", name, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			x, err := gen.Generate(sample.Batch{Images: []int{0, 1}, Labels: []int64{0, 1}, Seed: 1})
			if err != nil || !slices.Equal(x.Shape(), []int64{2, 1, 8, 8}) {
				t.Errorf("%s draws %v: %v", name, x, err)
			}
		})
	}
	if got := (DrawsImages | Diffuses).String(); got != "draws images, diffuses" {
		t.Errorf("capabilities read %q", got)
	}
}
