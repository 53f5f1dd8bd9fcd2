package hotkey

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/cluster"
)

// Errors of the Store.
var (
	// ErrFenced: the write's fence (the leader's election key) no longer
	// holds; nothing was written.
	ErrFenced = errors.New("hotkey: not the leader")
	// ErrConflict: the table changed since it was read; nothing was written.
	ErrConflict = errors.New("hotkey: split table changed since it was read")
	// ErrMalformed wraps a stored value that does not decode or validate.
	ErrMalformed = errors.New("hotkey: malformed value in etcd")
)

// Store reads and writes the split table and the routers'
// acknowledgements of one cluster in etcd:
//
//	<prefix>/splits              JSON {version, splits: [Interval...]}
//	<prefix>/split-acks/<id>     decimal version, on the router's membership lease
type Store struct {
	cli        *clientv3.Client
	prefix     string
	partitions int
}

// NewStore returns the store of the cluster under prefix ("" means
// cluster.DefaultPrefix) with partitions partitions; tables naming other
// partitions are refused as malformed. It does no I/O.
func NewStore(cli *clientv3.Client, prefix string, partitions int) *Store {
	if prefix == "" {
		prefix = cluster.DefaultPrefix
	}
	return &Store{cli: cli, prefix: strings.TrimSuffix(prefix, "/"), partitions: partitions}
}

func (s *Store) tableKey() string { return s.prefix + "/splits" }
func (s *Store) acksKey() string  { return s.prefix + "/split-acks/" }

// Partitions is the cluster's partition count.
func (s *Store) Partitions() int { return s.partitions }

// stored is the JSON form of a table.
type stored struct {
	Version uint64     `json:"version"`
	Splits  []Interval `json:"splits"`
}

func (s *Store) decode(v []byte) (*Table, error) {
	var st stored
	if err := json.Unmarshal(v, &st); err != nil {
		return nil, fmt.Errorf("%w: split table: %v", ErrMalformed, err)
	}
	t, err := NewTable(st.Version, st.Splits, s.partitions)
	if err != nil {
		return nil, fmt.Errorf("%w: split table version %d: %v", ErrMalformed, st.Version, err)
	}
	return t, nil
}

func encode(t *Table) (string, error) {
	b, err := json.Marshal(stored{Version: t.Version(), Splits: t.Splits()})
	if err != nil {
		return "", fmt.Errorf("encode split table %d: %w", t.Version(), err)
	}
	return string(b), nil
}

// Load returns the current table (version 0 and no splits if none was
// written) and its key's mod revision (0 if none), which Write takes to
// detect a concurrent change.
func (s *Store) Load(ctx context.Context) (*Table, int64, error) {
	t, rev, _, err := s.load(ctx)
	return t, rev, err
}

// load is Load that also returns the revision of the store it read.
func (s *Store) load(ctx context.Context) (*Table, int64, int64, error) {
	resp, err := s.cli.Get(ctx, s.tableKey())
	if err != nil {
		return nil, 0, 0, fmt.Errorf("get split table: %w", err)
	}
	t, rev, err := s.fromKVs(resp.Kvs)
	return t, rev, resp.Header.Revision, err
}

func (s *Store) fromKVs(kvs []*mvccpb.KeyValue) (*Table, int64, error) {
	if len(kvs) == 0 {
		t, _ := NewTable(0, nil, s.partitions)
		return t, 0, nil
	}
	t, err := s.decode(kvs[0].Value)
	if err != nil {
		return nil, 0, err
	}
	return t, kvs[0].ModRevision, nil
}

// Write stores t if fence holds and the table key's mod revision is still
// rev (0: the key does not exist), and returns the new mod revision. The
// fence is the writer's leadership, e.g. the condition that its election
// key still exists with the revision it won with; etcd checks it in the
// same transaction as the write, so a deposed leader cannot slip a write in
// after its successor was elected. ErrFenced and ErrConflict mean nothing
// was written.
func (s *Store) Write(ctx context.Context, fence clientv3.Cmp, rev int64, t *Table) (int64, error) {
	value, err := encode(t)
	if err != nil {
		return 0, err
	}
	key := s.tableKey()
	resp, err := s.cli.Txn(ctx).
		If(fence, clientv3.Compare(clientv3.ModRevision(key), "=", rev)).
		Then(clientv3.OpPut(key, value)).
		// Tell a lost fence from a concurrent change.
		Else(clientv3.OpTxn([]clientv3.Cmp{fence}, nil, nil)).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("write split table %d: %w", t.Version(), err)
	}
	if !resp.Succeeded {
		if resp.Responses[0].GetResponseTxn().GetSucceeded() {
			return 0, fmt.Errorf("write split table %d: %w", t.Version(), ErrConflict)
		}
		return 0, fmt.Errorf("write split table %d: %w", t.Version(), ErrFenced)
	}
	return resp.Header.Revision, nil
}

// Ack is one router's acknowledgement.
type Ack struct {
	Version uint64
	// Lease is the lease the ack was written on: the router's membership
	// lease, i.e. its cluster.Member.Incarnation.
	Lease int64
}

// WriteAck records that router id holds version, on lease (its membership
// lease, so that the ack goes away with the member).
func (s *Store) WriteAck(ctx context.Context, id string, version uint64, lease clientv3.LeaseID) error {
	if id == "" || strings.Contains(id, "/") {
		return fmt.Errorf("%w: router id %q", ErrInvalid, id)
	}
	if _, err := s.cli.Put(ctx, s.acksKey()+id, strconv.FormatUint(version, 10), clientv3.WithLease(lease)); err != nil {
		return fmt.Errorf("ack split table %d as %s: %w", version, id, err)
	}
	return nil
}

// Acks returns every router's acknowledgement by router id.
func (s *Store) Acks(ctx context.Context) (map[string]Ack, error) {
	resp, err := s.cli.Get(ctx, s.acksKey(), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("get split acks: %w", err)
	}
	out := make(map[string]Ack, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		id := strings.TrimPrefix(string(kv.Key), s.acksKey())
		v, err := strconv.ParseUint(string(kv.Value), 10, 64)
		if err != nil {
			return nil, fmt.Errorf("%w: ack of %s: %q", ErrMalformed, id, kv.Value)
		}
		out[id] = Ack{Version: v, Lease: kv.Lease}
	}
	return out, nil
}
