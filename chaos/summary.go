package chaos

import (
	"fmt"
	"io"
	"slices"
	"text/tabwriter"
	"time"
)

// Summary is what a run did and found.
type Summary struct {
	Seed uint64
	// Events are the unique valid clicks, Duplicates the clicks sent
	// again (by the workload and by clients' retries), Late the clicks
	// whose minute was complete when sent, Invalid the invalid events
	// (each refused), Shipped the clicks written to the shipper's log.
	Events, Duplicates, Late, Invalid, Shipped int64
	FaultsByKind                               map[Kind]int
	// Recovery is, per kind, the time from each fault's heal to the
	// cluster being healthy again (Cluster.WaitHealthy).
	Recovery map[Kind][]time.Duration
	// Restarts counts the processes that exited on their own (a process
	// started while Redis or etcd is down exits at once) and were
	// restarted, as a supervisor would.
	Restarts int64
	// AnswersChecked counts every answer compared with the truth;
	// AnswersFailed the queries that failed (UNAVAILABLE under faults:
	// counted, not wrong); AnswersWrong must be 0.
	AnswersChecked, AnswersFailed, AnswersWrong int64
	Wrong                                       []string // the first 20
	// Errors are the harness's own failures (a fault that could not be
	// injected, the cluster never complete): the run failed without a
	// wrong answer.
	Errors   []string
	Duration time.Duration
	// Replay is the command that runs the same workload and schedule.
	Replay string
}

// Print writes s as a table.
func (s Summary) Print(w io.Writer) {
	fmt.Fprintf(w, "\nchaos run summary (seed %d, %v)\n", s.Seed, s.Duration.Round(time.Second))
	tw := tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintf(tw, "events\tvalid %d\tduplicates %d\tlate %d\tinvalid %d\tshipped %d\n", s.Events, s.Duplicates, s.Late, s.Invalid, s.Shipped)
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 2, 8, 2, ' ', 0)
	fmt.Fprintln(tw, "fault\tcount\trecovery p50\trecovery max")
	for _, k := range Kinds {
		n := s.FaultsByKind[k]
		if n == 0 {
			continue
		}
		p50, mx := percentiles(s.Recovery[k])
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\n", k, n, p50, mx)
	}
	tw.Flush()
	fmt.Fprintln(w)
	if s.Restarts > 0 {
		fmt.Fprintf(w, "processes restarted after exiting on their own: %d\n", s.Restarts)
	}
	fmt.Fprintf(w, "answers checked %d, failed (unavailable, not wrong) %d, wrong %d\n", s.AnswersChecked, s.AnswersFailed, s.AnswersWrong)
	for _, x := range s.Wrong {
		fmt.Fprintf(w, "  WRONG %s\n", x)
	}
	for _, x := range s.Errors {
		fmt.Fprintf(w, "  ERROR %s\n", x)
	}
	if s.Replay != "" {
		fmt.Fprintf(w, "replay: %s\n", s.Replay)
	}
	if s.Failed() {
		fmt.Fprintln(w, "FAIL")
	} else {
		fmt.Fprintln(w, "PASS")
	}
}

// Failed reports whether the run found a wrong answer or could not do
// its job.
func (s Summary) Failed() bool { return s.AnswersWrong > 0 || len(s.Errors) > 0 }

// percentiles returns the median and the maximum of ds, "-" for none.
func percentiles(ds []time.Duration) (p50, mx string) {
	if len(ds) == 0 {
		return "-", "-"
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[(len(s)-1)/2].Round(10 * time.Millisecond).String(), s[len(s)-1].Round(10 * time.Millisecond).String()
}
