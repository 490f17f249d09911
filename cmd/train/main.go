// Command train fits or trains the model a YAML config describes and writes
// a run folder (config.yaml, metrics.jsonl, parameters, plots).
//
//	train -config configs/gmm_old_faithful.yaml
//	train --config configs/normal_height.yaml --out runs/h --set seed=3
//	train -config configs/mnist_vae.yaml --device cuda
//	train --resume runs/mnist_vae        (after an interruption)
//	torchrun --nproc_per_node 8 --no_python bin/train -config configs/mnist_cond.yaml
//	                                     (data-parallel, one process per GPU)
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"kakusan/cmd/internal/cli"
	"kakusan/eval"
	"kakusan/internal/signals"
	"kakusan/models"
	"kakusan/torch"
	"kakusan/train"
)

// flags are the command line's values.
type flags struct {
	config, out, device, resume string
	overwrite, autoResume       bool
	sets                        []string
	seed                        uint64
}

// newFlags is train's flag set, bound to f.
func newFlags() (*pflag.FlagSet, *flags) {
	f := &flags{}
	fs := pflag.NewFlagSet("train", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: train -config FILE [flags]\n\n%s", fs.FlagUsages())
	}
	fs.StringVarP(&f.config, "config", "c", "", "YAML config `file` (required)")
	fs.StringVarP(&f.out, "out", "o", "", "run `folder` (default: out_dir, else runs/<name>)")
	fs.BoolVar(&f.overwrite, "overwrite", false, "reuse a run folder that already holds a run")
	fs.StringArrayVar(&f.sets, "set", nil, "override a config value, `key=value` (e.g. gmm.components=3); repeatable")
	fs.Uint64Var(&f.seed, "seed", 0, "override the config's seed")
	fs.StringVar(&f.device, "device", "", "override the config's device: cpu, cuda, cuda:N or auto")
	fs.StringVar(&f.resume, "resume", "", "continue the run in this `folder` from its latest checkpoint (its config.yaml unless -config is given)")
	fs.BoolVar(&f.autoResume, "auto-resume", false, "with --out: continue the run in that folder if it holds a checkpoint (a restarted job), else start it")
	cli.VersionFlag(fs)
	return fs, f
}

// scorer is the judge of evaluation during training (train.eval_every).
func scorer(path string, dev torch.Device, g models.Geometry) (train.Scorer, error) {
	return eval.NewScorer(path, dev, g)
}

func main() {
	defer cli.Recover("train")
	fs, f := newFlags()
	if err := cli.Parse(fs, os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			return
		}
		cli.Fatal("train", err)
	}
	if f.autoResume {
		if f.out == "" || f.resume != "" || f.overwrite {
			cli.Fatal("train", fmt.Errorf("--auto-resume needs --out (the run folder a restarted job continues), without --resume or --overwrite"))
		}
		// Any checkpoint means resume (a missing latest link is then an
		// error, not a reason to start over); none means a run killed before
		// its first, with nothing worth keeping.
		if steps, _ := filepath.Glob(filepath.Join(f.out, "checkpoints", "step-*.safetensors")); len(steps) > 0 {
			f.resume, f.out = f.out, ""
		} else {
			f.overwrite = true
		}
	}
	if f.config == "" && f.resume != "" {
		f.config = filepath.Join(f.resume, "config.yaml")
	}
	if f.config == "" {
		fs.Usage()
		os.Exit(2)
	}
	if f.device != "" {
		f.sets = append(f.sets, "device="+f.device)
	}
	if fs.Changed("seed") {
		f.sets = append(f.sets, fmt.Sprintf("seed=%d", f.seed))
	}
	if f.resume != "" && (f.out != "" || f.overwrite) {
		cli.Fatal("train", fmt.Errorf("--resume continues the run in its own folder: --out and --overwrite do not apply"))
	}
	c, err := models.LoadConfig(f.config, f.sets)
	if err != nil {
		cli.Fatal("train", err)
	}
	// A launcher (torchrun, a PyTorchJob) makes this one rank of a
	// data-parallel job through RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
	dist, err := train.DistFromEnv(os.Getenv)
	if err != nil {
		cli.Fatal("train", err)
	}
	r, err := train.Train(c, train.Options{Out: f.out, Overwrite: f.overwrite, Resume: f.resume, Log: os.Stdout, Dist: dist, Scorer: scorer})
	if errors.Is(err, signals.ErrInterrupted) {
		os.Exit(signals.ExitCode)
	}
	if err != nil {
		if r != nil {
			cli.Fatal("train", fmt.Errorf("%w (run folder %s)", err, r.Dir))
		}
		cli.Fatal("train", err)
	}
	if r != nil { // rank 0, or the only process
		fmt.Printf("run folder: %s\n", r.Dir)
	}
}
