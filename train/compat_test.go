package train

import (
	"context"
	"image"
	"image/png"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"testing"

	"kakusan/diffusion"
	"kakusan/models"
	"kakusan/sample"
	"kakusan/torch"
	"kakusan/torch/torchtest"
)

// oldRun is a prompted latent diffusion model's run folder written before
// the measured constants were the model's (testdata/prompt_latent_v1/README.md
// says how): its config.yaml records the latent scale, the style
// thresholds, the vocabulary and the autoencoder's architecture, its
// checkpoint no scale_factor or style_thresholds tensor.
const oldRun = "testdata/prompt_latent_v1"

// TestOldCheckpoint reads, samples and resumes the old checkpoint: its
// recorded values become the model's constants and first-stage
// architecture, it draws the images the old code drew and resumes to the
// losses the old code logged (to the last bits a CPU's kernels change).
func TestOldCheckpoint(t *testing.T) {
	run := filepath.Join(oldRun, "run")
	torchtest.Run(t, func() {
		ck, err := models.ReadCheckpoint(run, torch.CPU)
		if err != nil {
			t.Fatal(err)
		}
		defer ck.Free()
		d := models.Section[*diffusion.Config](ck.Config, "diffusion")
		for _, prefix := range []string{"", models.EMAPrefix} {
			if got := ck.Tensors[prefix+diffusion.LatentScaleName]; got == nil || got.Item() != float64(float32(d.LatentScale)) {
				t.Errorf("%s%s: %v, the config recorded %g", prefix, diffusion.LatentScaleName, got, d.LatentScale)
			}
			th := ck.Tensors[prefix+diffusion.StyleThresholdsName]
			if th == nil || th.Shape()[0] != 10 || float32(torch.Values[float64](th.To(torch.Float64))[5]) != float32(d.StyleThresholds[1][1]) {
				t.Errorf("%s%s: %v, the config recorded %v", prefix, diffusion.StyleThresholdsName, th, d.StyleThresholds)
			}
		}
		if ck.FirstStage == nil || !slices.Equal(ck.FirstStage.Channels, d.AutoencoderConfig.Channels) || ck.FirstStage.Groups != 2 {
			t.Errorf("first stage %+v, the config recorded %+v", ck.FirstStage, d.AutoencoderConfig)
		}
	})

	// The job of testdata's samples (bin/sample --n 4 --seed 3 --prompt
	// bold --batch 4), in memory.
	var got sample.Memory
	torchtest.Run(t, func() {
		m, ck, err := models.Load(run, torch.CPU, true)
		if err != nil {
			t.Fatal(err)
		}
		defer models.Free(m)
		s := models.GridSampling(ck.Config)
		s.Prompt = "bold"
		gen, err := ck.Entry().NewGenerator(m, s)
		if err != nil {
			t.Fatal(err)
		}
		labels, _ := sample.ParseLabels("all", 4, 10, 3)
		job := &sample.Job{N: 4, Batch: 4, Seed: 3, Labels: labels, Of: 1}
		if _, err := job.Run(context.Background(), gen, &got); err != nil {
			t.Fatal(err)
		}
	})
	maxDiff, sum := 0.0, 0.0
	for i := range 4 {
		f, err := os.Open(filepath.Join(oldRun, "samples", []string{"000000_label0.png", "000001_label1.png", "000002_label2.png", "000003_label3.png"}[i]))
		if err != nil {
			t.Fatal(err)
		}
		img, err := png.Decode(f)
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		pix := img.(*image.Gray).Pix
		for j, v := range pix {
			d := math.Abs(float64(v) - 255*float64(got.Pix[i*len(pix)+j]))
			maxDiff, sum = max(maxDiff, d), sum+d
		}
	}
	// The same machine draws them bit for bit; another CPU's kernels move
	// a few grey levels. A wrong scale or first stage moves everything.
	if mean := sum / float64(len(got.Pix)); maxDiff > 8 || mean > 0.5 {
		t.Errorf("the old checkpoint's images differ from the old code's: at most %g grey levels, %g on average", maxDiff, mean)
	}

	// Resumed from a copy of the folder for another epoch, as the old code
	// was, it logs the old code's losses.
	dir := filepath.Join(t.TempDir(), "run")
	if out, err := exec.Command("cp", "-r", run, dir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v\n%s", err, out)
	}
	// Its precision was auto, which then meant float32 on a CPU without
	// AMX; auto now measures, and may pick bf16 where it is faster (or
	// find bf16 in the machine's cache of choices): float32, as logged.
	sets := []string{"train.epochs=2", "train.log_every=1", "train.precision=fp32"}
	if mnist := os.Getenv("KAKUSAN_TEST_MNIST"); mnist != "" {
		sets = append(sets, "data.dir="+mnist)
	}
	c, err := models.LoadConfig(filepath.Join(dir, "config.yaml"), sets)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Train(c, Options{Resume: dir}); err != nil {
		t.Fatal(err)
	}
	want, have := readMetricLines(t, filepath.Join(oldRun, "resumed")), readMetricLines(t, dir)
	if len(have) != len(want) {
		t.Fatalf("%d metrics lines, the old code logged %d", len(have), len(want))
	}
	for i := range want {
		for _, key := range []string{"loss", "test_loss"} {
			w, ok := want[i][key].(float64)
			if h, _ := have[i][key].(float64); ok && math.Abs(h-w) > 1e-4*math.Abs(w) {
				t.Errorf("line %d: %s %g, the old code's %g", i, key, h, w)
			}
		}
	}
}
