package main

import (
	"encoding/csv"
	"math"
	"strconv"
	"strings"
	"testing"

	"kakusan/models/gaussian"
)

func TestWriteCSVMixture(t *testing.T) {
	a, _ := gaussian.NewMVN([]float64{0, 0}, [][]float64{{1, 0}, {0, 1}})
	b, _ := gaussian.NewMVN([]float64{10, 10}, [][]float64{{1, 0}, {0, 1}})
	p := &gaussian.Params{Model: "gmm", GMM: &gaussian.GMM{Weights: []float64{0.25, 0.75}, Components: []*gaussian.MVN{a, b}}}
	var sb strings.Builder
	if err := writeCSV(&sb, p, 4000, 1); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(sb.String())).ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rows[0], ",") != "x0,x1,component" || len(rows) != 4001 {
		t.Fatalf("header %v, %d rows", rows[0], len(rows))
	}
	ones := 0
	for _, r := range rows[1:] {
		k, _ := strconv.Atoi(r[2])
		x, _ := strconv.ParseFloat(r[0], 64)
		if k == 1 {
			ones++
			if math.Abs(x-10) > 6 {
				t.Fatalf("component 1 sample at %v", x)
			}
		}
	}
	if f := float64(ones) / 4000; math.Abs(f-0.75) > 5*math.Sqrt(0.75*0.25/4000) {
		t.Errorf("component 1 share %v, want 0.75", f)
	}
	// Same seed, same samples.
	var again strings.Builder
	writeCSV(&again, p, 4000, 1)
	if again.String() != sb.String() {
		t.Error("sampling is not deterministic for a fixed seed")
	}
}
