package torch

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// measuredAuto runs Measured on a fresh in-memory cache (the file in dir),
// with a workload that costs slow under the policy named and 0 under the
// other; it returns the choice, how often the workload ran, and the log.
func measuredAuto(t *testing.T, dir, slow string) (Precision, int, string) {
	t.Helper()
	t.Setenv("KAKUSAN_CACHE", dir)
	autoMu.Lock()
	autoMem, autoSaid = nil, map[string]bool{}
	autoMu.Unlock()
	var log bytes.Buffer
	runs := 0
	var got Precision
	on(t, func() {
		x := Randn([]int64{4, 8}, dev)
		w := Param(Randn([]int64{3, 8}, dev))
		defer w.Free()
		got = Auto.Measured(dev, "a test workload", &log, func() {
			runs++
			if bf16 := Linear(x, w, nil).DType() == BFloat16; bf16 == (slow == "bf16") {
				time.Sleep(20 * time.Millisecond)
			}
		})
	})
	return got, runs, log.String()
}

// auto on a CPU with bfloat16 instructions takes the policy that ran the
// work faster, says why, caches it and does not time again; elsewhere it is
// On's answer, untimed.
func TestAutoPrecisionIsMeasured(t *testing.T) {
	if dev.Type == CUDADevice || !cpuHasBF16() {
		dir := t.TempDir()
		got, runs, _ := measuredAuto(t, dir, "bf16")
		if got != Auto.On(dev) || runs != 0 {
			t.Fatalf("auto without bfloat16 instructions = %s after %d runs, want %s untimed", got, runs, Auto.On(dev))
		}
		t.Skip("this CPU has no bfloat16 instructions: auto is not measured here")
	}
	for _, c := range []struct {
		slow string
		want Precision
	}{{"bf16", FP32}, {"fp32", BF16}} {
		dir := t.TempDir()
		got, runs, log := measuredAuto(t, dir, c.slow)
		if got != c.want || runs != 8 {
			t.Errorf("%s slow: auto = %s after %d runs, want %s after 8 (a warm-up and three timed runs each)", c.slow, got, runs, c.want)
		}
		if !strings.Contains(log, "precision auto: "+string(c.want)) || !strings.Contains(log, "measured now") {
			t.Errorf("%s slow: log %q, want the choice, measured now", c.slow, log)
		}
		b, err := os.ReadFile(filepath.Join(dir, "precision.json"))
		var f autoFile
		if err != nil || json.Unmarshal(b, &f) != nil || len(f.Choices) != 1 {
			t.Fatalf("cache file: %v %s", err, b)
		}
		for k, ch := range f.Choices {
			if ch.Choice != c.want || ch.MS[Precision(c.slow)] < 15 || !strings.Contains(k, "a test workload") {
				t.Errorf("cached %q: %+v, want %s with %s's time at least 15 ms", k, ch, c.want, c.slow)
			}
		}
		// A new process (the memory cleared) reads the file: no runs. The
		// workload is now slow the other way, to show it is not timed.
		other := map[string]string{"bf16": "fp32", "fp32": "bf16"}[c.slow]
		got, runs, log = measuredAuto(t, dir, other)
		if got != c.want || runs != 0 || !strings.Contains(log, "cached in") {
			t.Errorf("%s slow, second process: auto = %s after %d runs (log %q), want %s from the cache", c.slow, got, runs, log, c.want)
		}
	}
	// A malformed cache is an empty one: measured again, and rewritten.
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "precision.json"), []byte(`{"choices": {"x": {"choice": "fp64"}}`), 0o644)
	if got, runs, _ := measuredAuto(t, dir, "bf16"); got != FP32 || runs != 8 {
		t.Errorf("after a malformed cache: %s after %d runs, want fp32 measured", got, runs)
	}
	// Explicit policies are never timed.
	for _, p := range []Precision{FP32, BF16, TF32} {
		if got := p.Measured(dev, "k", nil, func() { t.Fatal("timed an explicit policy") }); got != p {
			t.Errorf("%s.Measured = %s", p, got)
		}
	}
}

func TestPickKeepsFP32OnATie(t *testing.T) {
	for _, c := range []struct {
		fp32, bf16 float64
		want       Precision
	}{{100, 95, FP32}, {100, 89, BF16}, {100, 0, FP32}, {50, 100, FP32}} {
		if got := pick(map[Precision]float64{FP32: c.fp32, BF16: c.bf16}); got != c.want {
			t.Errorf("pick(fp32 %v, bf16 %v) = %s, want %s", c.fp32, c.bf16, got, c.want)
		}
	}
}
