package serve

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"image/png"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"kakusan/diffusion"
	"kakusan/models"
	"kakusan/sample"
	"kakusan/torch"
)

func fp32(s *diffusion.Sampling) { s.Precision = torch.FP32 }

// A request's images are bin/sample's, byte for byte, when they are made in
// the same batches: alone, n ≤ --max-batch and --batch n. The three answer
// formats carry the same images.
func TestAnswersAreSampleJobs(t *testing.T) {
	_, ts := start(t, testOptions())
	code, a := post(t, ts.URL, map[string]any{"n": 5, "labels": "2,4-5", "seed": 11, "precision": "fp32"})
	if code != http.StatusOK || len(a.Images) != 5 {
		t.Fatalf("%d: %s, %d images", code, a.Error, len(a.Images))
	}
	want := jobImages(t, 5, 5, 11, "2,4-5", fp32, nil)
	for i, im := range a.Images {
		if im.Index != i || im.Seed != 11 || im.Label == nil || *im.Label != []int64{2, 4, 5, 2, 4}[i] || im.Class != []string{"2", "4", "5", "2", "4"}[i] {
			t.Errorf("image %d: index %d, seed %d, label %v, class %q", i, im.Index, im.Seed, im.Label, im.Class)
		}
		if !bytes.Equal(im.PNG, want[i]) {
			t.Errorf("image %d differs from bin/sample's by %d grey levels", i, apart(t, im.PNG, want[i]))
		}
	}
	if a.Params["precision"] != "fp32" || a.Params["sampler"] != "ddim" || a.Params["steps"] != 3.0 || a.Params["seed"] != 11.0 {
		t.Errorf("params %v", a.Params)
	}
	// NDJSON: a line per image, then done.
	b, _ := json.Marshal(map[string]any{"n": 5, "labels": "2,4-5", "seed": 11, "precision": "fp32", "format": "ndjson"})
	r, err := http.Post(ts.URL+"/v1/images", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(r.Body)
	sc.Buffer(nil, 1<<20)
	var lines []map[string]any
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		lines = append(lines, l)
	}
	r.Body.Close()
	if r.Header.Get("Content-Type") != "application/x-ndjson" || len(lines) != 6 || lines[5]["done"] != true {
		t.Fatalf("ndjson: %s, %d lines, last %v", r.Header.Get("Content-Type"), len(lines), lines[len(lines)-1])
	}
	for _, l := range lines[:5] {
		var img []byte
		json.Unmarshal([]byte(`"`+l["png"].(string)+`"`), &img)
		if k := int(l["index"].(float64)); !bytes.Equal(img, want[k]) {
			t.Errorf("ndjson image %d differs from bin/sample's", k)
		}
	}
	// A grid: eight to a row, each pixel 2×2, with a 2-pixel border.
	b, _ = json.Marshal(map[string]any{"n": 5, "format": "png"})
	r, err = http.Post(ts.URL+"/v1/images", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(r.Body)
	r.Body.Close()
	if err != nil || r.Header.Get("Content-Type") != "image/png" {
		t.Fatalf("grid: %v (%s)", err, r.Header.Get("Content-Type"))
	}
	if b := img.Bounds(); b.Dx() != 5*58+2 || b.Dy() != 60 {
		t.Errorf("grid of %v", b)
	}
}

// Concurrent requests are merged into one batch, and each image comes out
// as its own job draws it: the same noise, within a grey level or two of
// the job's PNG (a batch of another size may sum in another order).
func TestConcurrentRequestsShareABatch(t *testing.T) {
	o := testOptions()
	o.MaxWait, o.MaxBatch = 2*time.Second, 16
	s, ts := start(t, o)
	type req struct {
		seed   uint64
		labels string
	}
	reqs := []req{{1, "3"}, {2, "0-2"}, {3, "7"}, {4, "random"}}
	answers := make([]answer, len(reqs))
	var wg sync.WaitGroup
	for i, q := range reqs {
		wg.Go(func() {
			code, a := post(t, ts.URL, map[string]any{"n": 3, "labels": q.labels, "seed": q.seed, "precision": "fp32"})
			if code != http.StatusOK {
				t.Errorf("request %d: %d %s", i, code, a.Error)
			}
			answers[i] = a
		})
	}
	wg.Wait()
	if got := metric(t, s, "kakusan_batch_images").GetHistogram().GetSampleCount(); got != 1 {
		t.Errorf("%d batches for 12 images of 4 requests, want 1", got)
	}
	worst := 0
	for i, q := range reqs {
		want := jobImages(t, 3, 3, q.seed, q.labels, fp32, nil)
		for k, im := range answers[i].Images {
			d := apart(t, im.PNG, want[k])
			worst = max(worst, d)
			if d > 2 {
				t.Errorf("request %d image %d: %d grey levels from its job's", i, k, d)
			}
		}
	}
	t.Logf("merged images are at most %d grey levels from their jobs'", worst)
}

// metric is the first series of a metric of the server's registry.
func metric(t *testing.T, s *Server, name string) *dto.Metric {
	t.Helper()
	fams, err := s.met.reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range fams {
		if f.GetName() == name {
			return f.GetMetric()[0]
		}
	}
	t.Fatalf("no metric %s", name)
	return nil
}

// Inpainting keeps the pixels outside the mask exactly and redraws those
// in it; image-to-image is bin/sample --init's, byte for byte.
func TestEdits(t *testing.T) {
	_, ts := start(t, testOptions())
	init := greyPNG(28, 28, func(x, y int) uint8 { return uint8((x*9 + y*5) % 256) })
	top := greyPNG(28, 28, func(x, y int) uint8 { return map[bool]uint8{true: 255, false: 0}[y < 14] })
	code, a := post(t, ts.URL, map[string]any{"n": 3, "labels": "5", "init": b64(init), "mask": b64(top), "resample": 2})
	if code != http.StatusOK {
		t.Fatalf("%d: %s", code, a.Error)
	}
	want := grey(t, init)
	for k, im := range a.Images {
		got := grey(t, im.PNG)
		changed := false
		for i := range got {
			if i >= 14*28 && got[i] != want[i] {
				t.Fatalf("image %d: pixel %d outside the mask is %d, the init image's %d", k, i, got[i], want[i])
			}
			changed = changed || i < 14*28 && got[i] != want[i]
		}
		if !changed {
			t.Errorf("image %d: the masked half is the init image's", k)
		}
	}
	if a.Params["strength"] != 1.0 || a.Params["resample"] != 2.0 {
		t.Errorf("params %v", a.Params)
	}
	// Image-to-image, also from a data: URL (what the page sends).
	code, a = post(t, ts.URL, map[string]any{"n": 4, "labels": "0-3", "seed": 9, "init": "data:image/png;base64," + b64(init), "strength": 0.5, "precision": "fp32"})
	if code != http.StatusOK {
		t.Fatalf("%d: %s", code, a.Error)
	}
	jobs := jobImages(t, 4, 4, 9, "0-3", func(s *diffusion.Sampling) { s.Precision, s.Strength = torch.FP32, 0.5 },
		func(m models.Model, s diffusion.Sampling) (sample.Generator, error) {
			px, _, _, err := models.InputImage(bytes.NewReader(init), "init", models.Geometry{C: 1, H: 28, W: 28}, models.Data{}, 0)
			if err != nil {
				return nil, err
			}
			return models.EditGenerator(m, s, torch.FromSlice(px, []int64{1, 1, 28, 28}), nil)
		})
	sameAsJob(t, a, jobs)
}

// A server is ready until it drains or its queue is full; a request that
// would overfill the queue gets 429 with Retry-After; draining answers 503
// to new requests and finishes those queued.
func TestQueueAndDrain(t *testing.T) {
	o := testOptions()
	o.MaxQueue, o.MaxWait = 4, 1500*time.Millisecond // the first request waits for its batch to fill
	s, ts := start(t, o)
	status := func(path string) int {
		r, err := http.Get(ts.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		return r.StatusCode
	}
	if status("/readyz") != http.StatusOK || status("/healthz") != http.StatusOK {
		t.Fatal("not ready at the start")
	}
	first := make(chan int)
	go func() {
		code, _ := post(t, ts.URL, map[string]any{"n": 4})
		first <- code
	}()
	time.Sleep(300 * time.Millisecond)
	if got := status("/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz with a full queue: %d", got)
	}
	b, _ := json.Marshal(map[string]any{"n": 1})
	r, err := http.Post(ts.URL+"/v1/images", "application/json", bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	r.Body.Close()
	if r.StatusCode != http.StatusTooManyRequests || r.Header.Get("Retry-After") == "" {
		t.Errorf("a request past the queue's bound: %d, Retry-After %q", r.StatusCode, r.Header.Get("Retry-After"))
	}
	s.Drain()
	if code, a := post(t, ts.URL, map[string]any{"n": 1}); code != http.StatusServiceUnavailable {
		t.Errorf("a request while draining: %d %s", code, a.Error)
	}
	if got := status("/readyz"); got != http.StatusServiceUnavailable {
		t.Errorf("/readyz while draining: %d", got)
	}
	if code := <-first; code != http.StatusOK {
		t.Errorf("the queued request, drained: %d", code)
	}
	s.Wait()
}

// A client that leaves has the rest of its images dropped from the batches;
// the other clients' images are their jobs'.
func TestClientLeavesMidRequest(t *testing.T) {
	o := testOptions()
	o.MaxBatch, o.MaxWait = 4, 0
	s, ts := start(t, o)
	ctx, cancel := context.WithCancel(context.Background())
	b, _ := json.Marshal(map[string]any{"n": 16, "steps": 100, "format": "ndjson", "precision": "fp32"})
	hr, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/v1/images", bytes.NewReader(b))
	left := make(chan struct{})
	go func() {
		defer close(left)
		r, err := http.DefaultClient.Do(hr)
		if err != nil {
			return
		}
		br := bufio.NewReader(r.Body)
		br.ReadString('\n') // the first image: its batch has run
		cancel()
		io.Copy(io.Discard, br)
	}()
	<-left
	code, a := post(t, ts.URL, map[string]any{"n": 2, "labels": "8", "seed": 5, "precision": "fp32"})
	if code != http.StatusOK {
		t.Fatalf("%d: %s", code, a.Error)
	}
	sameAsJob(t, a, jobImages(t, 2, 2, 5, "8", fp32, nil))
	time.Sleep(100 * time.Millisecond)
	made := metric(t, s, "kakusan_images_total").GetCounter().GetValue()
	if made >= 16 {
		t.Errorf("%g images made: the leaving client's were not dropped", made)
	}
	t.Logf("%g images made for 16 asked by the client that left and 2 by the other", made)
}

// A warmed model (every batch size run once before serving) keeps no
// tensor from its warming and answers as bin/sample draws, byte for byte:
// warming reads no generator.
func TestWarmedModelAnswersAsJobs(t *testing.T) {
	o := testOptions()
	m, err := Load(tinyModel(t), "cpu", false, o.MaxBatch)
	if err != nil {
		t.Fatal(err)
	}
	before := torch.LiveTensors()
	if took := m.Warm(o.MaxBatch); took <= 0 {
		t.Errorf("warming took %v", took)
	}
	if after := torch.LiveTensors(); after != before {
		t.Errorf("%d live tensors before warming, %d after", before, after)
	}
	_, ts := serveModel(t, m, o)
	code, a := post(t, ts.URL, map[string]any{"n": 3, "labels": "1,7,7", "seed": 4, "precision": "fp32"})
	if code != http.StatusOK {
		t.Fatalf("%d %s", code, a.Error)
	}
	sameAsJob(t, a, jobImages(t, 3, 3, 4, "1,7,7", fp32, nil))
}

// A client that leaves while its images are in a running batch with
// another client's has them cut out of the batch between steps: the batch
// runs on for the other, whose images are its job's within a grey level
// or two (the rest of the batch ran on fewer rows), and the dropped images
// are counted, not made.
func TestClientLeavesMidBatch(t *testing.T) {
	o := testOptions()
	o.MaxBatch, o.MaxWait, o.MaxSteps = 8, 5*time.Second, 1000
	s, ts := start(t, o)
	queue := func() float64 { return metric(t, s, "kakusan_queue_images").GetGauge().GetValue() }
	until := func(what string, ok func() bool) {
		for deadline := time.Now().Add(30 * time.Second); !ok(); time.Sleep(2 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("%s: never", what)
			}
		}
	}
	cancel, left := leaver(ts.URL, map[string]any{"n": 6, "steps": 1000, "precision": "fp32"})
	until("the first request queued", func() bool { return queue() == 6 })
	type reply struct {
		code int
		a    answer
	}
	other := make(chan reply, 1)
	go func() {
		code, a := post(t, ts.URL, map[string]any{"n": 2, "labels": "8", "seed": 5, "steps": 1000, "precision": "fp32"})
		other <- reply{code, a}
	}()
	until("the batch of both", func() bool { return queue() == 0 })
	time.Sleep(50 * time.Millisecond) // some steps of both
	cancel()
	<-left
	r := <-other
	if r.code != http.StatusOK {
		t.Fatalf("the client that stayed: %d %s", r.code, r.a.Error)
	}
	want := jobImages(t, 2, 2, 5, "8", func(s *diffusion.Sampling) { s.Steps, s.Precision = 1000, torch.FP32 }, nil)
	worst := 0
	for k, im := range r.a.Images {
		worst = max(worst, apart(t, im.PNG, want[k]))
	}
	if worst > 2 {
		t.Errorf("the images of the client that stayed are %d grey levels from its job's", worst)
	}
	batches := metric(t, s, "kakusan_batch_images").GetHistogram().GetSampleCount()
	made := metric(t, s, "kakusan_images_total").GetCounter().GetValue()
	dropped := metric(t, s, "kakusan_images_dropped_total").GetCounter().GetValue()
	if batches != 1 || made != 2 || dropped != 6 {
		t.Errorf("%d batches, %g images made and %g dropped; want 1, 2 and 6", batches, made, dropped)
	}
	t.Logf("the stayer's images are at most %d grey levels from its job's", worst)
}

// /metrics is Prometheus's text format with the server's figures; /v1/model
// describes the model; / is the page.
func TestMetricsModelAndPage(t *testing.T) {
	s, ts := start(t, testOptions())
	post(t, ts.URL, map[string]any{"n": 2})
	post(t, ts.URL, map[string]any{"n": 0})
	r, err := http.Get(ts.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(r.Body)
	r.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	codes := map[string]float64{}
	for _, m := range fams["kakusan_requests_total"].GetMetric() {
		codes[m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
	}
	if codes["200"] != 1 || codes["400"] != 1 {
		t.Errorf("requests by code %v", codes)
	}
	for _, name := range []string{"kakusan_request_duration_seconds", "kakusan_batch_images", "kakusan_queue_images", "kakusan_images_total", "kakusan_batch_images_per_second", "process_resident_memory_bytes"} {
		if fams[name] == nil {
			t.Errorf("no %s in /metrics", name)
		}
	}
	if v := fams["kakusan_images_total"].GetMetric()[0].GetCounter().GetValue(); v != 2 {
		t.Errorf("kakusan_images_total %g", v)
	}
	// The first batch's end trims the heap and reads resident memory: the
	// process's, a little before /metrics read it.
	trimmed := func() float64 { return metric(t, s, "kakusan_resident_bytes_after_trim").GetGauge().GetValue() }
	for deadline := time.Now().Add(10 * time.Second); trimmed() == 0 && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
	}
	if rss, after := fams["process_resident_memory_bytes"].GetMetric()[0].GetGauge().GetValue(), trimmed(); !(after > rss/2 && after < 2*rss) {
		t.Errorf("resident memory after the trim %g bytes, the process's %g", after, rss)
	}
	r, _ = http.Get(ts.URL + "/v1/model")
	var info map[string]any
	json.NewDecoder(r.Body).Decode(&info)
	r.Body.Close()
	if info["model"] != "diffusion" || info["classes"] != 10.0 || info["edits"] != true || info["sampling"].(map[string]any)["steps"] != 3.0 {
		t.Errorf("/v1/model: %v", info)
	}
	r, _ = http.Get(ts.URL + "/")
	page, _ := io.ReadAll(r.Body)
	r.Body.Close()
	if !strings.Contains(string(page), "<title>kakusan</title>") || !strings.HasPrefix(r.Header.Get("Content-Type"), "text/html") {
		t.Errorf("the page: %s", r.Header.Get("Content-Type"))
	}
}

// Serving frees every tensor it makes: the live tensors after many merged
// batches (pixel model, edits included) are those before them.
func TestBatchesLeaveNoTensors(t *testing.T) {
	o := testOptions()
	o.MaxWait = 0
	_, ts := start(t, o)
	init := greyPNG(28, 28, func(x, y int) uint8 { return uint8(x * 9) })
	top := greyPNG(28, 28, func(x, y int) uint8 { return map[bool]uint8{true: 255}[y < 14] })
	bodies := []map[string]any{{"n": 3}, {"n": 2, "init": b64(init)}, {"n": 2, "init": b64(init), "mask": b64(top), "resample": 2}}
	for _, b := range bodies { // warm: precision choices, caches
		post(t, ts.URL, b)
	}
	before := torch.LiveTensors()
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				for _, b := range bodies {
					if code, a := post(t, ts.URL, b); code != http.StatusOK {
						t.Errorf("%d %s", code, a.Error)
					}
				}
			}
		})
	}
	wg.Wait()
	if after := torch.LiveTensors(); after != before {
		t.Errorf("%d live tensors before 60 requests, %d after", before, after)
	}
}

// A batch whose every client has left stops within one torch operation:
// counted as abandoned, and none of its images made.
func TestLeftBatchIsAbandoned(t *testing.T) {
	o := testOptions()
	o.MaxBatch, o.MaxWait, o.MaxSteps = 4, 0, 1000
	s, ts := start(t, o)
	cancel, done := leaver(ts.URL, map[string]any{"n": 4, "steps": 1000, "precision": "fp32"})
	// The batch is running once the queue is empty.
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if metric(t, s, "kakusan_batch_images").GetHistogram().GetSampleCount() == 0 &&
			metric(t, s, "kakusan_queue_images").GetGauge().GetValue() == 0 && time.Since(deadline.Add(-30*time.Second)) > 200*time.Millisecond {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the batch never started")
		}
	}
	cancel()
	<-done
	for deadline := time.Now().Add(30 * time.Second); metric(t, s, "kakusan_batches_abandoned_total").GetCounter().GetValue() < 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("the batch was not abandoned (%g images made)", metric(t, s, "kakusan_images_total").GetCounter().GetValue())
		}
	}
	if made := metric(t, s, "kakusan_images_total").GetCounter().GetValue(); made != 0 {
		t.Errorf("%g images made by an abandoned batch", made)
	}
	// The server goes on.
	if code, a := post(t, ts.URL, map[string]any{"n": 1, "steps": 2}); code != http.StatusOK {
		t.Errorf("after the abandoned batch: %d %s", code, a.Error)
	}
}
