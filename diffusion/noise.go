package diffusion

import (
	"slices"

	"kakusan/internal/splitmix"
	"kakusan/torch"
)

// Noise gives the fresh noise of sampling step i (0 is the starting x_T).
type Noise func(step int) *torch.Tensor

// ImageNoise draws each image's noise, of the per-image shape (C, H, W),
// from its own seed, so an image is the same whichever batch or shard it is
// generated in: image images[i], of a job with seed seeds[i], uses
// Mix(Mix(seed ^ Mix(k)) + step) at each step (splitmix.Mix). A batch may
// hold images of several jobs (a server's merged requests).
func ImageNoise(seeds []uint64, images []int, shape []int64, dev torch.Device) Noise {
	return func(step int) *torch.Tensor {
		rows := make([]uint64, len(images))
		for i, k := range images {
			rows[i] = splitmix.Mix(splitmix.Mix(seeds[i]^splitmix.Mix(uint64(k))) + uint64(step))
		}
		return torch.RandnRows(rows, shape).To(dev)
	}
}

// SameSeed is n copies of seed: the seeds of a batch of one job.
func SameSeed(seed uint64, n int) []uint64 { return slices.Repeat([]uint64{seed}, n) }

// tagged is seeds each xor'ed with tag: the seeds of a second noise stream
// for the same images (an edit's known region, its re-noising).
func tagged(seeds []uint64, tag uint64) []uint64 {
	out := make([]uint64, len(seeds))
	for i, s := range seeds {
		out[i] = s ^ tag
	}
	return out
}
