package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spf13/pflag"

	"kakusan/cmd/internal/clitest"
	"kakusan/models"
	"kakusan/train"
)

func TestMain(m *testing.M) { clitest.Main(m, main) }

// TestDocs keeps bin/serve's documentation true to its flags.
func TestDocs(t *testing.T) {
	clitest.CheckDocs(t, "bin/serve", 2, func() *pflag.FlagSet { fs, _ := newFlags(); return fs }, nil)
}

func TestBadFlags(t *testing.T) {
	dir := t.TempDir()
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{}, "--checkpoint: give the model to serve"},
		{[]string{"--checkpoint", filepath.Join(dir, "none"), "--addr", "127.0.0.1:0"}, "none"},
		{[]string{"--checkpoint", "x", "--max-batch", "0"}, "--max-batch must be 1-4096"},
		{[]string{"--checkpoint", "x", "--max-n", "1000", "--queue", "10"}, "--max-n must be 1 to --queue (10)"},
		{[]string{"--checkpoint", "x", "--timeout", "0s"}, "--timeout and --read-timeout must be positive"},
		{[]string{"--checkpoint", "x", "--log-format", "xml"}, "--log-format must be text or json"},
		{[]string{"--checkpoint", "x", "--addr", "256.1.1.1:99999"}, "--addr"},
		{[]string{"--checkpoint", "x", "--bogus"}, "unknown flag: --bogus"},
	} {
		clitest.Run(t, "", c.args...).Refused(t, c.args, c.want)
	}
}

// The binary serves, and SIGTERM drains it: a request in flight is
// answered, then the process exits 0.
func TestServeAndDrainOnSIGTERM(t *testing.T) {
	c, err := models.LoadConfig("../../configs/mnist_cond.yaml", []string{"data.subset=256", "data.test_subset=64", "device=cpu",
		"train.batch_size=32", "train.max_steps=2", "samples=10", "unet.width=4", "diffusion.sample_steps=3"})
	if err != nil {
		t.Fatal(err)
	}
	r, err := train.Train(c, train.Options{Out: filepath.Join(t.TempDir(), "run")})
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0])
	args, _ := json.Marshal([]string{"--checkpoint", r.Dir, "--addr", "127.0.0.1:0", "--max-wait", "1s", "--log-format", "json"})
	cmd.Env = append(os.Environ(), clitest.EnvMain+"=1", clitest.EnvMain+"_ARGS="+string(args))
	stderr, _ := cmd.StderrPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	lines := make(chan string, 100)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	var addr string
	var log []string
	for addr == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("the server ended: %s", strings.Join(log, "\n"))
			}
			log = append(log, l)
			if m := regexp.MustCompile(`"msg":"serving","addr":"([^"]+)"`).FindStringSubmatch(l); m != nil {
				addr = m[1]
			}
		case <-time.After(time.Minute):
			t.Fatalf("not serving after a minute: %s", strings.Join(log, "\n"))
		}
	}
	answered := make(chan int)
	go func() {
		r, err := http.Post("http://"+addr+"/v1/images", "application/json", bytes.NewReader([]byte(`{"n": 2}`)))
		if err != nil {
			answered <- 0
			return
		}
		r.Body.Close()
		answered <- r.StatusCode
	}()
	time.Sleep(300 * time.Millisecond) // queued: its batch waits up to --max-wait to fill
	cmd.Process.Signal(syscall.SIGTERM)
	if code := <-answered; code != http.StatusOK {
		t.Errorf("the request in flight at SIGTERM: %d", code)
	}
	done := make(chan error)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("still running 30 s after SIGTERM")
	}
	for l := range lines {
		log = append(log, l)
	}
	if all := strings.Join(log, "\n"); !strings.Contains(all, `"msg":"drained: every request answered"`) || !strings.Contains(all, `"status":200`) {
		t.Errorf("the log:\n%s", all)
	}
}
