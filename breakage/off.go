//go:build !chaosbreak

package breakage

// On reports whether s is on: never, in a build without the chaosbreak
// tag. A constant, so that the broken branches compile away.
func On(Switch) bool { return false }
