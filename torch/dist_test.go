package torch

import (
	"bytes"
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// The process-group tests run ranks as child processes of the test binary
// (TestDistChild below, selected by KK_DIST_ROLE), as torchrun runs them.

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

type rankResult struct {
	out     string
	err     error
	elapsed time.Duration
}

// runRanks starts world children with the given role each and waits for all.
func runRanks(t *testing.T, world int, roles ...string) []rankResult {
	t.Helper()
	if !HasBackend("gloo") {
		t.Skip("the shim was built without Gloo")
	}
	port := freePort(t)
	res := make([]rankResult, world)
	var wg sync.WaitGroup
	for r := range world {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDistChild$", "-test.v")
		cmd.Env = append(os.Environ(), "KK_DIST_ROLE="+roles[r], "KK_DIST_RANK="+strconv.Itoa(r),
			"KK_DIST_WORLD="+strconv.Itoa(world), "KK_DIST_PORT="+strconv.Itoa(port), "KAKUSAN_THREADS=1")
		var buf bytes.Buffer
		cmd.Stdout, cmd.Stderr = &buf, &buf
		wg.Add(1)
		go func() {
			defer wg.Done()
			start := time.Now()
			err := cmd.Run()
			res[r] = rankResult{buf.String(), err, time.Since(start)}
		}()
	}
	wg.Wait()
	return res
}

func TestGroupCollectives(t *testing.T) {
	for r, res := range runRanks(t, 2, "collectives", "collectives") {
		if res.err != nil || !strings.Contains(res.out, "collectives ok") {
			t.Errorf("rank %d: %v\n%s", r, res.err, res.out)
		}
	}
}

// The Reducer averages gradients bucket by bucket as the backward pass
// produces them: every bucket of used parameters launches during the pass,
// an unused parameter's bucket at Finish (with zeros), steps after steps.
func TestReducer(t *testing.T) {
	for r, res := range runRanks(t, 2, "reducer", "reducer") {
		if res.err != nil || !strings.Contains(res.out, "collectives ok") {
			t.Errorf("rank %d: %v\n%s", r, res.err, res.out)
		}
	}
}

// SyncBatchNorm on each rank's share of a batch is BatchNorm of the whole
// batch: outputs, input gradients, the parameters' gradients summed over
// the ranks and the running statistics, within float32 rounding.
func TestSyncBatchNorm(t *testing.T) {
	for r, res := range runRanks(t, 2, "syncbn", "syncbn") {
		if res.err != nil || !strings.Contains(res.out, "collectives ok") {
			t.Errorf("rank %d: %v\n%s", r, res.err, res.out)
		}
	}
}

// A rank that dies, or hangs, makes the other's next collective fail within
// the group's timeout rather than wait forever.
func TestGroupPeerFailure(t *testing.T) {
	for _, peer := range []string{"exit", "hang"} {
		t.Run(peer, func(t *testing.T) {
			res := runRanks(t, 2, "survivor", peer)
			s := res[0]
			if s.err == nil || !strings.Contains(s.out, "all-reduce") {
				t.Fatalf("survivor: want a failed all-reduce, got %v\n%s", s.err, s.out)
			}
			if s.elapsed > 30*time.Second || (peer == "hang" && !strings.Contains(s.out, "Timed out")) {
				t.Errorf("survivor took %v to fail; timeout is 3 s", s.elapsed)
			}
			if testing.Verbose() {
				t.Logf("survivor after %v: %s", s.elapsed.Round(time.Millisecond), s.out)
			}
		})
	}
}

// A rank whose peers never come fails the rendezvous within the timeout.
func TestGroupRendezvousTimeout(t *testing.T) {
	if !HasBackend("gloo") {
		t.Skip("the shim was built without Gloo")
	}
	port := freePort(t)
	start := time.Now()
	err := Do(func() error {
		g, err := NewGroup(GroupOptions{Backend: "gloo", Host: "127.0.0.1", Port: port, Rank: 0, World: 2, Timeout: 2 * time.Second})
		if err == nil {
			g.Close()
		}
		return err
	})
	if err == nil {
		t.Fatal("joined a group of two alone")
	}
	if d := time.Since(start); d > 20*time.Second {
		t.Errorf("took %v to give up; timeout is 2 s", d)
	}
	for _, bad := range []struct {
		backend    string
		rank, size int
	}{{"gloo", 2, 2}, {"gloo", -1, 2}, {"mpi", 0, 1}} {
		err := Do(func() error {
			_, err := NewGroup(GroupOptions{Backend: bad.backend, Host: "127.0.0.1", Port: port, Rank: bad.rank, World: bad.size, Timeout: time.Second})
			return err
		})
		if err == nil {
			t.Errorf("NewGroup(%q, rank %d of %d) succeeded", bad.backend, bad.rank, bad.size)
		}
	}
}

// TestDistChild is one rank of the tests above; it does nothing unless run
// by them.
func TestDistChild(t *testing.T) {
	role := os.Getenv("KK_DIST_ROLE")
	if role == "" {
		t.Skip("a child of the process-group tests")
	}
	rank, _ := strconv.Atoi(os.Getenv("KK_DIST_RANK"))
	world, _ := strconv.Atoi(os.Getenv("KK_DIST_WORLD"))
	port, _ := strconv.Atoi(os.Getenv("KK_DIST_PORT"))
	err := Do(func() error {
		g, err := NewGroup(GroupOptions{Backend: "gloo", Host: "127.0.0.1", Port: port, Rank: rank, World: world, Timeout: 3 * time.Second})
		if err != nil {
			return err
		}
		defer g.Close()
		switch role {
		case "exit":
			os.Exit(0)
		case "hang":
			time.Sleep(6 * time.Second)
			os.Exit(0)
		case "survivor":
			g.AllReduceMean([]*Tensor{Ones([]int64{4})}, 0)
			return fmt.Errorf("the all-reduce returned without its peer")
		}
		switch role {
		case "syncbn":
			return distSyncBatchNorm(g)
		case "reducer":
			return distReducer(g)
		}
		return distCollectives(g)
	})
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	fmt.Println("collectives ok")
}

// distCollectives checks each collective against its closed form on rank r
// of w: tensors of mixed sizes and dtypes, in buckets small enough that
// several are in flight at once.
func distCollectives(g *Group) error {
	r, w := float64(g.Rank), float64(g.World)
	mean := (w - 1) / 2 // of 0, 1, ..., w-1
	a := Full([]int64{3, 5}, r)
	b := Full([]int64{1000}, 2*r).To(Float64)
	c := Full([]int64{7}, -r)
	g.AllReduceMean([]*Tensor{a, b, c}, 64) // 64 bytes: a bucket per tensor and more
	for _, x := range []struct {
		name string
		t    *Tensor
		want float64
	}{{"a", a, mean}, {"b", b, 2 * mean}, {"c", c, -mean}} {
		got := x.t.To(Float64).Flatten(0, -1).Float64s()
		for _, v := range got {
			if v != x.want {
				return fmt.Errorf("all-reduce %s: got %v, want %v", x.name, v, x.want)
			}
		}
	}
	// Broadcast from the last rank.
	x := Full([]int64{3}, r)
	g.Broadcast([]*Tensor{x}, g.World-1)
	if got := x.Float64s(); got[0] != w-1 || got[2] != w-1 {
		return fmt.Errorf("broadcast: got %v, want %v", got, w-1)
	}
	g.Barrier()
	return nil
}

func distSyncBatchNorm(g *Group) error {
	ManualSeed(7) // the same full batch on every rank
	const n, c = 3, 4
	x := Randn([]int64{n * int64(g.World), c, 5, 2}).MulScalar(2).AddScalar(0.5)
	dy := Randn([]int64{n * int64(g.World), c, 5, 2})
	w, b := Randn([]int64{c}).SetRequiresGrad(true), Randn([]int64{c}).SetRequiresGrad(true)
	run := func(sync bool) (y, dx, dw, db, rm, rv *Tensor) {
		rm, rv = Zeros([]int64{c}), Ones([]int64{c})
		in := x
		grad := dy
		if sync {
			in, grad = x.Narrow(0, int64(g.Rank)*n, n), dy.Narrow(0, int64(g.Rank)*n, n)
		}
		in = in.Detach().SetRequiresGrad(true)
		if sync {
			y = g.SyncBatchNorm(in, w, b, rm, rv, 0.1, 1e-5)
		} else {
			y = BatchNorm(in, w, b, rm, rv, true, 0.1, 1e-5)
		}
		y.Mul(grad).Sum().Backward()
		dx, dw, db = in.Grad().Detach(), w.Grad().Detach().Clone(), b.Grad().Detach().Clone()
		w.Grad().Fill(0)
		b.Grad().Fill(0)
		return
	}
	y, dx, dw, db, rm, rv := run(false)
	sy, sdx, sdw, sdb, srm, srv := run(true)
	g.AllReduceMean([]*Tensor{sdw, sdb}, 0) // the parameters' gradients are each rank's share
	sdw, sdb = sdw.MulScalar(float64(g.World)), sdb.MulScalar(float64(g.World))
	mine := func(t *Tensor) *Tensor { return t.Narrow(0, int64(g.Rank)*n, n) }
	for _, p := range []struct {
		name      string
		got, want *Tensor
	}{{"y", sy, mine(y)}, {"dx", sdx, mine(dx)}, {"dw", sdw, dw}, {"db", sdb, db}, {"running_mean", srm, rm}, {"running_var", srv, rv}} {
		if d := p.got.Sub(p.want).Abs().Max().Item(); d > 1e-5 || math.IsNaN(d) {
			return fmt.Errorf("SyncBatchNorm %s differs from BatchNorm's by %g", p.name, d)
		}
	}
	if dx.Abs().Max().Item() < 1e-3 {
		return fmt.Errorf("a vanishing input gradient checks nothing")
	}
	return nil
}

func distReducer(g *Group) error {
	r, mean := float64(g.Rank), float64(g.World-1)/2
	// Buckets, in reverse: [c] (the first holds at most 1 MiB), [b], [a],
	// [unused]: a and b are 1.2 MB each, the buckets after the first 1 MB.
	unused := Zeros([]int64{3}).SetRequiresGrad(true)
	a := Ones([]int64{300_000}).SetRequiresGrad(true)
	b := Ones([]int64{300_000}).SetRequiresGrad(true)
	c := Ones([]int64{10}).SetRequiresGrad(true)
	red := g.NewReducer([]*Tensor{unused, a, b, c}, 1_000_000)
	defer red.Close()
	for step := range 3 {
		for _, p := range []*Tensor{unused, a, b, c} {
			if gr := p.Grad(); gr != nil {
				gr.Fill(0)
			}
		}
		k := float64(step + 1)
		a.Sum().Add(b.MulScalar(2).Sum()).Add(c.Sum()).MulScalar(k * (r + 1)).Backward()
		early, buckets := red.Finish()
		if buckets != 4 || early != 3 {
			return fmt.Errorf("step %d: %d of %d buckets launched during the backward pass, want 3 of 4", step, early, buckets)
		}
		for _, x := range []struct {
			name string
			p    *Tensor
			want float64
		}{{"a", a, k * (mean + 1)}, {"b", b, 2 * k * (mean + 1)}, {"c", c, k * (mean + 1)}, {"unused", unused, 0}} {
			v := x.p.Grad().Float64s()
			if v[0] != x.want || v[len(v)-1] != x.want {
				return fmt.Errorf("step %d: gradient of %s %v, want %v", step, x.name, v[0], x.want)
			}
		}
	}
	return nil
}

// Threads: KAKUSAN_THREADS, else OMP_NUM_THREADS (torchrun sets 1), else the
// CPUs shared among a machine's ranks; never more than the machine's CPUs
// (here 4), with a line saying so.
func TestIntraOpThreads(t *testing.T) {
	const cpus = 4
	m := machine{cpus: cpus, cpuWhy: "runtime.NumCPU 4", headroom: -1}
	for _, c := range []struct {
		env     map[string]string
		want    int
		bad     bool
		lowered string // what the line says was lowered
	}{
		{map[string]string{}, cpus, false, ""},
		{map[string]string{"KAKUSAN_THREADS": "3", "OMP_NUM_THREADS": "1"}, 3, false, ""},
		{map[string]string{"KAKUSAN_THREADS": "1024"}, cpus, false, "KAKUSAN_THREADS=1024 asks for 1024 threads, more than the 4 CPUs"},
		{map[string]string{"OMP_NUM_THREADS": "1", "LOCAL_WORLD_SIZE": "2"}, 1, false, ""},
		{map[string]string{"OMP_NUM_THREADS": "64"}, cpus, false, "OMP_NUM_THREADS=64 asks for 64 threads, more than the 4 CPUs"},
		{map[string]string{"OMP_NUM_THREADS": "4,2"}, cpus, false, ""},
		{map[string]string{"LOCAL_WORLD_SIZE": "2"}, cpus / 2, false, ""},
		{map[string]string{"LOCAL_WORLD_SIZE": "100000"}, 1, false, ""},
		{map[string]string{"KAKUSAN_THREADS": "0"}, 0, true, ""},
		{map[string]string{"KAKUSAN_THREADS": "1025"}, 0, true, ""},
	} {
		var log strings.Builder
		n, err := intraOpThreads(func(k string) string { return c.env[k] }, m, &log)
		if (err != nil) != c.bad || (!c.bad && n != c.want) {
			t.Errorf("%v: %d threads (%v), want %d", c.env, n, err, c.want)
		}
		if got := log.String(); (c.lowered == "") != (got == "") || !strings.Contains(got, c.lowered) || strings.Count(got, "\n") > 1 {
			t.Errorf("%v: said %q, want a line with %q", c.env, got, c.lowered)
		}
	}
}
