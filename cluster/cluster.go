package cluster

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/ring"
)

// Roles a member can register with.
const (
	RoleRouter      = "router"
	RoleAggregator  = "aggregator"
	RoleCoordinator = "coordinator"
	RoleQueryd      = "queryd"
)

var (
	// ErrNotLeader is returned by every Leadership write once the caller
	// no longer holds the election key.
	ErrNotLeader = errors.New("cluster: not the leader")
	// ErrNoPartitions is returned by EnsurePartitions(ctx, 0) when the
	// cluster has no partition count yet.
	ErrNoPartitions = errors.New("cluster: no partition count stored")
	// ErrPartitionsMismatch is returned by EnsurePartitions when the stored
	// count differs from the requested one.
	ErrPartitionsMismatch = errors.New("cluster: partition count differs from the stored one")
	// ErrMalformed wraps a value in etcd that does not decode; only
	// something other than this package can have written it.
	ErrMalformed = errors.New("cluster: malformed value in etcd")
	// ErrInvalid wraps an argument this package refuses.
	ErrInvalid = errors.New("cluster: invalid argument")
)

// ValidRole reports whether r is one of the roles.
func ValidRole(r string) bool {
	switch r {
	case RoleRouter, RoleAggregator, RoleCoordinator, RoleQueryd:
		return true
	}
	return false
}

// Member is one registered process.
type Member struct {
	ID   string `json:"id"`
	Role string `json:"role"`
	// Addr is the member's gRPC address.
	Addr string `json:"addr"`
	// Incarnation is the lease ID of this registration: it differs between
	// two lives of the same ID.
	Incarnation  int64     `json:"incarnation"`
	RegisteredAt time.Time `json:"registered_at"`
	// Leaving is set by an aggregator that is shutting down: it still
	// serves, and asks to have its partitions handed over live before it
	// goes (Registration.SetLeaving).
	Leaving bool `json:"leaving,omitempty"`
	// Unhealthy is set by an aggregator that could not take or serve its
	// partitions within -aggregator.claim-timeout (its Redis unreachable,
	// refusing writes): it gives them back, and the coordinator places
	// partitions elsewhere while anyone healthy is left. It clears the
	// flag once it can reach Redis again (Registration.SetUnhealthy).
	Unhealthy bool `json:"unhealthy,omitempty"`
	// Version is the clickagg version the process runs (package
	// buildinfo), so that an operator sees a rolling upgrade's progress;
	// empty from a process older than the field.
	Version string `json:"version,omitempty"`
	// HTTPAddr is the address of the process's HTTP server (/metrics, the
	// console), so that consoles can link to each other; empty when it
	// serves no HTTP.
	HTTPAddr string `json:"http_addr,omitempty"`
}

// Owner is the owner of one partition.
type Owner struct {
	// Member is the owner's ID; empty when the partition is unassigned.
	Member      string `json:"member"`
	Incarnation int64  `json:"incarnation"`
	// Epoch fences the partition's snapshot writes: it grows every time the
	// owner (ID or incarnation) changes.
	Epoch uint64 `json:"epoch"`
	// Released is the log offset of the final snapshot the previous owner
	// wrote when it released the partition in a live handoff; empty
	// otherwise. A new owner that loads exactly that snapshot holds what
	// the previous owner served when it stopped, and may serve at once.
	Released string `json:"released,omitempty"`
}

// Assignment is the partition → owner map the leader writes.
type Assignment struct {
	// Version grows with every write; 0 means none was written yet.
	Version uint64 `json:"version"`
	// Owners is indexed by partition.
	Owners []Owner `json:"owners"`
}

// Client reads and writes the cluster state of one prefix.
type Client struct {
	cli    *clientv3.Client
	prefix string
}

// NewClient returns a client of the cluster under prefix ("" means
// DefaultPrefix). It does no I/O.
func NewClient(cli *clientv3.Client, prefix string) *Client {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Client{cli: cli, prefix: strings.TrimSuffix(prefix, "/")}
}

func (c *Client) partitionsKey() string { return c.prefix + "/config/partitions" }
func (c *Client) redisIDKey() string    { return c.prefix + "/config/redis-id" }
func (c *Client) assignmentKey() string { return c.prefix + "/assignment" }
func (c *Client) electionPrefix() string {
	return c.prefix + "/leader"
}
func (c *Client) drainingPrefix() string { return c.prefix + "/draining/" }
func (c *Client) pinsPrefix() string     { return c.prefix + "/pins/" }
func (c *Client) handoffsPrefix() string { return c.prefix + "/handoffs/" }

// membersKey is the key prefix of role's members, of all members when role
// is "". The trailing slash keeps role "router" from matching "routers".
func (c *Client) membersKey(role string) string {
	if role == "" {
		return c.prefix + "/members/"
	}
	return c.prefix + "/members/" + role + "/"
}

// EnsurePartitions stores n as the cluster's partition count if none is
// stored and returns the stored count. n == 0 means "use the stored count"
// (ErrNoPartitions if none); a stored count other than n is
// ErrPartitionsMismatch, since changing it would move every ad to another
// partition.
func (c *Client) EnsurePartitions(ctx context.Context, n int) (int, error) {
	if n < 0 || n > ring.MaxPartitions {
		return 0, fmt.Errorf("%w: partition count %d: must be in [1, %d], or 0 for the stored count", ErrInvalid, n, ring.MaxPartitions)
	}
	key := c.partitionsKey()
	if n == 0 {
		resp, err := c.cli.Get(ctx, key)
		if err != nil {
			return 0, fmt.Errorf("get partition count: %w", err)
		}
		if len(resp.Kvs) == 0 {
			return 0, ErrNoPartitions
		}
		return decodePartitions(resp.Kvs[0].Value)
	}
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, strconv.Itoa(n))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("store partition count: %w", err)
	}
	if resp.Succeeded {
		return n, nil
	}
	stored, err := decodePartitions(resp.Responses[0].GetResponseRange().Kvs[0].Value)
	if err != nil {
		return 0, err
	}
	if stored != n {
		return stored, fmt.Errorf("%w: cluster has %d partitions, %d requested", ErrPartitionsMismatch, stored, n)
	}
	return stored, nil
}

// RedisID returns the identity of the cluster's Redis, "" when none is
// stored yet (see EnsureRedisID).
func (c *Client) RedisID(ctx context.Context) (string, error) {
	resp, err := c.cli.Get(ctx, c.redisIDKey())
	if err != nil {
		return "", fmt.Errorf("get redis id: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return "", nil
	}
	return string(resp.Kvs[0].Value), nil
}

// EnsureRedisID stores id as the identity of the cluster's Redis if none
// is stored, and returns the stored one. The same id is kept in Redis
// itself; a member whose Redis holds another (or none, once one is stored
// here) is not connected to the cluster's Redis.
func (c *Client) EnsureRedisID(ctx context.Context, id string) (string, error) {
	if id == "" {
		return "", fmt.Errorf("%w: empty redis id", ErrInvalid)
	}
	key := c.redisIDKey()
	resp, err := c.cli.Txn(ctx).
		If(clientv3.Compare(clientv3.CreateRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, id)).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return "", fmt.Errorf("store redis id: %w", err)
	}
	if resp.Succeeded {
		return id, nil
	}
	return string(resp.Responses[0].GetResponseRange().Kvs[0].Value), nil
}

func decodePartitions(v []byte) (int, error) {
	n, err := strconv.Atoi(string(v))
	if err != nil || n < 1 || n > ring.MaxPartitions {
		return 0, fmt.Errorf("%w: partition count %q", ErrMalformed, v)
	}
	return n, nil
}

// Members returns the members of role ("" = all roles), sorted by ID, then
// role.
func (c *Client) Members(ctx context.Context, role string) ([]Member, error) {
	if err := checkRoleFilter(role); err != nil {
		return nil, err
	}
	resp, err := c.cli.Get(ctx, c.membersKey(role), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("get members: %w", err)
	}
	ms := make([]Member, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		m, err := decodeMember(kv.Key, kv.Value, kv.Lease)
		if err != nil {
			return nil, err
		}
		ms = append(ms, m)
	}
	sortMembers(ms)
	return ms, nil
}

func checkRoleFilter(role string) error {
	if role != "" && !ValidRole(role) {
		return fmt.Errorf("%w: role %q: want router, aggregator, coordinator or queryd", ErrInvalid, role)
	}
	return nil
}

// decodeMember takes the incarnation from the key's lease rather than from
// the JSON, so that what a reader sees is what etcd will expire.
func decodeMember(key, value []byte, lease int64) (Member, error) {
	var m Member
	if err := json.Unmarshal(value, &m); err != nil {
		return Member{}, fmt.Errorf("%w: member %s: %v", ErrMalformed, key, err)
	}
	m.Incarnation = lease
	return m, nil
}

func sortMembers(ms []Member) {
	slices.SortFunc(ms, func(a, b Member) int {
		return cmp.Or(cmp.Compare(a.ID, b.ID), cmp.Compare(a.Role, b.Role))
	})
}

// WatchMembers calls fn with the members of role ("" = all) at start and
// after every change, until ctx ends; it returns ctx.Err() then. It returns
// early only for errors that retrying cannot fix (a malformed member, a
// closed client, a refused request); etcd being unreachable is waited out.
// fn runs on the caller's goroutine and must not block for long.
func (c *Client) WatchMembers(ctx context.Context, role string, fn func([]Member)) error {
	if err := checkRoleFilter(role); err != nil {
		return err
	}
	return c.watch(ctx, c.membersKey(role), true, func(st state) error {
		ms := make([]Member, 0, len(st))
		for k, kv := range st {
			m, err := decodeMember([]byte(k), kv.Value, kv.Lease)
			if err != nil {
				return err
			}
			ms = append(ms, m)
		}
		sortMembers(ms)
		fn(ms)
		return nil
	})
}

// Assignment returns the current assignment; Version 0 when none was
// written yet.
func (c *Client) Assignment(ctx context.Context) (Assignment, error) {
	resp, err := c.cli.Get(ctx, c.assignmentKey())
	if err != nil {
		return Assignment{}, fmt.Errorf("get assignment: %w", err)
	}
	if len(resp.Kvs) == 0 {
		return Assignment{}, nil
	}
	return decodeAssignment(resp.Kvs[0].Value)
}

func decodeAssignment(v []byte) (Assignment, error) {
	var a Assignment
	if err := json.Unmarshal(v, &a); err != nil {
		return Assignment{}, fmt.Errorf("%w: assignment: %v", ErrMalformed, err)
	}
	return a, nil
}

// WatchAssignment calls fn with the assignment at start and after every
// write, the same way as WatchMembers.
func (c *Client) WatchAssignment(ctx context.Context, fn func(Assignment)) error {
	key := c.assignmentKey()
	return c.watch(ctx, key, false, func(st state) error {
		var a Assignment
		if kv, ok := st[key]; ok {
			var err error
			if a, err = decodeAssignment(kv.Value); err != nil {
				return err
			}
		}
		fn(a)
		return nil
	})
}
