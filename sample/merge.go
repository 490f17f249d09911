package sample

import (
	"bufio"
	"container/heap"
	"encoding/json"
	"fmt"
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
	var job struct {
		N *int `json:"n"`
	}
	if err := json.Unmarshal(raw, &job); err != nil || job.N == nil || *job.N < 1 || *job.N > MaxImages {
		return 0, fmt.Errorf("%s: job.json has no image count n between 1 and %d", filepath.Join(dir, "job.json"), MaxImages)
	}
	n := *job.N
	shards, of, err := shardManifests(dir)
	if err != nil {
		return 0, err
	}
	if of > maxMergeShards {
		return 0, fmt.Errorf("%s: %d shards; merge takes at most %d (it holds one file open per shard)", dir, of, maxMergeShards)
	}
	h := &manifestHeap{}
	for _, path := range shards {
		f, err := os.Open(path)
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
	want := 0
	err = atomic.Write(filepath.Join(dir, "manifest.jsonl"), func(out io.Writer) error {
		w := bufio.NewWriter(out)
		for h.Len() > 0 {
			r := (*h)[0]
			switch {
			case r.index < want:
				return fmt.Errorf("%s: image %d is listed twice", r.path, r.index)
			case r.index > want:
				return fmt.Errorf("image %d is missing: no shard lists it (is a shard unfinished? rerun it)", want)
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
		return w.Flush()
	})
	return want, err
}

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
	if err := json.Unmarshal(r.line, &rec); err != nil || rec.Index == nil || rec.File == "" {
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
