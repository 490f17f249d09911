package train

import (
	"fmt"
	"slices"
	"sort"
	"strings"

	"go.yaml.in/yaml/v3"

	"kakusan/models"
	"kakusan/models/nn"
	"kakusan/torch"
)

// initFrom loads train.init_from's weights into a fresh run's model before
// its moving average starts: fine-tuning. Parameters and buffers are
// matched by name and shape; a tensor the checkpoint lacks, one it has that
// the model does not, or one of another shape is an error naming each of
// them, except for the tensors whose shape differs only by the change in
// the number of classes (a label embedding, a classifier's last layer),
// which keep their fresh initialisation, said in the log. The frozen parts
// and measured constants (a latent model's autoencoder and scale) are this
// run's own; the optimizer and the step start afresh.
func (l *loop) initFrom() error {
	t := l.c.Train
	ck, err := models.ReadCheckpoint(t.InitFrom, l.dev)
	if err != nil {
		return fmt.Errorf("train.init_from: %w", err)
	}
	defer ck.Free()
	if ck.Config.Model != l.c.Model {
		return fmt.Errorf("train.init_from %s: a %q checkpoint; this run trains %q", ck.Path, ck.Config.Model, l.c.Model)
	}
	ema := t.InitFromEMA && ck.HasEMA()
	m := l.st.Model.Module()
	own := append(append([]nn.Named(nil), m.Params()...), m.Buffers()...)
	classes := [2]int{ck.Geometry.Classes, l.st.Geometry.Classes}
	load, fresh, err := matchWeights(ck.Weights(ema), own, m.Frozen(), classes)
	if err != nil {
		return fmt.Errorf("train.init_from %s: %w", ck.Path, err)
	}
	for name, src := range load {
		if src.DType().IsFloat() && !src.IsFinite().All() {
			return fmt.Errorf("train.init_from %s: tensor %q holds NaN or infinite values", ck.Path, ck.StoredName(name, ema))
		}
	}
	torch.NoGrad(func() {
		for _, n := range own {
			if src, ok := load[n.Name]; ok {
				n.T.CopyFrom(src)
			}
		}
	})
	which := "trained weights"
	if ema {
		which = "moving average"
	}
	fmt.Fprintf(l.r.Log, "initialised from %s (step %d, its %s): %d of %d tensors\n", ck.Path, ck.Step, which, len(load), len(own))
	l.warnMeaning(ck.Config)
	if len(fresh) > 0 {
		fmt.Fprintf(l.r.Log, "  %d classes there, %d here: freshly initialised %s\n", classes[0], classes[1], strings.Join(fresh, ", "))
	}
	return nil
}

// matchWeights matches a checkpoint's weights from with a model's
// parameters and buffers own by name and shape: what to load, the tensors
// resized by the change in classes (left fresh), or an error naming every
// mismatch (frozen tensors are the run's own, not expected in from).
func matchWeights(from map[string]*torch.Tensor, own, frozen []nn.Named, classes [2]int) (map[string]*torch.Tensor, []string, error) {
	var problems, fresh []string
	load := map[string]*torch.Tensor{}
	names := map[string]bool{}
	for _, n := range own {
		names[n.Name] = true
		src, ok := from[n.Name]
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: not in the checkpoint", n.Name))
			continue
		}
		have, want := src.Shape(), n.T.Shape()
		switch {
		case slices.Equal(have, want) && src.DType().IsFloat() == n.T.DType().IsFloat():
			load[n.Name] = src
		case byClasses(have, want, classes):
			fresh = append(fresh, fmt.Sprintf("%s %v -> %v", n.Name, have, want))
		default:
			problems = append(problems, fmt.Sprintf("%s: shape %v %s in the checkpoint, %v %s in the model", n.Name, have, src.DType(), want, n.T.DType()))
		}
	}
	for _, n := range frozen {
		names[n.Name] = true
	}
	for name := range from {
		if !names[name] && !strings.HasPrefix(name, models.OptimPrefix) && !strings.HasPrefix(name, models.RNGPrefix) && !strings.HasPrefix(name, models.EMAPrefix) {
			problems = append(problems, fmt.Sprintf("%s: in the checkpoint, not in the model", name))
		}
	}
	if len(problems) == 0 {
		return load, fresh, nil
	}
	sort.Strings(problems)
	more := ""
	if len(problems) > 12 {
		more = fmt.Sprintf("; and %d more", len(problems)-12)
		problems = problems[:12]
	}
	return nil, nil, fmt.Errorf("%d tensors do not match the model (another architecture? compare the configs):\n  %s%s", len(problems), strings.Join(problems, "\n  "), more)
}

// warnMeaning says in the log where the run being fine-tuned diffuses
// otherwise than the run its weights come from (was): the shapes match,
// what the network predicts does not.
func (l *loop) warnMeaning(was *models.Config) {
	a, b := was.Sections["diffusion"], l.c.Sections["diffusion"]
	if a == nil || b == nil {
		return
	}
	for _, key := range []string{"prediction", "schedule", "timesteps", "codec", "conditioning"} {
		if va, vb := sectionValue(a, key), sectionValue(b, key); va != vb {
			fmt.Fprintf(l.r.Log, "warning: train.init_from's model was trained with diffusion.%s %s, this run trains with %s: its weights predict something else; fine-tuning starts far from them\n", key, va, vb)
		}
	}
}

// sectionValue is a config section's key as YAML writes it.
func sectionValue(section any, key string) string {
	b, _ := yaml.Marshal(section)
	var m map[string]any
	yaml.Unmarshal(b, &m)
	return fmt.Sprint(m[key])
}

// byClasses reports whether shapes have and want differ in one dimension
// only, by the change in the number of classes: a tensor with a row (or
// more) per class.
func byClasses(have, want []int64, classes [2]int) bool {
	if classes[0] == classes[1] || len(have) != len(want) {
		return false
	}
	differ := 0
	for i := range have {
		if have[i] != want[i] {
			differ++
			if want[i]-have[i] != int64(classes[1]-classes[0]) {
				return false
			}
		}
	}
	return differ == 1
}
