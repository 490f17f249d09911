package serve

import (
	"context"
	_ "embed"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"runtime"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"kakusan/sample"
)

// Options are a server's settings (cmd/serve's flags).
type Options struct {
	Limits
	MaxWait     time.Duration // how long a batch waits to fill, from its oldest request's arrival
	Timeout     time.Duration // a request's deadline, queue included
	ReadTimeout time.Duration // the time a client has to send its request, body included
	Log         *slog.Logger
}

// Server answers requests with one model.
type Server struct {
	m        *Model
	o        Options
	b        *batcher
	met      *metrics
	draining atomic.Bool
	mux      *http.ServeMux
	parsing  chan struct{} // a slot for each request being parsed (its images decoded)
}

//go:embed page.html
var page []byte

// New starts a server's batcher for m; Handler is its HTTP handler.
func New(m *Model, o Options) *Server {
	if o.Log == nil {
		o.Log = slog.New(slog.DiscardHandler)
	}
	s := &Server{m: m, o: o, met: newMetrics(o.MaxBatch), parsing: make(chan struct{}, 2*runtime.GOMAXPROCS(0))}
	s.b = newBatcher(m, o.Limits, o.MaxWait, s.met)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/images", s.images)
	mux.HandleFunc("GET /v1/model", func(w http.ResponseWriter, r *http.Request) { writeJSON(w, http.StatusOK, m.Info(o.Limits)) })
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.met.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /{$}", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Write(page)
	})
	s.mux = mux
	return s
}

// Handler is the server's HTTP handler.
func (s *Server) Handler() http.Handler { return s.mux }

// HTTPServer is an http.Server for the handler with the deadlines that keep
// slow clients from holding connections: the headers within 10 s, the whole
// request within ReadTimeout, the answer within Timeout beyond it.
func (s *Server) HTTPServer() *http.Server {
	return &http.Server{Handler: s.Handler(), ReadHeaderTimeout: min(10*time.Second, s.o.ReadTimeout), ReadTimeout: s.o.ReadTimeout,
		WriteTimeout: s.o.ReadTimeout + s.o.Timeout + 10*time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 64 << 10,
		ErrorLog: slog.NewLogLogger(s.o.Log.Handler(), slog.LevelWarn)}
}

// Drain refuses new requests from now on (503, and /readyz fails); the
// queued ones are still made. Wait returns when they have been.
func (s *Server) Drain() {
	s.draining.Store(true)
	s.b.close()
}

// Wait blocks until the batcher has made every queued image after Drain.
func (s *Server) Wait() { s.b.wait() }

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	switch {
	case s.draining.Load():
		http.Error(w, "draining", http.StatusServiceUnavailable)
	case !s.b.ready():
		http.Error(w, "the queue is full", http.StatusServiceUnavailable)
	default:
		io.WriteString(w, "ready\n")
	}
}

// httpError is an answer's status and message.
type httpError struct {
	code int
	msg  string
}

// images answers POST /v1/images.
func (s *Server) images(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	code, n := s.serveImages(w, r)
	s.met.requests.WithLabelValues(strconv.Itoa(code)).Inc()
	if code == http.StatusOK {
		s.met.latency.Observe(time.Since(start).Seconds())
	}
	s.o.Log.Info("request", "remote", r.RemoteAddr, "status", code, "images", n, "seconds", time.Since(start).Seconds())
}

// serveImages reads, queues and answers a request; it returns the status
// sent (499 when the client left first) and the images made for it.
func (s *Server) serveImages(w http.ResponseWriter, r *http.Request) (int, int) {
	if s.draining.Load() {
		w.Header().Set("Retry-After", "5")
		return s.fail(w, httpError{http.StatusServiceUnavailable, errDraining.Error()}), 0
	}
	if !s.b.ready() { // before reading and decoding what would be refused anyway
		w.Header().Set("Retry-After", "1")
		return s.fail(w, httpError{http.StatusTooManyRequests, fmt.Sprintf("%v (%d images); try again shortly", errFull, s.o.MaxQueue)}), 0
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.o.MaxBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		return s.fail(w, httpError{http.StatusRequestEntityTooLarge, fmt.Sprintf("the body is over this server's limit of %d bytes", s.o.MaxBody)}), 0
	case errors.Is(err, os.ErrDeadlineExceeded):
		return s.fail(w, httpError{http.StatusRequestTimeout, fmt.Sprintf("the body did not arrive within %v", s.o.ReadTimeout)}), 0
	case err != nil:
		return s.fail(w, httpError{http.StatusBadRequest, "reading the body: " + err.Error()}), 0
	}
	s.parsing <- struct{}{} // decoding images takes memory: a few at a time
	req, err := s.m.parse(body, s.o.Limits)
	<-s.parsing
	if err != nil {
		return s.fail(w, httpError{http.StatusBadRequest, err.Error()}), 0
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.o.Timeout)
	defer cancel()
	j, err := s.b.submit(ctx, req)
	switch {
	case errors.Is(err, errFull):
		w.Header().Set("Retry-After", "1")
		return s.fail(w, httpError{http.StatusTooManyRequests, fmt.Sprintf("%v (%d images); try again shortly", err, s.o.MaxQueue)}), 0
	case errors.Is(err, errDraining):
		w.Header().Set("Retry-After", "5")
		return s.fail(w, httpError{http.StatusServiceUnavailable, err.Error()}), 0
	}
	defer s.b.release(j) // nothing more for it once it is answered, whichever way
	if req.Format == "ndjson" {
		return s.stream(ctx, w, j)
	}
	results := make([]result, req.N)
	pngs := make([][]byte, req.N)
	for range req.N {
		select {
		case res := <-j.done:
			var png []byte
			if res.err == nil {
				png, res.err = sample.EncodePNG(res.imgs.Image(res.i)) // as bin/sample writes it
			}
			if res.err != nil && ctx.Err() != nil { // cut out of its batch, or the batch abandoned: it had gone
				return s.gone(w, ctx), 0
			}
			if res.err != nil {
				return s.fail(w, httpError{http.StatusInternalServerError, res.err.Error()}), 0
			}
			results[res.index], pngs[res.index] = res, png
		case <-ctx.Done():
			return s.gone(w, ctx), 0
		}
	}
	if req.Format == "png" {
		return s.grid(w, req, results), req.N
	}
	out := make([]map[string]any, req.N)
	for i := range results {
		out[i] = s.imageJSON(req, i, pngs[i])
	}
	writeJSON(w, http.StatusOK, map[string]any{"images": out, "params": req.Record})
	return http.StatusOK, req.N
}

// stream answers in NDJSON: a line for each image as its batch finishes
// (in the order they are made), then {"done": true, "params": ...}.
func (s *Server) stream(ctx context.Context, w http.ResponseWriter, j *job) (int, int) {
	w.Header().Set("Content-Type", "application/x-ndjson")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(http.StatusOK)
	rc := http.NewResponseController(w)
	enc := json.NewEncoder(w)
	for k := range j.req.N {
		select {
		case res := <-j.done:
			var png []byte
			if res.err == nil {
				png, res.err = sample.EncodePNG(res.imgs.Image(res.i))
			}
			if res.err != nil && ctx.Err() != nil {
				enc.Encode(map[string]any{"error": ctxProblem(ctx)})
				return s.statusOf(ctx), k
			}
			if res.err != nil {
				enc.Encode(map[string]any{"error": res.err.Error()})
				return http.StatusInternalServerError, k
			}
			if enc.Encode(s.imageJSON(j.req, res.index, png)) != nil || rc.Flush() != nil {
				return 499, k
			}
		case <-ctx.Done():
			enc.Encode(map[string]any{"error": ctxProblem(ctx)})
			return s.statusOf(ctx), k
		}
	}
	enc.Encode(map[string]any{"done": true, "params": j.req.Record})
	return http.StatusOK, j.req.N
}

// imageJSON is image index of an answer: its index, seed, label, class
// name and PNG (base64).
func (s *Server) imageJSON(req *Request, index int, png []byte) map[string]any {
	im := map[string]any{"index": index, "seed": req.Seed, "png": base64.StdEncoding.EncodeToString(png)}
	if req.Labels != nil {
		l := req.Labels[index]
		im["label"] = l
		if names := s.m.ck.Geometry.ClassNames; int(l) < len(names) {
			im["class"] = names[l]
		}
	}
	return im
}

// grid answers one PNG of the request's images, eight to a row.
func (s *Server) grid(w http.ResponseWriter, req *Request, results []result) int {
	g := s.m.ck.Geometry
	size := g.C * g.H * g.W
	im := &sample.Images{N: req.N, C: g.C, H: g.H, W: g.W, Pix: make([]float32, req.N*size)}
	for i, res := range results {
		copy(im.Pix[i*size:], res.pix())
	}
	b, err := sample.EncodePNG(im.Grid(min(req.N, 8), 2))
	if err != nil {
		return s.fail(w, httpError{http.StatusInternalServerError, err.Error()})
	}
	w.Header().Set("Content-Type", "image/png")
	w.Write(b)
	return http.StatusOK
}

// gone answers a request whose deadline passed (504) or whose client left
// (499, nobody reads it).
func (s *Server) gone(w http.ResponseWriter, ctx context.Context) int {
	code := s.statusOf(ctx)
	if code == http.StatusGatewayTimeout {
		writeJSON(w, code, map[string]string{"error": ctxProblem(ctx)})
	}
	return code
}

func (s *Server) statusOf(ctx context.Context) int {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return http.StatusGatewayTimeout
	}
	return 499 // nginx's "client closed request"
}

func ctxProblem(ctx context.Context) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) {
		return "the request's deadline passed before its images were made"
	}
	return "the client left"
}

func (s *Server) fail(w http.ResponseWriter, e httpError) int {
	writeJSON(w, e.code, map[string]string{"error": e.msg})
	return e.code
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}
