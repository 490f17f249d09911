package sample

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"

	"kakusan/internal/atomic"
	"kakusan/internal/files"
)

// Folder is a Sink that writes a job's images into a folder: one PNG per
// image with the label in its name (000042_label2.png), job.json (what the
// job was: every parameter that shapes its images), a manifest of this
// job's (or shard's) images, manifest.jsonl or manifest-i-of-n.jsonl, and
// grid.png (a row per class). A folder holds one job: restarting it with
// other parameters is refused, so its images and manifest always agree.
type Folder struct {
	Dir   string
	Job   *Job
	C     int            // image channels, for reading images back into the grid
	H, W  int            // image size
	Meta  map[string]any // the job's parameters (sampler, steps, guidance, checkpoint, ...), recorded in job.json and in each manifest line
	Names []string       // class names, recorded in job.json (optional)
	// Overwrite starts the job afresh in a folder that holds another
	// job's images: that job's images, manifests, grid and evaluation are
	// removed first. A folder that is not a job's is never written into.
	Overwrite bool
}

// jobFile matches the files a job writes into its folder, the ones
// Overwrite removes.
var jobFile = regexp.MustCompile(`^(\d{6,}(_label\d+)?\.png|manifest(-\d+-of-\d+)?\.jsonl|grid\.png|eval\.json|job\.json)$`)

// Open makes the folder (or reopens it for a restart) and records the
// job's parameters. It refuses a folder that holds another job's images
// (unless Overwrite) and a non-empty folder without a job.json: a folder
// that is not a sampling job's, whose files a job would overwrite.
func (f *Folder) Open() error {
	if err := os.MkdirAll(f.Dir, 0o755); err != nil {
		return err
	}
	rec := map[string]any{"n": f.Job.N, "batch": f.Job.Batch, "seed": f.Job.Seed, "labels": labelsDigest(f.Job.Labels),
		"geometry": []int{f.C, f.H, f.W}, "params": f.Meta}
	if f.Names != nil {
		rec["class_names"] = f.Names
	}
	want, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	want = append(want, '\n')
	path := filepath.Join(f.Dir, "job.json")
	have, err := files.Read(path, 1<<20)
	switch {
	case errors.Is(err, os.ErrNotExist):
		if entries, _ := os.ReadDir(f.Dir); len(entries) > 0 {
			return fmt.Errorf("%s is not empty and holds no sampling job (no job.json): its files could be overwritten; give an empty or new --out", f.Dir)
		}
		return atomic.WriteFile(path, want)
	case err != nil:
		return err
	case !bytes.Equal(have, want) && !isJobRecord(have):
		return fmt.Errorf("%s has a job.json that is not bin/sample's (no n, seed, labels, geometry and params): its files could be overwritten; give an empty or new --out", f.Dir)
	case !bytes.Equal(have, want) && !f.Overwrite:
		return fmt.Errorf("%s holds the images of another job (see its job.json): give another --out, the same parameters to finish that job, or --overwrite to start this one there afresh", f.Dir)
	case !bytes.Equal(have, want):
		entries, err := os.ReadDir(f.Dir)
		if err != nil {
			return err
		}
		for _, e := range entries {
			if jobFile.MatchString(e.Name()) {
				if err := os.Remove(filepath.Join(f.Dir, e.Name())); err != nil {
					return err
				}
			}
		}
		return atomic.WriteFile(path, want)
	}
	return nil
}

// labelsDigest identifies a job's labels in job.json without listing
// them (a job may have 10^8): "none", or the SHA-256 of their decimal list.
// isJobRecord reports whether b is a job.json that bin/sample wrote.
func isJobRecord(b []byte) bool {
	var rec map[string]json.RawMessage
	if json.Unmarshal(b, &rec) != nil {
		return false
	}
	for _, k := range []string{"n", "batch", "seed", "labels", "geometry", "params"} {
		if _, ok := rec[k]; !ok {
			return false
		}
	}
	return true
}

// LabelsDigest is what job.json records of a job's labels, in image
// order: "none", or the SHA-256 of their decimal list.
func LabelsDigest(labels []int64) string { return labelsDigest(labels) }

func labelsDigest(labels []int64) string {
	h := newLabelsHash()
	for _, l := range labels {
		h.add(l)
	}
	return h.digest()
}

// Name is image k's file name.
func (f *Folder) Name(k int, b Batch, i int) string {
	if b.Labels == nil {
		return ImageName(k, nil)
	}
	return ImageName(k, &b.Labels[i])
}

// ImageName is the file a job names image k with label (nil: none):
// 000042.png, 000042_label2.png.
func ImageName(k int, label *int64) string {
	if label == nil {
		return fmt.Sprintf("%06d.png", k)
	}
	return fmt.Sprintf("%06d_label%d.png", k, *label)
}

// Has reports whether every image of b is written.
func (f *Folder) Has(b Batch) bool {
	for i, k := range b.Images {
		if _, err := os.Stat(filepath.Join(f.Dir, f.Name(k, b, i))); err != nil {
			return false
		}
	}
	return true
}

// Put writes a batch's images.
func (f *Folder) Put(b Batch, imgs *Images) error {
	for i, k := range b.Images {
		if err := SavePNG(filepath.Join(f.Dir, f.Name(k, b, i)), imgs.Image(i)); err != nil {
			return err
		}
	}
	return nil
}

// Finish writes the manifest of this shard's images, streamed (a job may
// be large), and the grid.
func (f *Folder) Finish() error {
	manifest := "manifest.jsonl"
	if f.Job.Of > 1 {
		manifest = fmt.Sprintf("manifest-%d-of-%d.jsonl", f.Job.Shard, f.Job.Of)
	}
	var cells []Batch // the batches the grid draws from: enough for ten of each class
	err := atomic.Write(filepath.Join(f.Dir, manifest), func(out io.Writer) error {
		w := bufio.NewWriter(out)
		enc := json.NewEncoder(w)
		for _, r := range f.Job.Batches() {
			b := f.Job.batch(r)
			for i, k := range b.Images {
				rec := map[string]any{"file": f.Name(k, b, i), "index": k, "seed": f.Job.Seed}
				for key, v := range f.Meta {
					rec[key] = v
				}
				if b.Labels != nil {
					rec["label"] = b.Labels[i]
				}
				if err := enc.Encode(rec); err != nil {
					return err
				}
			}
			if len(cells) < 1000 {
				cells = append(cells, b)
			}
		}
		return w.Flush()
	})
	if err != nil {
		return err
	}
	return f.grid(cells)
}

// grid draws grid.png from the written files: a row of up to ten images per
// class, or the first 64 images eight to a row for an unconditional model.
func (f *Folder) grid(batches []Batch) error {
	type cell struct {
		b Batch
		i int
	}
	var cells []*cell // grid order; nil is a blank cell
	cols := 8
	if len(batches) > 0 && batches[0].Labels != nil {
		byClass := map[int64][]*cell{}
		for _, b := range batches {
			for i, l := range b.Labels {
				if len(byClass[l]) < 10 {
					byClass[l] = append(byClass[l], &cell{b, i})
				}
			}
		}
		var classes []int64
		cols = 0
		for l, row := range byClass {
			classes = append(classes, l)
			cols = max(cols, len(row))
		}
		sort.Slice(classes, func(a, b int) bool { return classes[a] < classes[b] })
		for _, l := range classes {
			row := byClass[l]
			for c := range cols {
				if c < len(row) {
					cells = append(cells, row[c])
				} else {
					cells = append(cells, nil)
				}
			}
		}
	} else {
		for _, b := range batches {
			for i := range b.Images {
				if len(cells) < 64 {
					cells = append(cells, &cell{b, i})
				}
			}
		}
	}
	if len(cells) == 0 {
		return nil
	}
	size := f.C * f.H * f.W
	im := &Images{N: len(cells), C: f.C, H: f.H, W: f.W, Pix: make([]float32, len(cells)*size)}
	for j, c := range cells {
		if c == nil {
			continue
		}
		path := filepath.Join(f.Dir, f.Name(c.b.Images[c.i], c.b, c.i))
		if err := ReadPNG(path, f.C, f.H, f.W, im.Pix[j*size:(j+1)*size]); err != nil {
			return err
		}
	}
	return SavePNG(filepath.Join(f.Dir, "grid.png"), im.Grid(cols, 2))
}

// Memory is a Sink that keeps a job's images in memory, in job order, for
// an evaluation that measures them without writing files.
type Memory struct {
	Pix    []float32
	Labels []int64
	N      int
}

// Has is always false: nothing is kept between runs.
func (m *Memory) Has(Batch) bool { return false }

// Put appends a batch's images, through 8-bit values as the PNGs of a
// Folder are, so that both measure the same.
func (m *Memory) Put(b Batch, imgs *Images) error {
	for _, v := range imgs.Pix {
		m.Pix = append(m.Pix, float32(math.Round(float64(v)*255)/255))
	}
	m.Labels = append(m.Labels, b.Labels...)
	m.N += imgs.N
	return nil
}
