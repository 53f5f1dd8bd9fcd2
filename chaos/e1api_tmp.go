package chaos

// This file stands in for E1's chaos API (faults.go, cluster.go) until
// branch chaoscluster is merged; the merge deletes it.

import (
	"fmt"
	"log/slog"
	"time"
)

type ClusterConfig struct {
	Binary                                      string
	Dir                                         string
	Partitions                                  int
	Routers, Aggregators, Coordinators, Queryds int
	EtcdMembers                                 int
	RedisReplicas                               int
	LeaseTTL                                    time.Duration
	ExtraFlags                                  map[string][]string
	Env                                         []string
	Log                                         *slog.Logger
}

type Kind string

const (
	KillOne         Kind = "kill"
	KillSeveral     Kind = "kill-several"
	Pause           Kind = "pause"
	RedisRestart    Kind = "redis-restart"
	RedisFailover   Kind = "redis-failover"
	EtcdMemberKill  Kind = "etcd-member-kill"
	EtcdLeaderKill  Kind = "etcd-leader-kill"
	EtcdUnreachable Kind = "etcd-unreachable"
	NetLatency      Kind = "net-latency"
	NetReset        Kind = "net-reset"
	NetOneWay       Kind = "net-oneway"
	Rebalance       Kind = "rebalance"
	Drain           Kind = "drain"
	Split           Kind = "split"
	Unsplit         Kind = "unsplit"
)

type Fault struct {
	At       time.Duration
	Kind     Kind
	Targets  []string
	Duration time.Duration
	Param    string
}

func (f Fault) String() string {
	return fmt.Sprintf("+%.1fs %s %v for %v %s", f.At.Seconds(), f.Kind, f.Targets, f.Duration, f.Param)
}
