package train

import (
	"bytes"
	"errors"
	"fmt"
	"image"
	"image/png"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"kakusan/internal/signals"
	"kakusan/models"
	"kakusan/torch"
	"kakusan/torch/torchtest"
)

// The data-parallel tests run each rank as a child process of the test
// binary (TestDistTrainChild), with the variables torchrun sets. A child
// trains the config KK_CONFIG with the ";"-separated KK_SETS and, when it
// finishes, writes its model's and moving average's tensors to
// KK_DUMP/rank-N.safetensors.

type distJob struct {
	config string
	sets   []string
	rank1  []string // more --set values for rank 1 only
	out    string   // run folder (rank 0's)
	dump   string
	resume bool
}

type distChild struct {
	cmd   *exec.Cmd
	out   bytes.Buffer
	err   error
	took  time.Duration
	start time.Time
}

// start launches world ranks of j (world 0: one process, no launcher
// variables); wait collects them.
func distStart(t *testing.T, j distJob, world int) []*distChild {
	t.Helper()
	if !torch.HasBackend("gloo") {
		t.Skip("the shim was built without Gloo")
	}
	port := torchtest.FreePort(t)
	n := max(world, 1)
	cs := make([]*distChild, n)
	for r := range n {
		args := []string{"-test.run=^TestDistTrainChild$"}
		sets := j.sets
		if r == 1 {
			sets = append(append([]string(nil), sets...), j.rank1...)
		}
		env := append(os.Environ(), "KK_CONFIG="+j.config, "KK_SETS="+strings.Join(sets, ";"),
			"KK_OUT="+j.out, "KK_DUMP="+j.dump, "KAKUSAN_THREADS=1")
		if j.resume {
			env = append(env, "KK_RESUME=1")
		}
		if world > 0 {
			env = append(env, "RANK="+strconv.Itoa(r), "LOCAL_RANK="+strconv.Itoa(r), "WORLD_SIZE="+strconv.Itoa(world),
				"MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port))
		}
		c := &distChild{cmd: exec.Command(os.Args[0], args...)}
		c.cmd.Env = env
		c.cmd.Stdout, c.cmd.Stderr = &c.out, &c.out
		c.start = time.Now()
		if err := c.cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cs[r] = c
	}
	return cs
}

func distWait(cs []*distChild) {
	var wg sync.WaitGroup
	for _, c := range cs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.err = c.cmd.Wait()
			c.took = time.Since(c.start)
		}()
	}
	wg.Wait()
}

func distRun(t *testing.T, j distJob, world int) {
	t.Helper()
	cs := distStart(t, j, world)
	distWait(cs)
	for r, c := range cs {
		if c.err != nil || !strings.Contains(c.out.String(), "child ok") {
			t.Fatalf("rank %d of %d: %v\n%s", r, world, c.err, c.out.String())
		}
	}
}

// TestDistTrainChild is one rank of the tests below.
func TestDistTrainChild(t *testing.T) {
	path := os.Getenv("KK_CONFIG")
	if path == "" {
		t.Skip("a child of the data-parallel tests")
	}
	var sets []string
	if s := os.Getenv("KK_SETS"); s != "" {
		sets = strings.Split(s, ";")
	}
	c, err := models.LoadConfig(path, sets)
	if err == nil {
		var dist *DistEnv
		if dist, err = DistFromEnv(os.Getenv); err == nil {
			dump, rank := os.Getenv("KK_DUMP"), 0
			if dist != nil {
				rank = dist.Rank
			}
			afterTrain = func(l *loop) {
				if dump == "" {
					return
				}
				ts, meta := map[string]*torch.Tensor{}, map[string]string{"step": strconv.Itoa(l.st.Step)}
				if l.st.EMA != nil {
					meta["ema_updates"] = strconv.Itoa(l.st.EMA.Updates)
				}
				for k, v := range l.st.Model.Module().StateDict() {
					ts[k] = v
				}
				if l.st.EMA != nil {
					for k, v := range l.st.EMA.Avg.Module().StateDict() {
						ts["ema."+k] = v
					}
				}
				if err := torch.SaveFile(filepath.Join(dump, fmt.Sprintf("rank-%d.safetensors", rank)), ts, meta); err != nil {
					panic(err)
				}
			}
			o := Options{Out: os.Getenv("KK_OUT"), Overwrite: true, Log: os.Stdout, Dist: dist, Scorer: scorer}
			if os.Getenv("KK_RESUME") != "" {
				o = Options{Resume: os.Getenv("KK_OUT"), Log: os.Stdout, Dist: dist}
			}
			_, err = Train(c, o)
		}
	}
	if errors.Is(err, signals.ErrInterrupted) {
		fmt.Println("child interrupted")
		os.Exit(signals.ExitCode)
	}
	if err != nil {
		fmt.Println("child failed:", err)
		os.Exit(1)
	}
	fmt.Println("child ok")
}

func readDump(t *testing.T, path string) (map[string]*torch.Tensor, string) {
	t.Helper()
	ts, meta := readDumpMeta(t, path)
	return ts, meta["step"]
}

func readDumpMeta(t *testing.T, path string) (map[string]*torch.Tensor, map[string]string) {
	t.Helper()
	var ts map[string]*torch.Tensor
	var meta map[string]string
	var err error
	torchtest.Run(t, func() {
		ts, meta, err = torch.LoadFile(path, torch.CPU)
		for _, v := range ts {
			v.Keep()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	return ts, meta
}

// compare checks two dumps hold the same tensors, equal within tol (0:
// bit for bit), and returns the largest difference.
func compare(t *testing.T, a, b map[string]*torch.Tensor, tol float64) float64 {
	t.Helper()
	if len(a) != len(b) || len(a) == 0 {
		t.Fatalf("%d tensors against %d", len(a), len(b))
	}
	worst, bad := 0.0, ""
	torchtest.Run(t, func() {
		for k, x := range a {
			y, ok := b[k]
			if !ok {
				bad = k + " missing"
				return
			}
			xs, ys := x.To(torch.Float64).Flatten(0, -1).Float64s(), y.To(torch.Float64).Flatten(0, -1).Float64s()
			for i := range xs {
				d := math.Abs(xs[i] - ys[i])
				if d > tol || (tol == 0 && math.Float64bits(xs[i]) != math.Float64bits(ys[i])) {
					bad = fmt.Sprintf("%s[%d]: %v against %v", k, i, xs[i], ys[i])
					return
				}
				worst = max(worst, d)
			}
		}
	})
	if bad != "" {
		t.Fatal(bad)
	}
	return worst
}

var distSmall = []string{"data.subset=1024", "data.test_subset=64", "device=cpu", "samples=10", "train.log_every=2"}

// After N steps every rank holds the same weights, moving average and
// batch-norm statistics, bit for bit: the gradients are averaged, buffers
// follow rank 0's, and each rank draws its own noise; with
// train.sync_batchnorm too, whose statistics are the ranks' whole batch.
func TestDataParallelRanksAgree(t *testing.T) {
	for _, sync := range []bool{false, true} {
		t.Run(fmt.Sprintf("sync_batchnorm=%v", sync), func(t *testing.T) {
			dir := t.TempDir()
			j := distJob{config: "../configs/mnist_cond_cpu.yaml", out: filepath.Join(dir, "run"), dump: dir,
				sets: append([]string{"train.max_steps=6", "train.batch_size=16", "unet.width=8", "unet.levels=2", "unet.norm=batch",
					fmt.Sprintf("train.sync_batchnorm=%v", sync)}, distSmall...)}
			distRun(t, j, 2)
			a, stepA := readDump(t, filepath.Join(dir, "rank-0.safetensors"))
			b, stepB := readDump(t, filepath.Join(dir, "rank-1.safetensors"))
			if stepA != "6" || stepB != "6" {
				t.Fatalf("steps %s and %s, want 6", stepA, stepB)
			}
			compare(t, a, b, 0)
			if ms := readMetrics(t, j.out); len(ms) == 0 || ms[len(ms)-1].Step != 6 {
				t.Errorf("rank 0's metrics end at %v, want step 6", ms)
			}
		})
	}
}

// Two ranks of batch 32 train as one process of batch 64 (a model without
// batch norm or dropout, as PyTorch's own DDP tests check): the same
// weights and moving average, within float32 rounding, with gradient
// clipping on the averaged gradients and a cosine schedule. SGD, whose
// update scales with the gradient (Adam's would hide a sum in place of a
// mean).
func TestDataParallelMatchesOneProcess(t *testing.T) {
	for _, clip := range []string{"0", "0.5"} { // 0.5 clips some steps: on the averaged gradients
		t.Run("grad_clip="+clip, func(t *testing.T) {
			dir := t.TempDir()
			sets := append([]string{"classifier.dropout=0", "train.max_steps=8", "train.ema_decay=0.9", "train.grad_clip=" + clip,
				"train.precision=fp32", "classifier.hidden=32", "optimizer.name=sgd", "optimizer.lr=0.05", "optimizer.momentum=0.9"}, distSmall...)
			job := func(name string, more ...string) distJob {
				return distJob{config: "../configs/mnist_classifier.yaml", out: filepath.Join(dir, name), dump: filepath.Join(dir, name),
					sets: append(more, sets...)}
			}
			one := job("one", "train.batch_size=64")
			two := job("two", "train.batch_size=32")
			// Gradient accumulation: the same 64 images a step, 16 at a
			// time, on one process and on two ranks (which all-reduce once a
			// step, after their second micro-batch).
			oneAcc := job("one-acc", "train.batch_size=16", "train.accumulate=4")
			twoAcc := job("two-acc", "train.batch_size=16", "train.accumulate=2")
			distRun(t, one, 0)
			distRun(t, two, 2)
			distRun(t, oneAcc, 0)
			distRun(t, twoAcc, 2)
			a, _ := readDump(t, filepath.Join(one.dump, "rank-0.safetensors"))
			for _, other := range []distJob{two, oneAcc, twoAcc} {
				b, _ := readDump(t, filepath.Join(other.dump, "rank-0.safetensors"))
				worst := compare(t, a, b, 1e-5)
				t.Logf("%s: largest difference %.2g", filepath.Base(other.out), worst)
			}
			// The moving average was updated at every step on every rank (a
			// known trap: diffusers#1895), and equals one process's (above).
			for _, d := range []string{filepath.Join(two.dump, "rank-0.safetensors"), filepath.Join(two.dump, "rank-1.safetensors"), filepath.Join(twoAcc.dump, "rank-1.safetensors")} {
				if _, meta := readDumpMeta(t, d); meta["ema_updates"] != "8" {
					t.Errorf("%s: the moving average had %s updates in 8 steps", d, meta["ema_updates"])
				}
			}
			ms := readMetrics(t, two.out)
			if ms[0].Loss == nil || ms[len(ms)-1].Step != 8 {
				t.Errorf("metrics %v", ms)
			}
			// The logged losses, means over the step's 64 images, agree.
			la, lb := readMetrics(t, one.out), readMetrics(t, twoAcc.out)
			for i := range la {
				if la[i].Loss != nil && (i >= len(lb) || lb[i].Loss == nil || math.Abs(*la[i].Loss-*lb[i].Loss) > 1e-5) {
					t.Errorf("metrics line %d: loss %v in one process, %v on two ranks accumulating", i, *la[i].Loss, lb[i].Loss)
				}
			}
		})
	}
}

// Ranks that would train different models (another --set on one) stop
// before any training, the odd rank saying why.
func TestDataParallelRefusesMismatchedRanks(t *testing.T) {
	dir := t.TempDir()
	j := distJob{config: "../configs/mnist_classifier.yaml", out: filepath.Join(dir, "run"),
		sets: append([]string{"train.max_steps=4", "classifier.hidden=16"}, distSmall...), rank1: []string{"classifier.hidden=17"}}
	cs := distStart(t, j, 2)
	distWait(cs)
	if cs[1].err == nil || !strings.Contains(cs[1].out.String(), "rank 1 would train differently from rank 0: classifier.hidden is 17 here, 16 on rank 0") {
		t.Errorf("rank 1: %v\n%s", cs[1].err, cs[1].out.String())
	}
	if cs[0].err == nil || !strings.Contains(cs[0].out.String(), "another rank's config, seed or data differs from rank 0's") {
		t.Errorf("rank 0: %v\n%s", cs[0].err, cs[0].out.String())
	}
	// What shapes training but not the tensors' sizes, and other data.
	folder := filepath.Join(dir, "folder")
	for k, class := range []string{"a", "b"} {
		os.MkdirAll(filepath.Join(folder, class), 0o755)
		for i := range 40 {
			img := image.NewGray(image.Rect(0, 0, 28, 28))
			img.Pix[i] = uint8(100 + k)
			f, _ := os.Create(filepath.Join(folder, class, fmt.Sprintf("%02d.png", i)))
			png.Encode(f, img)
			f.Close()
		}
	}
	for _, c := range []struct {
		rank1 []string
		want  string
	}{
		{[]string{"optimizer.lr=0.002"}, "optimizer.lr is 0.002 here, 0.001 on rank 0"},
		{[]string{"seed=7"}, "seed is 7 here, 0 on rank 0"},
		{[]string{"train.precision=bf16"}, "train.precision is bf16 here, fp32 on rank 0"},
		{[]string{"data.size=32"}, "data.size is 32 here, 28 on rank 0"},
	} {
		j := distJob{config: "../configs/mnist_classifier.yaml", out: filepath.Join(dir, "run-"+c.rank1[0]),
			sets: append([]string{"train.max_steps=2", "classifier.hidden=16", "train.precision=fp32", "train.batch_size=8", "data.dir=" + folder, "data.size=28"},
				append(distSmall[1:], "data.subset=0")...), rank1: c.rank1}
		cs := distStart(t, j, 2)
		distWait(cs)
		if out := cs[1].out.String(); cs[1].err == nil || !strings.Contains(out, c.want) || strings.Contains(out, "did not answer") {
			t.Errorf("%v on rank 1: %v\n%s", c.rank1, cs[1].err, out)
		}
	}
}

// A rank that dies or hangs ends the other with an error within
// train.dist_timeout; the checkpoints rank 0 wrote stay loadable.
func TestDataParallelRankFailure(t *testing.T) {
	for _, how := range []string{"killed", "stopped"} {
		t.Run(how, func(t *testing.T) {
			dir := t.TempDir()
			j := distJob{config: "../configs/mnist_classifier.yaml", out: filepath.Join(dir, "run"),
				sets: append([]string{"train.batch_size=16", "train.max_steps=100000", "train.checkpoint_every=4",
					"train.dist_timeout=4", "classifier.hidden=16"}, distSmall...)}
			cs := distStart(t, j, 2)
			latest := filepath.Join(j.out, "checkpoints", "latest.safetensors")
			for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(100 * time.Millisecond) {
				if _, err := os.Stat(latest); err == nil {
					break
				}
				if time.Now().After(deadline) {
					cs[0].cmd.Process.Kill()
					cs[1].cmd.Process.Kill()
					t.Fatal("no checkpoint within a minute")
				}
			}
			sig := syscall.SIGKILL
			if how == "stopped" {
				sig = syscall.SIGSTOP
			}
			cs[1].cmd.Process.Signal(sig)
			failed := time.Now()
			done := make(chan struct{})
			go func() { distWait(cs[:1]); close(done) }()
			select {
			case <-done:
			case <-time.After(40 * time.Second):
				cs[0].cmd.Process.Kill()
				<-done
				t.Errorf("rank 0 still running 40 s after rank 1 was %s (timeout 4 s)", how)
			}
			took := time.Since(failed)
			cs[1].cmd.Process.Kill()
			distWait(cs[1:])
			out := cs[0].out.String()
			if cs[0].err == nil || !strings.Contains(out, "rank 0 of 2") || !strings.Contains(out, "train.dist_timeout") || !strings.Contains(out, "is intact") {
				t.Errorf("rank 0: %v after %v\n%s", cs[0].err, took, out)
			}
			t.Logf("rank 0 ended %v after rank 1 was %s", took.Round(time.Millisecond), how)
			torchtest.Run(t, func() {
				ck, err := models.ReadCheckpoint(latest, torch.CPU)
				if err != nil {
					t.Errorf("the last checkpoint: %v", err)
					return
				}
				if ck.Step < 4 || ck.Meta[models.MetaWorld] != "2" {
					t.Errorf("checkpoint at step %d of world %q", ck.Step, ck.Meta[models.MetaWorld])
				}
				ck.Free()
			})
		})
	}
}

// A run of two ranks resumes on one: the checkpoint's step of 2×32 images
// becomes the step of 32 images at the same place in the epoch.
func TestDataParallelResumeOnOneRank(t *testing.T) {
	dir := t.TempDir()
	sets := append([]string{"train.batch_size=32", "classifier.hidden=16"}, distSmall...)
	j := distJob{config: "../configs/mnist_classifier.yaml", out: filepath.Join(dir, "run"), dump: dir,
		sets: append([]string{"train.max_steps=5"}, sets...)}
	distRun(t, j, 2)
	j.resume, j.sets = true, append([]string{"train.max_steps=14"}, sets...)
	cs := distStart(t, j, 0)
	distWait(cs)
	out := cs[0].out.String()
	if cs[0].err != nil || !strings.Contains(out, "step 5 of 64 images is step 10 of 32 images") {
		t.Fatalf("resume: %v\n%s", cs[0].err, out)
	}
	if _, step := readDump(t, filepath.Join(dir, "rank-0.safetensors")); step != "14" {
		t.Errorf("resumed run ended at step %s, want 14", step)
	}
	ms := readMetrics(t, j.out)
	if last := ms[len(ms)-1]; last.Step != 14 {
		t.Errorf("metrics end at step %d", last.Step)
	}
	// And back onto two ranks: step 14 of 32 images is step 7 of 64; the
	// metrics are renumbered, so their steps still rise.
	j.sets = append([]string{"train.max_steps=9"}, sets...)
	distRun(t, j, 2)
	a, step := readDump(t, filepath.Join(dir, "rank-0.safetensors"))
	b, _ := readDump(t, filepath.Join(dir, "rank-1.safetensors"))
	if step != "9" {
		t.Errorf("the run resumed on two ranks ended at step %s, want 9", step)
	}
	compare(t, a, b, 0)
	prev := -1
	for _, m := range readMetrics(t, j.out) {
		if m.Step < prev {
			t.Errorf("metrics go back from step %d to %d", prev, m.Step)
		}
		prev = m.Step
	}
}

func TestDistFromEnv(t *testing.T) {
	env := func(kv ...string) func(string) string {
		m := map[string]string{}
		for i := 0; i < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return func(k string) string { return m[k] }
	}
	if e, err := DistFromEnv(env()); e != nil || err != nil {
		t.Errorf("no launcher: %v, %v", e, err)
	}
	e, err := DistFromEnv(env("WORLD_SIZE", "4", "RANK", "3", "LOCAL_RANK", "1", "MASTER_ADDR", "10.0.0.1", "MASTER_PORT", "29500",
		"TORCHELASTIC_USE_AGENT_STORE", "True", "TORCHELASTIC_RESTART_COUNT", "2"))
	if err != nil || *e != (DistEnv{Rank: 3, World: 4, LocalRank: 1, Addr: "10.0.0.1", Port: 29500, AgentStore: true, Attempt: "2"}) {
		t.Errorf("torchrun's variables: %+v, %v", e, err)
	}
	for _, bad := range []struct {
		name string
		kv   []string
	}{
		{"RANK", []string{"WORLD_SIZE", "2", "MASTER_ADDR", "h", "MASTER_PORT", "1"}},
		{"RANK", []string{"WORLD_SIZE", "2", "RANK", "2", "MASTER_ADDR", "h", "MASTER_PORT", "1"}},
		{"WORLD_SIZE", []string{"WORLD_SIZE", "0", "RANK", "0", "MASTER_ADDR", "h", "MASTER_PORT", "1"}},
		{"WORLD_SIZE", []string{"WORLD_SIZE", "99999999999", "RANK", "0"}},
		{"MASTER_PORT", []string{"WORLD_SIZE", "2", "RANK", "0", "MASTER_ADDR", "h", "MASTER_PORT", "70000"}},
		{"MASTER_ADDR", []string{"WORLD_SIZE", "2", "RANK", "0", "MASTER_PORT", "29500"}},
		{"LOCAL_RANK", []string{"WORLD_SIZE", "2", "RANK", "0", "LOCAL_RANK", "x", "MASTER_ADDR", "h", "MASTER_PORT", "1"}},
	} {
		if _, err := DistFromEnv(env(bad.kv...)); err == nil || !strings.Contains(err.Error(), bad.name) {
			t.Errorf("%v: error %v does not name %s", bad.kv, err, bad.name)
		}
	}
}

func TestConvertStep(t *testing.T) {
	for _, c := range []struct{ step, speOld, bOld, speNew, bNew, want int }{
		{5, 31, 64, 62, 32, 10},   // two ranks of 32 to one
		{40, 31, 64, 62, 32, 80},  // in the second epoch
		{10, 62, 32, 31, 64, 5},   // one rank to two
		{11, 62, 32, 31, 64, 5},   // half a batch in: rounds down
		{7, 10, 64, 10, 64, 7},    // the same batch
		{31, 31, 64, 15, 128, 15}, // an epoch's end
	} {
		if got := convertStep(c.step, c.speOld, c.bOld, c.speNew, c.bNew); got != c.want {
			t.Errorf("convertStep(%v) = %d, want %d", c, got, c.want)
		}
	}
}

// A rank whose MASTER_ADDR:MASTER_PORT accepts connections and never
// answers stops within train.dist_timeout and a grace, saying where it
// waited, and a SIGTERM during that wait ends it at once.
func TestRendezvousWithAMuteStore(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		var held []net.Conn
		defer func() {
			for _, c := range held {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			held = append(held, c) // accepted, never answered
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	start := func() (*exec.Cmd, *bytes.Buffer) {
		cmd := exec.Command(os.Args[0], "-test.run=^TestDistTrainChild$")
		cmd.Env = append(os.Environ(), "KK_CONFIG=../configs/mnist_classifier.yaml",
			"KK_SETS="+strings.Join(append([]string{"train.dist_timeout=2", "train.max_steps=2"}, distSmall...), ";"),
			"KK_OUT="+t.TempDir(), "KAKUSAN_THREADS=1", "RANK=1", "LOCAL_RANK=1", "WORLD_SIZE=2",
			"MASTER_ADDR=127.0.0.1", "MASTER_PORT="+strconv.Itoa(port))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		return cmd, &out
	}
	wait := func(cmd *exec.Cmd) (int, time.Duration) {
		t0 := time.Now()
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(2 * time.Minute):
			cmd.Process.Kill()
			t.Fatal("the rank still waits after 2 minutes")
		}
		return cmd.ProcessState.ExitCode(), time.Since(t0)
	}
	cmd, out := start()
	code, took := wait(cmd)
	// The watchdog's message, or c10d's own timeout where it comes first
	// (as it may on a busy machine): either names the store's address.
	watchdog := strings.Contains(out.String(), "did not complete within train.dist_timeout = 2s")
	c10d := strings.Contains(out.String(), fmt.Sprintf("joining the process group at 127.0.0.1:%d", port))
	if code != 1 || !watchdog && !c10d {
		t.Errorf("a mute store: exit %d after %v\n%s", code, took, out)
	}
	t.Logf("a mute store: exit %d after %v", code, took)
	cmd, out = start()
	time.Sleep(time.Second)
	cmd.Process.Signal(syscall.SIGTERM)
	code, took = wait(cmd)
	if code != 130 || !strings.Contains(out.String(), "interrupted during the rendezvous") {
		t.Errorf("SIGTERM: exit %d after %v\n%s", code, took, out)
	}
	t.Logf("SIGTERM: exit %d %v after the signal", code, took)
}
