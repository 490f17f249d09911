// Command serveload is bin/serve's load generator: C clients, each sending
// one request after another to a server for a while (or until a number of
// requests), and a JSON line of what they saw: images/s, latency
// percentiles, errors by status, and the server's resident memory at the
// start, every 1,000 requests and at the end: as /metrics reads it
// (process_resident_memory_bytes, at whatever point of a batch's cycle)
// and as the server read it right after its last heap trim
// (kakusan_resident_bytes_after_trim, the same point of every cycle).
//
//	go run ./scripts/serveload -url http://127.0.0.1:8080 -clients 64 -for 60s -n 1
//
// Each request asks for n images of a random class with its own seed, as
// independent users would; scripts/bench_serve.sh runs it against a batching
// server and a one-request-at-a-time one.
package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// report is the JSON line serveload prints.
type report struct {
	Label      string         `json:"label,omitempty"`
	Clients    int            `json:"clients"`
	N          int            `json:"n"`
	Seconds    float64        `json:"seconds"`
	Requests   int            `json:"requests"`
	Images     int            `json:"images"`
	ImagesPerS float64        `json:"images_per_s"`
	P50, P99   float64        `json:"-"`
	P50ms      float64        `json:"p50_ms"`
	P99ms      float64        `json:"p99_ms"`
	Errors     map[string]int `json:"errors"`
	RSSMiB     []float64      `json:"rss_mib"`         // at the start, every 1,000 requests, at the end
	TrimmedMiB []float64      `json:"rss_trimmed_mib"` // the same readings, after the server's last trim
	GoHeapMiB  []float64      `json:"go_heap_mib"`     // the same readings of the Go heap in use
	MeanBatch  float64        `json:"mean_batch"`      // images a sampler batch, over the run (from /metrics)
}

func main() {
	url := flag.String("url", "http://127.0.0.1:8080", "the server")
	clients := flag.Int("clients", 8, "concurrent clients")
	dur := flag.Duration("for", time.Minute, "how long to send requests")
	max := flag.Int("requests", 0, "stop after this many requests (0: none)")
	n := flag.Int("n", 1, "images a request")
	classes := flag.Int("classes", 10, "the model's classes (0: unconditional)")
	label := flag.String("label", "", "a label for the report")
	flag.Parse()
	if *clients < 1 || *clients > 1024 || *n < 1 || *dur <= 0 || *dur > time.Hour {
		fmt.Fprintln(os.Stderr, "serveload: -clients 1-1024, -n at least 1, -for up to 1h")
		os.Exit(2)
	}
	r := run(*url, *clients, *n, *classes, *dur, *max)
	r.Label = *label
	json.NewEncoder(os.Stdout).Encode(r)
}

func run(url string, clients, n, classes int, dur time.Duration, max int) report {
	client := &http.Client{Timeout: 5 * time.Minute, Transport: &http.Transport{MaxIdleConnsPerHost: clients}}
	var (
		mu        sync.Mutex
		latencies []float64
		r         = report{Clients: clients, N: n, Errors: map[string]int{}}
		before    = scrape(client, url)
		sent      atomic.Int64
		wg        sync.WaitGroup
	)
	r.addMemory(before)
	t0 := time.Now()
	deadline := t0.Add(dur)
	for c := range clients {
		wg.Go(func() {
			for k := 0; time.Now().Before(deadline); k++ {
				i := sent.Add(1)
				if max > 0 && i > int64(max) {
					return
				}
				body := map[string]any{"n": n, "seed": uint64(c)<<32 | uint64(k)}
				if classes > 0 {
					body["labels"] = strconv.Itoa(int((uint64(c)*7919 + uint64(k)*104729) % uint64(classes)))
				}
				b, _ := json.Marshal(body)
				start := time.Now()
				code, err := post(client, url, b)
				took := time.Since(start).Seconds()
				mu.Lock()
				switch {
				case err != nil:
					r.Errors[err.Error()]++
				case code != http.StatusOK:
					r.Errors[strconv.Itoa(code)]++
				default:
					latencies = append(latencies, took)
				}
				mu.Unlock()
				if i%1000 == 0 {
					m := scrape(client, url)
					mu.Lock()
					r.addMemory(m)
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	secs := time.Since(t0).Seconds()
	after := scrape(client, url)
	r.addMemory(after)
	slices.Sort(latencies)
	r.Seconds, r.Requests, r.Images = secs, len(latencies), len(latencies)*n
	r.ImagesPerS = float64(r.Images) / secs
	if n := after["kakusan_batch_images_count"] - before["kakusan_batch_images_count"]; n > 0 {
		r.MeanBatch = (after["kakusan_batch_images_sum"] - before["kakusan_batch_images_sum"]) / n
	}
	if len(latencies) > 0 {
		r.P50ms = 1e3 * latencies[len(latencies)/2]
		r.P99ms = 1e3 * latencies[min(len(latencies)-1, len(latencies)*99/100)]
	}
	return r
}

// post sends one request and reads its answer whole.
func post(client *http.Client, url string, body []byte) (int, error) {
	r, err := client.Post(url+"/v1/images", "application/json", bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	defer r.Body.Close()
	if _, err := io.Copy(io.Discard, r.Body); err != nil {
		return 0, err
	}
	return r.StatusCode, nil
}

// addMemory adds a reading of the server's memory from a scrape of its
// /metrics, in MiB (0 where it has none): resident now, resident right
// after its last heap trim, and its Go heap in use.
func (r *report) addMemory(m map[string]float64) {
	r.RSSMiB = append(r.RSSMiB, m["process_resident_memory_bytes"]/(1<<20))
	r.TrimmedMiB = append(r.TrimmedMiB, m["kakusan_resident_bytes_after_trim"]/(1<<20))
	r.GoHeapMiB = append(r.GoHeapMiB, m["go_memstats_heap_inuse_bytes"]/(1<<20))
}

// scrape reads the unlabelled series of the server's /metrics: name, value.
func scrape(client *http.Client, url string) map[string]float64 {
	out := map[string]float64{}
	r, err := client.Get(url + "/metrics")
	if err != nil {
		return out
	}
	defer r.Body.Close()
	sc := bufio.NewScanner(r.Body)
	for sc.Scan() {
		name, v, ok := strings.Cut(sc.Text(), " ")
		if ok && !strings.HasPrefix(name, "#") && !strings.Contains(name, "{") {
			out[name], _ = strconv.ParseFloat(v, 64)
		}
	}
	return out
}
