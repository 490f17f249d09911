package datasets

import (
	"reflect"
	"sort"
	"testing"
)

func tinySet(n int) *Images {
	s := &Images{N: n, H: 2, W: 2, Classes: 10}
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
