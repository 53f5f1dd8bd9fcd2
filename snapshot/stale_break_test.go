//go:build chaosbreak

package snapshot

import (
	"testing"

	"github.com/clickagg/clickagg/breakage"
)

// TestStaleOwnerFencingOff: with fencing-off the ex-owner's save goes
// through and replaces the current owner's snapshot.
func TestStaleOwnerFencingOff(t *testing.T) {
	t.Cleanup(breakage.Set(breakage.FencingOff, true))
	checkStaleOwner(t, false)
}
