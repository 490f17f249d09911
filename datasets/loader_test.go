package datasets

import (
	"reflect"
	"sort"
	"testing"
)

func tinySet(n int) *Images {
	s := &Images{N: n, C: 1, H: 2, W: 2, Classes: 10}
	for i := range n {
		s.Pixels = append(s.Pixels, uint8(i), 255, 0, uint8(i))
		s.Labels = append(s.Labels, uint8(i%10))
	}
	return s
}

func TestLoaderShufflesReproduciblyAndResumes(t *testing.T) {
	l := &Loader{Set: tinySet(10), Batch: 3, Seed: 7, Shuffle: true}
	if l.StepsPerEpoch() != 3 {
		t.Fatalf("steps %d", l.StepsPerEpoch())
	}
	o0, o1 := l.Order(0), l.Order(1)
	if reflect.DeepEqual(o0, o1) {
		t.Error("two epochs share an order")
	}
	if !reflect.DeepEqual(o0, l.Order(0)) {
		t.Error("order is not reproducible")
	}
	s := append([]int(nil), o0...)
	sort.Ints(s)
	for i, v := range s {
		if v != i {
			t.Fatal("order is not a permutation")
		}
	}
	collect := func(epoch, start int) []Batch {
		ch, stop := l.Epoch(epoch, start)
		defer stop()
		var out []Batch
		for b := range ch {
			out = append(out, b)
		}
		return out
	}
	full, tail := collect(1, 0), collect(1, 1)
	if len(full) != 3 || !reflect.DeepEqual(full[1:], tail) {
		t.Error("resuming at batch 1 does not replay the same batches")
	}
	b := full[0]
	if b.N != 3 || len(b.Pixels) != 12 || b.Pixels[1] != 1 || b.Labels[0] != int64(o1[0]%10) || b.Pixels[0] != float32(o1[0])/255 {
		t.Errorf("batch %+v for order %v", b, o1)
	}
	// Stopping early must not leak the producer.
	ch, stop := l.Epoch(0, 0)
	<-ch
	stop()
	stop()
	all := (&Loader{Set: tinySet(10), Batch: 4}).All()
	if len(all) != 3 || all[2].N != 2 {
		t.Errorf("All: %d batches, last %d", len(all), all[2].N)
	}
}

// Sharded as DistributedSampler shards: at every step the ranks' batches
// are disjoint and together are the unsharded loader's batch of World×Batch
// (as a set); resuming a rank at a batch replays its own batches.
func TestLoaderShardsEachStepsBatch(t *testing.T) {
	set := tinySet(50)
	one := &Loader{Set: set, Batch: 12, Seed: 3, Shuffle: true, IndicesOnly: true}
	epoch := func(l *Loader, start int) [][]int {
		ch, stop := l.Epoch(2, start)
		defer stop()
		var out [][]int
		for b := range ch {
			out = append(out, b.Index)
		}
		return out
	}
	want := epoch(one, 0)
	for _, world := range []int{2, 3, 4} {
		ranks := make([][][]int, world)
		for r := range world {
			l := &Loader{Set: set, Batch: 12 / world, Seed: 3, Shuffle: true, IndicesOnly: true, Rank: r, World: world}
			if l.StepsPerEpoch() != one.StepsPerEpoch() {
				t.Fatalf("world %d: %d steps an epoch, want %d", world, l.StepsPerEpoch(), one.StepsPerEpoch())
			}
			ranks[r] = epoch(l, 0)
			if tail := epoch(l, 2); !reflect.DeepEqual(tail, ranks[r][2:]) {
				t.Errorf("world %d rank %d: resuming at batch 2 gives %v, want %v", world, r, tail, ranks[r][2:])
			}
		}
		for step := range want {
			var union []int
			for r := range world {
				if len(ranks[r][step]) != 12/world {
					t.Fatalf("world %d rank %d step %d: batch of %d", world, r, step, len(ranks[r][step]))
				}
				union = append(union, ranks[r][step]...)
			}
			sort.Ints(union)
			w := append([]int(nil), want[step]...)
			sort.Ints(w)
			if !reflect.DeepEqual(union, w) {
				t.Errorf("world %d step %d: ranks' union %v, want %v", world, step, union, w)
			}
		}
	}
}

// A set with channels: images are C×H×W, and batches keep that layout.
func TestLoaderChannels(t *testing.T) {
	s := &Images{N: 5, C: 3, H: 2, W: 3, Classes: 5}
	for i := range s.N * 18 {
		s.Pixels = append(s.Pixels, uint8(i%251))
	}
	for i := range s.N {
		s.Labels = append(s.Labels, uint8(i))
	}
	if len(s.Image(2)) != 18 || s.Image(2)[0] != 36 || s.Image(4)[17] != 89 {
		t.Fatalf("Image(2) = %v", s.Image(2))
	}
	if sub := s.Subset(2); sub.N != 2 || len(sub.Pixels) != 36 || sub.C != 3 {
		t.Errorf("Subset: %d images, %d bytes, C %d", sub.N, len(sub.Pixels), sub.C)
	}
	l := &Loader{Set: s, Batch: 2, Seed: 3, Shuffle: true}
	order := l.Order(0)
	ch, stop := l.Epoch(0, 0)
	defer stop()
	n := 0
	for b := range ch {
		if len(b.Pixels) != 2*18 {
			t.Fatalf("batch of %d floats, want 36", len(b.Pixels))
		}
		for i := range b.N {
			idx := order[n*2+i]
			if b.Labels[i] != int64(idx) {
				t.Errorf("label %d, want %d", b.Labels[i], idx)
			}
			for j, v := range s.Image(idx) {
				if b.Pixels[i*18+j] != float32(v)/255 {
					t.Fatalf("batch %d image %d pixel %d = %v, want %v", n, i, j, b.Pixels[i*18+j], float32(v)/255)
				}
			}
		}
		n++
	}
	if n != 2 {
		t.Errorf("%d batches, want 2", n)
	}
	all := (&Loader{Set: s, Batch: 2}).All()
	if len(all) != 3 || len(all[2].Pixels) != 18 || all[2].Pixels[17] != float32(89)/255 {
		t.Errorf("All: %d batches, last %d floats", len(all), len(all[2].Pixels))
	}
}
