package hotkey

import (
	"errors"
	"testing"
	"time"
)

// TestFollowerView: the copy only moves forward by mod revision, a
// confirmation vouches for whatever newer copy is held, and Table refuses
// a copy whose last confirmation is older than MaxStaleness.
func TestFollowerView(t *testing.T) {
	cfg := Config{MaxStaleness: 5 * time.Second}
	now := t0
	f := NewFollower(cfg, nil, nil, nil, func() time.Time { return now })
	v := func(version uint64) *Table { return mustTable(t, version) }
	wantTable := func(version uint64) {
		t.Helper()
		tab, err := f.Table()
		if err != nil || tab.Version() != version {
			t.Fatalf("Table = %v, %v; want version %d", tab.Version(), err, version)
		}
	}
	wantStale := func() {
		t.Helper()
		if _, err := f.Table(); !errors.Is(err, ErrStale) {
			t.Fatalf("Table: %v, want ErrStale", err)
		}
	}

	wantStale()
	// A watch event alone proves nothing about the present.
	f.apply(v(2), 10, time.Time{})
	wantStale()
	select {
	case <-f.Ready():
		t.Fatal("ready before any confirmation")
	default:
	}
	// An older Get, sent at now, confirms the newer copy held.
	f.apply(v(1), 5, now)
	wantTable(2)
	<-f.Ready()
	// A newer table from a Get sent earlier: taken, confirmation kept.
	f.apply(v(3), 12, now.Add(-time.Second))
	wantTable(3)
	now = now.Add(cfg.MaxStaleness)
	wantTable(3)
	now = now.Add(time.Nanosecond)
	wantStale()
	f.apply(v(3), 12, now)
	wantTable(3)
}
