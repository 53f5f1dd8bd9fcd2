package ring

import (
	"errors"
	"fmt"
	"slices"

	"github.com/buraksezer/consistent"
	"github.com/cespare/xxhash/v2"
)

// DefaultLoad bounds a member's partitions at 1.25 times the mean.
const DefaultLoad = 1.25

// MaxPartitions bounds the partition count; more partitions than this would
// cost more in per-partition log reads and ticks than they buy.
const MaxPartitions = 4096

type hasher struct{}

func (hasher) Sum64(b []byte) uint64 { return xxhash.Sum64(b) }

// Partitioner maps ad_ids to partitions.
type Partitioner struct {
	n uint64
}

// NewPartitioner returns the partitioner of a cluster with n partitions.
func NewPartitioner(n int) (*Partitioner, error) {
	if n < 1 || n > MaxPartitions {
		return nil, fmt.Errorf("partition count %d: must be in [1, %d]", n, MaxPartitions)
	}
	return &Partitioner{n: uint64(n)}, nil
}

// Partitions is the partition count.
func (p *Partitioner) Partitions() int { return int(p.n) }

// Partition returns the partition of adID. It is the same computation as
// consistent.FindPartitionID, done here without allocating.
func (p *Partitioner) Partition(adID string) int {
	return int(xxhash.Sum64String(adID) % p.n)
}

type member string

func (m member) String() string { return string(m) }

// ErrNoMembers is returned by Assign when there is no member to own partitions.
var ErrNoMembers = errors.New("ring: no members")

// Assign places partitions partitions on members with bounded loads and
// returns the owner of each partition, indexed by partition. The result
// depends only on the set of members, not on their order.
func Assign(members []string, partitions int, load float64) ([]string, error) {
	if partitions < 1 || partitions > MaxPartitions {
		return nil, fmt.Errorf("partition count %d: must be in [1, %d]", partitions, MaxPartitions)
	}
	if len(members) == 0 {
		return nil, ErrNoMembers
	}
	if load == 0 {
		load = DefaultLoad
	}
	if load < 1 {
		return nil, fmt.Errorf("load %v: must be at least 1", load)
	}
	ms := slices.Clone(members)
	slices.Sort(ms)
	ms = slices.Compact(ms)
	for _, m := range ms {
		if m == "" {
			return nil, errors.New("ring: empty member name")
		}
	}
	// The library rounds the mean down before multiplying by load and panics
	// when the members cannot hold every partition; refuse such inputs.
	capacity := int(ceil(float64(partitions/len(ms))*load)) * len(ms)
	if partitions/len(ms) == 0 || capacity < partitions {
		return nil, fmt.Errorf("ring: %d members cannot hold %d partitions at load %v; use fewer members or more partitions", len(ms), partitions, load)
	}
	cm := make([]consistent.Member, len(ms))
	for i, m := range ms {
		cm[i] = member(m)
	}
	c := consistent.New(cm, consistent.Config{
		Hasher:            hasher{},
		PartitionCount:    partitions,
		ReplicationFactor: 64,
		Load:              load,
	})
	owners := make([]string, partitions)
	for p := range owners {
		owners[p] = c.GetPartitionOwner(p).String()
	}
	return owners, nil
}

func ceil(f float64) float64 {
	i := float64(int64(f))
	if f > i {
		return i + 1
	}
	return i
}
