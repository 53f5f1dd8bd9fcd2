package snapshot

import (
	"context"
	"errors"
	"testing"

	"github.com/clickagg/clickagg/testserver"
)

// TestStaleOwnerRefused is the normal counterpart of the fencing-off
// negative control (stale_break_test.go, -tags chaosbreak): an ex-owner's
// save after a newer claim is refused and changes nothing.
func TestStaleOwnerRefused(t *testing.T) {
	checkStaleOwner(t, true)
}

// checkStaleOwner has owner 1 save, owner 2 claim and save, then owner 1
// save again, as an aggregator paused past its lease does when it wakes
// up. With refused, that save must fail with ErrStaleEpoch and leave owner
// 2's snapshot and fence; without, it must go through and replace them.
func checkStaleOwner(t *testing.T, refused bool) {
	ctx := context.Background()
	st := New(testserver.RedisClient(t), "clickagg")
	const p = 5
	save := func(epoch uint64, meta, minute string) error {
		return st.Save(ctx, p, Write{Epoch: epoch, Meta: []byte(meta), Minutes: map[int64][]byte{100: []byte(minute)}})
	}
	for _, step := range []func() error{
		func() error { return st.Claim(ctx, p, 1) },
		func() error { return save(1, "meta-1", "minute-1") },
		func() error { return st.Claim(ctx, p, 2) },
		func() error { return save(2, "meta-2", "minute-2") },
	} {
		if err := step(); err != nil {
			t.Fatal(err)
		}
	}

	err := save(1, "meta-1-stale", "minute-1-stale")
	ld, lerr := st.Load(ctx, p)
	if lerr != nil {
		t.Fatal(lerr)
	}
	got := string(ld.Meta) + " " + string(ld.Minutes[100])
	if refused {
		if !errors.Is(err, ErrStaleEpoch) {
			t.Fatalf("stale save: %v, want ErrStaleEpoch", err)
		}
		if got != "meta-2 minute-2" || ld.Epoch != 2 {
			t.Fatalf("after a refused stale save: %q at fence %d, want owner 2's at fence 2", got, ld.Epoch)
		}
		return
	}
	if err != nil {
		t.Fatalf("stale save refused: %v", err)
	}
	if got != "meta-1-stale minute-1-stale" || ld.Epoch != 1 {
		t.Fatalf("after an unfenced stale save: %q at fence %d, want the ex-owner's over owner 2's, fence 1", got, ld.Epoch)
	}
	// The old epoch is accepted on every fenced write.
	if err := st.Claim(ctx, p, 0); err != nil {
		t.Fatalf("claim at an older epoch: %v", err)
	}
	if err := st.SaveArchived(ctx, p, 0, "1-0"); err != nil {
		t.Fatalf("archived offset at an older epoch: %v", err)
	}
	if err := st.SaveHistory(ctx, p, 0, -1, 10); err != nil {
		t.Fatalf("history mark at an older epoch: %v", err)
	}
}
