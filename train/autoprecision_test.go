package train

import (
	"bytes"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
)

// Resolving train.precision and sample_precision auto by measurement
// leaves no trace: the run that measured, a run that read the choice from
// the cache and a run told that policy outright train the same losses
// (BatchNorm's running statistics did not move, no random number was
// drawn) and draw the same final grid. Training's and sampling's choices
// are separate measurements and may differ (CI under libtorch 2.6 picked
// fp32 for training and bf16 for the grid).
func TestMeasuredAutoTrainsAsItsChoice(t *testing.T) {
	t.Setenv("KAKUSAN_CACHE", t.TempDir())
	run := func(sets ...string) ([]float64, []byte, string) {
		dir, losses, log := shortRun(t, sets...)
		grid, err := os.ReadFile(filepath.Join(dir, "samples", "final.png"))
		if err != nil {
			t.Fatal(err)
		}
		return losses, grid, log
	}
	measured, mgrid, log := run("train.precision=auto", "diffusion.sample_precision=auto")
	cached, cgrid, _ := run("train.precision=auto", "diffusion.sample_precision=auto")
	chosen := regexp.MustCompile(`on cpu \((fp32|bf16)\)`).FindStringSubmatch(log)
	if chosen == nil {
		t.Fatalf("the run does not say its precision:\n%s", log)
	}
	// The grid's auto is its own measurement (a sampling key, logged to
	// stderr), read from the cache here: the told run differs from the
	// measuring one only in how training's policy was reached.
	told, tgrid, _ := run("train.precision="+chosen[1], "diffusion.sample_precision=auto")
	if len(measured) < 2 || !slices.Equal(measured, cached) || !slices.Equal(measured, told) {
		t.Errorf("losses: measured %v, cached %v, told %s %v", measured, cached, chosen[1], told)
	}
	if !bytes.Equal(mgrid, cgrid) {
		t.Errorf("the final grid differs between the measuring run and the cached one")
	}
	if !bytes.Equal(mgrid, tgrid) {
		t.Errorf("the final grid differs between auto and %s", chosen[1])
	}
	t.Logf("auto chose %s here: %s", chosen[1], regexp.MustCompile(`precision auto: [^\n]*`).FindAllString(log, -1))
}
