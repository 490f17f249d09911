// Package splitmix derives seeds from seeds: a sampling job's per-image and
// per-step noise, its random labels and a VAE batch's generator are all
// seeded through Mix, so an image depends on the job's seed and its index
// only, never on the batch or shard that makes it.
package splitmix

// Mix is SplitMix64's finalizer, a 64-bit mixing function.
func Mix(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}
