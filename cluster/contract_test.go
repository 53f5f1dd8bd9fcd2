package cluster_test

import (
	"fmt"
	"testing"

	"github.com/clickagg/clickagg/aggregator"
	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/cluster/clustertest"
	"github.com/clickagg/clickagg/coordinator"
	"github.com/clickagg/clickagg/queryd"
	"github.com/clickagg/clickagg/testserver"
)

// The suite's interface holds every method of the roles' interfaces: a
// method a role starts to use does not compile here until the suite
// covers it.
var (
	_ aggregator.Cluster  = clustertest.Cluster(nil)
	_ coordinator.Cluster = clustertest.Cluster(nil)
	_ queryd.Cluster      = clustertest.Cluster(nil)
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
