package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"time"
)

// The last run of clickagg reconcile is recorded here: it is a batch job
// that nothing scrapes, so the coordinator, which always runs, exports it
// as metrics.

func (c *Client) reconcileKey() string { return c.prefix + "/reconcile/last" }

// ReconcileRun is what a completed run of clickagg reconcile found.
type ReconcileRun struct {
	// Started is when the run started; From and To the range it checked.
	Started time.Time `json:"started"`
	From    time.Time `json:"from"`
	To      time.Time `json:"to"`
	// Partitions is how many partitions it checked.
	Partitions     int   `json:"partitions"`
	RowsCompared   int64 `json:"rows_compared"`
	MismatchedRows int   `json:"mismatched_rows"`
	// UnreadableFiles are the served history files missing or corrupt.
	UnreadableFiles  int   `json:"unreadable_history_files"`
	Holes            int   `json:"archive_holes"`
	UncheckedMinutes int64 `json:"unchecked_minutes"`
}

// PutReconcileRun records r as the last reconcile run.
func (c *Client) PutReconcileRun(ctx context.Context, r ReconcileRun) error {
	data, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("encode reconcile run: %w", err)
	}
	if _, err := c.cli.Put(ctx, c.reconcileKey(), string(data)); err != nil {
		return fmt.Errorf("record reconcile run: %w", err)
	}
	return nil
}

// LastReconcileRun returns the last recorded reconcile run; ok is false
// when none was.
func (c *Client) LastReconcileRun(ctx context.Context) (r ReconcileRun, ok bool, err error) {
	resp, err := c.cli.Get(ctx, c.reconcileKey())
	if err != nil {
		return r, false, fmt.Errorf("get last reconcile run: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return r, false, nil
	}
	if err := json.Unmarshal(resp.Kvs[0].Value, &r); err != nil {
		return r, false, fmt.Errorf("%w: last reconcile run: %v", ErrMalformed, err)
	}
	return r, true, nil
}
