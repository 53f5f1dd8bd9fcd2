package archive

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	files, events, bytes prometheus.Counter
	errors               *prometheus.CounterVec
	archived             *prometheus.GaugeVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		files: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_archive_files_total", Help: "Chunk files written to the raw archive (a chunk written again after a crash counts again).",
		}),
		events: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_archive_events_total", Help: "Events written to the raw archive.",
		}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "clickagg_archive_bytes_total", Help: "Bytes of Parquet written to the raw archive.",
		}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clickagg_archive_errors_total", Help: "Failed archive steps, by what failed: log (reading the partition log), store (writing to the object store), offset (the archived offset in Redis), decode (an entry that does not decode; archiving of its partition stops).",
		}, []string{"op"}),
		archived: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "clickagg_archive_archived_time_seconds", Help: "Append time (Unix seconds) of the last entry archived, by partition; now minus this is the archive's lag.",
		}, []string{"partition"}),
	}
	// Every op from the start, at 0, so that an alert on a rise sees the
	// first error and dashboards show the series before anything failed.
	for _, op := range []string{"log", "store", "offset", "decode"} {
		m.errors.WithLabelValues(op)
	}
	if reg != nil {
		reg.MustRegister(m.files, m.events, m.bytes, m.errors, m.archived)
	}
	return m
}

func partitionLabel(p int) string { return strconv.Itoa(p) }
