package torch

import (
	"fmt"
	"path/filepath"
	"strconv"
	"strings"
)

// HostMemory is the memory this process may use, in bytes, and where the
// figure comes from: the machine's (MemTotal in /proc/meminfo) or its
// cgroup's limit when smaller (v2 memory.max, v1
// memory.limit_in_bytes, in its cgroup or an ancestor); 0 where none can
// be read. Sizes checked before allocating (a training batch) are bounded
// by it.
func HostMemory() (int64, string) {
	return hostMemory(readFile("/proc/meminfo"), cgroupRoot, readFile("/proc/self/cgroup"))
}

// hostMemory is HostMemory for the given /proc/meminfo and
// /proc/self/cgroup contents and the cgroups under root.
func hostMemory(meminfo, root, selfCgroup string) (int64, string) {
	var n int64
	var why string
	for _, line := range strings.Split(meminfo, "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			if f := strings.Fields(v); len(f) == 2 && f[1] == "kB" {
				if kb, err := strconv.ParseInt(f[0], 10, 64); err == nil && kb > 0 && kb < 1<<50 {
					n, why = kb<<10, "MemTotal in /proc/meminfo"
				}
			}
		}
	}
	limit := func(file string) {
		v, err := strconv.ParseInt(strings.TrimSpace(readFile(file)), 10, 64)
		if err == nil && v > 0 && v < 1<<62 && (n == 0 || v < n) { // v1's "no limit" is near 2^63
			n, why = v, file
		}
	}
	for _, dir := range cgroupDirs(root, selfCgroup, "") {
		limit(filepath.Join(dir, "memory.max"))
	}
	for _, dir := range cgroupDirs(root, selfCgroup, "memory") {
		limit(filepath.Join(dir, "memory.limit_in_bytes"))
	}
	return n, why
}

// Bytes writes n bytes for people: "512 MiB", "22.9 GiB", "1.2 TiB".
func Bytes(n int64) string {
	f := float64(n)
	for _, u := range []string{"bytes", "KiB", "MiB", "GiB", "TiB", "PiB"} {
		if f < 1024 || u == "PiB" {
			if u == "bytes" {
				return fmt.Sprintf("%d bytes", n)
			}
			return strconv.FormatFloat(f, 'g', 3, 64) + " " + u
		}
		f /= 1024
	}
	return ""
}
