package diffusion

import (
	"fmt"
	"math"
	"slices"

	"kakusan/torch"
)

// Batch is one sampler batch: image Images[i] of the job with seed
// Seeds[i] and label Labels[i] (ignored by an unconditional model). Its
// noise comes from (Seeds[i], Images[i]) (ImageNoise), so a batch may merge
// several jobs' images and each comes out as its own job makes it.
//
// With Init the batch edits images instead of drawing them from noise:
// image-to-image (SDEdit, Meng et al. 2022) without Mask, inpainting with
// it. Init is (B, C, H, W) pixels in [0, 1]; Mask is (B, 1, H, W), 1 where
// the model paints and 0 where Init is kept. Sampling.Strength and
// Resample say how (ForEdit gives their defaults).
type Batch struct {
	Images     []int
	Seeds      []uint64
	Labels     []int64
	Init, Mask *torch.Tensor
}

// The tags of an edit's own noise streams, xor'ed into the images' seeds.
const (
	knownTag   = 0x6b6e6f776e   // "known"
	renoiseTag = 0x72656e6f6973 // "renois"
	redoTag    = 0x7265646f     // "redo": a redone step's own sampler noise
)

// edit is how an image-to-image or inpainting run departs from Run (see
// run): where it starts and what happens after each whole step.
type edit struct {
	s        *Schedule
	start    int           // the first visit
	z0       *torch.Tensor // the init images in the model's space
	mask     *torch.Tensor // 1 where painted, in the model's space; nil: image-to-image
	resample int           // the visits of each step, RePaint's U (1: none)
	kn, rn   Noise         // the known region's noise, each re-noising's
	redo     Noise         // a redone step's sampler noise (ddpm, ddim with η > 0)
}

// draw is the index in an edit's noise streams of visit i's redo-th run:
// each run of a step draws afresh, as RePaint's do.
func draw(i, redo int) int { return i*(MaxResample+1) + redo }

// noised is SDEdit's start: z0 taken by the forward process to timestep t
// with the run's starting noise eps, √ᾱ_t z0 + √(1-ᾱ_t) ε.
func (e *edit) noised(eps *torch.Tensor, t int) *torch.Tensor {
	ab := e.s.AlphaBar(t)
	return e.z0.MulScalar(math.Sqrt(ab)).Add(eps.MulScalar(math.Sqrt(1 - ab)))
}

// known puts the known region back into x, a state at timestep t after
// the redo-th run of visit i: the init images noised to t with fresh noise
// (at t = 0, the images themselves), the replacement method of
// inpainting. Without a mask x is left as it is.
func (e *edit) known(x *torch.Tensor, t, i, redo int) *torch.Tensor {
	if e.mask == nil {
		return x
	}
	k := e.z0
	if t > 0 {
		k = e.noised(e.kn(draw(i, redo)), t)
	}
	return blend(k, x, e.mask)
}

// blend is x where mask is 1 and k where it is 0.
func blend(k, x, mask *torch.Tensor) *torch.Tensor { return k.Add(x.Sub(k).Mul(mask)) }

// renoise takes x from timestep t back up to timestep to > t by the forward
// process between them, x_to = √(ᾱ_to/ᾱ_t) x_t + √(1-ᾱ_to/ᾱ_t) z, with
// noise of its own for visit i's redo: RePaint's resampling, which lets the
// painted region agree with the known one.
func (e *edit) renoise(x *torch.Tensor, t, to, i, redo int) *torch.Tensor {
	a := e.s.AlphaBar(to) / e.s.AlphaBar(t)
	return x.MulScalar(math.Sqrt(a)).Add(e.rn(draw(i, redo)).MulScalar(math.Sqrt(1 - a)))
}

// startVisit is the visit where an edit of the given strength starts among
// a sampler's visited timesteps ts: of the sampler's n distinct timesteps
// it runs the last max(1, round(strength·n)), from the last visit of the
// first of them (a two-visit sampler's predictor). Strength 1 runs them
// all.
func startVisit(ts []int, strength float64) int {
	var distinct []int
	for i, t := range ts {
		if i == 0 || t != ts[i-1] {
			distinct = append(distinct, t)
		}
	}
	n := len(distinct)
	first := distinct[n-max(1, min(n, int(math.Round(strength*float64(n)))))]
	start := 0
	for i, t := range ts {
		if t == first {
			start = i
		}
	}
	return start
}

// newEdit prepares the edit of batch b under s (ForEdit's defaults
// applied) for the model's sampler visits ts; nil without Init. It checks
// the images' and mask's shapes against the model's.
func (m *Model) newEdit(b Batch, s Sampling, ts []int) (*edit, error) {
	if b.Init == nil {
		if b.Mask != nil {
			return nil, fmt.Errorf("a mask without an image to inpaint")
		}
		return nil, nil
	}
	n := int64(len(b.Images))
	px := m.PixelShape()
	if want := append([]int64{n}, px...); !slices.Equal(b.Init.Shape(), want) {
		return nil, fmt.Errorf("init images of shape %v, want %v", b.Init.Shape(), want)
	}
	if b.Mask != nil && !slices.Equal(b.Mask.Shape(), []int64{n, 1, px[1], px[2]}) {
		return nil, fmt.Errorf("a mask of shape %v, want %v", b.Mask.Shape(), []int64{n, 1, px[1], px[2]})
	}
	s = s.ForEdit(b.Mask != nil)
	e := &edit{s: m.Sched, start: startVisit(ts, s.Strength), resample: 1}
	e.streams(b.Seeds, b.Images, m.Shape, m.dev)
	if b.Mask != nil { // resampling harmonises a painted region with a kept one; there is none without a mask
		e.resample = s.Resample
	}
	e.z0 = m.Codec.Encode(b.Init.To(torch.Float32))
	if b.Mask != nil {
		e.mask = modelMask(b.Mask, m.Shape, m.dev)
	}
	return e, nil
}

// streams sets the edit's own noise streams, for the images of the given
// seeds and indices (ImageNoise) of shape (C, H, W) on dev.
func (e *edit) streams(seeds []uint64, images []int, shape []int64, dev torch.Device) {
	e.kn = ImageNoise(tagged(seeds, knownTag), images, shape, dev)
	e.rn = ImageNoise(tagged(seeds, renoiseTag), images, shape, dev)
	e.redo = ImageNoise(tagged(seeds, redoTag), images, shape, dev)
}

// narrowed is the edit of the rows idx of e's batch, the images of the
// given seeds and indices (a batch that sheds images: DrawWanted).
func (e *edit) narrowed(idx *torch.Tensor, seeds []uint64, images []int, shape []int64, dev torch.Device) *edit {
	c := *e
	c.z0 = e.z0.IndexSelect(0, idx)
	if e.mask != nil {
		c.mask = e.mask.IndexSelect(0, idx)
	}
	c.streams(seeds, images, shape, dev)
	return &c
}

// modelMask is a pixel mask (B, 1, H, W) in the model's space of shape
// (C, h, w) on dev: as it is for a model in pixels; for a latent one, a
// latent cell is painted where any pixel under it is (its footprint, the
// pixels [⌊yH/h⌋, ⌈(y+1)H/h⌉) down and likewise across), so that the known
// region keeps only the cells it wholly covers. Masks are small: the
// footprints are taken in Go.
func modelMask(mask *torch.Tensor, shape []int64, dev torch.Device) *torch.Tensor {
	ms := mask.Shape()
	b, hh, ww, h, w := ms[0], ms[2], ms[3], shape[1], shape[2]
	if hh == h && ww == w {
		return mask.To(torch.Float32)
	}
	px := torch.Values[float32](mask.To(torch.Float32))
	out := make([]float32, b*h*w)
	for n := range b {
		for y := range h {
			for x := range w {
				for py := y * hh / h; py < ((y+1)*hh+h-1)/h && out[(n*h+y)*w+x] == 0; py++ {
					for pxx := x * ww / w; pxx < ((x+1)*ww+w-1)/w; pxx++ {
						if px[(n*hh+py)*ww+pxx] > 0 {
							out[(n*h+y)*w+x] = 1
							break
						}
					}
				}
			}
		}
	}
	return torch.FromSlice(out, []int64{b, 1, h, w}, dev)
}

// paste keeps Init's pixels outside the mask in the decoded images x: a
// latent model's decoder does not give the known region back exactly, and
// a pixel model's last replacement already has.
func paste(x *torch.Tensor, b Batch) *torch.Tensor {
	if b.Mask == nil {
		return x
	}
	return blend(b.Init.To(torch.Float32), x, b.Mask.To(torch.Float32))
}
