// Package testsupport holds the doubles that many packages' tests need for
// the process around the code under test: a goroutine-leak check for
// TestMain, a clock the test moves by hand, a log sink safe to read while
// goroutines write it, and a seeded random generator so a failure replays.
//
// Real dependencies (redis-server, etcd, S3) are started by package
// testserver; nothing here stands in for them.
package testsupport
