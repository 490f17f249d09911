package sample

import (
	"context"
	"image"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"

	"kakusan/torch"
	"kakusan/torch/torchtest"
)

var on = torchtest.Run

// fake makes image k a constant k/100 in every channel (but its last value,
// 1), so what a job hands its sink can be checked image by image.
type fake struct {
	c, h, w int
	calls   int
}

func (f *fake) Generate(b Batch) (*torch.Tensor, error) {
	f.calls++
	pix := make([]float32, 0, len(b.Images)*f.c*f.h*f.w)
	for _, k := range b.Images {
		for range f.c*f.h*f.w - 1 {
			pix = append(pix, float32(k)/100)
		}
		pix = append(pix, 1) // a white last value: no batch is one value (Images.Check)
	}
	return torch.FromSlice(pix, []int64{int64(len(b.Images)), int64(f.c), int64(f.h), int64(f.w)}), nil
}

func TestShardsPartitionTheJob(t *testing.T) {
	for _, c := range []struct{ n, batch, of int }{{10, 3, 3}, {7, 7, 2}, {100, 9, 4}, {1, 5, 3}} {
		seen := make([]int, c.n)
		for s := range c.of {
			j := &Job{N: c.n, Batch: c.batch, Shard: s, Of: c.of}
			for _, r := range j.Batches() {
				if r[1]-r[0] > c.batch || r[0]%c.batch != 0 || (r[0]/c.batch)%c.of != s {
					t.Errorf("%+v shard %d: batch %v", c, s, r)
				}
				for k := r[0]; k < r[1]; k++ {
					seen[k]++
				}
			}
		}
		for k, n := range seen {
			if n != 1 {
				t.Errorf("%+v: image %d made %d times", c, k, n)
			}
		}
	}
	for _, bad := range []*Job{{N: 0, Batch: 1, Of: 1}, {N: 5, Batch: 0, Of: 1}, {N: 5, Batch: 1, Shard: 2, Of: 2}, {N: 5, Batch: 1, Of: 1, Labels: []int64{1}}} {
		if err := bad.Check(); err == nil {
			t.Errorf("job %+v accepted", bad)
		}
	}
}

func TestParseLabels(t *testing.T) {
	for spec, want := range map[string][]int64{
		"all":     {0, 1, 2, 3, 0, 1, 2},
		"3":       {3, 3, 3, 3, 3, 3, 3},
		"2-3,0":   {2, 3, 0, 2, 3, 0, 2},
		" 1 , 2 ": {1, 2, 1, 2, 1, 2, 1},
	} {
		got, err := ParseLabels(spec, 7, 4, 1)
		if err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%q: %v %v, want %v", spec, got, err, want)
		}
	}
	a, _ := ParseLabels("random", 500, 4, 9)
	b, _ := ParseLabels("random", 500, 4, 9)
	counts := map[int64]int{}
	for _, l := range a {
		counts[l]++
	}
	if !reflect.DeepEqual(a, b) || len(counts) != 4 {
		t.Errorf("random labels: repeatable %v, classes %v", reflect.DeepEqual(a, b), counts)
	}
	for spec, want := range map[string]string{"4": "label 4 out of range", "x": `"x" is not a label`, "3-1": "not a range", "-1": "not a label", "": "not a label"} {
		if _, err := ParseLabels(spec, 3, 4, 1); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: want %q, got %v", spec, want, err)
		}
	}
	if _, err := ParseLabels("all", 3, 0, 1); err == nil {
		t.Error("labels for a model without classes")
	}
}

func TestFolderJobRestartsAndRGB(t *testing.T) {
	on(t, func() {
		dir := t.TempDir()
		gen := &fake{c: 3, h: 5, w: 4}
		labels, _ := ParseLabels("all", 7, 2, 0)
		job := &Job{N: 7, Batch: 3, Seed: 1, Labels: labels, Of: 1}
		out := &Folder{Dir: dir, Job: job, C: 3, H: 5, W: 4, Meta: map[string]any{"sampler": "ddim"}}
		if err := out.Open(); err != nil {
			t.Fatal(err)
		}
		if made, err := job.Run(context.Background(), gen, out); err != nil || made != 7 || gen.calls != 3 {
			t.Fatalf("made %d in %d calls: %v", made, gen.calls, err)
		}
		if err := out.Finish(); err != nil {
			t.Fatal(err)
		}
		// Image 5 reads back as 0.05 in every channel, through 8 bits (its last value aside).
		pix := make([]float32, 3*5*4)
		if err := ReadPNG(filepath.Join(dir, "000005_label1.png"), 3, 5, 4, pix); err != nil {
			t.Fatal(err)
		}
		for _, v := range pix[:len(pix)-1] {
			if math.Abs(float64(v)-math.Round(0.05*255)/255) > 1e-6 {
				t.Fatalf("read back %v, want %v", v, math.Round(0.05*255)/255)
			}
		}
		// A restart makes only the batch whose image is missing.
		os.Remove(filepath.Join(dir, "000004_label0.png"))
		if made, err := job.Run(context.Background(), gen, out); err != nil || made != 3 || gen.calls != 4 {
			t.Errorf("restart made %d in %d calls: %v", made, gen.calls, err)
		}
		// Another job in the same folder is refused; the same one is not.
		if err := out.Open(); err != nil {
			t.Errorf("reopening the same job: %v", err)
		}
		other := &Folder{Dir: dir, Job: &Job{N: 7, Batch: 3, Seed: 2, Labels: labels, Of: 1}, C: 3, H: 5, W: 4, Meta: out.Meta}
		if err := other.Open(); err == nil || !strings.Contains(err.Error(), "another job") {
			t.Errorf("another seed in the same folder: %v", err)
		}
		// grid.png: two class rows of up to ten, RGB.
		f, _ := os.Open(filepath.Join(dir, "grid.png"))
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		if _, grey := img.(*image.Gray); grey || img.Bounds().Dy() != 2*(10+2)+2 || img.Bounds().Dx() != 4*(8+2)+2 {
			t.Errorf("grid: a %T of %v", img, img.Bounds())
		}
	})
}

func TestReadPNGRefuses(t *testing.T) {
	dir := t.TempDir()
	grey := filepath.Join(dir, "g.png")
	f, _ := os.Create(grey)
	png.Encode(f, image.NewGray(image.Rect(0, 0, 4, 5)))
	f.Close()
	pix := make([]float32, 3*5*4)
	if err := ReadPNG(grey, 1, 5, 4, pix); err != nil {
		t.Errorf("a grey image of the right size: %v", err)
	}
	for _, c := range []struct {
		c, h, w int
		want    string
	}{{1, 4, 4, "a 4x5 image; want 4x4"}, {3, 5, 4, "want an RGB image"}} {
		if err := ReadPNG(grey, c.c, c.h, c.w, pix); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v", c, err)
		}
	}
	fifo := filepath.Join(dir, "fifo.png")
	if err := syscall.Mkfifo(fifo, 0o644); err == nil {
		if err := ReadPNG(fifo, 1, 5, 4, pix); err == nil || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("a FIFO: %v", err)
		}
	}
}

// Check refuses a batch saturated to one value (what exploded weights
// draw) and non-finite values, and passes real images.
func TestImagesCheck(t *testing.T) {
	im := &Images{N: 2, C: 1, H: 2, W: 2, Pix: []float32{0, 0, 0, 0, 0, 0, 0, 0}}
	if err := im.Check(); err == nil || !strings.Contains(err.Error(), "every pixel of the batch's 2 images is 0") {
		t.Errorf("a black batch: %v", err)
	}
	im.Pix[5] = 0.5
	if err := im.Check(); err != nil {
		t.Errorf("a batch with one grey pixel: %v", err)
	}
	im.Pix[3] = float32(math.NaN())
	if err := im.Check(); err == nil || !strings.Contains(err.Error(), "image 0 of the batch has non-finite values") {
		t.Errorf("a NaN: %v", err)
	}
}
