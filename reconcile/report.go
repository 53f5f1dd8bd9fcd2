package reconcile

import (
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// Report is the result of a reconciliation; its JSON form is what
// clickagg reconcile -report writes.
type Report struct {
	// Started is when the run started (the recount's clock).
	Started time.Time `json:"started"`
	// From and To are the range checked, [From, To), whole periods.
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
	// PeriodMinutes is the span of a history file.
	PeriodMinutes int64 `json:"period_minutes"`
	// Partitions checked, ascending.
	Partitions []int `json:"partitions"`

	// Periods is the number of (partition, period) pairs compared; Rows
	// and Clicks are the recounted rows and clicks in them.
	Periods int   `json:"periods_compared"`
	Rows    int64 `json:"rows_compared"`
	Clicks  int64 `json:"clicks_compared"`
	// Mismatches are the rows that differ, by partition, minute, ad_id
	// and country.
	Mismatches []Mismatch `json:"mismatches"`
	// MissingFiles and CorruptFiles are the periods whose served history
	// file could not be read: nothing was compared there.
	MissingFiles []FileProblem `json:"missing_history_files"`
	CorruptFiles []FileProblem `json:"corrupt_history_files"`
	// Holes are the breaks found in the archive's chain of files.
	Holes []Hole `json:"archive_holes"`
	// UncheckedMinutes adds up, over partitions, the minutes not compared:
	// those of unreadable history files and those archive holes leave
	// unchecked.
	UncheckedMinutes int64 `json:"unchecked_minutes"`
}

// Differs tells how a mismatching row differs.
type Differs string

const (
	// DiffersCount: the clicks counted differ (or one side has no row).
	DiffersCount Differs = "count"
	// DiffersClicks: the counts agree but not the clicks (their user_id
	// or ip hashes).
	DiffersClicks Differs = "clicks"
)

// Mismatch is a row whose served and recounted versions differ.
type Mismatch struct {
	Partition int       `json:"partition"`
	Minute    time.Time `json:"minute"`
	AdID      string    `json:"ad_id"`
	Country   string    `json:"country"`
	// Served is the clicks of the row in the served history file, 0 if
	// it has no such row; Recounted the clicks the archive gives, 0 if
	// the recount has none.
	Served    int64   `json:"served"`
	Recounted int64   `json:"recounted"`
	Differs   Differs `json:"differs"`
}

// FileProblem is a period whose served history file is missing or does
// not read back.
type FileProblem struct {
	Partition int       `json:"partition"`
	From      time.Time `json:"from"`
	To        time.Time `json:"to"`
	// Key is where the file of the applied revision should be.
	Key   string `json:"key"`
	Error string `json:"error"`
	// UncheckedRows and UncheckedClicks are the recount's rows and clicks
	// of the period: checked against nothing.
	UncheckedRows   int   `json:"unchecked_rows"`
	UncheckedClicks int64 `json:"unchecked_clicks"`
}

// Hole is a hole in a partition's archive (recount.Hole) and the minutes
// it leaves unchecked, [UncheckedFrom, UncheckedTo).
type Hole struct {
	Partition     int       `json:"partition"`
	After         string    `json:"after_key"`
	Before        string    `json:"before_key"`
	Want          string    `json:"want_entry"`
	Have          string    `json:"have_entry"`
	UncheckedFrom time.Time `json:"unchecked_from"`
	UncheckedTo   time.Time `json:"unchecked_to"`
	Error         string    `json:"error"`
}

// Matched reports whether no row differs and every served file was
// there to compare.
func (r *Report) Matched() bool {
	return len(r.Mismatches) == 0 && len(r.MissingFiles) == 0 && len(r.CorruptFiles) == 0
}

// OK reports whether everything matched and nothing was left unchecked.
func (r *Report) OK() bool { return r.Matched() && len(r.Holes) == 0 && r.UncheckedMinutes == 0 }

// add merges one partition's findings into r.
func (r *Report) add(o *Report) {
	r.Periods += o.Periods
	r.Rows += o.Rows
	r.Clicks += o.Clicks
	r.Mismatches = append(r.Mismatches, o.Mismatches...)
	r.MissingFiles = append(r.MissingFiles, o.MissingFiles...)
	r.CorruptFiles = append(r.CorruptFiles, o.CorruptFiles...)
	r.Holes = append(r.Holes, o.Holes...)
	r.UncheckedMinutes += o.UncheckedMinutes
}

func (r *Report) sort() {
	slices.SortStableFunc(r.Mismatches, func(a, b Mismatch) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), a.Minute.Compare(b.Minute),
			strings.Compare(a.AdID, b.AdID), strings.Compare(a.Country, b.Country))
	})
	byFile := func(a, b FileProblem) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), a.From.Compare(b.From))
	}
	slices.SortStableFunc(r.MissingFiles, byFile)
	slices.SortStableFunc(r.CorruptFiles, byFile)
	slices.SortStableFunc(r.Holes, func(a, b Hole) int {
		return cmp.Or(cmp.Compare(a.Partition, b.Partition), a.UncheckedFrom.Compare(b.UncheckedFrom))
	})
}

// Result is the one-word outcome: OK, MISMATCH (rows differ or served
// files are missing or corrupt) or INCOMPLETE (everything compared
// matched, but archive holes left minutes unchecked).
func (r *Report) Result() string {
	switch {
	case !r.Matched():
		return "MISMATCH"
	case !r.OK():
		return "INCOMPLETE"
	}
	return "OK"
}

// MarshalJSON adds the result to the fields, and writes empty lists as
// [] rather than null, for machines.
func (r *Report) MarshalJSON() ([]byte, error) {
	type plain Report
	c := plain(*r)
	c.Mismatches = nonNil(c.Mismatches)
	c.MissingFiles = nonNil(c.MissingFiles)
	c.CorruptFiles = nonNil(c.CorruptFiles)
	c.Holes = nonNil(c.Holes)
	c.Partitions = nonNil(c.Partitions)
	return json.Marshal(struct {
		Result string `json:"result"`
		plain
		MismatchedRows int `json:"mismatched_rows"`
	}{r.Result(), c, len(r.Mismatches)})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

const minuteLayout = "2006-01-02T15:04"

// WriteText writes r for people.
func (r *Report) WriteText(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "reconcile %s to %s UTC, %d partitions, periods of %d minutes\n", r.From.Format(minuteLayout), r.To.Format(minuteLayout), len(r.Partitions), r.PeriodMinutes)
	fmt.Fprintf(&b, "result: %s\n", r.Result())
	fmt.Fprintf(&b, "compared: %d periods, %d rows, %d clicks\n", r.Periods, r.Rows, r.Clicks)
	fmt.Fprintf(&b, "mismatching rows: %d\n", len(r.Mismatches))
	fmt.Fprintf(&b, "history files missing: %d, corrupt: %d\n", len(r.MissingFiles), len(r.CorruptFiles))
	fmt.Fprintf(&b, "archive holes: %d\n", len(r.Holes))
	fmt.Fprintf(&b, "unchecked minutes: %d\n", r.UncheckedMinutes)
	if len(r.Mismatches) > 0 {
		b.WriteString("\nmismatching rows (served by the cluster vs recounted from the archive):\n")
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "  partition\tminute\tad_id\tcountry\tserved\trecounted\tdiffers")
		for _, m := range r.Mismatches {
			d := "count"
			if m.Differs == DiffersClicks {
				d = "clicks only (same count, other users or ips)"
			}
			fmt.Fprintf(tw, "  %d\t%s\t%s\t%s\t%d\t%d\t%s\n", m.Partition, m.Minute.Format(minuteLayout), m.AdID, m.Country, m.Served, m.Recounted, d)
		}
		tw.Flush()
	}
	for _, l := range []struct {
		name  string
		files []FileProblem
	}{{"missing", r.MissingFiles}, {"corrupt", r.CorruptFiles}} {
		if len(l.files) == 0 {
			continue
		}
		fmt.Fprintf(&b, "\n%s history files (their recounted rows checked against nothing):\n", l.name)
		for _, f := range l.files {
			fmt.Fprintf(&b, "  partition %d, %s to %s: %s (%d rows, %d clicks unchecked)\n    %s\n",
				f.Partition, f.From.Format(minuteLayout), f.To.Format(minuteLayout), f.Key, f.UncheckedRows, f.UncheckedClicks, f.Error)
		}
	}
	if len(r.Holes) > 0 {
		b.WriteString("\narchive holes:\n")
		for _, h := range r.Holes {
			fmt.Fprintf(&b, "  partition %d: minutes %s to %s unchecked\n    %s\n", h.Partition,
				h.UncheckedFrom.Format(minuteLayout), h.UncheckedTo.Format(minuteLayout), h.Error)
		}
	}
	_, err := io.WriteString(w, b.String())
	return err
}
