package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/retry"
)

// batch is one encoded IngestStreamRequest.
type batch struct {
	data []byte
	n    int
}

// rawCodec sends requests that are already encoded as they are, and decodes
// responses as protobuf. The server sees ordinary protobuf: only the client
// skips building messages it has already written as bytes.
type rawCodec struct{}

var _ encoding.Codec = rawCodec{}

func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.(*batch); ok {
		return b.data, nil
	}
	m, ok := v.(proto.Message)
	if !ok {
		return nil, fmt.Errorf("rawCodec: cannot marshal %T", v)
	}
	return proto.Marshal(m)
}

func (rawCodec) Unmarshal(data []byte, v any) error {
	m, ok := v.(proto.Message)
	if !ok {
		return fmt.Errorf("rawCodec: cannot unmarshal into %T", v)
	}
	return proto.Unmarshal(data, m)
}

// Name is "proto", so that the request's content type is the one the
// server expects.
func (rawCodec) Name() string { return "proto" }

var ingestStreamDesc = grpc.StreamDesc{StreamName: "IngestStream", ServerStreams: true, ClientStreams: true}

const ingestStreamMethod = "/" + "clickagg.v1.IngestService" + "/IngestStream"

// errRejected: the cluster refused events of the workload, which is valid
// by construction, so the ground truth no longer describes what it holds.
var errRejected = errors.New("bench: the cluster rejected events")

// sender streams batches to one router connection, inflight requests ahead
// of their acknowledgements, and resends what was not acknowledged when a
// stream breaks (the router may have appended it: dedup absorbs that).
type sender struct {
	conn     *grpc.ClientConn
	inflight int
	acked    *atomic.Int64
	retries  *atomic.Int64
}

// run sends every batch of in until in is closed and everything sent was
// acknowledged.
func (s *sender) run(ctx context.Context, in <-chan *batch) error {
	var unacked []*batch
	failures := 0
	return retry.Do(ctx, streamPause, nil, func() error {
		var err error
		var done bool
		unacked, done, err = s.stream(ctx, in, unacked)
		switch {
		case done:
			return nil
		case errors.Is(err, errRejected) || ctx.Err() != nil:
			return retry.Permanent(err)
		}
		failures++
		if failures > 20 {
			return retry.Permanent(fmt.Errorf("ingest stream: %d failures in a row, last: %w", failures, err))
		}
		s.retries.Add(1)
		return err
	})
}

// streamPause paces the streams that follow a failed one.
var streamPause = retry.Policy{Min: 100 * time.Millisecond, Max: 2 * time.Second}

// stream runs one IngestStream: it resends resend, then sends from in. It
// returns done when in is closed and all was acknowledged; otherwise the
// batches not acknowledged, oldest first.
func (s *sender) stream(ctx context.Context, in <-chan *batch, resend []*batch) ([]*batch, bool, error) {
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	cs, err := s.conn.NewStream(sctx, &ingestStreamDesc, ingestStreamMethod, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return resend, false, err
	}
	// q holds the batches sent and not yet acknowledged, in order: the
	// router answers a stream's requests in order.
	q := make(chan *batch, s.inflight+len(resend))
	var held *batch // taken from in, not yet in q
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		send := func(b *batch) bool {
			select {
			case q <- b:
			case <-sctx.Done():
				held = b
				return false
			}
			return cs.SendMsg(b) == nil
		}
		for _, b := range resend {
			if !send(b) {
				return
			}
		}
		for {
			var b *batch
			var ok bool
			select {
			case b, ok = <-in:
			case <-sctx.Done():
				return
			}
			if !ok {
				_ = cs.CloseSend()
				return
			}
			if !send(b) {
				return
			}
		}
	}()
	var recvErr error
	for {
		var resp clickaggv1.IngestStreamResponse
		if err := cs.RecvMsg(&resp); err != nil {
			if !errors.Is(err, io.EOF) {
				recvErr = err
			}
			break
		}
		b := <-q
		if resp.Accepted != int64(b.n) {
			reason := ""
			if len(resp.Rejected) > 0 {
				reason = resp.Rejected[0].Reason
			}
			recvErr = fmt.Errorf("%w: %d of %d events, first reason: %s", errRejected, int64(b.n)-resp.Accepted, b.n, reason)
			break
		}
		s.acked.Add(int64(b.n))
	}
	cancel()
	wg.Wait()
	var left []*batch
	for len(q) > 0 {
		left = append(left, <-q)
	}
	if held != nil {
		left = append(left, held)
	}
	if recvErr == nil && len(left) == 0 {
		return nil, true, nil
	}
	if recvErr == nil {
		recvErr = errors.New("stream ended with requests unanswered")
	}
	return left, false, recvErr
}
