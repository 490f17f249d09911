// Command eval measures generated images with a judge classifier
// (configs/mnist_classifier.yaml): conditional accuracy with 95% intervals,
// FID in the judge's feature space against the test set (and the real-data
// floor), precision and recall (k = 3). It writes eval.json.
//
//	eval --judge runs/mnist_classifier --samples samples/
//	eval --judge runs/mnist_classifier --checkpoint runs/mnist_cond_cpu --n 10000 --guidance 1,2,3,5
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"kakusan/cmd/internal/cli"
	"kakusan/eval"
	"kakusan/sample"
	"kakusan/torch"
	"kakusan/train"
)

type result struct {
	Protocol      string         `json:"protocol"`
	Judge         string         `json:"judge"`
	JudgeAccuracy float64        `json:"judge_test_accuracy"`
	FloorFID      float64        `json:"floor_fid_train_vs_test"`
	Source        string         `json:"source"`
	Sampler       map[string]any `json:"sampler,omitempty"`
	Reports       []*eval.Report `json:"reports"`
}

func main() {
	fs := pflag.NewFlagSet("eval", pflag.ContinueOnError)
	judgePath := fs.String("judge", "", "classifier checkpoint `file` or run folder (required)")
	samples := fs.String("samples", "", "a bin/sample output `folder` (with manifest.jsonl)")
	checkpoint := fs.String("checkpoint", "", "a model checkpoint to sample from instead")
	n := fs.Int("n", 10000, "with --checkpoint: images to generate")
	guidance := fs.String("guidance", "3", "with --checkpoint: guidance values, comma-separated (a sweep)")
	sampler := fs.String("sampler", "ddim", "with --checkpoint: ddim or ddpm")
	steps := fs.Int("steps", 50, "with --checkpoint: DDIM steps")
	eta := fs.Float64("eta", 0, "with --checkpoint: DDIM η")
	batch := fs.Int("batch", 0, "with --checkpoint: images per forward pass (default 500 on CUDA, 100 on the CPU)")
	seed := fs.Uint64("seed", 1, "with --checkpoint: random seed")
	device := fs.String("device", "auto", "cpu, cuda, cuda:N or auto")
	out := fs.StringP("out", "o", "", "eval.json `path` (default: in the samples folder, else ./eval.json)")
	if err := cli.Parse(fs, os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			return
		}
		cli.Fatal("eval", err)
	}
	if *judgePath == "" || (*samples == "") == (*checkpoint == "") {
		fmt.Fprintf(os.Stderr, "usage: eval --judge CLASSIFIER (--samples DIR | --checkpoint CKPT [--n N --guidance 1,2,3,5])\n\n%s", fs.FlagUsages())
		os.Exit(2)
	}
	var gammas []float64
	for _, g := range strings.Split(*guidance, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(g), 64)
		if err != nil || v < 0 || v > 50 {
			cli.Fatal("eval", fmt.Errorf("--guidance %q: want numbers between 0 and 50, comma-separated", *guidance))
		}
		gammas = append(gammas, v)
	}
	if *n < 10 || *batch < 0 {
		cli.Fatal("eval", fmt.Errorf("--n must be at least 10 and --batch at least 1"))
	}
	path := *out
	if path == "" {
		path = "eval.json"
		if *samples != "" {
			path = filepath.Join(*samples, "eval.json")
		}
	}
	err := torch.Do(func() error {
		dev, err := torch.ParseDevice(*device)
		if err != nil {
			return fmt.Errorf("--device: %w", err)
		}
		if *batch == 0 {
			*batch = sample.DefaultBatch(dev)
		}
		judge, err := eval.LoadJudge(*judgePath, dev)
		if err != nil {
			return err
		}
		defer judge.Free()
		t0 := time.Now()
		ref, err := judge.NewReference()
		if err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "eval: judge %s: %.2f%% on the test images; real-data floor FID %.3f (%.1f s)\n", judge.Path, 100*ref.Accuracy, ref.Floor, time.Since(t0).Seconds())
		res := result{Protocol: eval.Protocol, Judge: judge.Path, JudgeAccuracy: ref.Accuracy, FloorFID: ref.Floor}
		if *samples != "" {
			res.Source = *samples
			imgs, labels, err := eval.LoadSamples(*samples)
			if err != nil {
				return err
			}
			r, err := judge.Evaluate(ref, imgs, labels)
			if err != nil {
				return err
			}
			res.Reports = append(res.Reports, r)
		} else {
			res.Source = *checkpoint
			res.Sampler = map[string]any{"sampler": *sampler, "steps": *steps, "eta": *eta, "seed": *seed, "n": *n}
			m, _, _, err := train.LoadModel(*checkpoint, dev, true)
			if err != nil {
				return err
			}
			defer m.Module().Free()
			for _, g := range gammas {
				t1 := time.Now()
				progress := func(done int) {
					fmt.Fprintf(os.Stderr, "eval: guidance %g: %d/%d images, %.1f images/s\n", g, done, *n, float64(done)/time.Since(t1).Seconds())
				}
				imgs, labels, err := eval.Generate(m, *n, train.SampleJob{Seed: *seed, Sampler: *sampler, Steps: *steps, Eta: *eta, Guidance: g}, *batch, progress)
				if err != nil {
					return err
				}
				r, err := judge.Evaluate(ref, imgs, labels)
				if err != nil {
					return err
				}
				r.Guidance = &g
				res.Reports = append(res.Reports, r)
				fmt.Fprintf(os.Stderr, "eval: guidance %g: %d images in %.1f s\n", g, *n, time.Since(t1).Seconds())
			}
		}
		printTable(res)
		b, _ := json.MarshalIndent(res, "", "  ")
		return train.WriteFileAtomic(path, append(b, '\n'))
	})
	if err != nil {
		cli.Fatal("eval", err)
	}
	fmt.Fprintf(os.Stderr, "eval: wrote %s\n", path)
}

func printTable(r result) {
	fmt.Printf("judge accuracy on test images %.4f; floor FID (train vs test) %.3f\n", r.JudgeAccuracy, r.FloorFID)
	fmt.Println("| guidance | images | conditional accuracy (95% CI) | FID | precision | recall |")
	fmt.Println("| --- | --- | --- | --- | --- | --- |")
	for _, rep := range r.Reports {
		g, acc := "-", "-"
		if rep.Guidance != nil {
			g = strconv.FormatFloat(*rep.Guidance, 'g', -1, 64)
		}
		if rep.Accuracy != nil {
			acc = fmt.Sprintf("%.4f (%.4f-%.4f)", rep.Accuracy.Value, rep.Accuracy.Low, rep.Accuracy.High)
		}
		fmt.Printf("| %s | %d | %s | %.3f | %.3f | %.3f |\n", g, rep.Samples, acc, rep.FID, rep.Precision, rep.Recall)
	}
}
