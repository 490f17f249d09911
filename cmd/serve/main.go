// Command serve answers HTTP requests with a trained image model:
//
//	serve --checkpoint runs/mnist_cond_cpu [--addr 127.0.0.1:8080]
//
// POST /v1/images draws images (JSON in: n, labels or prompt, seed and the
// sampling settings of bin/sample; PNGs out), redraws an input image
// (init, strength) or inpaints it (init, mask, resample). Concurrent
// requests are merged into sampler batches of up to --max-batch images,
// waiting at most --max-wait. GET / is a web page; GET /healthz, /readyz,
// /metrics (Prometheus) and /v1/model watch the server. SIGTERM (or ^C)
// drains it: no new requests, the queued ones finish within --drain, then
// it exits 0. docs/serving.md is the guide.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/spf13/pflag"

	"kakusan/cmd/internal/cli"
	"kakusan/serve"
)

// flags are the command line's values.
type flags struct {
	checkpoint, addr, device, logFormat string
	noEMA, warm                         bool
	o                                   serve.Options
	drain                               time.Duration
}

func newFlags() (*pflag.FlagSet, *flags) {
	f := &flags{}
	fs := pflag.NewFlagSet("serve", pflag.ContinueOnError)
	fs.StringVar(&f.checkpoint, "checkpoint", "", "the model: a checkpoint `file` or a run folder (its latest)")
	fs.StringVar(&f.addr, "addr", "127.0.0.1:8080", "listen on this `host:port` (0.0.0.0:8080 for every interface, as in a container)")
	fs.StringVar(&f.device, "device", "auto", "cpu, cuda, cuda:N or auto")
	fs.BoolVar(&f.noEMA, "no-ema", false, "serve the trained weights even when the checkpoint has a moving average")
	fs.BoolVar(&f.warm, "warm", true, "before serving, run the model once at every batch size up to --max-batch, so that libtorch's per-shape caches are built before the first request (flat memory, no slow first batches; about --max-batch² images' network passes)")
	o := &f.o
	fs.IntVar(&o.MaxBatch, "max-batch", 64, "images in one sampler batch: concurrent requests are merged up to it")
	fs.DurationVar(&o.MaxWait, "max-wait", 50*time.Millisecond, "how long a batch waits to fill, from its oldest request's arrival or the last batch's end (when clients are concurrent)")
	fs.IntVar(&o.MaxQueue, "queue", 512, "images waiting at most; a request that would overfill the queue gets 429 with Retry-After")
	fs.IntVar(&o.MaxN, "max-n", 64, "images a request at most")
	fs.IntVar(&o.MaxSteps, "max-steps", 1000, "sampler steps a request at most, Heun's two passes a step and inpainting's resamplings counted (ddpm: the model's timesteps)")
	fs.Int64Var(&o.MaxBody, "max-body", 8<<20, "a request body's bytes at most")
	fs.IntVar(&o.MaxImagePixels, "max-image-pixels", 4<<20, "an input image's pixels at most, before it is resized")
	fs.DurationVar(&o.Timeout, "timeout", 2*time.Minute, "a request's deadline, queue included: past it the answer is 504 and its images are dropped")
	fs.DurationVar(&o.ReadTimeout, "read-timeout", 30*time.Second, "the time a client may take to send its request, body included")
	fs.DurationVar(&f.drain, "drain", 30*time.Second, "on SIGTERM, how long the requests in flight have to finish")
	fs.StringVar(&f.logFormat, "log-format", "text", "the log's format on stderr: text or json")
	cli.VersionFlag(fs)
	return fs, f
}

func main() {
	defer cli.Recover("serve")
	fs, f := newFlags()
	if err := cli.Parse(fs, os.Args[1:]); err != nil {
		if err == pflag.ErrHelp {
			return
		}
		cli.Fatal("serve", err)
	}
	if err := run(f); err != nil {
		cli.Fatal("serve", err)
	}
}

// check refuses flags that cannot work.
func (f *flags) check() error {
	o := f.o
	switch {
	case f.checkpoint == "":
		return fmt.Errorf("--checkpoint: give the model to serve (a checkpoint file or a run folder)")
	case o.MaxBatch < 1 || o.MaxBatch > 4096:
		return fmt.Errorf("--max-batch must be 1-4096, got %d", o.MaxBatch)
	case o.MaxN < 1 || o.MaxN > o.MaxQueue:
		return fmt.Errorf("--max-n must be 1 to --queue (%d), got %d", o.MaxQueue, o.MaxN)
	case o.MaxQueue > 1<<20:
		return fmt.Errorf("--queue must be at most %d, got %d", 1<<20, o.MaxQueue)
	case o.MaxSteps < 1:
		return fmt.Errorf("--max-steps must be at least 1, got %d", o.MaxSteps)
	case o.MaxBody < 1024:
		return fmt.Errorf("--max-body must be at least 1024 bytes, got %d", o.MaxBody)
	case o.MaxImagePixels < 1:
		return fmt.Errorf("--max-image-pixels must be at least 1, got %d", o.MaxImagePixels)
	case o.MaxWait < 0 || o.Timeout <= 0 || f.drain < 0 || o.ReadTimeout <= 0:
		return fmt.Errorf("--max-wait and --drain must not be negative, --timeout and --read-timeout must be positive")
	case f.logFormat != "text" && f.logFormat != "json":
		return fmt.Errorf("--log-format must be text or json, got %q", f.logFormat)
	}
	return nil
}

func run(f *flags) error {
	if err := f.check(); err != nil {
		return err
	}
	var h slog.Handler = slog.NewTextHandler(os.Stderr, nil)
	if f.logFormat == "json" {
		h = slog.NewJSONHandler(os.Stderr, nil)
	}
	log := slog.New(h)
	f.o.Log = log
	// Listen first: a port in use fails before minutes of loading.
	ln, err := net.Listen("tcp", f.addr)
	if err != nil {
		return fmt.Errorf("--addr: %w", err)
	}
	defer ln.Close()
	t0 := time.Now()
	m, err := serve.Load(f.checkpoint, f.device, f.noEMA, f.o.MaxBatch)
	if err != nil {
		return err
	}
	if f.warm {
		log.Info("warming", "batch_sizes", fmt.Sprintf("1-%d", f.o.MaxBatch))
		took := m.Warm(f.o.MaxBatch)
		log.Info("warmed", "seconds", took.Seconds())
	}
	s := serve.New(m, f.o)
	g := m.Geometry()
	log.Info("serving", "addr", ln.Addr().String(), "checkpoint", f.checkpoint, "geometry", fmt.Sprintf("%dx%dx%d", g.C, g.H, g.W),
		"classes", g.Classes, "load_seconds", time.Since(t0).Seconds(), "max_batch", f.o.MaxBatch, "max_wait", f.o.MaxWait)
	srv := s.HTTPServer()
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, os.Interrupt)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	select {
	case err := <-served:
		m.Free()
		return err
	case got := <-sig:
		log.Info("draining", "signal", got.String(), "drain", f.drain)
	}
	s.Drain()
	ctx, cancel := context.WithTimeout(context.Background(), f.drain)
	defer cancel()
	if err := srv.Shutdown(ctx); errors.Is(err, context.DeadlineExceeded) {
		// A batch may still be running on the model: the process ends
		// without freeing it.
		log.Warn("drain time over: closing the requests still in flight", "drain", f.drain)
		srv.Close()
		return nil
	}
	s.Wait()
	m.Free()
	log.Info("drained: every request answered")
	return nil
}
