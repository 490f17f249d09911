package torch

// WithSeed runs f with every generator seeded by seed (ManualSeed), then
// puts each generator, the CPU's and every CUDA device's, back where it
// was: sampling a grid or evaluating leaves the training stream alone, on
// a GPU as on the CPU.
func WithSeed(seed uint64, f func()) {
	states := RNGStates()
	for _, s := range states {
		s.Keep()
	}
	defer func() {
		err := SetRNGStates(states)
		for _, s := range states {
			s.Free()
		}
		if err != nil {
			panic(err)
		}
	}()
	ManualSeed(seed)
	f()
}
