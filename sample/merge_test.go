package sample

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A job run as three shards into one folder merges into one manifest of
// every image once, in order; a missing shard, image or line, or a line
// listed twice, is named.
func TestMergeShards(t *testing.T) {
	dir := t.TempDir()
	labels, _ := ParseLabels("all", 11, 3, 0)
	meta := map[string]any{"sampler": "ddim"}
	runShards(t, dir, &Job{N: 11, Batch: 2, Seed: 5, Labels: labels, Of: 3}, meta)
	n, err := Merge(dir)
	if err != nil || n != 11 {
		t.Fatalf("merge: %d images, %v", n, err)
	}
	f, _ := os.Open(filepath.Join(dir, "manifest.jsonl"))
	s := bufio.NewScanner(f)
	k := 0
	for ; s.Scan(); k++ {
		var rec struct {
			Index int    `json:"index"`
			Label int64  `json:"label"`
			File  string `json:"file"`
		}
		if err := json.Unmarshal(s.Bytes(), &rec); err != nil || rec.Index != k || rec.Label != labels[k] {
			t.Fatalf("line %d: %s (%v)", k, s.Text(), err)
		}
	}
	f.Close()
	if k != 11 {
		t.Fatalf("%d lines", k)
	}

	breakIt := func(name string, change func(), want string) {
		t.Helper()
		backup := map[string][]byte{}
		entries, _ := os.ReadDir(dir)
		for _, e := range entries {
			b, _ := os.ReadFile(filepath.Join(dir, e.Name()))
			backup[e.Name()] = b
		}
		change()
		if _, err := Merge(dir); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: error %v, want one containing %q", name, err, want)
		}
		entries, _ = os.ReadDir(dir)
		for _, e := range entries {
			if _, ok := backup[e.Name()]; !ok {
				os.Remove(filepath.Join(dir, e.Name()))
			}
		}
		for name, b := range backup {
			os.WriteFile(filepath.Join(dir, name), b, 0o644)
		}
	}
	m1 := filepath.Join(dir, "manifest-1-of-3.jsonl")
	breakIt("a shard missing", func() { os.Remove(m1) }, "manifest-1-of-3.jsonl is missing")
	breakIt("an image missing", func() { os.Remove(filepath.Join(dir, "000003_label0.png")) }, "000003_label0.png, which is not in")
	lines := func() []string { b, _ := os.ReadFile(m1); return strings.Split(strings.TrimSpace(string(b)), "\n") }
	breakIt("a line missing", func() {
		l := lines()
		os.WriteFile(m1, []byte(strings.Join(l[1:], "\n")+"\n"), 0o644)
	}, "image 2 is missing")
	breakIt("a line twice", func() {
		l := lines()
		os.WriteFile(m1, []byte(strings.Join(append([]string{l[0]}, l...), "\n")+"\n"), 0o644)
	}, "image 2 after 2")
	breakIt("another shard listing an image", func() { // image 2, shard 1's, also in shard 0's after its 0 and 1
		m0 := filepath.Join(dir, "manifest-0-of-3.jsonl")
		b, _ := os.ReadFile(m0)
		l0 := strings.Split(strings.TrimSpace(string(b)), "\n")
		l0 = append(l0[:2], append([]string{lines()[0]}, l0[2:]...)...)
		os.WriteFile(m0, []byte(strings.Join(l0, "\n")+"\n"), 0o644)
	}, "listed twice")
	breakIt("shards of two jobs", func() {
		os.WriteFile(filepath.Join(dir, "manifest-0-of-2.jsonl"), nil, 0o644)
	}, "manifests of")
	breakIt("a shard out of range", func() {
		os.WriteFile(filepath.Join(dir, "manifest-3-of-3.jsonl"), nil, 0o644)
	}, "not a shard's manifest")
	breakIt("a shard index with a leading zero", func() {
		os.WriteFile(filepath.Join(dir, "manifest-01-of-3.jsonl"), nil, 0o644)
	}, "not a shard's manifest")
	breakIt("manifest.jsonl a folder", func() {
		os.Remove(filepath.Join(dir, "manifest.jsonl"))
		os.Mkdir(filepath.Join(dir, "manifest.jsonl"), 0o755)
	}, "manifest.jsonl is a folder, not a manifest: move it away")
	os.Remove(filepath.Join(dir, "manifest.jsonl"))
	if _, err := Merge(dir); err != nil {
		t.Fatalf("merge again, the folder moved away: %v", err)
	}
	breakIt("garbage", func() { os.WriteFile(m1, []byte("{\"file\": 3}\n"), 0o644) }, "line 1: not a manifest record")
	breakIt("a path", func() {
		os.WriteFile(m1, []byte(`{"file": "../x.png", "index": 2}`+"\n"), 0o644)
	}, "not a name in the folder")
	// Each line is checked against the job: its file, label, seed and
	// parameters.
	edit := func(from, to string) func() {
		return func() {
			l := lines()
			l[0] = strings.Replace(l[0], from, to, 1)
			os.WriteFile(m1, []byte(strings.Join(l, "\n")+"\n"), 0o644)
		}
	}
	first := lines()[0] // image 2, label 2
	if !strings.Contains(first, `"file":"000002_label2.png"`) || !strings.Contains(first, `"label":2`) {
		t.Fatalf("shard 1's first line %s", first)
	}
	breakIt("two lines naming one file", edit("000002_label2.png", "000000_label0.png"), "names 000000_label0.png, but image 2 with its label (2) is 000002_label2.png")
	breakIt("a line naming job.json", edit("000002_label2.png", "job.json"), "names job.json, but image 2")
	breakIt("a seed edited", edit(`"seed":5`, `"seed":6`), "seed is 6, the job's (job.json) 5")
	breakIt("a parameter edited", edit(`"sampler":"ddim"`, `"sampler":"ddpm"`), `sampler is "ddpm", the job's (job.json) "ddim"`)
	breakIt("a parameter removed", edit(`"sampler":"ddim",`, ``), `no sampler; the job's (job.json) is "ddim"`)
	breakIt("a label edited, its file renamed to match", func() {
		edit(`"label":2`, `"label":1`)()
		edit("000002_label2.png", "000002_label1.png")()
		os.Rename(filepath.Join(dir, "000002_label2.png"), filepath.Join(dir, "000002_label1.png"))
	}, "the shards' labels are not the job's")
	if n, err := Merge(dir); err != nil || n != 11 {
		t.Errorf("after the broken cases were undone: %d, %v", n, err)
	}
	// More shards than batches: the shards without a batch list nothing.
	few := t.TempDir()
	runShards(t, few, &Job{N: 3, Batch: 2, Seed: 5, Of: 4}, meta)
	if n, err := Merge(few); err != nil || n != 3 {
		t.Errorf("3 images in 4 shards: %d, %v", n, err)
	}
	if _, err := Merge(t.TempDir()); err == nil || !strings.Contains(err.Error(), "job.json") {
		t.Errorf("an empty folder: %v", err)
	}
}

// runShards runs every shard of job (its Shard field ignored) into dir.
func runShards(t *testing.T, dir string, job *Job, meta map[string]any) {
	t.Helper()
	for shard := range job.Of {
		on(t, func() {
			j := *job
			j.Shard = shard
			out := &Folder{Dir: dir, Job: &j, C: 1, H: 4, W: 4, Meta: meta}
			if err := out.Open(); err != nil {
				t.Fatal(err)
			}
			if _, err := j.Run(context.Background(), &fake{c: 1, h: 4, w: 4}, out); err != nil {
				t.Fatal(err)
			}
			if err := out.Finish(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
