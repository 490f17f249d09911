package diffusion

import (
	"kakusan/internal/splitmix"
	"kakusan/torch"
)

// Noise gives the fresh noise of sampling step i (0 is the starting x_T).
type Noise func(step int) *torch.Tensor

// ImageNoise draws each image's noise, of the per-image shape (C, H, W),
// from its own seed, so an image is the same whichever batch or shard it is
// generated in: image k of a job with seed s uses
// Mix(Mix(s ^ Mix(k)) + step) at each step (splitmix.Mix).
func ImageNoise(seed uint64, images []int, shape []int64, dev torch.Device) Noise {
	return func(step int) *torch.Tensor {
		seeds := make([]uint64, len(images))
		for i, k := range images {
			seeds[i] = splitmix.Mix(splitmix.Mix(seed^splitmix.Mix(uint64(k))) + uint64(step))
		}
		return torch.RandnRows(seeds, shape).To(dev)
	}
}
