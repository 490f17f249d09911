// Package signals turns SIGINT and SIGTERM into a cancelled context, so
// every long phase of a command (training, grids, sampling jobs,
// evaluation) can stop cleanly and the command exit with status 130.
package signals

import (
	"context"
	"errors"
	"os"
	"os/signal"
	"syscall"
)

// ExitCode is the status a command exits with after an interruption, as
// shells report a process ended by SIGINT.
const ExitCode = 130

// ErrInterrupted reports work stopped by a signal after leaving what it
// wrote whole: a training run that saved a checkpoint, a sampling job whose
// finished batches are written (running it again completes it). Commands
// exit with ExitCode on it.
var ErrInterrupted = errors.New("signals: interrupted")

// Context is cancelled by the first SIGINT or SIGTERM; a second one kills
// the process as usual. stop releases the signals.
func Context() (ctx context.Context, stop func()) {
	ctx, cancel := context.WithCancel(context.Background())
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, os.Interrupt, syscall.SIGTERM)
	go func() {
		select {
		case <-ch:
			cancel()
			signal.Stop(ch)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { signal.Stop(ch); cancel() }
}
