// Package serve puts a trained image model behind HTTP: POST /v1/images
// draws, redraws (image-to-image) or inpaints images with the settings and
// checks of bin/sample; concurrent requests are merged into sampler batches
// on the one torch thread (dynamic batching); GET /healthz, /readyz,
// /metrics (Prometheus) and /v1/model watch it, and / is a web page that
// drives it. cmd/serve is the command; docs/serving.md the guide.
package serve

import (
	"context"
	"fmt"
	"slices"
	"time"

	"kakusan/diffusion"
	"kakusan/models"
	"kakusan/sample"
	"kakusan/torch"
)

// Model is the model a server answers with, loaded on its device.
type Model struct {
	ck    *models.Checkpoint
	m     models.Model
	entry models.Entry
	dev   torch.Device
	dm    *diffusion.Model   // nil for a model that does not diffuse (a VAE)
	def   diffusion.Sampling // the checkpoint config's sampling
	// auto is what precision auto is here for batches of each power of two
	// up to the largest (and the largest): a batch takes the choice of the
	// smallest of them that holds it.
	auto map[int]torch.Precision
	ema  bool
}

// Load loads a checkpoint (a file or a run folder's latest) on device
// ("cpu", "cuda", "auto", ...), with the moving average's weights unless
// noEMA, for serving batches of up to maxBatch images: a model that draws
// images (diffusion in pixels or latents, by labels or prompts; the VAEs).
// Precision auto is resolved once, for maxBatch images.
func Load(checkpoint, device string, noEMA bool, maxBatch int) (*Model, error) {
	sm := &Model{}
	err := torch.Do(func() error {
		dev, err := torch.ParseDevice(device)
		if err != nil {
			return fmt.Errorf("--device: %w", err)
		}
		m, ck, err := models.Load(checkpoint, dev, !noEMA)
		if err != nil {
			return err
		}
		e := ck.Entry()
		if !e.Does(models.DrawsImages) {
			models.Free(m)
			return fmt.Errorf("%s: a %s model does not draw images (%s); serve a model that does", ck.Path, ck.Config.Model, e.Can)
		}
		*sm = Model{ck: ck, m: m, entry: e, dev: dev, ema: ck.HasEMA() && !noEMA}
		if dm, ok := m.(*diffusion.Model); ok {
			sm.dm = dm
			sm.def = models.GridSampling(ck.Config)
			auto := sm.def
			auto.Precision = torch.Auto
			sm.auto = map[int]torch.Precision{}
			for _, n := range batchSizes(maxBatch) {
				sm.auto[n] = dm.ResolvePrecision(auto, n).Precision
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return sm, nil
}

// Warm runs the model once at every batch size from 1 to maxBatch in the
// precision each would draw in (diffusion.Model.Warm), so that libtorch's
// per-shape caches hold every batch the batcher may form before the first
// request: none pays for building them, and resident memory does not grow
// as new sizes come (docs/serving.md). It costs about maxBatch²
// images' network passes, seconds for 64 on two CPU cores. A VAE's one
// decoder pass is not warmed.
func (m *Model) Warm(maxBatch int) time.Duration {
	t0 := time.Now()
	if m.dm == nil {
		return 0
	}
	torch.Do(func() error {
		for n := 1; n <= maxBatch; n++ {
			m.dm.Warm(n, m.precisionFor(m.def, n))
		}
		torch.TrimHeap()
		return nil
	})
	return time.Since(t0)
}

// batchSizes are the powers of two below maxBatch, and maxBatch.
func batchSizes(maxBatch int) []int {
	var out []int
	for n := 1; n < maxBatch; n *= 2 {
		out = append(out, n)
	}
	return append(out, maxBatch)
}

// precisionFor is s's precision for a batch of n images: auto resolved
// by measurement for the smallest measured size that holds n (Load), as
// bin/sample resolves it for its batch size.
func (m *Model) precisionFor(s diffusion.Sampling, n int) diffusion.Sampling {
	if s.Precision != torch.Auto {
		return s
	}
	best := 0
	for size := range m.auto {
		if size >= n && (best == 0 || size < best) {
			best = size
		}
	}
	s.Precision = m.auto[best]
	return s
}

// trimHeap returns malloc's free heap to the system, on the torch thread.
func (m *Model) trimHeap() { torch.Do(func() error { torch.TrimHeap(); return nil }) }

// Free releases the model.
func (m *Model) Free() { torch.Do(func() error { models.Free(m.m); return nil }) }

// Geometry is the model's images' geometry and classes.
func (m *Model) Geometry() models.Geometry { return m.ck.Geometry }

// Info is GET /v1/model's answer: what the model is, what it takes and how
// it samples by default.
func (m *Model) Info(l Limits) map[string]any {
	g := m.ck.Geometry
	info := map[string]any{
		"model": m.ck.Config.Model, "about": m.entry.About, "can": m.entry.Can.String(),
		"checkpoint": m.ck.Path, "step": m.ck.Step, "ema": m.ema,
		"geometry": map[string]int{"channels": g.C, "height": g.H, "width": g.W},
		"classes":  g.Classes, "conditional": models.Conditional(m.m),
		"limits": l, "edits": m.dm != nil,
	}
	if g.ClassNames != nil {
		info["class_names"] = g.ClassNames
	}
	if v := models.Vocabulary(m.m); v != nil {
		info["vocabulary"] = v
	}
	if m.dm != nil {
		info["sampling"] = models.SamplingRecord(m.ck.Config, m.def)
		info["samplers"] = diffusion.Samplers()
		info["latent"] = m.dm.FirstStage() != nil
	}
	return info
}

// piece is one image of a request in a batch: image Index of the request.
type piece struct {
	j     *job
	index int
}

// draw makes the images of a batch of pieces whose requests share a key
// (compatible settings) on the torch thread and copies them to the host:
// rows[i] is piece i's image in imgs, -1 where its request had gone before
// the batch ended (a diffusion model stops drawing it between steps).
func (m *Model) draw(ctx context.Context, ps []piece) (imgs *sample.Images, rows []int, err error) {
	r := ps[0].j.req
	err = torch.Do(func() (err error) {
		torch.Interruptible(ctx, func() {
			torch.Scoped(func() {
				var x *torch.Tensor
				var kept []int
				if x, kept, err = m.drawTensor(ps, r); err == nil {
					imgs, err = sample.FromTensor(x)
					rows = slices.Repeat([]int{-1}, len(ps))
					for k, i := range kept {
						rows[i] = k
					}
				}
			})
		})
		return err
	})
	if err == nil {
		err = imgs.Check()
	}
	return imgs, rows, err
}

// drawTensor is draw's torch work: a diffusion model draws each piece from
// its own request's seed, label and images, and stops drawing the pieces
// of requests that have gone; a VAE draws a request's pieces as a sampling
// job's batch (its noise is drawn per batch). kept are the pieces drawn.
func (m *Model) drawTensor(ps []piece, r *Request) (x *torch.Tensor, kept []int, err error) {
	if m.dm == nil {
		b := sample.Batch{Seed: r.Seed}
		for i, p := range ps {
			b.Images = append(b.Images, p.index)
			if r.Labels != nil {
				b.Labels = append(b.Labels, r.Labels[p.index])
			}
			kept = append(kept, i)
		}
		gen, err := m.entry.NewGenerator(m.m, r.Sampling)
		if err != nil {
			return nil, nil, err
		}
		x, err = gen.Generate(b)
		return x, kept, err
	}
	b := diffusion.Batch{}
	var init, mask []float32
	for _, p := range ps {
		q := p.j.req
		b.Images = append(b.Images, p.index)
		b.Seeds = append(b.Seeds, q.Seed)
		if q.Labels != nil {
			b.Labels = append(b.Labels, q.Labels[p.index])
		}
		init = append(init, q.Init...)
		mask = append(mask, q.Mask...)
	}
	g, n := m.ck.Geometry, int64(len(ps))
	if r.Init != nil {
		b.Init = torch.FromSlice(init, []int64{n, int64(g.C), int64(g.H), int64(g.W)}, m.dev)
	}
	if r.Mask != nil {
		b.Mask = torch.FromSlice(mask, []int64{n, 1, int64(g.H), int64(g.W)}, m.dev)
	}
	return m.dm.DrawWanted(b, m.precisionFor(r.Sampling, len(ps)), func(i int) bool { return !ps[i].j.gone() })
}

// sameKey reports whether two requests' images may share a batch: the
// same sampling settings and the same kind of edit (the images themselves
// may differ); a VAE's requests never share one.
func (m *Model) sameKey(a, b *Request) bool {
	if m.dm == nil {
		return a == b
	}
	return a.Sampling == b.Sampling && (a.Init == nil) == (b.Init == nil) && (a.Mask == nil) == (b.Mask == nil)
}
