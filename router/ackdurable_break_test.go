//go:build chaosbreak

package router

import (
	"testing"

	"github.com/clickagg/clickagg/breakage"
)

// TestAckBeforeRedis: with ack-before-redis the router acknowledges a
// click while Redis is stopped, and the click never reaches the log.
func TestAckBeforeRedis(t *testing.T) {
	t.Cleanup(breakage.Set(breakage.AckBeforeRedis, true))
	checkAckWhileRedisStopped(t, true)
}
