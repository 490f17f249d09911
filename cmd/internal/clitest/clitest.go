// Package clitest runs a command's real main in a child process, as a user
// would run the binary, so that tests see its exit status, its messages and
// any panic trace. A command's tests call Main from TestMain and Run from
// the tests.
package clitest

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"

	"kakusan/cmd/internal/cli"
)

const envMain = "KAKUSAN_CLITEST_MAIN"

// EnvMain is the variable that makes a test binary run the command's main
// (with its own arguments, when KAKUSAN_CLITEST_MAIN_ARGS is unset).
const EnvMain = envMain

// Main runs the command's main instead of the tests when this test binary
// was started by Run; call it first thing in TestMain.
func Main(m *testing.M, main func()) {
	if os.Getenv(envMain) == "1" {
		// Run passes the arguments in the environment; a launcher that
		// starts the test binary itself (torchrun) passes them as usual.
		if enc, ok := os.LookupEnv(envMain + "_ARGS"); ok {
			var args []string
			if err := json.Unmarshal([]byte(enc), &args); err != nil {
				panic(err)
			}
			os.Args = append([]string{filepath.Base(os.Args[0])}, args...)
		}
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runLimit bounds a command's run in a test: 3x and more the slowest's
// (about 20 s on 2 quiet cores).
const runLimit = 3 * time.Minute

// Result is what a run of the command did.
type Result struct {
	Code           int
	Stdout, Stderr string
}

// Run runs the command with args (in dir, when not empty) and waits at most
// runLimit: a guard against hangs, far above any command a test runs.
func Run(t *testing.T, dir string, args ...string) Result {
	t.Helper()
	cmd := exec.Command(os.Args[0])
	encoded, _ := json.Marshal(args)
	cmd.Env = append(os.Environ(), envMain+"=1", envMain+"_ARGS="+string(encoded))
	cmd.Dir = dir
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(runLimit):
		cmd.Process.Kill()
		t.Fatalf("%v: still running after %v", args, runLimit)
	}
	r := Result{Stdout: out.String(), Stderr: errOut.String()}
	var exit *exec.ExitError
	if errors.As(err, &exit) {
		r.Code = exit.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return r
}

// Refused checks that a run failed cleanly: a non-zero status, a message
// containing want, and no Go panic trace.
func (r Result) Refused(t *testing.T, args []string, want string) {
	t.Helper()
	if r.Code == 0 || !strings.Contains(r.Stderr, want) || strings.Contains(r.Stderr, "goroutine ") || strings.Contains(r.Stderr, "panic:") {
		t.Errorf("%q: status %d, stderr %q; want a non-zero status and %q without a panic", args, r.Code, r.Stderr, want)
	}
}

// Snapshot is the content of every file under dir (but a run folder's
// lock), to check that a refused
// command changed nothing.
func Snapshot(t *testing.T, dir string) string {
	t.Helper()
	var sb strings.Builder
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == ".lock" { // a run folder's lock holds the last PID
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.Mode().IsRegular() {
			b, err := os.ReadFile(p)
			if err != nil {
				return err
			}
			fmt.Fprintf(&sb, "%s %x %v\n", p, sha256.Sum256(b), info.ModTime().UnixNano())
		} else {
			fmt.Fprintf(&sb, "%s %v\n", p, info.Mode())
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return sb.String()
}

// Container is a container of a deployment file in deploy/: the command
// line it gives the image's entrypoint, and its environment.
type Container struct {
	File string
	Doc  map[string]any // the whole document it is in
	Spec map[string]any // the container's own fields (ports, probes, resources)
	Args []string
	Env  map[string]string
}

// Containers reads every YAML document of root/deploy and returns the
// containers they hold, wherever in the document (a Job's pod template, a
// PyTorchJob's replica specs, through YAML anchors).
func Containers(t *testing.T, root string) []Container {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(root, "deploy", "*.yaml"))
	if len(paths) == 0 {
		t.Fatalf("no deployment files in %s/deploy", root)
	}
	var out []Container
	for _, p := range paths {
		f, err := os.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(f)
		for {
			var doc map[string]any
			if err := dec.Decode(&doc); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", p, err)
			}
			if doc["apiVersion"] == nil || doc["kind"] == nil {
				t.Fatalf("%s: a document without apiVersion and kind", p)
			}
			walkContainers(doc, func(c map[string]any) {
				k := Container{File: filepath.Base(p), Doc: doc, Spec: c, Env: map[string]string{}}
				args, _ := c["args"].([]any)
				for _, a := range args {
					s, ok := a.(string)
					if !ok {
						t.Fatalf("%s: container %v: argument %v is not a string", p, c["name"], a)
					}
					k.Args = append(k.Args, s)
				}
				env, _ := c["env"].([]any)
				for _, e := range env {
					m, _ := e.(map[string]any)
					name, _ := m["name"].(string)
					value, _ := m["value"].(string)
					k.Env[name] = value
				}
				out = append(out, k)
			})
		}
		f.Close()
	}
	return out
}

// Deployed is the containers of root/deploy that run command (the image
// entrypoint's first argument); it fails the test when none does.
func Deployed(t *testing.T, root, command string) []Container {
	t.Helper()
	var out []Container
	for _, c := range Containers(t, root) {
		if len(c.Args) > 0 && c.Args[0] == command {
			out = append(out, c)
		}
	}
	if len(out) == 0 {
		t.Fatalf("no %s command in %s/deploy", command, root)
	}
	return out
}

// Parse parses the container's command line (after the command) with fs,
// failing the test when the command refuses it.
func (c Container) Parse(t *testing.T, fs *pflag.FlagSet) {
	t.Helper()
	if err := cli.Parse(fs, c.Args[1:]); err != nil {
		t.Fatalf("%s: %v: %v", c.File, c.Args, err)
	}
}

func walkContainers(v any, f func(map[string]any)) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			if cs, ok := x.([]any); ok && k == "containers" {
				for _, c := range cs {
					if m, ok := c.(map[string]any); ok {
						f(m)
					}
				}
				continue
			}
			walkContainers(x, f)
		}
	case []any:
		for _, x := range v {
			walkContainers(x, f)
		}
	}
}
