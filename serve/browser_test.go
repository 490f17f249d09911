package serve

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/input"
	"github.com/chromedp/chromedp"
)

// browser finds Debian's chromium; without it the page test is skipped,
// unless KAKUSAN_BROWSER_TEST=1 (make test-web) asks for it.
func browser(t *testing.T) string {
	t.Helper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	if os.Getenv("KAKUSAN_BROWSER_TEST") == "1" {
		t.Fatal("KAKUSAN_BROWSER_TEST=1 but no chromium: scripts/setup.sh browser installs it")
	}
	t.Skip("no chromium (make test-web installs it and runs this test)")
	return ""
}

// The page, driven in a real browser: generate images of a class, click
// one to edit it, paint a mask over its top, inpaint. The server sees the
// requests the page should send (a class, then the image and a mask that
// paints the top and keeps the bottom), and the page shows each answer's
// images. KAKUSAN_SCREENSHOT=FILE saves a screenshot of the page after the
// inpainting (docs/serve_page.png; KAKUSAN_SERVE_CHECKPOINT serves a real
// model for it).
func TestPageInABrowser(t *testing.T) {
	exe := browser(t)
	o := testOptions()
	checkpoint := os.Getenv("KAKUSAN_SERVE_CHECKPOINT")
	if checkpoint == "" {
		checkpoint = tinyModel(t)
	}
	m, err := Load(checkpoint, "cpu", false, o.MaxBatch)
	if err != nil {
		t.Fatal(err)
	}
	s := New(m, o)
	defer func() { s.Drain(); s.Wait(); m.Free() }()
	var mu sync.Mutex
	var bodies []map[string]any
	var codes []int
	ts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == "POST" {
			b, _ := io.ReadAll(r.Body)
			var v map[string]any
			json.Unmarshal(b, &v)
			r.Body = io.NopCloser(bytes.NewReader(b))
			rec := &statusWriter{ResponseWriter: w}
			s.Handler().ServeHTTP(rec, r)
			mu.Lock()
			bodies, codes = append(bodies, v), append(codes, rec.code)
			mu.Unlock()
			return
		}
		s.Handler().ServeHTTP(w, r)
	}))
	defer ts.Close()

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.NoSandbox,
		chromedp.Flag("headless", true), chromedp.WindowSize(1100, 760))
	actx, cancel := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancel()
	ctx, cancel := chromedp.NewContext(actx)
	defer cancel()
	ctx, cancel = context.WithTimeout(ctx, 90*time.Second)
	defer cancel()

	css := func(s string) chromedp.CSS { return chromedp.CSS(s) }
	done := func(n int) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, t *chromedp.Target) error {
			_, err := chromedp.Poll[bool](`(document.querySelectorAll("#results img").length === `+strconv.Itoa(n)+
				` && document.getElementById("status").textContent.startsWith("done")) || document.getElementById("status").className === "error"`,
				chromedp.WithPollingTimeout(60*time.Second))(ctx, t)
			status, _ := chromedp.Text(css("#status"))(ctx, t)
			if err != nil || !strings.HasPrefix(status, "done") {
				return fmt.Errorf("waiting for %d images: %v; the page says %q", n, err, status)
			}
			return nil
		})
	}
	err = chromedp.Do(ctx,
		chromedp.Navigate(ts.URL),
		chromedp.WaitEnabled(css("#generate")),
		chromedp.SetValue(css("#n"), "4"),
		chromedp.SetValue(css("#class"), "3"),
		chromedp.Click(css("#generate")),
		done(4),
		chromedp.Click(css("#results figure")),
		chromedp.WaitEnabled(css("#img2img")),
	)
	if err != nil {
		t.Fatal(err)
	}
	box, err := chromedp.Run(ctx, chromedp.Evaluate[[]float64](`(() => { const r = document.getElementById("mask").getBoundingClientRect(); return [r.left, r.top, r.width, r.height]; })()`))
	if err != nil {
		t.Fatal(err)
	}
	// Three strokes across the top of the image, with the mouse's left
	// button held.
	x0, y0, w, h := box[0], box[1], box[2], box[3]
	held := func(p *input.DispatchMouseEventParams) { p.Buttons = 1 }
	var stroke []chromedp.Action[chromedp.Void]
	for _, y := range []float64{0.12, 0.25, 0.38} {
		stroke = append(stroke, chromedp.MouseEvent(input.DispatchMouseEventTypeMousePressed, x0+0.1*w, y0+y*h, chromedp.ButtonLeft, held, chromedp.ClickCount(1)))
		for i := 1; i <= 8; i++ {
			stroke = append(stroke, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseMoved, x0+(0.1+0.1*float64(i))*w, y0+y*h, chromedp.ButtonLeft, held))
		}
		stroke = append(stroke, chromedp.MouseEvent(input.DispatchMouseEventTypeMouseReleased, x0+0.9*w, y0+y*h, chromedp.ButtonLeft, chromedp.ClickCount(1)))
	}
	stroke = append(stroke, chromedp.WaitEnabled(css("#inpaint")), chromedp.Click(css("#inpaint")), done(4))
	if err := chromedp.Do(ctx, stroke...); err != nil {
		t.Fatal(err)
	}
	status, err := chromedp.Run(ctx, chromedp.Text(css("#status")))
	if err != nil {
		t.Fatal(err)
	}
	if path := os.Getenv("KAKUSAN_SCREENSHOT"); path != "" {
		png, err := chromedp.Run(ctx, chromedp.FullScreenshot(100))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, png, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bodies) != 2 || codes[0] != http.StatusOK || codes[1] != http.StatusOK {
		t.Fatalf("%d requests (%v), want 2 answered 200", len(bodies), codes)
	}
	gen, inp := bodies[0], bodies[1]
	if gen["labels"] != "3" || gen["n"] != 4.0 || gen["format"] != "ndjson" || gen["init"] != nil {
		t.Errorf("the generate request: %v", gen)
	}
	init, _ := inp["init"].(string)
	mask, _ := inp["mask"].(string)
	if !strings.HasPrefix(init, "data:image/png;base64,") || !strings.HasPrefix(mask, "data:image/png;base64,") {
		t.Fatalf("the inpaint request has no image or mask: %.200v", inp)
	}
	// The mask paints the top and keeps the bottom: decoded as the server
	// reads it.
	px, _, _, err := m.inputImage("mask", mask, o.Limits, true)
	if err != nil {
		t.Fatal(err)
	}
	g := m.Geometry()
	top, bottom := 0.0, 0.0
	for i, v := range px {
		if i/g.W < g.H/2 {
			top += float64(v)
		} else {
			bottom += float64(v)
		}
	}
	if top == 0 || bottom != 0 {
		t.Errorf("the painted mask covers %g pixels of the top half and %g of the bottom", top, bottom)
	}
	t.Logf("page: %s; mask paints %g pixels", status, top)
}

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) { w.code = code; w.ResponseWriter.WriteHeader(code) }
func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}
func (w *statusWriter) Flush() { w.ResponseWriter.(http.Flusher).Flush() }
