package cli

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/testserver"
)

// TestPartitionsFlag: -cluster.partitions 0, the default, takes the count
// the cluster has, or creates it with 64; an explicit count creates the
// cluster with it, and another count than the cluster's refuses to start,
// naming the flag.
func TestPartitionsFlag(t *testing.T) {
	fs, cfg := newFlags()
	if err := parse(fs, nil); err != nil {
		t.Fatal(err)
	}
	if cfg.Partitions != 0 || !strings.Contains(fs.Lookup("cluster.partitions").Usage, "0: what the cluster already has, else 64") {
		t.Fatalf("-cluster.partitions defaults to %d, help %q; want 0, saying what it means", cfg.Partitions, fs.Lookup("cluster.partitions").Usage)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("Validate(defaults) = %v", err)
	}
	cfg.Partitions = -1
	if err := cfg.Validate(); err == nil || !strings.HasPrefix(err.Error(), "-cluster.partitions: ") {
		t.Fatalf("Validate(-cluster.partitions=-1) = %v, want an error naming the flag", err)
	}

	etcd := testserver.NewEtcdClient(t, testserver.Etcd(t).Endpoint)
	ctx := context.Background()
	for _, tc := range []struct {
		prefix string
		want   []int // the flag at successive starts
		got    []int // the count each start runs with; 0: refused
	}{
		{"/default", []int{0, 0, 64}, []int{64, 64, 64}},
		{"/explicit", []int{8, 0, 8, 4, 64}, []int{8, 8, 8, 0, 0}},
	} {
		cl := cluster.NewClient(etcd, tc.prefix)
		for i, want := range tc.want {
			n, err := ensurePartitions(ctx, cl, want)
			if tc.got[i] == 0 {
				if !errors.Is(err, cluster.ErrPartitionsMismatch) || !strings.HasPrefix(err.Error(), "-cluster.partitions ") {
					t.Errorf("%s: start %d with -cluster.partitions=%d: %d, %v; want a refusal naming the flag", tc.prefix, i, want, n, err)
				}
				continue
			}
			if err != nil || n != tc.got[i] {
				t.Errorf("%s: start %d with -cluster.partitions=%d: %d, %v; want %d", tc.prefix, i, want, n, err, tc.got[i])
			}
		}
	}
}
