package torch

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"
)

// Resolving auto on the CPU by measurement. Which of float32 and bfloat16
// is faster on a CPU depends on the CPU (AMX, AVX512-BF16 or neither), on
// the network and on the batch: on one AMD EPYC with AVX512-BF16 and no AMX
// bf16 was faster for the CPU default's network, on an Intel Xeon slower.
// So where the CPU computes bfloat16 natively, auto times the real work in
// each policy and keeps the faster; the choice is cached per CPU model,
// libtorch version, thread count and workload, so later runs start at once.

// MeasureMargin is how much faster bf16 must be than fp32 for a measured
// auto to pick it: fp32 is exact, so a tie keeps it.
const MeasureMargin = 0.9

// Measured is p on dev, auto resolved by timing run, one unit of the work
// the policy will govern (a forward pass; a forward and backward pass), as
// run under each candidate policy. key names that work (the network, its
// input shape and batch) for the cache. The choice, the times behind it and
// whether they were measured now or read from the cache go to log, once a
// process for each key. Outside auto, on CUDA (bf16, as On
// says), or on a CPU without bfloat16 instructions (fp32: libtorch emulates
// bf16 there, slowly) nothing is timed. run must leave no trace: it runs
// with every generator put back afterwards (WithSeed), and its tensors are
// freed when it returns.
func (p Precision) Measured(dev Device, key string, log io.Writer, run func()) Precision {
	if p != Auto || dev.Type == CUDADevice || !cpuHasBF16() {
		return p.On(dev)
	}
	key = fmt.Sprintf("%s | %s | libtorch %s | %d threads | %s", strings.Join(cpuModel(), " "), dev, Version(), NumThreads(), key)
	autoMu.Lock()
	defer autoMu.Unlock()
	cache := autoCache()
	if c, ok := cache.Choices[key]; ok && c.Choice != "" {
		if !autoSaid[key] {
			autoSaid[key] = true
			fmt.Fprintf(log, "precision auto: %s (%s; cached in %s)\n", c.Choice, c.times(), autoCachePath())
		}
		return c.Choice
	}
	c := measure(dev, run)
	cache.Choices[key] = c
	autoSaid[key] = true
	where := "cached in " + autoCachePath()
	if why := saveAutoCache(cache); why != "" {
		where = "not cached: " + why
	}
	fmt.Fprintf(log, "precision auto: %s (%s; measured now, %s)\n", c.Choice, c.times(), where)
	return c.Choice
}

// autoChoice is one cached measurement.
type autoChoice struct {
	Choice Precision             `json:"choice"`
	MS     map[Precision]float64 `json:"ms"` // the fastest run under each policy
	When   time.Time             `json:"measured"`
}

func (c autoChoice) times() string {
	return fmt.Sprintf("fp32 %.1f ms, bf16 %.1f ms a run", c.MS[FP32], c.MS[BF16])
}

// measure times run under fp32 and bf16, alternately, three times each
// after one warm-up run each (first runs pay for oneDNN's kernel choice and
// the allocator's first pages), and keeps the best time of each.
func measure(dev Device, run func()) autoChoice {
	best := map[Precision]float64{}
	WithSeed(0, func() {
		for round := range 4 {
			for _, q := range []Precision{FP32, BF16} {
				t0 := time.Now()
				Scoped(func() { q.Run(dev, run) })
				ms := float64(time.Since(t0).Microseconds()) / 1e3
				if round > 0 && (best[q] == 0 || ms < best[q]) {
					best[q] = ms
				}
			}
		}
	})
	return autoChoice{Choice: pick(best), MS: best, When: time.Now().UTC()}
}

// pick is bf16 when it beat fp32 by the margin, else fp32.
func pick(ms map[Precision]float64) Precision {
	if ms[BF16] > 0 && ms[BF16] <= MeasureMargin*ms[FP32] {
		return BF16
	}
	return FP32
}

var (
	autoMu   sync.Mutex
	autoSaid = map[string]bool{} // keys logged by this process
	autoMem  *autoFile
)

// autoFile is the cache file's content.
type autoFile struct {
	Choices map[string]autoChoice `json:"choices"`
}

// autoCachePath is the cache file: $KAKUSAN_CACHE (else
// $XDG_CACHE_HOME/kakusan, else ~/.cache/kakusan)/precision.json.
func autoCachePath() string {
	dir := os.Getenv("KAKUSAN_CACHE")
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(base, "kakusan")
	}
	return filepath.Join(dir, "precision.json")
}

// autoCache is the cache, read once; a missing, unreadable or malformed
// file is an empty cache (it holds only timings: measuring again is the
// worst a bad file costs).
func autoCache() *autoFile {
	if autoMem != nil {
		return autoMem
	}
	autoMem = &autoFile{Choices: map[string]autoChoice{}}
	if path := autoCachePath(); path != "" {
		if b, err := os.ReadFile(path); err == nil && len(b) < 1<<20 {
			var f autoFile
			if json.Unmarshal(b, &f) == nil && f.Choices != nil {
				for k, c := range f.Choices {
					if c.Choice == FP32 || c.Choice == BF16 {
						autoMem.Choices[k] = c
					}
				}
			}
		}
	}
	return autoMem
}

// saveAutoCache writes the cache atomically; "" when it did, else why not.
func saveAutoCache(f *autoFile) string {
	path := autoCachePath()
	if path == "" {
		return "no cache folder"
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err == nil {
		err = os.MkdirAll(filepath.Dir(path), 0o755)
	}
	if err == nil {
		tmp := fmt.Sprintf("%s.%d.tmp", path, os.Getpid())
		if err = os.WriteFile(tmp, b, 0o644); err == nil {
			err = os.Rename(tmp, path)
		}
	}
	if err != nil {
		return err.Error()
	}
	return ""
}

// cpuFlags is /proc/cpuinfo's first "flags" line, split (nil where there
// is none), and cpuModel its first "model name".
var cpuFlags = sync.OnceValue(func() []string { return cpuinfo("flags") })
var cpuModel = sync.OnceValue(func() []string { return cpuinfo("model name") })

func cpuinfo(field string) []string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return nil
	}
	for _, line := range strings.Split(string(b), "\n") {
		if name, value, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(name) == field {
			return strings.Fields(value)
		}
	}
	return nil
}

// cpuHasAMX reports whether this CPU has AMX's bfloat16 tile products;
// cpuHasBF16 whether it computes bfloat16 natively at all (AMX or
// AVX512-BF16).
func cpuHasAMX() bool  { return slices.Contains(cpuFlags(), "amx_bf16") }
func cpuHasBF16() bool { return cpuHasAMX() || slices.Contains(cpuFlags(), "avx512_bf16") }
