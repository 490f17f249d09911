package torch

import (
	"fmt"
	"io"
	"math"
	"os"
	"path"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
)

// How many intra-op threads libtorch may start is bounded by the machine,
// whatever asks for them (KAKUSAN_THREADS, OMP_NUM_THREADS, the config key
// threads through SetNumThreads): by the CPUs the process may run on, and
// by the threads it may still create. 1024 OpenMP threads on 2 cores made a
// 4-image sampling job produce nothing in 40 s; under a process limit (a
// container's pids limit, ulimit -u) OpenMP's threads took the last ones and
// the Go runtime, unable to start its own, aborted and hung. A request above
// the bound is lowered to it with one line on stderr naming the request and
// both numbers.

// threadLog gets the line that says a thread count was lowered.
var threadLog io.Writer = os.Stderr

// threadReserve is the threads a process keeps for itself besides OpenMP's:
// the Go runtime's (one per GOMAXPROCS, sysmon, goroutines blocked in
// system calls or cgo), libtorch's inter-op pool, Gloo's. A training run on
// 2 cores has 9 besides its intra-op threads.
func threadReserve() int { return 32 + runtime.GOMAXPROCS(0) }

// machine is what bounds the intra-op threads of this process.
type machine struct {
	cpus   int    // the CPUs it may use, at least 1
	cpuWhy string // where cpus comes from, e.g. "runtime.NumCPU 8, cgroup CPU quota 2 (/sys/fs/cgroup/cpu.max)"
	// headroom is how many more threads it may create, -1 without a
	// limit; headWhy says which limit, e.g. "RLIMIT_NPROC 300, 290 in use by uid 1000".
	headroom int
	headWhy  string
}

// cpuBound is the CPUs this process may use, measured once: the CPUs of its
// affinity mask (runtime.NumCPU) and its cgroup's CPU quota (rounded up),
// the smaller, and the words that say so.
var cpuBound = sync.OnceValues(func() (int, string) {
	return cpusFrom(runtime.NumCPU(), cgroupRoot, readFile("/proc/self/cgroup"))
})

// cgroupRoot is where the cgroup file systems are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cpusFrom is cpuBound for numCPU CPUs and the cgroups under root
// (selfCgroup: the contents of /proc/self/cgroup).
func cpusFrom(numCPU int, root, selfCgroup string) (int, string) {
	n := max(numCPU, 1)
	why := fmt.Sprintf("runtime.NumCPU %d", numCPU)
	if q, file, ok := cgroupCPUQuota(root, selfCgroup); ok {
		c := max(int(math.Ceil(q-1e-9)), 1)
		why += fmt.Sprintf(", cgroup CPU quota %s (%s)", strconv.FormatFloat(q, 'g', 4, 64), file)
		n = min(n, c)
	} else {
		why += ", no cgroup CPU quota"
	}
	return n, why
}

// currentMachine is the bound now: the CPUs (measured once) and the
// threads the process may still create (measured at each call).
func currentMachine() machine {
	m := machine{}
	m.cpus, m.cpuWhy = cpuBound()
	m.headroom, m.headWhy = threadHeadroom(cgroupRoot, readFile("/proc/self/cgroup"))
	return m
}

// MaxThreads is the most intra-op threads this process may use: its CPUs
// (runtime.NumCPU and the cgroup's CPU quota) and, under a process limit,
// the threads it may still create less what it keeps for itself.
func MaxThreads() int { return currentMachine().bound(1<<30, "", io.Discard) }

// bound lowers n threads, asked for by what (e.g. "KAKUSAN_THREADS=1024"),
// to what the machine allows, saying so in one line on w.
func (m machine) bound(n int, what string, w io.Writer) int {
	want := n
	var why []string
	if n > m.cpus {
		why = append(why, fmt.Sprintf("more than the %d CPUs this process may use (%s)", m.cpus, m.cpuWhy))
		n = m.cpus
	}
	if m.headroom >= 0 {
		// OpenMP starts n-1 threads beside the calling one.
		if allowed := max(m.headroom-threadReserve()+1, 1); n > allowed {
			why = append(why, fmt.Sprintf("but only %d more threads may be created (%s) and the process keeps %d for itself", m.headroom, m.headWhy, threadReserve()))
			n = allowed
		}
	}
	if len(why) > 0 {
		fmt.Fprintf(w, "torch: %s asks for %d threads, %s: %d intra-op threads\n", what, want, strings.Join(why, ", "), n)
	}
	return n
}

// cgroupCPUQuota is the CPU quota of the cgroup of selfCgroup (the
// contents of /proc/self/cgroup) under root, in CPUs, and the file that
// sets it: the smallest of cgroup v2's cpu.max ("max 100000" is none,
// "200000 100000" two CPUs) and cgroup v1's cpu.cfs_quota_us over
// cpu.cfs_period_us (a quota of -1 is none), in the process's cgroup and
// its ancestors. ok is false without a quota.
func cgroupCPUQuota(root, selfCgroup string) (cpus float64, file string, ok bool) {
	cpus = math.Inf(1)
	try := func(q float64, f string, has bool) {
		if has && q > 0 && q < cpus {
			cpus, file = q, f
		}
	}
	for _, dir := range cgroupDirs(root, selfCgroup, "") {
		f := filepath.Join(dir, "cpu.max")
		if s, err := os.ReadFile(f); err == nil {
			q, has := parseCPUMax(string(s))
			try(q, f, has)
		}
	}
	for _, ctrl := range []string{"cpu", "cpu,cpuacct", "cpuacct,cpu"} {
		for _, dir := range cgroupDirs(root, selfCgroup, ctrl) {
			f := filepath.Join(dir, "cpu.cfs_quota_us")
			quota, err1 := os.ReadFile(f)
			period, err2 := os.ReadFile(filepath.Join(dir, "cpu.cfs_period_us"))
			if err1 == nil && err2 == nil {
				q, has := parseCFSQuota(string(quota), string(period))
				try(q, f, has)
			}
		}
	}
	return cpus, file, !math.IsInf(cpus, 1)
}

// parseCPUMax reads cgroup v2's cpu.max, "$MAX $PERIOD": the quota in CPUs,
// has false for "max" or what it cannot read.
func parseCPUMax(s string) (cpus float64, has bool) {
	f := strings.Fields(s)
	if len(f) == 0 || f[0] == "max" {
		return 0, false
	}
	period := "100000"
	if len(f) > 1 {
		period = f[1]
	}
	return parseCFSQuota(f[0], period)
}

// parseCFSQuota reads cgroup v1's cpu.cfs_quota_us and cpu.cfs_period_us:
// the quota in CPUs, has false for -1 (none) or what it cannot read.
func parseCFSQuota(quota, period string) (cpus float64, has bool) {
	q, err1 := strconv.ParseInt(strings.TrimSpace(quota), 10, 64)
	p, err2 := strconv.ParseInt(strings.TrimSpace(period), 10, 64)
	if err1 != nil || err2 != nil || q <= 0 || p <= 0 {
		return 0, false
	}
	return float64(q) / float64(p), true
}

// cgroupDirs are the folders of the process's cgroup and its ancestors,
// innermost first, that exist under root: root/ctrl/path for the v1
// hierarchy of controller list ctrl ("cpu,cpuacct"), root/path for the v2
// one (ctrl ""), where selfCgroup (/proc/self/cgroup's lines
// "id:controllers:path") gives the path. A container that mounts its own
// cgroup at the root (the path then names the host's folder, absent here)
// has it found as the first ancestor that exists.
func cgroupDirs(root, selfCgroup, ctrl string) []string {
	p := "/"
	for _, line := range strings.Split(selfCgroup, "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if (ctrl == "" && parts[0] == "0" && parts[1] == "") || (ctrl != "" && hasController(parts[1], ctrl)) {
			p = path.Clean("/" + parts[2])
		}
	}
	var dirs []string
	for {
		dir := filepath.Join(root, ctrl, filepath.FromSlash(p))
		if st, err := os.Stat(dir); err == nil && st.IsDir() {
			dirs = append(dirs, dir)
		}
		if p == "/" {
			return dirs
		}
		p = path.Dir(p)
	}
}

// hasController reports whether the v1 line's controllers ("cpu,cpuacct")
// are the mount's ("cpu" or "cpu,cpuacct", in any order).
func hasController(list, mount string) bool {
	have := strings.Split(list, ",")
	for _, c := range strings.Split(mount, ",") {
		found := false
		for _, h := range have {
			found = found || h == c
		}
		if !found {
			return false
		}
	}
	return true
}

// threadHeadroom is how many more threads (tasks) the process may create,
// -1 without a limit, and which limit: the smallest of RLIMIT_NPROC less
// the threads of the user's processes, and each of its cgroups' pids.max
// less their pids.current (v2, or v1's pids controller).
func threadHeadroom(root, selfCgroup string) (int, string) {
	left, why := pidsHeadroom(root, selfCgroup)
	if n, w := nprocHeadroom(); n >= 0 && (left < 0 || n < left) {
		left, why = n, w
	}
	return left, why
}

// pidsHeadroom is the cgroups' part of threadHeadroom.
func pidsHeadroom(root, selfCgroup string) (int, string) {
	left, why := -1, ""
	dirs := append(cgroupDirs(root, selfCgroup, ""), cgroupDirs(root, selfCgroup, "pids")...)
	for _, dir := range dirs {
		limit, err1 := strconv.Atoi(strings.TrimSpace(readFile(filepath.Join(dir, "pids.max"))))
		used, err2 := strconv.Atoi(strings.TrimSpace(readFile(filepath.Join(dir, "pids.current"))))
		if err1 != nil || err2 != nil { // "max", or no pids controller there
			continue
		}
		if n := max(limit-used, 0); left < 0 || n < left {
			left, why = n, fmt.Sprintf("pids.max %d, pids.current %d in %s", limit, used, dir)
		}
	}
	return left, why
}

// userThreads counts the threads of the processes whose real user is uid,
// reading /proc/*/status (of this PID namespace: a limit counts others too).
func userThreads(proc string, uid int) int {
	entries, _ := os.ReadDir(proc)
	n := 0
	for _, e := range entries {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		var ruid, threads = -1, 0
		for _, line := range strings.Split(readFile(filepath.Join(proc, e.Name(), "status")), "\n") {
			if v, ok := strings.CutPrefix(line, "Uid:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					ruid, _ = strconv.Atoi(f[0])
				}
			} else if v, ok := strings.CutPrefix(line, "Threads:"); ok {
				threads, _ = strconv.Atoi(strings.TrimSpace(v))
			}
		}
		if ruid == uid {
			n += threads
		}
	}
	return n
}

// systemThreads is every thread of the system, from /proc/loadavg's fourth
// field ("running/total"): at least the user's, read without a scan; -1
// where it cannot be read.
func systemThreads(loadavg string) int {
	f := strings.Fields(loadavg)
	if len(f) < 4 {
		return -1
	}
	_, total, ok := strings.Cut(f[3], "/")
	n, err := strconv.Atoi(total)
	if !ok || err != nil {
		return -1
	}
	return n
}

// readFile is the file's contents, "" when it cannot be read.
func readFile(name string) string {
	b, _ := os.ReadFile(name)
	return string(b)
}
