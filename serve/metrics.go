package serve

import (
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
)

// metrics are a server's Prometheus collectors, in a registry of its own
// (with the Go runtime's and the process's: resident memory among them).
type metrics struct {
	reg      *prometheus.Registry
	requests *prometheus.CounterVec // by status code
	latency  prometheus.Histogram   // seconds, request to answer
	batch    prometheus.Histogram   // images a sampler batch
	queue    prometheus.Gauge       // images waiting
	images   prometheus.Counter     // images made
	rate     prometheus.Gauge       // images/s of the last batch
	// Images cut out of batches because their requests had gone, and
	// batches stopped because all had.
	shed, abandoned prometheus.Counter
	// trimmedRSS is resident memory read right after the heap's last trim,
	// a fixed point of the batch cycle (process_resident_memory_bytes is
	// read whenever /metrics is, at any point of it).
	trimmedRSS prometheus.Gauge
}

func newMetrics(maxBatch int) *metrics {
	m := &metrics{
		reg: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "kakusan_requests_total",
			Help: "Image requests answered, by HTTP status code."}, []string{"code"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kakusan_request_duration_seconds",
			Help: "Time from a request's arrival to its last image.", Buckets: prometheus.ExponentialBuckets(0.01, 2, 15)}),
		batch: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "kakusan_batch_images",
			Help: "Images a sampler batch (dynamic batching merges requests).", Buckets: batchBuckets(maxBatch)}),
		queue: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kakusan_queue_images",
			Help: "Images waiting for a batch."}),
		images: prometheus.NewCounter(prometheus.CounterOpts{Name: "kakusan_images_total",
			Help: "Images made; rate() of it is images/s."}),
		rate: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kakusan_batch_images_per_second",
			Help: "Images/s of the last sampler batch."}),
		shed: prometheus.NewCounter(prometheus.CounterOpts{Name: "kakusan_images_dropped_total",
			Help: "Images cut out of running sampler batches (between steps) because their requests had gone (clients left, deadlines passed)."}),
		abandoned: prometheus.NewCounter(prometheus.CounterOpts{Name: "kakusan_batches_abandoned_total",
			Help: "Sampler batches stopped mid-way because every request in them had gone (clients left, deadlines passed)."}),
		trimmedRSS: prometheus.NewGauge(prometheus.GaugeOpts{Name: "kakusan_resident_bytes_after_trim",
			Help: "Resident memory right after malloc's free heap was last returned to the system (after a batch, at most once a second): the same point of every batch cycle, flat where nothing leaks."}),
	}
	m.reg.MustRegister(m.requests, m.latency, m.batch, m.queue, m.images, m.rate, m.shed, m.abandoned, m.trimmedRSS,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// batchBuckets are the batch sizes precision auto is measured for
// (batchSizes): 1, 2, 4, ... and maxBatch.
func batchBuckets(maxBatch int) []float64 {
	var b []float64
	for _, n := range batchSizes(maxBatch) {
		b = append(b, float64(n))
	}
	return b
}
