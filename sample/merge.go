package sample

import (
	"bufio"
	"bytes"
	"container/heap"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	"kakusan/internal/atomic"
	"kakusan/internal/files"
)

// Merge joins the manifests of a sharded job's folder
// (manifest-i-of-n.jsonl, one per shard) into manifest.jsonl, in image
// order, after checking that every shard is there, that every image of the
// job (job.json's n) is listed exactly once and that its file is in the
// folder. It streams: each shard's manifest is already in image order, so
// memory does not grow with the job. It returns the number of images.
func Merge(dir string) (int, error) {
	raw, err := files.Read(filepath.Join(dir, "job.json"), 1<<20)
	if err != nil {
		return 0, fmt.Errorf("%s: not a sampling job's folder: %w", dir, err)
	}
	var job jobRecord
	if err := json.Unmarshal(raw, &job); err != nil || job.N == nil || *job.N < 1 || *job.N > MaxImages {
		return 0, fmt.Errorf("%s: job.json has no image count n between 1 and %d", filepath.Join(dir, "job.json"), MaxImages)
	}
	n := *job.N
	labels := newLabelsHash()
	shards, of, err := shardManifests(dir)
	if err != nil {
		return 0, err
	}
	if of > maxMergeShards {
		return 0, fmt.Errorf("%s: %d shards; merge takes at most %d (it holds one file open per shard)", dir, of, maxMergeShards)
	}
	h := &manifestHeap{}
	for _, path := range shards {
		f, err := files.Open(path, maxManifest) // a regular file: a FIFO would block
		if err != nil {
			return 0, err
		}
		defer f.Close()
		r := &manifestReader{path: path, s: bufio.NewScanner(f), prev: -1}
		r.s.Buffer(make([]byte, 64<<10), 1<<20)
		if err := r.next(); err != nil {
			return 0, err
		}
		if !r.done { // a shard may have no batches (fewer batches than shards)
			*h = append(*h, r)
		}
	}
	heap.Init(h)
	target := filepath.Join(dir, "manifest.jsonl")
	if st, err := os.Lstat(target); err == nil && !st.Mode().IsRegular() {
		return 0, fmt.Errorf("%s is %s, not a manifest: move it away and merge again", target, files.Kind(st.Mode()))
	}
	want := 0
	err = atomic.Write(target, func(out io.Writer) error {
		w := bufio.NewWriter(out)
		for h.Len() > 0 {
			r := (*h)[0]
			switch {
			case r.index < want:
				return fmt.Errorf("%s: image %d is listed twice", r.path, r.index)
			case r.index > want:
				return fmt.Errorf("image %d is missing or out of order: the shards' manifests list image %d (%s line %d) before it (is a shard unfinished, or a manifest edited? rerun it)", want, r.index, r.path, r.lines)
			}
			if err := job.check(r, labels); err != nil {
				return err
			}
			if st, err := os.Stat(filepath.Join(dir, r.file)); err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
				return fmt.Errorf("%s lists %s, which is not in %s (rerun its shard: a restart makes what is missing)", r.path, r.file, dir)
			}
			w.Write(r.line)
			w.WriteByte('\n')
			want++
			if err := r.next(); err != nil {
				return err
			}
			if r.done {
				heap.Pop(h)
			} else {
				heap.Fix(h, 0)
			}
		}
		if want != n {
			return fmt.Errorf("the shards list %d images; the job has %d (is a shard unfinished? rerun it)", want, n)
		}
		if got := labels.digest(); got != job.Labels {
			return fmt.Errorf("the shards' labels are not the job's (job.json's labels %s, the manifests' %s): a manifest was edited; rerun the shards", job.Labels, got)
		}
		return w.Flush()
	})
	return want, err
}

// jobRecord is what Merge checks each manifest line against: job.json.
type jobRecord struct {
	N      *int                       `json:"n"`
	Seed   json.RawMessage            `json:"seed"`
	Labels string                     `json:"labels"`
	Params map[string]json.RawMessage `json:"params"`
}

// check checks the line r holds against the job: its file is the name the
// job gives its image (index and label), its seed and parameters are the
// job's; its label goes into labels.
func (j *jobRecord) check(r *manifestReader, labels *labelsHash) error {
	where := fmt.Sprintf("%s line %d", r.path, r.lines)
	var label *int64
	labelText := "none"
	if raw, ok := r.rec["label"]; ok {
		label = new(int64)
		if err := json.Unmarshal(raw, label); err != nil {
			return fmt.Errorf("%s: label %s is not a class number", where, raw)
		}
		labels.add(*label)
		labelText = strconv.FormatInt(*label, 10)
	}
	if name := ImageName(r.index, label); r.file != name {
		return fmt.Errorf("%s: names %s, but image %d with its label (%s) is %s: a manifest was edited; rerun its shard", where, r.file, r.index, labelText, name)
	}
	same := func(key string, want json.RawMessage) error {
		have, ok := r.rec[key]
		if !ok {
			return fmt.Errorf("%s: no %s; the job's (job.json) is %s: a manifest was edited, or is another job's; rerun its shard", where, key, want)
		}
		if !sameJSON(have, want) {
			return fmt.Errorf("%s: %s is %s, the job's (job.json) %s: a manifest was edited, or is another job's; rerun its shard", where, key, have, want)
		}
		return nil
	}
	if err := same("seed", j.Seed); err != nil {
		return err
	}
	for key, want := range j.Params {
		if err := same(key, want); err != nil {
			return err
		}
	}
	return nil
}

// sameJSON reports whether two JSON values are written the same, spacing
// aside.
func sameJSON(a, b json.RawMessage) bool {
	var ca, cb bytes.Buffer
	return json.Compact(&ca, a) == nil && json.Compact(&cb, b) == nil && bytes.Equal(ca.Bytes(), cb.Bytes())
}

// labelsHash computes labelsDigest of labels seen one at a time.
type labelsHash struct {
	h   hash.Hash
	w   *bufio.Writer
	any bool
}

func newLabelsHash() *labelsHash {
	h := sha256.New()
	return &labelsHash{h: h, w: bufio.NewWriter(h)}
}

func (l *labelsHash) add(label int64) {
	l.any = true
	l.w.WriteString(strconv.FormatInt(label, 10))
	l.w.WriteByte(',')
}

func (l *labelsHash) digest() string {
	if !l.any {
		return "none"
	}
	l.w.Flush()
	return fmt.Sprintf("sha256:%x", l.h.Sum(nil))
}

// maxManifest bounds a shard's manifest (10^8 lines of about 200 bytes).
const maxManifest = 32 << 30

// maxMergeShards bounds the files Merge holds open.
const maxMergeShards = 512

var manifestName = regexp.MustCompile(`^manifest-(\d+)-of-(\d+)\.jsonl$`)

// shardManifests finds the shards' manifests: all of one job of n shards,
// ordered by shard.
func shardManifests(dir string) ([]string, int, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, 0, err
	}
	var paths []string
	of := 0
	found := map[int]string{}
	for _, e := range entries {
		m := manifestName.FindStringSubmatch(e.Name())
		if m == nil {
			continue
		}
		i, err1 := strconv.Atoi(m[1])
		k, err2 := strconv.Atoi(m[2])
		if err1 != nil || err2 != nil || k < 1 || k > MaxImages || i >= k || strconv.Itoa(i) != m[1] || strconv.Itoa(k) != m[2] {
			return nil, 0, fmt.Errorf("%s/%s: not a shard's manifest (manifest-i-of-n.jsonl, 0 <= i < n)", dir, e.Name())
		}
		if of != 0 && k != of {
			return nil, 0, fmt.Errorf("%s: manifests of %d shards and of %d in one folder", dir, of, k)
		}
		of = k
		found[i] = e.Name()
	}
	if of == 0 {
		return nil, 0, fmt.Errorf("%s: no shard manifests (manifest-i-of-n.jsonl): run the shards first", dir)
	}
	for i := range of {
		name, ok := found[i]
		if !ok {
			return nil, 0, fmt.Errorf("%s: manifest-%d-of-%d.jsonl is missing: shard %d has not finished", dir, i, of, i)
		}
		paths = append(paths, filepath.Join(dir, name))
	}
	return paths, of, nil
}

// manifestReader reads one shard's manifest line by line, checking its
// indices rise.
type manifestReader struct {
	path  string
	s     *bufio.Scanner
	line  []byte
	index int
	file  string
	prev  int
	done  bool
	lines int
	rec   map[string]json.RawMessage
}

func (r *manifestReader) next() error {
	if !r.s.Scan() {
		r.done = true
		if err := r.s.Err(); err != nil {
			return fmt.Errorf("%s: %w", r.path, err)
		}
		return nil
	}
	r.lines++
	r.line = append(r.line[:0], r.s.Bytes()...)
	var rec struct {
		File  string `json:"file"`
		Index *int   `json:"index"`
	}
	r.rec = nil
	if err := json.Unmarshal(r.line, &rec); err != nil || rec.Index == nil || rec.File == "" || json.Unmarshal(r.line, &r.rec) != nil {
		return fmt.Errorf("%s line %d: not a manifest record with file and index", r.path, r.lines)
	}
	if *rec.Index <= r.prev {
		return fmt.Errorf("%s line %d: image %d after %d (a manifest lists images in order)", r.path, r.lines, *rec.Index, r.prev)
	}
	if rec.File != filepath.Base(rec.File) || rec.File == "." || rec.File == ".." {
		return fmt.Errorf("%s line %d: file %q is not a name in the folder", r.path, r.lines, rec.File)
	}
	r.index, r.file, r.prev = *rec.Index, rec.File, *rec.Index
	return nil
}

// manifestHeap orders the shards' readers by their current image.
type manifestHeap []*manifestReader

func (h manifestHeap) Len() int           { return len(h) }
func (h manifestHeap) Less(i, j int) bool { return h[i].index < h[j].index }
func (h manifestHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *manifestHeap) Push(x any)        { *h = append(*h, x.(*manifestReader)) }
func (h *manifestHeap) Pop() any {
	old := *h
	x := old[len(old)-1]
	*h = old[:len(old)-1]
	return x
}
