//go:build !nobench

package cli

import "github.com/clickagg/clickagg/bench"

// redisComparison is clickagg bench -bench.redis-topologies: the same
// load on each Redis setup.
var redisComparison = comparison{report: bench.RedisTopologies, setups: []benchSetup{
	{name: "one redis-server"},
	{name: "Redis Cluster, 3 primaries", primaries: 3},
	{name: "Redis Cluster, 3 primaries with a replica each", primaries: 3, replicas: 1},
	{name: "Redis Cluster, 3 primaries with a replica each, -redis.wait-replicas=1", primaries: 3, replicas: 1, waitReplicas: 1},
}}
