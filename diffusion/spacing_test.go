package diffusion

import (
	"slices"
	"strings"
	"testing"
)

// oldDDIMTimesteps is sample.Schedule.DDIMTimesteps: ⌊k·T/N⌋ + 1.
func oldDDIMTimesteps(T, steps int) []int {
	ts := make([]int, steps)
	for i := range ts {
		ts[i] = (steps-1-i)*T/steps + 1
	}
	return ts
}

func TestTimestepsByHand(t *testing.T) {
	cases := []struct {
		T, N    int
		spacing string
		want    []int
	}{
		{10, 3, "leading", []int{7, 4, 1}},
		{10, 3, "", []int{7, 4, 1}},
		{10, 3, "trailing", []int{10, 7, 3}}, // 10, 6.67, 3.33
		{10, 3, "linspace", []int{10, 5, 1}}, // 9, 4.5 → 4 (half to even), 0; plus one
		{10, 4, "leading", []int{7, 5, 3, 1}},
		{10, 4, "trailing", []int{10, 8, 5, 2}}, // 10, 7.5 → 8, 5, 2.5 → 2
		{10, 4, "linspace", []int{10, 7, 4, 1}},
		{1000, 10, "leading", []int{901, 801, 701, 601, 501, 401, 301, 201, 101, 1}},
		{1000, 10, "trailing", []int{1000, 900, 800, 700, 600, 500, 400, 300, 200, 100}},
		{1000, 10, "linspace", []int{1000, 889, 778, 667, 556, 445, 334, 223, 112, 1}},
		{1000, 1, "leading", []int{1}},
		{1000, 1, "trailing", []int{1000}},
		{1000, 1, "linspace", []int{1000}},
		{5, 5, "leading", []int{5, 4, 3, 2, 1}},
		{5, 5, "trailing", []int{5, 4, 3, 2, 1}},
		{5, 5, "linspace", []int{5, 4, 3, 2, 1}},
	}
	for _, c := range cases {
		s := &Schedule{T: c.T}
		got, err := s.Timesteps(c.N, Spacing(c.spacing))
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("T=%d N=%d %q: %v %v, want %v", c.T, c.N, c.spacing, got, err, c.want)
		}
	}
}

func TestLeadingIsTheOldDDIMSequence(t *testing.T) {
	s := ref(t)
	for _, n := range []int{50, 4, 5, 3, 1000, 1} {
		got, err := s.Timesteps(n, "leading")
		if want := oldDDIMTimesteps(1000, n); err != nil || !slices.Equal(got, want) {
			t.Errorf("N=%d: %v %v, want %v", n, got, err, want)
		}
	}
	// When N does not divide T they part: ⌊T/N⌋ steps, not ⌊k·T/N⌋.
	if got, _ := (&Schedule{T: 10}).Timesteps(4, "leading"); slices.Equal(got, oldDDIMTimesteps(10, 4)) {
		t.Errorf("T=10 N=4: %v", got)
	}
}

func TestTimestepsDescendWithinRange(t *testing.T) {
	check := func(T, n int, spacing string) {
		ts, err := timesteps(T, n, Spacing(spacing))
		if err != nil {
			t.Fatalf("T=%d N=%d %s: %v", T, n, spacing, err)
		}
		if len(ts) != n || ts[0] > T || ts[n-1] < 1 {
			t.Fatalf("T=%d N=%d %s: %v", T, n, spacing, ts)
		}
		for i := 1; i < n; i++ {
			if ts[i] >= ts[i-1] {
				t.Fatalf("T=%d N=%d %s: not strictly decreasing: %v", T, n, spacing, ts)
			}
		}
		if spacing != "leading" && ts[0] != T {
			t.Fatalf("T=%d N=%d %s: starts at %d", T, n, spacing, ts[0])
		}
		if spacing != "trailing" && !(spacing == "linspace" && n == 1) && ts[n-1] != 1 {
			t.Fatalf("T=%d N=%d %s: ends at %d", T, n, spacing, ts[n-1])
		}
	}
	for _, spacing := range []string{"leading", "trailing", "linspace"} {
		for T := 1; T <= 120; T++ {
			for n := 1; n <= T; n++ {
				check(T, n, spacing)
			}
		}
		for _, T := range []int{999, 1000, 4000} {
			for n := 1; n <= T; n += 7 {
				check(T, n, spacing)
			}
		}
	}
}

func TestTimestepsErrors(t *testing.T) {
	s := ref(t)
	for _, n := range []int{0, -1, 1001} {
		if _, err := s.Timesteps(n, ""); err == nil {
			t.Errorf("%d steps accepted", n)
		}
	}
	if _, err := s.Timesteps(10, "cosine"); err == nil || !strings.Contains(err.Error(), "karras, leading, linspace, trailing") {
		t.Errorf("unknown spacing: %v", err)
	}
	for _, n := range []int{0, 1001} {
		if _, err := s.Timesteps(n, "karras"); err == nil {
			t.Errorf("karras: %d steps accepted", n)
		}
	}
}
