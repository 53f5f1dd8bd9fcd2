// Package toplisttest is the contract suite of queryd.Publications: every
// implementation runs Run on its real backend (package toplist on one Redis
// server and on a Redis Cluster).
package toplisttest

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/clickagg/clickagg/queryd"
	"github.com/clickagg/clickagg/testserver"
)

// Fixture is one implementation under test, empty: no minute stored.
type Fixture struct {
	Pubs queryd.Publications
	// Listen subscribes to the announcements and returns them in the order
	// they arrive; the subscription is in place when it returns.
	Listen func(t *testing.T) <-chan []byte
}

// base is the first minute the suite publishes (2026-12-07): far from 0,
// so that minutes of different lengths would not pass unnoticed.
const base = 29_420_000

// Run runs the contract on fixtures from newFixture, one per subtest.
func Run(t *testing.T, newFixture func(t *testing.T) Fixture) {
	tests := []struct {
		name string
		run  func(t *testing.T, f Fixture)
	}{
		{"load missing", testLoadMissing},
		{"round trip", testRoundTrip},
		{"overwrite", testOverwrite},
		{"announced in order", testAnnouncedInOrder},
		{"ttl", testTTL},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.run(t, newFixture(t)) })
	}
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// list is a distinct payload for minute m and version v, with bytes that
// are not text, so that a store that re-encodes is caught.
func list(m int64, v int) []byte {
	return fmt.Appendf([]byte{0, 0xff, '\n'}, `{"ads":[{"adId":"ad-%d","count":"%d"}],"v":%d}`, m, m-base, v)
}

func publish(t *testing.T, ctx context.Context, f Fixture, m int64, l []byte, ttl time.Duration) {
	t.Helper()
	if err := f.Pubs.Publish(ctx, m, l, ttl); err != nil {
		t.Fatalf("publish minute %d: %v", m, err)
	}
}

// load loads minutes and checks that the answer has one list per minute.
func load(t *testing.T, ctx context.Context, f Fixture, minutes ...int64) [][]byte {
	t.Helper()
	got, err := f.Pubs.Load(ctx, minutes)
	if err != nil {
		t.Fatalf("load %v: %v", minutes, err)
	}
	if len(got) != len(minutes) {
		t.Fatalf("load %v: %d lists, want %d", minutes, len(got), len(minutes))
	}
	return got
}

func testLoadMissing(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	if got := load(t, ctx, f); len(got) != 0 {
		t.Fatalf("load of no minutes: %q", got)
	}
	for i, l := range load(t, ctx, f, base, base+1, 0, -1) {
		if l != nil {
			t.Errorf("list %d of an empty store: %q, want nil", i, l)
		}
	}
}

// testRoundTrip publishes 40 minutes (on a Redis Cluster, keys in many
// slots) and loads them back byte for byte, in the order asked, with the
// minutes never published nil.
func testRoundTrip(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	const n = 40
	for m := int64(base); m < base+n; m++ {
		publish(t, ctx, f, m, list(m, 1), time.Hour)
	}
	var ask []int64
	for m := int64(base + n); m >= base-2; m-- {
		ask = append(ask, m)
	}
	got := load(t, ctx, f, ask...)
	for i, m := range ask {
		var want []byte
		if m >= base && m < base+n {
			want = list(m, 1)
		}
		if !bytes.Equal(got[i], want) || (want == nil) != (got[i] == nil) {
			t.Errorf("minute %d: %q, want %q", m, got[i], want)
		}
	}
}

func testOverwrite(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	publish(t, ctx, f, base, list(base, 1), time.Hour)
	publish(t, ctx, f, base+1, list(base+1, 1), time.Hour)
	publish(t, ctx, f, base, list(base, 2), time.Hour)
	got := load(t, ctx, f, base, base+1)
	if !bytes.Equal(got[0], list(base, 2)) || !bytes.Equal(got[1], list(base+1, 1)) {
		t.Fatalf("after overwriting minute %d: %q, want %q and %q", base, got, list(base, 2), list(base+1, 1))
	}
}

// testAnnouncedInOrder: a listener hears every published list, in the
// order of the Publish calls, republished ones included, and nothing else.
func testAnnouncedInOrder(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	ch := f.Listen(t)
	var want [][]byte
	pub := func(m int64, v int) {
		publish(t, ctx, f, m, list(m, v), time.Hour)
		want = append(want, list(m, v))
	}
	for m := int64(base); m < base+30; m++ {
		pub(m, 1)
	}
	pub(base+3, 2)
	pub(base+30, 1)
	pub(base, 2)
	for i, w := range want {
		select {
		case got := <-ch:
			if !bytes.Equal(got, w) {
				t.Fatalf("announcement %d: %q, want %q", i, got, w)
			}
		case <-ctx.Done():
			t.Fatalf("announcement %d (%q): none", i, w)
		}
	}
	// One more publish: its announcement must be the next one, so that no
	// extra one came in between.
	pub(base+31, 1)
	select {
	case got := <-ch:
		if !bytes.Equal(got, want[len(want)-1]) {
			t.Fatalf("announcement after the last one: %q, want %q", got, want[len(want)-1])
		}
	case <-ctx.Done():
		t.Fatal("last announcement: none")
	}
}

// testTTL: a list goes after its TTL; a TTL of 0 keeps it.
func testTTL(t *testing.T, f Fixture) {
	ctx := ctxT(t)
	publish(t, ctx, f, base, list(base, 1), 0)
	publish(t, ctx, f, base+1, list(base+1, 1), time.Hour)
	publish(t, ctx, f, base+2, list(base+2, 1), 300*time.Millisecond)
	testserver.Eventually(t, 20*time.Second, func() error {
		if got := load(t, ctx, f, base+2)[0]; got != nil {
			return fmt.Errorf("minute %d with a TTL of 300ms still stored: %q", base+2, got)
		}
		return nil
	})
	got := load(t, ctx, f, base, base+1)
	if !bytes.Equal(got[0], list(base, 1)) || !bytes.Equal(got[1], list(base+1, 1)) {
		t.Fatalf("minutes kept for ever and for an hour: %q", got)
	}
}
