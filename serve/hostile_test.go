package serve

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// Hostile requests each get a clear 4xx naming the problem, and a client
// making good requests all the while gets its job's images.
func TestHostileRequests(t *testing.T) {
	_, ts := start(t, testOptions())
	init := greyPNG(28, 28, func(x, y int) uint8 { return uint8(x * 9) })
	small := greyPNG(10, 10, func(x, y int) uint8 { return 255 })
	truncated := init[:len(init)/2]
	huge := greyPNG(1000, 1000, func(x, y int) uint8 { return 0 }) // over the test's 65,536 pixels
	good := map[string]any{"n": 3, "labels": "1", "seed": 7, "precision": "fp32"}
	want := jobImages(t, 3, 3, 7, "1", fp32, nil)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var goodRuns int
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			code, a := post(t, ts.URL, good)
			if code != http.StatusOK {
				t.Errorf("the good client: %d %s", code, a.Error)
				return
			}
			sameAsJob(t, a, want)
			goodRuns++
		}
	})
	for _, c := range []struct {
		body string
		code int
		want string
	}{
		{`{"n": 1000000000}`, 400, "n: must be 1-16"},
		{`{"n": -1}`, 400, "n: must be 1-16"},
		{`{"n": 1.5}`, 400, "n: want a whole number"},
		{`{"n": "NaN"}`, 400, "n: want a whole number"},
		{`{"guidance": "NaN"}`, 400, "guidance: want a number"},
		{`{"guidance": 1e999}`, 400, "guidance"},
		{`{"guidance": -3}`, 400, "guidance: must be in [0, 50]"},
		{`{"steps": -3}`, 400, "steps"},
		{`{"steps": 100000}`, 400, "steps"},
		{`{"sampler": "ddpm"}`, 400, "steps: 1000 network passes (ddpm, the model's 1000 timesteps), over this server's limit of 100"},
		{`{"sampler": "heun", "steps": 60}`, 400, "steps: 120 network passes (heun, 60 steps of two passes), over this server's limit of 100"},
		{`{"init": "` + b64(init) + `", "mask": "` + b64(init) + `", "steps": 10, "resample": 20}`, 400, "steps: 200 network passes (ddim, 10 steps, each run 20 times)"},
		{`{"guidance": null}`, 400, "guidance: null; leave the field out"},
		{`{"n": null}`, 400, "n: null"},
		{`{"n": 2, "labels": [1, 2, 3]}`, 400, "labels: a list of 3 labels for n = 2 images"},
		{`{"sampler": "nope"}`, 400, `unknown sampler "nope"`},
		{`{"seed": -1}`, 400, "seed: want a whole number from 0"},
		{`{"labels": "99"}`, 400, "labels"},
		{`{"labels": [1, "x"]}`, 400, "labels: want"},
		{`{"eta": 0.5, "sampler": "dpm++2m"}`, 400, "eta is for ddim"},
		{`{"prompt": "bold"}`, 400, "prompt: the model is not conditioned on prompts"},
		{`{"strength": 0.5}`, 400, "strength is for image-to-image and inpainting (init)"},
		{`{"resample": 3, "init": "` + b64(init) + `"}`, 400, "resample is for inpainting (init with mask)"},
		{`{"mask": "` + b64(init) + `"}`, 400, "mask: inpainting needs the image too (init)"},
		{`{"init": "` + b64(init) + `", "strength": 2}`, 400, "strength: must be in (0, 1]"},
		{`{"init": "` + b64(init) + `", "mask": "` + b64(small) + `"}`, 400, "mask: 10x10 pixels, but init is 28x28"},
		{`{"init": "` + b64(init) + `", "mask": "` + b64(greyPNG(28, 28, func(x, y int) uint8 { return 0 })) + `"}`, 400, "the mask paints nothing"},
		{`{"init": "` + b64(truncated) + `"}`, 400, "init"},
		{`{"init": "` + b64(huge) + `"}`, 400, "init: 1000x1000 pixels, over the limit of 65536"},
		{`{"init": "%%%"}`, 400, "init: not base64"},
		{`{"init": "` + b64([]byte("GIF89a....")) + `"}`, 400, "init: not a PNG or JPEG file"},
		{`{"format": "gif"}`, 400, `format: unknown "gif"`},
		{`{"bogus": 1}`, 400, `unknown field "bogus"`},
		{`null`, 400, "not a JSON object"},
		{`[1, 2]`, 400, "not a JSON object"},
		{``, 400, "not a JSON object"},
		{`{"n": 1`, 400, "not a JSON object"},
		{strings.Repeat("[", 100000), 400, "not a JSON object"},
	} {
		r, err := http.Post(ts.URL+"/v1/images", "application/json", strings.NewReader(c.body))
		if err != nil {
			t.Fatal(err)
		}
		var a answer
		json.NewDecoder(r.Body).Decode(&a)
		r.Body.Close()
		if r.StatusCode != c.code || !strings.Contains(a.Error, c.want) {
			t.Errorf("%.80s: %d %q, want %d and %q", c.body, r.StatusCode, a.Error, c.code, c.want)
		}
	}
	// A body over the limit is cut off at the limit: 413, or the connection
	// closed while the client still sends.
	r, err := http.Post(ts.URL+"/v1/images", "application/json", io.LimitReader(zeros{}, 100<<20))
	if err == nil {
		var a answer
		json.NewDecoder(r.Body).Decode(&a)
		r.Body.Close()
		if r.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(a.Error, "over this server's limit of 1048576 bytes") {
			t.Errorf("a 100 MB body: %d %q", r.StatusCode, a.Error)
		}
	}
	// Wrong methods and paths.
	for _, c := range []struct{ method, path string }{{"GET", "/v1/images"}, {"DELETE", "/v1/model"}, {"GET", "/nope"}} {
		req, _ := http.NewRequest(c.method, ts.URL+c.path, nil)
		r, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		if r.StatusCode != http.StatusMethodNotAllowed && r.StatusCode != http.StatusNotFound {
			t.Errorf("%s %s: %d", c.method, c.path, r.StatusCode)
		}
	}
	close(stop)
	wg.Wait()
	if goodRuns == 0 {
		t.Error("the good client made no request")
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// A client that sends a byte a second is cut off by the read deadline, and
// others are served meanwhile.
func TestSlowClientIsCutOff(t *testing.T) {
	o := testOptions()
	o.ReadTimeout = time.Second
	_, ts := start(t, o)
	conn, err := net.Dial("tcp", ts.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"n": 1}`
	fmt.Fprintf(conn, "POST /v1/images HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	t0 := time.Now()
	cut := make(chan time.Duration)
	go func() {
		for i := range len(body) {
			if _, err := conn.Write([]byte{body[i]}); err != nil {
				break
			}
			time.Sleep(time.Second)
		}
		cut <- time.Since(t0)
	}()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	reply, _ := io.ReadAll(conn) // the answer (408), then the close
	if code, _ := post(t, ts.URL, map[string]any{"n": 1}); code != http.StatusOK {
		t.Errorf("another client while the slow one sends: %d", code)
	}
	if took := time.Since(t0); took > 5*time.Second {
		t.Errorf("the slow client held its connection for %v (read timeout 1 s)", took)
	}
	if len(reply) > 0 && !strings.Contains(string(reply), " 408 ") {
		t.Errorf("the slow client got %.100q", reply)
	}
	conn.Close()
	<-cut
}
