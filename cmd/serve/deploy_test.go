package main

import (
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"kakusan/cmd/internal/clitest"
)

// TestDeployServing checks deploy/'s server: bin/serve's flag parser takes
// its command line and its checks pass; its probes are the server's
// /readyz and /healthz on the port it listens on; it asks for resources;
// the grace period outlasts the preStop wait and --drain.
func TestDeployServing(t *testing.T) {
	root, _ := filepath.Abs("../..")
	for _, c := range clitest.Deployed(t, root, "serve") {
		fs, f := newFlags()
		c.Parse(t, fs)
		if err := f.check(); err != nil {
			t.Errorf("%s: %v", c.File, err)
		}
		_, port, err := net.SplitHostPort(f.addr)
		if err != nil || strings.HasPrefix(f.addr, "127.") {
			t.Errorf("%s: --addr %s: a pod must listen beyond loopback (0.0.0.0:PORT)", c.File, f.addr)
		}
		ports, _ := c.Spec["ports"].([]any)
		named := map[string]string{}
		for _, p := range ports {
			m, _ := p.(map[string]any)
			name, _ := m["name"].(string)
			named[name] = itoa(m["containerPort"])
		}
		for probe, path := range map[string]string{"readinessProbe": "/readyz", "livenessProbe": "/healthz"} {
			pr, _ := c.Spec[probe].(map[string]any)
			get, _ := pr["httpGet"].(map[string]any)
			p := itoa(get["port"])
			if named[p] != "" {
				p = named[p]
			}
			if get["path"] != path || p != port {
				t.Errorf("%s: %s is %v on port %s, want %s on --addr's port %s", c.File, probe, get["path"], p, path, port)
			}
		}
		res, _ := c.Spec["resources"].(map[string]any)
		if res["requests"] == nil {
			t.Errorf("%s: no resource requests", c.File)
		}
		grace := c.Doc["spec"].(map[string]any)["template"].(map[string]any)["spec"].(map[string]any)["terminationGracePeriodSeconds"]
		// The grace period holds the preStop hook's wait, then the drain.
		pre := 0
		if life, ok := c.Spec["lifecycle"].(map[string]any); ok {
			exec, _ := life["preStop"].(map[string]any)["exec"].(map[string]any)
			cmd, _ := exec["command"].([]any)
			if len(cmd) == 2 && cmd[0] == "sleep" {
				pre, _ = strconv.Atoi(cmd[1].(string))
			}
		}
		if g, ok := grace.(int); !ok || time.Duration(g-pre)*time.Second <= f.drain {
			t.Errorf("%s: terminationGracePeriodSeconds %v, want more than the preStop wait (%d s) and --drain %v", c.File, grace, pre, f.drain)
		}
	}
}

func itoa(v any) string {
	switch v := v.(type) {
	case int:
		return strconv.Itoa(v)
	case string:
		return v
	}
	return ""
}
