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
// drawn) and draw the same final grid.
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
	told, tgrid, _ := run("train.precision="+chosen[1], "diffusion.sample_precision="+chosen[1])
	if len(measured) < 2 || !slices.Equal(measured, cached) || !slices.Equal(measured, told) {
		t.Errorf("losses: measured %v, cached %v, told %s %v", measured, cached, chosen[1], told)
	}
	if !bytes.Equal(mgrid, cgrid) {
		t.Errorf("the final grid differs between the measuring run and the cached one")
	}
	if chosen[1] == "fp32" && !bytes.Equal(mgrid, tgrid) { // the grid's own auto may differ from training's
		t.Errorf("the final grid differs between auto and fp32")
	}
	t.Logf("auto chose %s here: %s", chosen[1], regexp.MustCompile(`precision auto: [^\n]*`).FindAllString(log, -1))
}
