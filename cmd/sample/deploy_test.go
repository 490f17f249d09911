package main

import (
	"path/filepath"
	"strconv"
	"testing"

	"kakusan/cmd/internal/clitest"
)

// TestDeploySampling checks the sampling command lines of deploy/: bin/sample's
// flag parser accepts them; the Indexed Job's pods take their shard from
// the job (JOB_COMPLETIONS equal to its completions, no fixed --shard); the
// merge job merges the folder the shards write.
func TestDeploySampling(t *testing.T) {
	root, _ := filepath.Abs("../..")
	outs, merges := map[string]bool{}, []string{}
	for _, c := range clitest.Deployed(t, root, "sample") {
		fs, f := newFlags()
		c.Parse(t, fs)
		if f.merge != "" {
			merges = append(merges, f.merge)
			continue
		}
		spec, _ := c.Doc["spec"].(map[string]any)
		if spec["completionMode"] != "Indexed" || f.shard != "auto" {
			t.Errorf("%s: completionMode %v, --shard %s: want an Indexed Job whose pods take their shard from it", c.File, spec["completionMode"], f.shard)
		}
		if got, want := c.Env["JOB_COMPLETIONS"], strconv.Itoa(spec["completions"].(int)); got != want {
			t.Errorf("%s: JOB_COMPLETIONS %q, completions %s", c.File, got, want)
		}
		if _, _, err := resolveShard(f.shard, func(k string) string {
			return map[string]string{"JOB_COMPLETION_INDEX": "0", "JOB_COMPLETIONS": c.Env["JOB_COMPLETIONS"]}[k]
		}); err != nil {
			t.Errorf("%s: %v", c.File, err)
		}
		if f.j.checkpoint == "" || f.out == "" {
			t.Errorf("%s: want --checkpoint and --out", c.File)
		}
		outs[f.out] = true
	}
	if len(outs) == 0 || len(merges) == 0 {
		t.Fatalf("want a sampling job and its merge in deploy/, got %v and %v", outs, merges)
	}
	for _, m := range merges {
		if !outs[m] {
			t.Errorf("the merge job merges %s, which no sampling job writes (%v)", m, outs)
		}
	}
}
