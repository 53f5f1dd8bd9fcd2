//go:build chaosbreak

package queryd

import (
	"testing"

	"github.com/clickagg/clickagg/breakage"
)

// TestOwnerDownPartialQueryd: with partial-queryd, queries answer OK
// without the stopped owner's partitions.
func TestOwnerDownPartialQueryd(t *testing.T) {
	t.Cleanup(breakage.Set(breakage.PartialQueryd, true))
	checkOwnerDown(t, true)
}
