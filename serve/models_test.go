package serve

import (
	"bytes"
	"net/http"
	"path/filepath"
	"strings"
	"testing"

	"kakusan/models"
	"kakusan/train"
)

// trainTiny trains configs/<config> for 2 steps of 32 of 256 images into
// dir/name and returns the run folder.
func trainTiny(t *testing.T, dir, name, config string, sets ...string) string {
	t.Helper()
	c, err := models.LoadConfig("../configs/"+config, append([]string{"data.subset=256", "data.test_subset=64", "device=cpu",
		"train.batch_size=32", "train.max_steps=2", "samples=10"}, sets...))
	if err != nil {
		t.Fatal(err)
	}
	r, err := train.Train(c, train.Options{Out: filepath.Join(dir, name)})
	if err != nil {
		t.Fatal(err)
	}
	return r.Dir
}

// serveRun serves a run folder with the test limits.
func serveRun(t *testing.T, run string) string {
	t.Helper()
	o := testOptions()
	m, err := Load(run, "cpu", false, o.MaxBatch)
	if err != nil {
		t.Fatal(err)
	}
	s := New(m, o)
	ts := startHTTP(t, s)
	t.Cleanup(func() { ts.Close(); s.Drain(); s.Wait(); m.Free() })
	return ts.URL
}

// The other models a server takes: a VAE (its requests' images are
// bin/sample's; edits and sampling settings are refused), a prompted
// diffusion model (a class word sets the labels) and a latent one
// (inpainting keeps the known pixels exactly: pasted back after the
// decoder); the autoencoder, which draws nothing, is refused.
func TestOtherModels(t *testing.T) {
	dir := t.TempDir()
	init := greyPNG(28, 28, func(x, y int) uint8 { return uint8((x*7 + y*3) % 256) })
	top := greyPNG(28, 28, func(x, y int) uint8 { return map[bool]uint8{true: 255}[y < 12] })

	vae := serveRun(t, trainTiny(t, dir, "vae", "mnist_vae.yaml"))
	code, a := post(t, vae, map[string]any{"n": 3, "seed": 4})
	if code != http.StatusOK || len(a.Images) != 3 || a.Images[0].Label != nil {
		t.Fatalf("a VAE: %d %s, %d images", code, a.Error, len(a.Images))
	}
	for _, c := range []struct {
		body map[string]any
		want string
	}{
		{map[string]any{"init": b64(init)}, "init: image-to-image and inpainting are for diffusion models"},
		{map[string]any{"steps": 5}, "steps is for diffusion models"},
		{map[string]any{"labels": "3"}, "labels"},
	} {
		if code, a := post(t, vae, c.body); code != http.StatusBadRequest || !strings.Contains(a.Error, c.want) {
			t.Errorf("a VAE, %v: %d %q, want 400 and %q", c.body, code, a.Error, c.want)
		}
	}

	ae := trainTiny(t, dir, "ae", "mnist_autoencoder.yaml")
	prompted := serveRun(t, trainTiny(t, dir, "prompt", "mnist_prompt.yaml", "diffusion.autoencoder="+ae, "unet.width=8", "diffusion.sample_steps=2"))
	code, a = post(t, prompted, map[string]any{"n": 2, "prompt": "bold seven"})
	if code != http.StatusOK || len(a.Images) != 2 || *a.Images[0].Label != 7 || a.Params["prompt"] != "bold" {
		t.Errorf("a prompted model, \"bold seven\": %d %s %v", code, a.Error, a.Params)
	}
	if code, a := post(t, prompted, map[string]any{"prompt": "bold seven", "labels": "3"}); code != http.StatusBadRequest || !strings.Contains(a.Error, "one or the other") {
		t.Errorf("a prompt naming a class with labels: %d %q", code, a.Error)
	}
	if code, a := post(t, prompted, map[string]any{"prompt": "purple"}); code != http.StatusBadRequest || !strings.Contains(a.Error, "prompt") {
		t.Errorf("a prompt of unknown words: %d %q", code, a.Error)
	}

	if _, err := Load(ae, "cpu", false, 8); err == nil || !strings.Contains(err.Error(), "does not draw images") {
		t.Errorf("serving an autoencoder: %v", err)
	}
	latent := serveRun(t, trainTiny(t, dir, "latent", "mnist_latent.yaml", "diffusion.autoencoder="+ae, "unet.width=8", "diffusion.sample_steps=2"))
	code, a = post(t, latent, map[string]any{"n": 2, "labels": "1", "init": b64(init), "mask": b64(top)})
	if code != http.StatusOK {
		t.Fatalf("a latent model, inpainting: %d %s", code, a.Error)
	}
	want := grey(t, init)
	for k, im := range a.Images {
		got := grey(t, im.PNG)
		if !bytes.Equal(got[12*28:], want[12*28:]) {
			t.Errorf("a latent model's inpainting %d changed the kept pixels", k)
		}
		if bytes.Equal(got[:12*28], want[:12*28]) {
			t.Errorf("a latent model's inpainting %d kept the painted pixels", k)
		}
	}
	if code, a := post(t, latent, map[string]any{"n": 2, "init": b64(init), "strength": 0.5}); code != http.StatusOK {
		t.Errorf("a latent model, image-to-image: %d %s", code, a.Error)
	}
}
