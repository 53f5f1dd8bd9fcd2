package cluster

import (
	"context"
	"errors"
	"testing"

	"github.com/clickagg/clickagg/testserver"
)

// TestReconcileRunMalformed: a malformed value is an error. (Recording
// and reading runs back is in the contract suite, package clustertest.)
func TestReconcileRunMalformed(t *testing.T) {
	cli := testserver.EtcdClient(t)
	c := NewClient(cli, "/t")
	ctx := context.Background()
	if _, err := cli.Put(ctx, "/t/reconcile/last", "{"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := c.LastReconcileRun(ctx); !errors.Is(err, ErrMalformed) {
		t.Fatalf("malformed run: %v, want ErrMalformed", err)
	}
}
