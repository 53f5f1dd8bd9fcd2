//go:build chaosbreak

package aggregator

import (
	"testing"

	"github.com/clickagg/clickagg/breakage"
)

// TestSnapshotOffsetApart: with offset-apart the stored offset runs ahead
// of the stored state, and a successor after a crash loses the clicks in
// between.
func TestSnapshotOffsetApart(t *testing.T) {
	t.Cleanup(breakage.Set(breakage.OffsetApart, true))
	checkCut(t, true)
}
