// Package breakage holds the negative controls of the chaos harness:
// switches that break clickagg in the ways its checks must catch, each a
// small branch right where the behaviour it breaks lives.
//
// A check that never fails proves nothing. The chaos run (issue 18) is
// trusted to catch a lost click, a click counted twice or a partial answer
// only once it has failed against a build that does each of these on
// purpose: run a cluster built with -tags chaosbreak (make build-broken,
// bin/clickagg-broken) with CLICKAGG_BREAK naming switches, and the run
// must report wrong answers.
//
// # The release build has none of it
//
// Without the chaosbreak tag (every release build, the image, make build)
// On is a constant false (off.go): the compiler drops every broken branch
// and the linker everything only they use, so the release binary neither
// reads CLICKAGG_BREAK nor holds the broken code (TestReleaseBinary checks
// both). With the tag (on.go), On reads the switches that CLICKAGG_BREAK
// names, comma-separated, once at startup; an unknown name stops the
// process before anything runs, with the list of valid names, so that a
// misspelt control cannot pass as a run that caught nothing.
//
// # The switches
//
//	dedup-off         a re-sent click is counted again (package tally)
//	offset-apart      a snapshot's log offset runs ahead of its state (aggregator)
//	fencing-off       the fence accepts an older epoch (package snapshot)
//	ack-before-redis  the router acknowledges before Redis has the click (router)
//	partial-queryd    queryd answers from the owners that answered (queryd)
package breakage
