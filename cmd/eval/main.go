// Command eval measures generated images with a judge classifier
// (configs/mnist_classifier.yaml): conditional accuracy with 95% intervals,
// FID in the judge's feature space against the test set (and the real-data
// floor), precision and recall (k = 3). It writes eval.json.
//
//	eval --judge runs/mnist_classifier --samples samples/
//	eval --judge runs/mnist_classifier --checkpoint runs/mnist_cond_cpu --n 10000 --guidance 1,2,3,5
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"kakusan/cmd/internal/cli"
	"kakusan/diffusion"
	"kakusan/eval"
	"kakusan/internal/atomic"
	"kakusan/internal/signals"
	"kakusan/models"
	"kakusan/sample"
	"kakusan/torch"
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

// options are the command line.
type options struct {
	judge, samples, checkpoint, device, out string
	n, batch                                int
	seed                                    uint64
	gammas                                  []float64
	sampling                                diffusion.Sampling
	set                                     []string // the diffusion-only flags given
	noEMA                                   bool
}

func main() {
	defer cli.Recover("eval")
	o, err := parse(os.Args[1:])
	if err == pflag.ErrHelp {
		return
	}
	if err != nil {
		cli.Fatal("eval", err)
	}
	ctx, stop := signals.Context()
	err = torch.Do(func() error {
		var err error
		torch.Interruptible(ctx, func() { err = run(ctx, o) })
		return err
	})
	interrupted := ctx.Err() != nil
	stop()
	if interrupted {
		fmt.Fprintln(os.Stderr, "eval: interrupted; nothing written")
		os.Exit(signals.ExitCode)
	}
	if err != nil {
		cli.Fatal("eval", err)
	}
	fmt.Fprintf(os.Stderr, "eval: wrote %s\n", o.out)
}

// newFlags is eval's flag set, bound to o; --guidance, a list, is bound
// to the string it returns.
func newFlags() (*pflag.FlagSet, *options, *string) {
	fs := pflag.NewFlagSet("eval", pflag.ContinueOnError)
	o := &options{}
	fs.StringVar(&o.judge, "judge", "", "classifier checkpoint `file` or run folder (required)")
	fs.StringVar(&o.samples, "samples", "", "a bin/sample output `folder` (with manifest.jsonl)")
	fs.StringVar(&o.checkpoint, "checkpoint", "", "a model checkpoint to sample from instead")
	fs.IntVar(&o.n, "n", 10000, "with --checkpoint: images to generate")
	guidance := fs.String("guidance", "", "with --checkpoint: guidance values, comma-separated (a sweep) (default: the checkpoint config's)")
	cli.SamplingFlags(fs, &o.sampling, "guidance", "strength", "resample") // eval draws from noise
	fs.IntVar(&o.batch, "batch", 0, "with --checkpoint: images per forward pass (default 500 on CUDA, 100 on the CPU)")
	fs.Uint64Var(&o.seed, "seed", 1, "with --checkpoint: random seed")
	fs.BoolVar(&o.noEMA, "no-ema", false, "with --checkpoint: sample with the trained weights even when the checkpoint has a moving average")
	fs.StringVar(&o.device, "device", "auto", "cpu, cuda, cuda:N or auto")
	fs.StringVarP(&o.out, "out", "o", "", "eval.json `path` (default: in the samples folder, else ./eval.json)")
	cli.VersionFlag(fs)
	return fs, o, guidance
}

func parse(args []string) (*options, error) {
	fs, o, guidance := newFlags()
	if err := cli.Parse(fs, args); err != nil {
		return nil, err
	}
	if o.judge == "" || (o.samples == "") == (o.checkpoint == "") {
		return nil, fmt.Errorf("usage: eval --judge CLASSIFIER (--samples DIR | --checkpoint CKPT [--n N --guidance 1,2,3,5])\n\n%s", fs.FlagUsages())
	}
	for _, g := range strings.Split(*guidance, ",") {
		if *guidance == "" {
			break // the checkpoint config's
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(g), 64)
		if err != nil || !(v >= 0 && v <= 50) {
			return nil, fmt.Errorf("--guidance %q: want numbers between 0 and 50, comma-separated", *guidance)
		}
		o.gammas = append(o.gammas, v)
	}
	switch {
	case o.n < 10 || o.n > sample.MaxImages:
		return nil, fmt.Errorf("--n %d: must be between 10 (FID and precision/recall need that many) and %d", o.n, sample.MaxImages)
	case o.batch < 0:
		return nil, fmt.Errorf("--batch %d: must be at least 1 (or 0 for the default)", o.batch)
	case math.IsNaN(o.sampling.Eta):
		return nil, fmt.Errorf("--eta: must be a number")
	}
	o.set = cli.SamplingGiven(fs)
	if o.samples != "" {
		for _, name := range append([]string{"n", "batch", "seed", "no-ema"}, diffusion.SamplingFlags()...) {
			if fs.Changed(name) {
				return nil, fmt.Errorf("--%s is for --checkpoint; --samples measures the images as they are", name)
			}
		}
	}
	if o.out == "" {
		o.out = "eval.json"
		if o.samples != "" {
			o.out = filepath.Join(o.samples, "eval.json")
		}
	}
	if st, err := os.Stat(o.out); err == nil && !st.Mode().IsRegular() {
		return nil, fmt.Errorf("--out %s: not a file (eval writes eval.json there)", o.out)
	} else if st, err := os.Stat(filepath.Dir(o.out)); err != nil || !st.IsDir() {
		return nil, fmt.Errorf("--out %s: its folder does not exist", o.out)
	}
	return o, nil
}

// run loads the judge and its reference, measures the samples or the
// checkpoint's, prints the table and writes eval.json.
func run(ctx context.Context, o *options) error {
	dev, err := torch.ParseDevice(o.device)
	if err != nil {
		return fmt.Errorf("--device: %w", err)
	}
	if o.batch == 0 {
		o.batch = sample.DefaultBatch(dev)
	}
	judge, err := eval.LoadJudge(o.judge, dev)
	if err != nil {
		return err
	}
	defer judge.Free()
	// What is measured is read and checked before the reference is
	// computed (a minute on a CPU), so bad input fails at once.
	var src source
	if o.samples != "" {
		src.imgs, src.labels, err = eval.LoadSamples(o.samples, judge.Geometry)
	} else {
		err = src.load(o, judge, dev)
	}
	if src.model != nil {
		defer models.Free(src.model)
	}
	if err != nil {
		return err
	}
	t0 := time.Now()
	ref, err := judge.NewReference()
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "eval: judge %s: %.2f%% on the test images; real-data floor FID %.3f (%.1f s)\n", judge.Path, 100*ref.Accuracy, ref.Floor, time.Since(t0).Seconds())
	res := result{Protocol: judge.Protocol(), Judge: judge.Path, JudgeAccuracy: ref.Accuracy, FloorFID: ref.Floor}
	if o.samples != "" {
		res.Source = o.samples
		var r *eval.Report
		if r, err = judge.Evaluate(ref, src.imgs, src.labels); err == nil {
			res.Reports = append(res.Reports, r)
		}
	} else {
		err = src.evaluate(ctx, o, judge, ref, &res)
	}
	if err != nil {
		return err
	}
	printTable(res)
	b, _ := json.MarshalIndent(res, "", "  ")
	return atomic.WriteFile(o.out, append(b, '\n'))
}

// source is what an evaluation measures: a samples folder's images, or a
// checkpoint's model to sample from.
type source struct {
	imgs   *torch.Tensor
	labels []int64
	model  models.Model
	ck     *models.Checkpoint
}

// load loads the checkpoint and checks it against the judge and the flags.
func (s *source) load(o *options, judge *eval.Judge, dev torch.Device) error {
	var err error
	if s.model, s.ck, err = models.Load(o.checkpoint, dev, !o.noEMA); err != nil {
		return err
	}
	if err := judge.Geometry.SameAs(s.ck.Geometry); err != nil {
		return fmt.Errorf("the judge %s was trained on %v (%s)", judge.Path, err, s.ck.Path)
	}
	if !s.ck.Entry().Does(models.Diffuses) && len(o.set) > 0 {
		return fmt.Errorf("--%s is for diffusion models; %s does not sample by diffusion", o.set[0], s.ck.Path)
	}
	if def := models.GridSampling(s.ck.Config); def.Sampler != "" {
		o.sampling = o.sampling.Over(def, o.set) // as bin/sample would sample it
		if len(o.gammas) == 0 {
			o.gammas = []float64{o.sampling.Guidance}
		}
	}
	// The sampling is checked now, not after the reference's minute.
	if _, err := s.ck.Entry().NewGenerator(s.model, o.sampling); err != nil {
		return fmt.Errorf("%s: %w", s.ck.Path, err)
	}
	return nil
}

// evaluate samples the checkpoint at each guidance value with a sampling
// job and measures the images.
func (src *source) evaluate(ctx context.Context, o *options, judge *eval.Judge, ref *eval.Reference, res *result) error {
	res.Source = o.checkpoint
	s := o.sampling
	res.Sampler = models.SamplingRecord(src.ck.Config, s)
	if res.Sampler == nil {
		res.Sampler = map[string]any{}
	}
	delete(res.Sampler, "guidance") // each report has its own
	res.Sampler["seed"], res.Sampler["n"], res.Sampler["ema"] = o.seed, o.n, src.ck.HasEMA() && !o.noEMA
	fmt.Fprintf(os.Stderr, "eval: sampling by %s, %v steps, η %g, spacing %s, precision %s, clip_x0 %s, guidance rescale %g, guidance interval %v\n",
		s.Sampler, res.Sampler["steps"], s.Eta, s.Spacing, s.Precision, s.ClipX0, s.GuidanceRescale, res.Sampler["guidance_interval"])
	for _, g := range o.gammas {
		t1 := time.Now()
		progress := func(done, total int) {
			fmt.Fprintf(os.Stderr, "eval: guidance %g: %d/%d images, %.1f images/s\n", g, done, total, float64(done)/time.Since(t1).Seconds())
		}
		s.Guidance = g
		imgs, labels, err := eval.Sample(ctx, src.ck.Entry(), src.model, src.ck.Geometry, o.n, o.seed, s, o.batch, ref.ClassCounts, progress)
		if err != nil {
			return err
		}
		rate := float64(o.n) / time.Since(t1).Seconds()
		r, err := judge.Evaluate(ref, imgs, labels)
		if err != nil {
			return err
		}
		r.Guidance, r.SamplingRate = &g, rate
		res.Reports = append(res.Reports, r)
		fmt.Fprintf(os.Stderr, "eval: guidance %g: %d images in %.1f s\n", g, o.n, time.Since(t1).Seconds())
	}
	return nil
}

func printTable(r result) {
	fmt.Printf("judge accuracy on test images %.4f; floor FID (train vs test) %.3f\n", r.JudgeAccuracy, r.FloorFID)
	fmt.Println("| guidance | images | conditional accuracy (95% CI) | FID | precision | recall | ink > class median | slant > class median |")
	fmt.Println("| --- | --- | --- | --- | --- | --- | --- | --- |")
	for _, rep := range r.Reports {
		g, acc := "-", "-"
		if rep.Guidance != nil {
			g = strconv.FormatFloat(*rep.Guidance, 'g', -1, 64)
		}
		if rep.Accuracy != nil {
			acc = fmt.Sprintf("%.4f (%.4f-%.4f)", rep.Accuracy.Value, rep.Accuracy.Low, rep.Accuracy.High)
		}
		share := func(key string) string {
			if v := rep.Style[key]; v != nil {
				return fmt.Sprintf("%.3f (%.3f-%.3f)", v.Value, v.Low, v.High)
			}
			return "-"
		}
		fmt.Printf("| %s | %d | %s | %.3f | %.3f | %.3f | %s | %s |\n", g, rep.Samples, acc, rep.FID, rep.Precision, rep.Recall,
			share("ink_above_class_median"), share("slant_above_class_median"))
	}
}
