package torch

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"testing"
	"time"
)

// A thread count above the machine's CPUs is lowered to them, with a line
// on stderr naming where it came from and both numbers: 1024 OpenMP
// threads on 2 cores made a 4-image sampling job produce nothing in 40 s,
// and under a process limit aborted the Go runtime. The children run the
// test binary (TestThreadsChild) as bin/train would: KAKUSAN_THREADS at
// start, then the config's threads through SetNumThreads.
func TestThreadsBoundedByTheMachine(t *testing.T) {
	cpus := runtime.NumCPU()
	if cpus >= 1024 {
		t.Skip("a machine of 1024 CPUs or more")
	}
	for _, c := range []struct {
		env, set string
		mention  []string
	}{
		{"KAKUSAN_THREADS=1024", "", []string{"KAKUSAN_THREADS=1024", "1024", strconv.Itoa(cpus) + " CPUs"}},
		{"OMP_NUM_THREADS=1024", "", []string{"OMP_NUM_THREADS=1024", strconv.Itoa(cpus) + " CPUs"}},
		{"KAKUSAN_THREADS=1", "1024", []string{"threads", "1024", strconv.Itoa(cpus) + " CPUs"}},
	} {
		cmd := exec.Command(os.Args[0], "-test.run=^TestThreadsChild$", "-test.v")
		cmd.Env = append(os.Environ(), c.env, "KK_THREADS_CHILD=1", "KK_THREADS_SET="+c.set)
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		start := time.Now()
		err := cmd.Run()
		out := stdout.String()
		if err != nil || !strings.Contains(out, "threads child ok") {
			t.Errorf("%s %s: %v\n%s%s", c.env, c.set, err, out, stderr.String())
			continue
		}
		var n int
		for _, line := range strings.Split(out, "\n") {
			if v, ok := strings.CutPrefix(line, "num threads "); ok {
				n, _ = strconv.Atoi(v)
			}
		}
		if n < 1 || n > cpus {
			t.Errorf("%s %s: %d intra-op threads on %d CPUs (%s)", c.env, c.set, n, cpus, time.Since(start))
		}
		msg := stderr.String()
		for _, want := range c.mention {
			if !strings.Contains(msg, want) {
				t.Errorf("%s %s: stderr %q does not mention %q", c.env, c.set, msg, want)
			}
		}
		if strings.Count(strings.TrimSpace(msg), "\n") > 0 {
			t.Errorf("%s %s: want a one-line message, got %q", c.env, c.set, msg)
		}
	}
}

// Under a process limit (ulimit -u, RLIMIT_NPROC) that leaves the process
// few threads to create, it asks OpenMP for fewer, down to 1, and says
// why: OpenMP's threads had taken the last ones, and the Go runtime,
// unable to start its own, aborted with a register dump and hung.
func TestThreadsUnderAProcessLimit(t *testing.T) {
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Skip("no prlimit")
	}
	limit := userThreads("/proc", os.Getuid()) + 16 // a few for the child's Go runtime
	cmd := exec.Command(prlimit, "--nproc="+strconv.Itoa(limit), os.Args[0], "-test.run=^TestThreadsChild$", "-test.v")
	cmd.Env = append(os.Environ(), "KAKUSAN_THREADS=2", "KK_THREADS_CHILD=1", "KK_THREADS_SET=")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil || !strings.Contains(stdout.String(), "threads child ok") {
		t.Fatalf("under RLIMIT_NPROC %d: %v\n%s%s", limit, err, stdout.String(), stderr.String())
	}
	if !strings.Contains(stdout.String(), "num threads 1\n") || !strings.Contains(stderr.String(), "RLIMIT_NPROC "+strconv.Itoa(limit)) ||
		!strings.Contains(stderr.String(), "KAKUSAN_THREADS=2") {
		t.Errorf("under RLIMIT_NPROC %d: %s%s, want 1 thread and a line naming the limit", limit, stdout.String(), stderr.String())
	}
}

// TestThreadsChild is TestThreadsBoundedByTheMachine's child: it starts
// the torch thread, applies KK_THREADS_SET as the config key threads does,
// runs a parallel operation and prints the thread count.
func TestThreadsChild(t *testing.T) {
	if os.Getenv("KK_THREADS_CHILD") == "" {
		t.Skip("a child of TestThreadsBoundedByTheMachine")
	}
	var n int
	on(t, func() {
		if s := os.Getenv("KK_THREADS_SET"); s != "" {
			v, _ := strconv.Atoi(s)
			SetNumThreads(v)
		}
		x := Randn([]int64{256, 256}, CPU)
		Matmul(x, x).Sum().Item()
		n = NumThreads()
	})
	os.Stdout.WriteString("num threads " + strconv.Itoa(n) + "\nthreads child ok\n")
}

// fakeFS writes files (path: contents) under a new folder and returns it.
func fakeFS(t *testing.T, files map[string]string) string {
	t.Helper()
	root := t.TempDir()
	for name, body := range files {
		p := filepath.Join(root, filepath.FromSlash(name))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return root
}

// The CPUs a process may use: runtime.NumCPU and its cgroup's CPU quota,
// v2 (cpu.max) or v1 (cpu.cfs_quota_us over cpu.cfs_period_us), in its
// cgroup or an ancestor, rounded up; no quota, or one that cannot be read,
// leaves NumCPU.
func TestCgroupCPUQuota(t *testing.T) {
	for _, c := range []struct {
		name   string
		files  map[string]string
		self   string
		numCPU int
		want   int
		quota  string // in the words, "" for none
	}{
		{"v2 none", map[string]string{"cpu.max": "max 100000\n"}, "0::/\n", 8, 8, ""},
		{"v2 two", map[string]string{"cpu.max": "200000 100000\n"}, "0::/\n", 8, 2, "cgroup CPU quota 2 ("},
		{"v2 one and a half", map[string]string{"cpu.max": "150000 100000\n"}, "0::/\n", 8, 2, "quota 1.5"},
		{"v2 half", map[string]string{"cpu.max": "50000 100000\n"}, "0::/\n", 8, 1, "quota 0.5"},
		{"v2 above NumCPU", map[string]string{"cpu.max": "1600000 100000\n"}, "0::/\n", 4, 4, "quota 16"},
		{"v2 nested, the ancestor's smaller", map[string]string{"cpu.max": "max 100000", "a/cpu.max": "300000 100000", "a/b/cpu.max": "max 100000", "a/b/c/cpu.max": "400000 100000"},
			"0::/a/b/c\n", 16, 3, "a/cpu.max"},
		{"v2 path of the host, absent here", map[string]string{"cpu.max": "100000 100000"}, "0::/system.slice/docker-1.scope\n", 8, 1, "quota 1"},
		{"v2 garbage", map[string]string{"cpu.max": "lots\n"}, "0::/\n", 8, 8, ""},
		{"v1 none", map[string]string{"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, "3:cpu,cpuacct:/\n", 8, 8, ""},
		{"v1 three", map[string]string{"cpu,cpuacct/cpu.cfs_quota_us": "300000\n", "cpu,cpuacct/cpu.cfs_period_us": "100000\n"}, "3:cpu,cpuacct:/\n", 8, 3, "cpu.cfs_quota_us"},
		{"v1 in a cgroup", map[string]string{"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000", "cpu/kk/cpu.cfs_quota_us": "25000", "cpu/kk/cpu.cfs_period_us": "50000"},
			"5:cpuacct,cpu:/kk\n0::/\n", 8, 1, "kk/cpu.cfs_quota_us"},
		{"no cgroups", map[string]string{}, "", 2, 2, ""},
	} {
		root := fakeFS(t, c.files)
		n, why := cpusFrom(c.numCPU, root, c.self)
		if n != c.want {
			t.Errorf("%s: %d CPUs (%s), want %d", c.name, n, why, c.want)
		}
		if !strings.Contains(why, "runtime.NumCPU "+strconv.Itoa(c.numCPU)) || (c.quota == "") != strings.Contains(why, "no cgroup CPU quota") || !strings.Contains(why, c.quota) {
			t.Errorf("%s: the words %q, want NumCPU and %q", c.name, why, c.quota)
		}
	}
	for s, want := range map[string]float64{"max 100000": 0, "max": 0, "": 0, "200000 100000": 2, "200000": 2, "x 100000": 0, "100000 0": 0, "-5 100000": 0} {
		if q, _ := parseCPUMax(s); q != want {
			t.Errorf("cpu.max %q: %g CPUs, want %g", s, q, want)
		}
	}
}

// The threads a process may still create: each cgroup's pids.max less its
// pids.current (v2, or v1's pids controller), the smallest; a request that
// would leave the process fewer than it keeps for itself is lowered, to 1
// at least, in the same one line as a CPU bound.
func TestThreadHeadroom(t *testing.T) {
	root := fakeFS(t, map[string]string{
		"pids.max": "max\n", "pids.current": "12\n",
		"job/pids.max": "300\n", "job/pids.current": "280\n",
		"pids/pids.max": "1000\n", "pids/pids.current": "10\n",
	})
	n, why := pidsHeadroom(root, "0::/job\n")
	if n != 20 || !strings.Contains(why, "pids.max 300, pids.current 280") {
		t.Errorf("headroom %d (%s), want 20 from job's pids.max", n, why)
	}
	if n, _ := pidsHeadroom(fakeFS(t, map[string]string{"pids.max": "max", "pids.current": "3"}), "0::/\n"); n != -1 {
		t.Errorf("pids.max max: headroom %d, want -1", n)
	}
	if n, _ := pidsHeadroom(root, "7:pids:/\n"); n != 990 {
		t.Errorf("v1 pids: headroom %d, want 990", n)
	}
	if got := systemThreads("0.00 0.01 0.05 3/136 25090\n"); got != 136 {
		t.Errorf("loadavg: %d threads, want 136", got)
	}
	if got := userThreads(fakeFS(t, map[string]string{
		"1/status": "Name:\tinit\nUid:\t0\t0\t0\t0\nThreads:\t1\n", "20/status": "Uid:\t1000\t1000\t1000\t1000\nThreads:\t7\n",
		"21/status": "Uid:\t1000\t0\t0\t0\nThreads:\t5\n", "self/status": "Uid:\t1000\nThreads:\t99\n",
	}), 1000); got != 12 {
		t.Errorf("uid 1000 has %d threads, want 12", got)
	}

	reserve := threadReserve()
	m := machine{cpus: 64, cpuWhy: "runtime.NumCPU 64", headroom: reserve + 7, headWhy: "pids.max 100, pids.current 60 in /sys/fs/cgroup"}
	var log strings.Builder
	if n := m.bound(16, "KAKUSAN_THREADS=16", &log); n != 8 || !strings.Contains(log.String(), "KAKUSAN_THREADS=16 asks for 16 threads, but only") ||
		!strings.Contains(log.String(), "pids.max 100") || !strings.HasSuffix(log.String(), ": 8 intra-op threads\n") {
		t.Errorf("%d threads: %q", n, log.String())
	}
	log.Reset()
	m.headroom, m.cpus = 3, 2
	if n := m.bound(1024, "the config's threads", &log); n != 1 || strings.Count(log.String(), "\n") != 1 ||
		!strings.Contains(log.String(), "more than the 2 CPUs") || !strings.Contains(log.String(), "only 3 more threads") {
		t.Errorf("%d threads: %q, want 1 in one line naming both limits", n, log.String())
	}
	log.Reset()
	if n := m.bound(1, "KAKUSAN_THREADS=1", &log); n != 1 || log.Len() != 0 {
		t.Errorf("1 thread: %d, %q", n, log.String())
	}
}

// The memory a process may use: MemTotal, or its cgroup's limit when
// smaller (v2 memory.max, "max" for none; v1 memory.limit_in_bytes, near
// 2^63 for none).
func TestHostMemory(t *testing.T) {
	meminfo := "MemTotal:       24000000 kB\nMemFree:        1000 kB\n"
	for _, c := range []struct {
		name  string
		files map[string]string
		self  string
		want  int64
		why   string
	}{
		{"no cgroup", nil, "", 24000000 << 10, "MemTotal"},
		{"v2 max", map[string]string{"memory.max": "max\n"}, "0::/\n", 24000000 << 10, "MemTotal"},
		{"v2 limit", map[string]string{"memory.max": "max\n", "job/memory.max": "4294967296\n"}, "0::/job\n", 4 << 30, "job/memory.max"},
		{"v2 above MemTotal", map[string]string{"memory.max": "1099511627776\n"}, "0::/\n", 24000000 << 10, "MemTotal"},
		{"v1 none", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712\n"}, "4:memory:/\n", 24000000 << 10, "MemTotal"},
		{"v1 limit", map[string]string{"memory/memory.limit_in_bytes": "9223372036854771712", "memory/kk/memory.limit_in_bytes": "2147483648"}, "4:memory:/kk\n", 2 << 30, "kk/memory.limit_in_bytes"},
	} {
		n, why := hostMemory(meminfo, fakeFS(t, c.files), c.self)
		if n != c.want || !strings.Contains(why, c.why) {
			t.Errorf("%s: %d bytes (%s), want %d (%s)", c.name, n, why, c.want, c.why)
		}
	}
	if n, _ := hostMemory("MemTotal:\nMemTotal: x kB\n", t.TempDir(), ""); n != 0 {
		t.Errorf("nothing readable: %d bytes, want 0", n)
	}
	if n, why := HostMemory(); n <= 0 || why == "" {
		t.Errorf("this machine: %d bytes (%s)", n, why)
	}
	for n, want := range map[int64]string{512: "512 bytes", 3 << 20: "3 MiB", 24576000 << 10: "23.4 GiB", 1 << 40: "1 TiB"} {
		if got := Bytes(n); got != want {
			t.Errorf("Bytes(%d) = %q, want %q", n, got, want)
		}
	}
}
