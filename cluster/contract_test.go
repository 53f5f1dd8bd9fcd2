package cluster_test

import (
	"fmt"
	"testing"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/cluster/clustertest"
	"github.com/clickagg/clickagg/testserver"
)

// TestContractEtcd runs the contract suite on one embedded etcd, each
// fixture under a prefix of its own (another cluster).
func TestContractEtcd(t *testing.T) {
	cli := testserver.EtcdClient(t)
	n := 0
	clustertest.Run(t, func(t *testing.T) clustertest.Fixture {
		n++
		c := cluster.NewClient(cli, fmt.Sprintf("/contract%d", n))
		return clustertest.Fixture{Cluster: c, Jobs: c}
	})
}
