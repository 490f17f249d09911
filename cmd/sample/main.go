// Command sample draws samples from a trained or fitted model.
//
// For the classical models (normal, mvn, gmm) it reads a run's params.json
// and writes N samples as CSV:
//
//	sample --run runs/gmm_old_faithful --n 1000 --seed 1 --out samples.csv
//
// For the neural models it loads a checkpoint (a file, or a run folder's
// latest) and writes one PNG per image, grid.png, manifest.jsonl and, for
// the VAEs, reconstructions.png and interpolation.png:
//
//	sample --checkpoint runs/mnist_vae --n 64 --seed 1 --out samples/vae
//
// For diffusion models it runs a batch sampling job: one PNG per image
// (label in the name), grid.png (a row per class) and manifest.jsonl:
//
//	sample --checkpoint runs/mnist_cond/checkpoints/latest.safetensors --n 10000 \
//	    --labels 0-9 --guidance 3 --sampler ddim --steps 50 --batch 500 --seed 1 --out samples/
//
// With --init every image redraws one picture (image-to-image), and with
// --mask only its white region (inpainting):
//
//	sample --checkpoint runs/mnist_cond --init digit.png --strength 0.6 --labels 3 --n 8
//	sample --checkpoint runs/mnist_cond --init digit.png --mask top.png --resample 5 --n 8
//
// --shard i/n runs one machine's part; the shards together make exactly the
// unsharded job's images. Without --shard the part comes from a Kubernetes
// Indexed Job (JOB_COMPLETION_INDEX, with JOB_COMPLETIONS set in its spec)
// or a launcher's RANK and WORLD_SIZE. A restarted job skips the images
// already written. When every shard is done, --merge joins their manifests
// and checks that every image is there exactly once:
//
//	sample --merge samples/
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/spf13/pflag"

	"kakusan/cmd/internal/cli"
	"kakusan/diffusion"
	"kakusan/internal/atomic"
	"kakusan/internal/signals"
	"kakusan/models/gaussian"
	"kakusan/sample"
)

// flags are the command line's values.
type flags struct {
	run, params, out, shard, merge string
	n                              int
	seed                           uint64
	j                              neuralJob
}

// newFlags is sample's flag set, bound to f.
func newFlags() (*pflag.FlagSet, *flags) {
	f := &flags{}
	fs := pflag.NewFlagSet("sample", pflag.ContinueOnError)
	fs.StringVar(&f.run, "run", "", "run `folder` holding params.json")
	fs.StringVar(&f.params, "params", "", "params.json `file` (instead of --run)")
	fs.IntVarP(&f.n, "n", "n", 1000, "number of samples")
	fs.Uint64Var(&f.seed, "seed", 1, "random seed")
	fs.StringVarP(&f.out, "out", "o", "", "output: a CSV `file` for classical models (default stdout), a folder for neural ones (default samples)")
	j := &f.j
	fs.StringVar(&j.checkpoint, "checkpoint", "", "neural model checkpoint `file` or run folder")
	fs.StringVar(&j.device, "device", "auto", "neural models: cpu, cuda, cuda:N or auto")
	fs.IntVar(&j.batch, "batch", 0, "neural models: images per forward pass (default 500 on CUDA, 100 on the CPU; shards of one job must use the same)")
	fs.StringVar(&j.labels, "labels", "all", "conditional models: the `labels`, cycled over the images: all (every class), 0-9, 3,7 or random")
	cli.SamplingFlags(fs, &j.sampling)
	fs.StringVar(&f.shard, "shard", "auto", "this machine's part of the job, `i/n`; auto: JOB_COMPLETION_INDEX of JOB_COMPLETIONS (a Kubernetes Indexed Job), else RANK of WORLD_SIZE, else 0/1")
	fs.StringVar(&f.merge, "merge", "", "join the shard manifests of a finished job in this `folder` into manifest.jsonl, checking every image is there once")
	fs.BoolVar(&j.overwrite, "overwrite", false, "neural models: start the job afresh in an --out folder that holds another job's images (they are removed); a folder that holds no job is never written into")
	fs.BoolVar(&j.noEMA, "no-ema", false, "sample with the trained weights even when the checkpoint has a moving average")
	fs.StringVar(&j.init, "init", "", "diffusion models: image-to-image (SDEdit) from this PNG or JPEG `file`, resized and cropped as the training images were: every image of the job redraws it, as far as --strength says")
	fs.StringVar(&j.mask, "mask", "", "with --init: inpainting; a PNG or JPEG `file`, white where the model paints, black where --init is kept (see --resample)")
	cli.VersionFlag(fs)
	return fs, f
}

func main() {
	defer cli.Recover("sample")
	fs, f := newFlags()
	if err := cli.Parse(fs, os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			return
		}
		cli.Fatal("sample", err)
	}
	j := f.j
	if f.merge != "" {
		fs.Visit(func(fl *pflag.Flag) {
			if fl.Name != "merge" {
				cli.Fatal("sample", fmt.Errorf("--merge takes no other flags (got --%s)", fl.Name))
			}
		})
		k, err := sample.Merge(f.merge)
		if err != nil {
			cli.Fatal("sample", fmt.Errorf("--merge: %w", err))
		}
		fmt.Printf("merged %d images into %s\n", k, filepath.Join(f.merge, "manifest.jsonl"))
		return
	}
	if j.checkpoint != "" {
		j.out, j.n, j.seed = f.out, f.n, f.seed
		if j.out == "" {
			j.out = "samples"
		}
		j.set = cli.SamplingGiven(fs)
		if fs.Changed("labels") {
			j.set = append(j.set, "labels")
		}
		var err error
		if j.shard, j.of, err = resolveShard(f.shard, os.Getenv); err == nil {
			ctx, stop := signals.Context()
			err = runNeural(ctx, j)
			stop()
		}
		if errors.Is(err, signals.ErrInterrupted) {
			os.Exit(signals.ExitCode)
		}
		if err != nil {
			cli.Fatal("sample", err)
		}
		return
	}
	for _, name := range append([]string{"device", "batch", "labels", "shard", "no-ema", "init", "mask"}, diffusion.SamplingFlags()...) {
		if fs.Changed(name) {
			cli.Fatal("sample", fmt.Errorf("--%s is for neural checkpoints (--checkpoint); a classical model's samples are drawn in one go", name))
		}
	}
	if err := classical(f.run, f.params, f.out, f.n, f.seed); err != nil {
		cli.Fatal("sample", err)
	}
}

// classical writes n samples of a classical model's params.json as CSV.
func classical(run, params, out string, n int, seed uint64) error {
	if n < 1 || n > 100_000_000 {
		return fmt.Errorf("--n must be between 1 and 100000000, got %d", n)
	}
	path := params
	if path == "" {
		if run == "" {
			return fmt.Errorf("give --checkpoint (neural models), or --run FOLDER or --params FILE (classical ones)")
		}
		path = filepath.Join(run, "params.json")
	}
	p, err := gaussian.LoadParams(path)
	if err != nil {
		return err
	}
	write := func(w io.Writer) error {
		bw := bufio.NewWriter(w)
		if err := writeCSV(bw, p, n, seed); err != nil {
			return err
		}
		return bw.Flush()
	}
	if out == "" || out == "-" {
		return write(os.Stdout)
	}
	if a, b := filepath.Clean(out), filepath.Clean(path); a == b || sameFile(a, b) {
		return fmt.Errorf("--out %s is the parameters file the samples are drawn from", out)
	}
	return atomic.Write(out, write) // a failed write leaves an earlier file whole
}

// sameFile reports whether two paths name one existing file.
func sameFile(a, b string) bool {
	sa, err1 := os.Stat(a)
	sb, err2 := os.Stat(b)
	return err1 == nil && err2 == nil && os.SameFile(sa, sb)
}

// resolveShard is --shard: "i/n", or auto: a Kubernetes Indexed Job's
// JOB_COMPLETION_INDEX of JOB_COMPLETIONS (which its spec sets: Kubernetes
// gives pods only the index), else a launcher's RANK of WORLD_SIZE, else the
// whole job.
func resolveShard(s string, getenv func(string) string) (int, int, error) {
	if s != "auto" {
		return parseShard(s)
	}
	for _, v := range [][2]string{{"JOB_COMPLETION_INDEX", "JOB_COMPLETIONS"}, {"RANK", "WORLD_SIZE"}} {
		i, n := getenv(v[0]), getenv(v[1])
		if i == "" {
			continue
		}
		if n == "" {
			return 0, 0, fmt.Errorf("%s=%s but %s is not set: set it to the job's number of shards (or give --shard i/n)", v[0], i, v[1])
		}
		a, b, err := parseShard(i + "/" + n)
		if err != nil {
			return 0, 0, fmt.Errorf("%s=%q of %s=%q: want 0 <= index < count", v[0], i, v[1], n)
		}
		return a, b, nil
	}
	return 0, 1, nil
}

// parseShard reads "i/n" with 0 <= i < n.
func parseShard(s string) (int, int, error) {
	a, b, ok := strings.Cut(s, "/")
	i, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || n < 1 || i < 0 || i >= n {
		return 0, 0, fmt.Errorf("--shard %q: want i/n with 0 <= i < n, e.g. 0/4", s)
	}
	return i, n, nil
}

// writeCSV writes a header and n samples; mixtures add the component drawn.
func writeCSV(w io.Writer, p *gaussian.Params, n int, seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 0x73616d706c65))
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	row := func(x []float64) string {
		s := ""
		for i, v := range x {
			if i > 0 {
				s += ","
			}
			s += f(v)
		}
		return s
	}
	header := func(d int, extra string) string {
		s := ""
		for i := range d {
			if i > 0 {
				s += ","
			}
			s += "x" + strconv.Itoa(i)
		}
		return s + extra
	}
	var err error
	put := func(line string) {
		if err == nil {
			_, err = fmt.Fprintln(w, line)
		}
	}
	switch p.Model {
	case "normal":
		put("x0")
		for _, v := range p.Normal.Sample(rng, n) {
			put(f(v))
		}
	case "mvn":
		put(header(p.MVN.Dim(), ""))
		for _, x := range p.MVN.Sample(rng, n) {
			put(row(x))
		}
	case "gmm":
		pts, labels := p.GMM.Sample(rng, n)
		put(header(len(pts[0]), ",component"))
		for i, x := range pts {
			put(row(x) + "," + strconv.Itoa(labels[i]))
		}
	}
	return err
}
