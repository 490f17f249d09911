package diffusion

import "kakusan/torch"

// Noise gives the fresh noise of sampling step i (0 is the starting x_T).
type Noise func(step int) *torch.Tensor

// SplitMix is a 64-bit mixing function: per-image and per-step seeds are
// derived from the job's seed with it.
func SplitMix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// ImageNoise draws each image's noise, of the per-image shape (C, H, W),
// from its own seed, so an image is the same whichever batch or shard it is
// generated in: image k of a job with seed s uses
// SplitMix(SplitMix(s ^ SplitMix(k)) + step) at each step.
func ImageNoise(seed uint64, images []int, shape []int64, dev torch.Device) Noise {
	return func(step int) *torch.Tensor {
		seeds := make([]uint64, len(images))
		for i, k := range images {
			seeds[i] = SplitMix(SplitMix(seed^SplitMix(uint64(k))) + uint64(step))
		}
		return torch.RandnRows(seeds, shape).To(dev)
	}
}
