// Command train fits or trains the model a YAML config describes and writes
// a run folder (config.yaml, metrics.jsonl, parameters, plots).
//
//	train -config configs/gmm_old_faithful.yaml
//	train --config configs/normal_height.yaml --out runs/h --set seed=3
//	train -config configs/mnist_vae.yaml --device cuda
//	train --resume runs/mnist_vae        (after an interruption)
package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/pflag"

	"kakusan/cmd/internal/cli"
	"kakusan/internal/signals"
	"kakusan/models"
	"kakusan/train"
)

func main() {
	defer cli.Recover("train")
	fs := pflag.NewFlagSet("train", pflag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintf(os.Stderr, "usage: train -config FILE [flags]\n\n%s", fs.FlagUsages())
	}
	config := fs.StringP("config", "c", "", "YAML config `file` (required)")
	out := fs.StringP("out", "o", "", "run `folder` (default: out_dir, else runs/<name>)")
	overwrite := fs.Bool("overwrite", false, "reuse a run folder that already holds a run")
	var sets []string
	fs.StringArrayVar(&sets, "set", nil, "override a config value, `key=value` (e.g. gmm.components=3); repeatable")
	seed := fs.Uint64("seed", 0, "override the config's seed")
	device := fs.String("device", "", "override the config's device: cpu, cuda, cuda:N or auto")
	resume := fs.String("resume", "", "continue the run in this `folder` from its latest checkpoint (its config.yaml unless -config is given)")
	if err := cli.Parse(fs, os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			return
		}
		cli.Fatal("train", err)
	}
	if *config == "" && *resume != "" {
		*config = filepath.Join(*resume, "config.yaml")
	}
	if *config == "" {
		fs.Usage()
		os.Exit(2)
	}
	if *device != "" {
		sets = append(sets, "device="+*device)
	}
	if fs.Changed("seed") {
		sets = append(sets, fmt.Sprintf("seed=%d", *seed))
	}
	if *resume != "" && (*out != "" || *overwrite) {
		cli.Fatal("train", fmt.Errorf("--resume continues the run in its own folder: --out and --overwrite do not apply"))
	}
	c, err := models.LoadConfig(*config, sets)
	if err != nil {
		cli.Fatal("train", err)
	}
	// A launcher (torchrun, a PyTorchJob) makes this one rank of a
	// data-parallel job through RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT.
	dist, err := train.DistFromEnv(os.Getenv)
	if err != nil {
		cli.Fatal("train", err)
	}
	r, err := train.Train(c, train.Options{Out: *out, Overwrite: *overwrite, Resume: *resume, Log: os.Stdout, Dist: dist})
	if errors.Is(err, train.ErrInterrupted) {
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
