package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"

	"kakusan/datasets"
	"kakusan/models/vae"
	"kakusan/sample"
	"kakusan/torch"
	"kakusan/train"
)

type neuralJob struct {
	checkpoint, out, device string
	n, batch                int
	seed                    uint64
}

func (j neuralJob) check() error {
	if j.batch < 0 {
		return fmt.Errorf("--batch must be at least 1, got %d", j.batch)
	}
	return nil
}

// runNeural loads a checkpoint and writes n generated images as PNGs, an
// 8×8 grid, a manifest, and for the VAEs reconstructions of test images
// and (VAE) a latent interpolation strip.
func runNeural(j neuralJob, d diffusionJob) error {
	return torch.Do(func() error {
		dev, err := torch.ParseDevice(j.device)
		if err != nil {
			return fmt.Errorf("--device: %w", err)
		}
		if j.batch == 0 {
			j.batch = sample.DefaultBatch(dev)
		}
		m, cfg, ck, err := train.LoadModel(j.checkpoint, dev, !d.noEMA)
		if err != nil {
			return err
		}
		defer m.Module().Free()
		if dm, ok := m.(*train.DiffusionModel); ok {
			d.neuralJob = j
			return runDiffusion(d, dm, ck, cfg)
		}
		gen, ok := m.(train.Sampler)
		if !ok {
			return fmt.Errorf("%s: a %q checkpoint does not generate images", ck.Path, cfg.Model)
		}
		if err := os.MkdirAll(j.out, 0o755); err != nil {
			return err
		}
		manifest, err := os.Create(filepath.Join(j.out, "manifest.jsonl"))
		if err != nil {
			return err
		}
		defer manifest.Close()
		torch.ManualSeed(j.seed)
		var first *sample.Images
		torch.NoGrad(func() {
			for done := 0; done < j.n && err == nil; done += j.batch {
				torch.Scoped(func() {
					imgs := sample.FromTensor(gen.Sample(int64(min(j.batch, j.n-done))))
					if first == nil {
						first = imgs
					}
					for i := range imgs.N {
						name := fmt.Sprintf("%06d.png", done+i)
						if err = sample.SavePNG(filepath.Join(j.out, name), imgs.Gray(i)); err != nil {
							return
						}
						rec, _ := json.Marshal(map[string]any{"file": name, "index": done + i, "seed": j.seed, "model": cfg.Model, "checkpoint": ck.Path})
						manifest.Write(append(rec, '\n'))
					}
				})
			}
		})
		if err != nil {
			return err
		}
		first.N = min(first.N, 64)
		if err := sample.SavePNG(filepath.Join(j.out, "grid.png"), first.Grid(8, 2)); err != nil {
			return err
		}
		return vaeExtras(cfg, m, dev, j.out)
	})
}

// vaeExtras writes reconstructions.png (test images on odd rows, their
// reconstructions below) and, for the VAE, interpolation.png.
func vaeExtras(cfg *train.Config, m train.Model, dev torch.Device, out string) error {
	dir, err := datasets.DatasetDir(cfg.Data.Dataset, cfg.Data.Dir)
	if err != nil {
		return nil // no data here: skip the extras rather than fail the job
	}
	test, err := datasets.LoadImages(dir, "test")
	if err != nil {
		return err
	}
	b := (&datasets.Loader{Set: test.Subset(32), Batch: 32}).All()[0]
	x := torch.FromSlice(b.Pixels, []int64{int64(b.N), 28 * 28}).To(dev)
	var rec, line *torch.Tensor
	torch.NoGrad(func() {
		switch v := m.(type) {
		case interface{ VAEModel() *vae.VAE }:
			rec = v.VAEModel().Reconstruct(x)
			line = v.VAEModel().Interpolate(x.Narrow(0, 0, 1), x.Narrow(0, 1, 1), 10)
		case interface{ HVAEModel() *vae.HVAE }:
			rec = v.HVAEModel().Reconstruct(x)
		}
	})
	if rec == nil {
		return nil
	}
	// Rows of 8: originals, then their reconstructions.
	var rows []*torch.Tensor
	for r := int64(0); r < 4; r++ {
		rows = append(rows, x.Narrow(0, 8*r, 8), rec.Narrow(0, 8*r, 8))
	}
	if err := sample.SavePNG(filepath.Join(out, "reconstructions.png"), sample.FromTensor(torch.Cat(rows, 0)).Grid(8, 2)); err != nil {
		return err
	}
	if line != nil {
		return sample.SavePNG(filepath.Join(out, "interpolation.png"), sample.FromTensor(line).Grid(10, 2))
	}
	return nil
}
