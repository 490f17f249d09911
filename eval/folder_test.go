package eval

import (
	"context"
	"image"
	"image/color"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"testing"

	"kakusan/datasets/datasetstest"
	"kakusan/models"
	"kakusan/sample"
	"kakusan/torch"
	"kakusan/train"
)

// TestImageFolderEndToEnd is the way of a user's own images: a folder of 4
// classes of RGB images, resized to 16×16, trains the VAE, the diffusion
// model and the classifier for a few steps (geometry and classes from the
// data, recorded in the checkpoints); the diffusion model's sampling job
// writes RGB PNGs with a row per class; and the classifier judges them.
func TestImageFolderEndToEnd(t *testing.T) {
	data := filepath.Join(t.TempDir(), "shapes")
	if err := datasetstest.WriteFolder(data, 4, 40, 24, true); err != nil {
		t.Fatal(err)
	}
	runs := map[string]string{}
	for name, cfg := range map[string][]string{
		"mnist_vae":        {"train.max_steps=20", "train.batch_size=16"},
		"mnist_classifier": {"train.max_steps=40", "train.batch_size=16"},
		"mnist_cond":       {"train.max_steps=20", "train.batch_size=16", "unet.width=8", "samples=8", "diffusion.sample_steps=3"},
	} {
		sets := append([]string{"device=cpu", "data.dir=" + data, "data.size=16", "train.log_every=10"}, cfg...)
		c, err := models.LoadConfig("../configs/"+name+".yaml", sets)
		if err != nil {
			t.Fatal(err)
		}
		r, err := train.Train(c, train.Options{Out: filepath.Join(t.TempDir(), name)})
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		runs[name] = r.Dir
		if name != "mnist_classifier" {
			if grid := decodePNG(t, r.Path("samples/final.png")); grid != nil && grid.ColorModel() == color.GrayModel {
				t.Errorf("%s: a grey grid of RGB data", name)
			}
		}
	}
	on(t, func() {
		m, ck, err := models.Load(runs["mnist_cond"], torch.CPU, true)
		if err != nil {
			t.Fatal(err)
		}
		defer models.Free(m)
		if g := ck.Geometry; g.C != 3 || g.H != 16 || g.W != 16 || g.Classes != 4 || g.ClassNames[3] != "class3" {
			t.Errorf("checkpoint geometry %+v", g)
		}
		gen, err := ck.Entry().NewGenerator(m, models.GridSampling(ck.Config))
		if err != nil {
			t.Fatal(err)
		}
		out := t.TempDir()
		labels, _ := sample.ParseLabels("all", 12, ck.Geometry.Classes, 1)
		job := &sample.Job{N: 12, Batch: 5, Seed: 1, Labels: labels, Of: 1}
		f := &sample.Folder{Dir: out, Job: job, C: 3, H: 16, W: 16, Meta: map[string]any{"checkpoint": ck.Path}}
		if err := f.Open(); err != nil {
			t.Fatal(err)
		}
		if _, err := job.Run(context.Background(), gen, f); err != nil {
			t.Fatal(err)
		}
		if err := f.Finish(); err != nil {
			t.Fatal(err)
		}
		img := decodePNG(t, filepath.Join(out, "000007_label3.png"))
		if _, ok := img.(*image.Gray); ok || img.Bounds().Dx() != 16 || img.Bounds().Dy() != 16 {
			t.Errorf("sample: a %T of %v, want a 16×16 RGB image", img, img.Bounds())
		}
		// grid.png: a row per class, 3 images each, of 16×16 drawn at scale 2 with a 2-pixel border.
		if b := decodePNG(t, filepath.Join(out, "grid.png")).Bounds(); b.Dy() != 4*(32+2)+2 || b.Dx() != 3*(32+2)+2 {
			t.Errorf("grid %v, want 4 rows of 3", b)
		}

		judge, err := LoadJudge(runs["mnist_classifier"], torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer judge.Free()
		ref, err := judge.NewReference()
		if err != nil {
			t.Fatal(err)
		}
		if ref.Accuracy < 0.5 {
			t.Errorf("the judge gets %.2f of the test images right after 40 steps; want at least half of 4 classes", ref.Accuracy)
		}
		imgs, got, err := LoadSamples(out, judge.Geometry)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := judge.Evaluate(ref, imgs, got)
		if err != nil {
			t.Fatal(err)
		}
		if rep.Samples != 12 || rep.Accuracy == nil || len(rep.PerClass) != 4 || math.IsNaN(rep.FID) || rep.FID < 0 {
			t.Errorf("report %+v", rep)
		}
		// The same job in memory (as bin/eval --checkpoint runs it) measures the same images.
		mem, memLabels, err := Sample(context.Background(), ck.Entry(), m, ck.Geometry, 12, 1, models.GridSampling(ck.Config), 5, nil, nil)
		if err != nil {
			t.Fatal(err)
		}
		if d := mem.Sub(imgs).Abs().Max().Item(); d > 1.0/255+1e-6 || len(memLabels) != 12 || memLabels[7] != 3 {
			t.Errorf("in memory: images differ from the PNGs by up to %g, labels %v", d, memLabels)
		}
	})
}

func decodePNG(t *testing.T, path string) image.Image {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Error(err)
		return nil
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Errorf("%s: %v", path, err)
	}
	return img
}
