package serve

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/png"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"kakusan/diffusion"
	"kakusan/models"
	"kakusan/sample"
	"kakusan/torch"
)

// tiny is a width-4 conditional diffusion model trained for 2 steps, made
// once for the package's tests.
var tiny = struct {
	once sync.Once
	dir  string
	err  error
}{}

func tinyModel(t *testing.T) string {
	t.Helper()
	tiny.once.Do(func() {
		dir, err := os.MkdirTemp("", "serve-test-")
		if err != nil {
			tiny.err = err
			return
		}
		tiny.dir = trainTiny(t, dir, "run", "mnist_cond.yaml", "unet.width=4", "diffusion.sample_steps=3")
	})
	if tiny.err != nil || tiny.dir == "" {
		t.Fatalf("the shared tiny model did not train: %v", tiny.err)
	}
	return tiny.dir
}

// testOptions are small limits for tests.
func testOptions() Options {
	return Options{Limits: Limits{MaxN: 16, MaxSteps: 100, MaxBody: 1 << 20, MaxImagePixels: 1 << 16, MaxBatch: 8, MaxQueue: 64},
		MaxWait: 5 * time.Millisecond, Timeout: time.Minute, ReadTimeout: 5 * time.Second}
}

// start serves the tiny model with o on a loopback port.
func start(t *testing.T, o Options) (*Server, *httptest.Server) {
	t.Helper()
	m, err := Load(tinyModel(t), "cpu", false, o.MaxBatch)
	if err != nil {
		t.Fatal(err)
	}
	return serveModel(t, m, o)
}

// serveModel serves m with o on a loopback port until the test ends, then
// frees it.
func serveModel(t *testing.T, m *Model, o Options) (*Server, *httptest.Server) {
	t.Helper()
	s := New(m, o)
	ts := startHTTP(t, s)
	t.Cleanup(func() {
		ts.Close()
		s.Drain()
		s.Wait()
		m.Free()
	})
	return s, ts
}

// startHTTP serves s on a loopback port with its own http.Server settings.
func startHTTP(t *testing.T, s *Server) *httptest.Server {
	t.Helper()
	ts := httptest.NewUnstartedServer(nil)
	ts.Config = s.HTTPServer()
	ts.Start()
	return ts
}

// answer is a JSON answer of POST /v1/images.
type answer struct {
	Images []struct {
		Index int
		Seed  uint64
		Label *int64
		Class string
		PNG   []byte // base64 in JSON
	}
	Params map[string]any
	Error  string
}

// post sends body and decodes the JSON answer.
func post(t *testing.T, url string, body any) (int, answer) {
	t.Helper()
	b, _ := json.Marshal(body)
	r, err := http.Post(url+"/v1/images", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	defer r.Body.Close()
	var a answer
	raw, _ := io.ReadAll(r.Body)
	if err := json.Unmarshal(raw, &a); err != nil {
		t.Fatalf("%d: %q is not JSON: %v", r.StatusCode, raw, err)
	}
	return r.StatusCode, a
}

// jobImages makes a sampling job's images with bin/sample's path (the
// entry's generator, sample.Job, a folder of PNGs) and returns each PNG.
// set adjusts the checkpoint's sampling settings (as flags would); edit,
// when not nil, makes the generator (an --init job's).
func jobImages(t *testing.T, n, batch int, seed uint64, labels string, set func(*diffusion.Sampling), edit func(m models.Model, s diffusion.Sampling) (sample.Generator, error)) [][]byte {
	t.Helper()
	dir := t.TempDir()
	var out [][]byte
	err := torch.Do(func() error {
		m, ck, err := models.Load(tinyModel(t), torch.CPU, true)
		if err != nil {
			return err
		}
		defer models.Free(m)
		s := models.GridSampling(ck.Config)
		set(&s)
		job := &sample.Job{N: n, Batch: batch, Seed: seed, Of: 1}
		if job.Labels, err = sample.ParseLabels(labels, n, ck.Geometry.Classes, seed); err != nil {
			return err
		}
		var gen sample.Generator
		if edit != nil {
			gen, err = edit(m, s)
		} else {
			gen, err = ck.Entry().NewGenerator(m, s)
		}
		if err != nil {
			return err
		}
		g := ck.Geometry
		f := &sample.Folder{Dir: dir, Job: job, C: g.C, H: g.H, W: g.W, Meta: map[string]any{}, Names: g.ClassNames}
		if err := f.Open(); err != nil {
			return err
		}
		if _, err := job.Run(t.Context(), gen, f); err != nil {
			return err
		}
		for k := range n {
			b, err := os.ReadFile(filepath.Join(dir, fmt.Sprintf("%06d_label%d.png", k, job.Labels[k])))
			if err != nil {
				return err
			}
			out = append(out, b)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// leaver posts body in the background as a client that will leave: leave
// makes it disconnect, and gone closes once its request has returned.
func leaver(url string, body any) (leave func(), gone <-chan struct{}) {
	ctx, cancel := context.WithCancel(context.Background())
	b, _ := json.Marshal(body)
	hr, _ := http.NewRequestWithContext(ctx, "POST", url+"/v1/images", bytes.NewReader(b))
	done := make(chan struct{})
	go func() {
		defer close(done)
		if r, err := http.DefaultClient.Do(hr); err == nil {
			r.Body.Close()
		}
	}()
	return cancel, done
}

// sameAsJob reports each image of an answer that is not its job's PNG,
// byte for byte.
func sameAsJob(t *testing.T, a answer, want [][]byte) {
	t.Helper()
	for k, im := range a.Images {
		if !bytes.Equal(im.PNG, want[k]) {
			t.Errorf("image %d differs from its job's by %d grey levels", k, apart(t, im.PNG, want[k]))
		}
	}
}

// grey decodes a one-channel PNG's pixels.
func grey(t *testing.T, b []byte) []uint8 {
	t.Helper()
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	g, ok := img.(*image.Gray)
	if !ok {
		t.Fatalf("a %T, want grey", img)
	}
	return g.Pix
}

// apart is the largest difference in grey levels between two PNGs.
func apart(t *testing.T, a, b []byte) int {
	t.Helper()
	pa, pb := grey(t, a), grey(t, b)
	d := 0
	for i := range pa {
		d = max(d, int(pa[i])-int(pb[i]), int(pb[i])-int(pa[i]))
	}
	return d
}

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// greyPNG encodes a w×h grey image whose pixel (x, y) is f(x, y).
func greyPNG(w, h int, f func(x, y int) uint8) []byte {
	img := image.NewGray(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Pix[y*w+x] = f(x, y)
		}
	}
	var buf bytes.Buffer
	png.Encode(&buf, img)
	return buf.Bytes()
}
