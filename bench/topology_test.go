package bench

import (
	"strings"
	"testing"
	"time"
)

// TestTopologyMarkdown checks each comparison's table: a column per
// figure, the Redis servers' CPU and memory split by role, ratios to the
// first run, and "–" for latencies a run did not measure.
func TestTopologyMarkdown(t *testing.T) {
	lat := func(ds ...time.Duration) *Latencies {
		l := &Latencies{}
		for _, d := range ds {
			l.Add(d)
		}
		return l
	}
	runs := []*TopologyResult{
		{Name: "a", Acked: 200_000, Window: 2 * time.Second, ProcCPU: 1.5, FreshRate: 1000, Drain: 1234 * time.Millisecond,
			Nodes: []NodeUsage{{Role: "master", CPU: 0.5, UsedMemory: 2 << 20}, {Role: "slave", CPU: 0.25, UsedMemory: 1 << 20}, {Role: "master", CPU: 0.4, UsedMemory: 3 << 20}},
			Ack:   lat(time.Millisecond), Freshness: lat(3 * time.Millisecond), Count: lat(2 * time.Millisecond), Top: lat(4 * time.Millisecond)},
		{Name: "b|c", Acked: 50_000, Window: time.Second, ProcCPU: 0.75, FreshRate: 1000,
			Ack: lat(time.Millisecond), Freshness: lat(time.Millisecond)},
	}
	for _, tc := range []struct {
		cmp  Comparison
		want []string
	}{
		{RedisTopologies, []string{
			"<!-- topology: written by `clickagg bench -bench.redis-topologies` -->\n## Ingest by Redis topology\n",
			"| Redis | acknowledged/s | vs the first | clickagg CPU, cores | Redis CPU, cores: primaries; replicas | used_memory of each primary | caught up after | probe ack p50 / p99 | ack-to-visible p50 / p99 |\n|---|---|---|---|---|---|---|---|---|\n",
			"| a | 100k | 1.00× | 1.50 | 0.50 + 0.40; 0.25 | 2.00 MiB, 3.00 MiB | 1.2s | 1.0 ms / 1.0 ms | 3.0 ms / 3.0 ms |\n",
			`| b\|c | 50.0k | 0.50× | 0.75 |`,
			"- Redis CPU: each server's",
			"<!-- end of topology -->\n",
		}},
		{Security, []string{
			"<!-- security: written by `clickagg bench -bench.security` -->\n## Cost of TLS and authorization\n",
			"| setup | acknowledged/s | vs plaintext | clickagg CPU, cores | probe ack p50 / p99 | count query p50 / p99 | top-100 query p50 / p99 |\n|---|---|---|---|---|---|---|\n",
			"| a | 100k | 1.00× | 1.50 | 1.0 ms / 1.0 ms | 2.0 ms / 2.0 ms | 4.0 ms / 4.0 ms |\n",
			`| b\|c | 50.0k | 0.50× | 0.75 | 1.0 ms / 1.0 ms | – | – |` + "\n",
			"- Queries: after the paced load",
			"<!-- end of security -->\n",
		}},
	} {
		t.Run(tc.cmp.setup, func(t *testing.T) {
			rep := &TopologyReport{Comparison: tc.cmp, Config: Config{Span: time.Hour}, Runs: runs}
			md := rep.Markdown()
			for _, w := range tc.want {
				if !strings.Contains(md, w) {
					t.Errorf("lacks %q in:\n%s", w, md)
				}
			}
		})
	}
}
