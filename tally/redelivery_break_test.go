//go:build chaosbreak

package tally

import (
	"testing"

	"github.com/clickagg/clickagg/breakage"
)

// TestRedeliveryDedupOff: with dedup-off every delivery counts, 5 instead
// of 2, and a restore with replay still agrees with itself, so only a
// check of the counts against ground truth catches it.
func TestRedeliveryDedupOff(t *testing.T) {
	t.Cleanup(breakage.Set(breakage.DedupOff, true))
	checkRedelivery(t, 5)
}
