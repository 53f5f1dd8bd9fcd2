package queryd

import (
	"reflect"
	"testing"

	"github.com/clickagg/clickagg/history"
)

// TestCorrections checks the queue of corrected minutes: every applied
// revision on the first read, only new ones after; minutes handed out a
// few at a time, oldest first, those before the expiry dropped, and
// minutes put back handed out again first.
func TestCorrections(t *testing.T) {
	var c corrections
	c.applied(history.Applied{Revisions: []history.Revision{{Revision: 1, From: 10, To: 13}, {Revision: 2, From: 20, To: 22}}})
	c.applied(history.Applied{Revisions: []history.Revision{{Revision: 1, From: 10, To: 13}, {Revision: 2, From: 20, To: 22}, {Revision: 5, From: 30, To: 31}}})
	got := c.take(3, 11)
	want := []correction{{11, 12, 1}, {12, 13, 1}, {20, 21, 2}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("take = %v, want %v", got, want)
	}
	c.requeue(got[2:])
	got = c.take(10, 0)
	want = []correction{{20, 21, 2}, {21, 22, 2}, {30, 31, 5}}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("take after requeue = %v, want %v", got, want)
	}
	if got := c.take(10, 0); len(got) != 0 {
		t.Fatalf("queue not empty: %v", got)
	}
}
