package diffusion

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"

	"kakusan/models/autoencoder"
	"kakusan/models/nn"
	"kakusan/models/prompt"
	"kakusan/models/unet"
	"kakusan/torch"
)

// Model is a U-Net trained to predict the noise (or v, or x_0) of the
// forward process in a codec's space, with classifier-free guidance when
// it has classes.
type Model struct {
	Net   *unet.UNet
	Sched *Schedule
	Cfg   *Config
	Codec Codec
	Shape []int64 // one image in the model's space, (C, H, W)
	pred  Prediction
	dev   torch.Device
	vocab []string // a prompted model's words, by token (package prompt)
	// Constants measured on the training images (Calibrate), held in the
	// network's module (nn.Module.Constant) so that checkpoints save them
	// and a data-parallel run broadcasts them with its other frozen
	// tensors; 0 until measured. nil where the model has none.
	scale *torch.Tensor // the latent codec's scale: LatentScaleName, ()
	style *torch.Tensor // a prompted model's style thresholds: StyleThresholdsName, (classes, 4)
}

// The names of a model's measured constants in its state dict: the latent
// codec's scale as latent diffusion's LatentDiffusion calls its buffer, the
// per-class tertiles of ink mass and slant (package prompt).
const (
	LatentScaleName     = "scale_factor"
	StyleThresholdsName = "style_thresholds"
)

// NewModel puts a network under a diffusion config on dev, working in
// codec's space (nil: the config's codec of pixels), where one image has
// shape (C, H, W); vocab is a prompted network's vocabulary (nil for
// others). It registers the model's measured constants in the network's
// module, set from the config where it gives them (latent_scale,
// style_thresholds), else 0 until Calibrate measures them. It takes the
// network over: Free releases it.
func NewModel(net *unet.UNet, c *Config, codec Codec, shape []int64, vocab []string, dev torch.Device) (*Model, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	if net.Prompted() && len(vocab) != int(net.Cfg.Vocab) {
		return nil, fmt.Errorf("a vocabulary of %d words for a network of %d", len(vocab), net.Cfg.Vocab)
	}
	s, err := c.NewSchedule()
	if err != nil {
		return nil, err
	}
	if codec == nil {
		if codec, err = NewCodec(c.Codec); err != nil {
			return nil, err
		}
	}
	m := &Model{Net: net, Sched: s, Cfg: c, Codec: codec, Shape: shape, pred: c.Prediction, dev: dev}
	if l, ok := codec.(*Latent); ok {
		m.scale = net.Constant(LatentScaleName, LatentScaleTensor(c.LatentScale, dev))
		l.scale = m.scale
	}
	if net.Prompted() {
		m.vocab = vocab
		t := torch.Zeros([]int64{net.Cfg.Classes, 4}, dev)
		if c.StyleThresholds != nil {
			if t, err = StyleThresholdsTensor(c.StyleThresholds, dev); err != nil {
				s.Free()
				return nil, fmt.Errorf("style_thresholds: %w", err)
			}
		}
		m.style = net.Constant(StyleThresholdsName, t)
	}
	return m, nil
}

// LatentScaleTensor is a latent scale as the model holds it: a float32
// scalar on dev.
func LatentScaleTensor(v float64, dev torch.Device) *torch.Tensor {
	return torch.FromSlice([]float32{float32(v)}, []int64{}, dev)
}

// StyleThresholdsTensor is per-class style thresholds, a row of four each,
// as the model holds them: float32 (classes, 4) on dev.
func StyleThresholdsTensor(th [][]float64, dev torch.Device) (*torch.Tensor, error) {
	flat := make([]float32, 0, 4*len(th))
	for i, r := range th {
		if len(r) != 4 {
			return nil, fmt.Errorf("class %d has %d thresholds, want 4", i, len(r))
		}
		for _, v := range r {
			flat = append(flat, float32(v))
		}
	}
	return torch.FromSlice(flat, []int64{int64(len(th)), 4}, dev), nil
}

// toMeasure is what Calibrate has still to measure: the constants still 0.
// It reads them from the device.
func (m *Model) toMeasure() (scale, styles bool) {
	torch.NoGrad(func() {
		scale = m.scale != nil && m.scale.Item() == 0
		styles = m.style != nil && m.style.Abs().Sum().Item() == 0
	})
	return scale, styles
}

// CheckConstants checks the constants the model holds (loaded from a
// checkpoint) against those its config gives: a config that fixes the
// latent scale or the style thresholds must say what the model was
// trained with. It reads them from the device.
func (m *Model) CheckConstants() error {
	if m.scale != nil && m.Cfg.LatentScale != 0 {
		if got := m.scale.Item(); float32(got) != float32(m.Cfg.LatentScale) {
			return fmt.Errorf("diffusion.latent_scale: the config says %g, but the model was trained with %g; leave it out (or 0) to take the model's", m.Cfg.LatentScale, got)
		}
	}
	if m.style != nil && m.Cfg.StyleThresholds != nil {
		want, err := StyleThresholdsTensor(m.Cfg.StyleThresholds, m.dev)
		if err != nil {
			return fmt.Errorf("diffusion.style_thresholds: %w", err)
		}
		defer want.Free()
		if !want.Eq(m.style).All() {
			return fmt.Errorf("diffusion.style_thresholds: the config's are not those the model was trained with; leave them out to take the model's")
		}
	}
	return nil
}

// Calibrate measures, before a run's first step, what the model takes from
// the training images and labels next yields (until it returns nil; each
// pair lives in a scope of its own) and sets its constants: for the latent
// codec whose scale is still 0, 1/std of the unscaled latents; for a
// prompted model without style thresholds, the tertiles of each class's ink
// mass and slant. It returns lines for the log, "" when there was nothing
// to measure.
func (m *Model) Calibrate(next func() (x, y *torch.Tensor)) (string, error) {
	latent, styles := m.toMeasure()
	if !latent && !styles {
		return "", nil
	}
	var sum, sq, n float64
	var ink, slant []float64
	var labels []int64
	torch.NoGrad(func() {
		for done := false; !done; {
			torch.Scoped(func() {
				x, y := next()
				if done = x == nil; done {
					return
				}
				if styles {
					i, s := prompt.MeasureValues(x)
					ink, slant = append(ink, i...), append(slant, s...)
					labels = append(labels, torch.Values[int64](y.To(torch.Int64))...)
				}
				if latent {
					torch.WithoutAutocast(x.Device().Type, func() {
						z, _ := m.Codec.(*Latent).AE.Encode(x.To(torch.Float32))
						z = z.To(torch.Float64)
						sum += z.Sum().Item()
						sq += z.Square().Sum().Item()
						n += float64(z.Numel())
					})
				}
			})
		}
	})
	var lines []string
	if styles {
		th, err := prompt.Thresholds(ink, slant, labels, m.Classes())
		if err != nil {
			return "", fmt.Errorf("style_thresholds, measured on %d training images: %w", len(labels), err)
		}
		t, err := StyleThresholdsTensor(th, m.dev)
		if err != nil {
			return "", fmt.Errorf("style_thresholds: %w", err)
		}
		torch.NoGrad(func() { m.style.CopyFrom(t) })
		t.Free()
		lines = append(lines, fmt.Sprintf("style thresholds: per-class tertiles of ink mass and slant of %d training images", len(labels)))
	}
	if !latent {
		return strings.Join(lines, "\n"), nil
	}
	if n < 2 {
		return "", fmt.Errorf("latent_scale: no training images to measure it on")
	}
	std := math.Sqrt(max(sq/n-(sum/n)*(sum/n), 0))
	if !(std > 1e-12) || math.IsInf(std, 0) {
		return "", fmt.Errorf("latent_scale: the autoencoder's latents have standard deviation %g; is it trained?", std)
	}
	torch.NoGrad(func() { m.scale.Fill(1 / std) })
	lines = append(lines, fmt.Sprintf("latent scale %.5g: 1/std of %.0f latent values (mean %.4g) of the training images", 1/std, n, sum/n))
	return strings.Join(lines, "\n"), nil
}

// Module holds the network's parameters and buffers.
func (m *Model) Module() *nn.Module { return m.Net.Module }

// Free releases the network (its constants with it) and the schedule's
// device tables.
func (m *Model) Free() {
	m.Net.Free()
	m.Sched.Free()
}

// FLOPs is the network's floating-point operations for one image's
// forward pass (unet.UNet.FLOPs), 0 where they are not counted.
func (m *Model) FLOPs() int64 { return m.Net.FLOPs(m.Shape[1], m.Shape[2]) }

// PixelShape is one image's shape in pixels, (C, H, W): Shape, or for a
// latent model its autoencoder's images'.
func (m *Model) PixelShape() []int64 {
	if l, ok := m.Codec.(*Latent); ok {
		return l.AE.ImageShape()
	}
	return m.Shape
}

// Prompted reports whether the model is conditioned on prompts.
func (m *Model) Prompted() bool { return m.Net.Prompted() }

// Vocabulary is a prompted model's words, by token (package prompt); nil
// for a model that takes no prompts.
func (m *Model) Vocabulary() []string { return m.vocab }

// FirstStage is the architecture of a latent model's autoencoder, which
// its checkpoints record; nil for a model in pixels.
func (m *Model) FirstStage() *autoencoder.Config {
	if l, ok := m.Codec.(*Latent); ok {
		c := l.AE.Cfg
		return &c
	}
	return nil
}

// Conditional reports whether the network takes labels.
func (m *Model) Conditional() bool { return m.Net.Cfg.Classes > 0 }

// Classes is the number of label classes (0 for an unconditional model).
func (m *Model) Classes() int { return int(m.Net.Cfg.Classes) }

// Loss encodes x, draws t uniformly from 1..T and the noise, drops labels
// with probability cond_drop (per image, or for the whole batch), and
// returns the mean squared error of the prediction against its target. It
// reads nothing back from the device.
func (m *Model) Loss(x, y *torch.Tensor) *torch.Tensor {
	if m.Prompted() && y != nil { // the prompt's style words are measured on the pixels
		y = prompt.Tokens(x, y, m.style, m.Net.Cfg.Classes, m.Cfg.WordDrop)
	}
	x = m.Codec.Encode(x)
	n := x.Size(0)
	t := torch.RandInt(1, int64(m.Sched.T)+1, []int64{n}, m.dev)
	eps := torch.RandnLike(x)
	xt := m.Sched.QSample(x, t, eps)
	var keep *torch.Tensor
	if m.Conditional() {
		switch m.Cfg.CondDropMode {
		case "batch":
			// One draw for the whole batch, drawn and compared on the device.
			keep = torch.Full([]int64{n}, 1, m.dev).Mul(torch.Rand([]int64{1}, m.dev).GeScalar(m.Cfg.CondDrop).To(torch.Float32))
		default:
			keep = torch.Rand([]int64{n}, m.dev).GeScalar(m.Cfg.CondDrop).To(torch.Float32)
		}
	} else {
		y = nil
	}
	target := m.Sched.Target(m.pred, x, t, eps)
	// Under bf16 autocast the prediction is bfloat16: the loss is float32.
	out := m.Net.Forward(xt, t, y, keep).To(target.DType())
	if m.Cfg.MinSNRGamma == 0 {
		return torch.MSELoss(out, target, torch.ReduceMean)
	}
	perImage := out.Sub(target).Square().MeanDims(true, 1, 2, 3)
	return perImage.Mul(m.Sched.LossWeight(m.pred, t, m.Cfg.MinSNRGamma).To(perImage.DType())).Mean()
}

// Generate samples the images of one batch of a sampling job with the
// given seed: Draw of image images[i] with label labels[i].
func (m *Model) Generate(images []int, labels []int64, seed uint64, s Sampling) (*torch.Tensor, error) {
	return m.Draw(Batch{Images: images, Labels: labels, Seeds: SameSeed(seed, len(images))}, s)
}

// Draw samples the images of batch b in eval mode without gradients, each
// image's noise drawn from its own seed and index (ImageNoise), so that it
// does not depend on the batch it is made in; with b.Init it edits them
// (Batch). It returns images (B, C, H, W) in [0, 1] (not clamped).
func (m *Model) Draw(b Batch, s Sampling) (*torch.Tensor, error) {
	x, _, err := m.DrawWanted(b, s, nil)
	return x, err
}

// ErrNoneWanted is DrawWanted's error when every image of the batch was
// dropped.
var ErrNoneWanted = errors.New("every image of the batch was dropped")

// DrawWanted is Draw of the images of b that are still wanted: before
// each step it asks wanted(i) of each image i of b it still draws, and
// stops drawing those that are not (the requests of a server's clients
// that left), so that the rest of the batch runs on fewer rows, the
// sampler's state, conditioning, noise and edit narrowed with them. x
// holds the images still wanted at the end, rows their indices in b
// (ascending); once none is, the error is ErrNoneWanted. An image kept is
// the one Draw makes but for the rounding of a network run on batches of
// other sizes. A nil wanted wants every image.
func (m *Model) DrawWanted(b Batch, s Sampling, wanted func(i int) bool) (x *torch.Tensor, rows []int, err error) {
	sm, err := NewSampler(s.Sampler, m.Sched, s.Options())
	if err != nil {
		return nil, nil, err
	}
	if err := m.checkBatch(b, s); err != nil {
		return nil, nil, err
	}
	training := m.Net.Training()
	m.Net.SetTraining(false)
	defer m.Net.SetTraining(training)
	torch.NoGrad(func() {
		var e *edit
		if e, err = m.newEdit(b, s, sm.Timesteps()); err != nil {
			return
		}
		y := m.conditioning(b.Labels, s)
		if s.Precision == torch.Auto {
			s.Precision = m.measuredPrecision(s, y, len(b.Images))
		}
		var z *torch.Tensor
		if z, rows = run(sm, m.walk(b, s, y, e, wanted, nil)); z == nil {
			err = ErrNoneWanted
			return
		}
		if len(rows) < len(b.Images) {
			idx := torch.FromSlice(int64s(rows), nil, m.dev)
			defer idx.Free()
			if b.Init != nil {
				b.Init = b.Init.IndexSelect(0, idx)
			}
			if b.Mask != nil {
				b.Mask = b.Mask.IndexSelect(0, idx)
			}
		}
		x = paste(m.Codec.Decode(z), b)
	})
	if err != nil {
		return nil, nil, err
	}
	return x, rows, nil
}

// checkBatch validates batch b and s for this model: a seed for each image,
// and for a conditional model a label in range.
func (m *Model) checkBatch(b Batch, s Sampling) error {
	if err := m.CheckSampling(s); err != nil {
		return err
	}
	if len(b.Seeds) != len(b.Images) {
		return fmt.Errorf("%d seeds for %d images", len(b.Seeds), len(b.Images))
	}
	if !m.Conditional() {
		return nil
	}
	if len(b.Labels) != len(b.Images) {
		return fmt.Errorf("%d labels for %d images", len(b.Labels), len(b.Images))
	}
	for _, l := range b.Labels {
		if l < 0 || l >= m.Net.Cfg.Classes {
			return fmt.Errorf("label %d out of range: the model has classes 0-%d", l, m.Net.Cfg.Classes-1)
		}
	}
	return nil
}

// walk is what run draws the rows of batch b with (nil rows: all of them),
// given the conditioning y and edit e of all b's images; with wanted, it
// sheds the images no longer wanted between steps (DrawWanted).
func (m *Model) walk(b Batch, s Sampling, y *torch.Tensor, e *edit, wanted func(int) bool, rows []int) *walk {
	seeds, images, ry, re := b.Seeds, b.Images, y, e
	if rows == nil {
		rows = make([]int, len(b.Images))
		for i := range rows {
			rows[i] = i
		}
	} else {
		idx := torch.FromSlice(int64s(rows), nil, m.dev)
		defer idx.Free()
		seeds, images = pick(b.Seeds, rows), pick(b.Images, rows)
		if y != nil {
			ry = y.IndexSelect(0, idx)
		}
		if e != nil {
			re = e.narrowed(idx, seeds, images, m.Shape, m.dev)
		}
	}
	pred, pieces := m.Predictor(ry, s)
	w := &walk{pred: pred, pieces: pieces, noise: ImageNoise(seeds, images, m.Shape, m.dev), edit: re, rows: rows}
	if wanted != nil {
		w.shed = func(cur []int) *walk {
			kept := slices.DeleteFunc(slices.Clone(cur), func(i int) bool { return !wanted(i) })
			switch len(kept) {
			case len(cur):
				return nil
			case 0:
				return &walk{rows: kept}
			}
			return m.walk(b, s, y, e, wanted, kept)
		}
	}
	return w
}

// pick is the elements rows of xs.
func pick[E any](xs []E, rows []int) []E {
	out := make([]E, len(rows))
	for i, r := range rows {
		out[i] = xs[r]
	}
	return out
}

// int64s is xs as int64s, for an index tensor.
func int64s(xs []int) []int64 {
	out := make([]int64, len(xs))
	for i, x := range xs {
		out[i] = int64(x)
	}
	return out
}

// Warm runs once, on throwaway inputs, what drawing a batch of n images
// under s runs on the device: the network on n images (a step without
// guidance) and on 2n (a guided step, for a conditional model) in s's
// precision, and the codec's decoder on n. libtorch builds and caches
// state for each shape it meets (oneDNN's primitives on a CPU, cuDNN's
// algorithms on a GPU); a server warms every batch size it may form, so
// that no request pays for building it and its memory does not grow as
// new sizes come. It reads no generator: what is drawn after is the same.
func (m *Model) Warm(n int, s Sampling) {
	training := m.Net.Training()
	m.Net.SetTraining(false)
	defer m.Net.SetTraining(training)
	torch.NoGrad(func() {
		torch.Scoped(func() {
			y := m.conditioning(make([]int64, n), s)
			x := torch.Zeros(append([]int64{int64(n)}, m.Shape...), m.dev)
			for _, g := range []float64{1, 2} {
				w := s
				w.Guidance, w.GuidanceInterval = g, Interval{}
				pred, _ := m.Predictor(y, w)
				pred(x, m.Sched.T/2)
				if y == nil {
					break // one pass whatever the guidance
				}
			}
			m.Codec.Decode(x)
		})
	})
}

// conditioning is what the network takes for images of the given labels
// under s: a prompted model's tokens (each label's class word and s's
// style words), a conditional model's labels, nil for an unconditional
// model.
func (m *Model) conditioning(labels []int64, s Sampling) *torch.Tensor {
	switch {
	case m.Prompted():
		style := m.stylePrompt(s).StyleTokens(m.Classes())
		tokens := make([]int64, 0, len(labels)*prompt.Context)
		for _, l := range labels {
			tokens = append(tokens, l+1, style[prompt.InkSlot], style[prompt.SlantSlot])
		}
		return torch.FromSlice(tokens, []int64{int64(len(labels)), prompt.Context}, m.dev)
	case m.Conditional():
		return torch.FromSlice(labels, nil, m.dev)
	}
	return nil
}

// Predictor is what the samplers call: ε̂ at x_t, guided by s.Guidance
// towards the labels y (nil for an unconditional model), the network run
// under s.Precision (checked by s.Validate) with a float32 output; and its
// pieces, guided and not where s.GuidanceInterval limits guidance, for Run.
func (m *Model) Predictor(y *torch.Tensor, s Sampling) (Predictor, Pieces) {
	net := func(x, t, y, keep *torch.Tensor) (out *torch.Tensor) {
		s.Precision.Run(m.dev, func() { out = m.Net.Forward(x, t, y, keep) })
		return out.To(torch.Float32)
	}
	guided, pieces := m.Sched.GuidedIn(net, y, s.Guidance, s.GuidanceRescale, s.GuidanceInterval)
	lo, hi := m.codecRange()
	return m.Sched.Clipped(m.Sched.AsEps(guided, m.pred), s.ClipX0, s.ThresholdRatio, lo, hi), pieces
}

// ResolvePrecision is s with precision auto resolved for batches of n
// images, as Draw resolves it for each batch size (measured once and
// cached): a server that merges requests into batches of every size
// resolves it once, for its largest.
func (m *Model) ResolvePrecision(s Sampling, n int) Sampling {
	if s.Precision != torch.Auto {
		return s
	}
	torch.NoGrad(func() { s.Precision = m.measuredPrecision(s, m.conditioning(make([]int64, n), s), n) })
	return s
}

// measuredPrecision resolves sample_precision auto on the model's device
// by timing one step of the predictor (the guided forward) on n images in
// each candidate policy (torch.Precision.Measured; the generators are put
// back, so the samples are the same whether it measured or not).
func (m *Model) measuredPrecision(s Sampling, y *torch.Tensor, n int) torch.Precision {
	key := fmt.Sprintf("sample %d images of %v, guided %t, network %x", n, m.Shape, y != nil && s.Guidance != 0, sha256.Sum256(fmt.Appendf(nil, "%+v", m.Net.Cfg)))
	return torch.Auto.Measured(m.dev, key, os.Stderr, func() {
		s.Precision = torch.FP32 // inside the candidate's policy, which Measured sets
		pred, _ := m.Predictor(y, s)
		pred(torch.Randn(append([]int64{int64(n)}, m.Shape...), m.dev), m.Sched.T/2)
	})
}

// codecRange is the bounds of the model's space, for clipping x̂₀; an
// unbounded codec gives ±Inf.
func (m *Model) codecRange() (lo, hi float64) {
	if r, ok := m.Codec.(Ranged); ok {
		return r.Range()
	}
	return math.Inf(-1), math.Inf(1)
}

// stylePrompt is s.Prompt parsed (CheckSampling has checked it).
func (m *Model) stylePrompt(s Sampling) prompt.Prompt {
	p, _ := prompt.Parse(m.vocab, m.Classes(), s.Prompt)
	return p
}

// CheckSampling validates s for this model: s.Validate for its timesteps,
// clipping only where the codec's space is bounded, a prompt of style
// words only for a prompted model.
func (m *Model) CheckSampling(s Sampling) error {
	if err := s.Validate(m.Sched.T); err != nil {
		return err
	}
	if s.Prompt != "" {
		if !m.Prompted() {
			return fmt.Errorf("prompt: the model is not conditioned on prompts (diffusion.conditioning: %s)", m.Cfg.Conditioning)
		}
		p, err := prompt.Parse(m.vocab, m.Classes(), s.Prompt)
		if err != nil {
			return fmt.Errorf("prompt %.60q: %w", s.Prompt, err)
		}
		if p.Class >= 0 {
			return fmt.Errorf("prompt %.60q: the class word goes with the labels; the sampling prompt holds style words only", s.Prompt)
		}
	}
	if _, ok := m.Codec.(Ranged); !ok && s.ClipX0 != "" && s.ClipX0 != None {
		return fmt.Errorf("clip_x0: the codec %q has no bounded range to clip to", m.Cfg.Codec)
	}
	return nil
}
