package chaos

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"time"
)

// ParseKinds parses a comma-separated list of kinds; "" or "all" is
// every kind.
func ParseKinds(s string) ([]Kind, error) {
	if s == "" || s == "all" {
		return slices.Clone(Kinds), nil
	}
	var out []Kind
	for _, name := range strings.Split(s, ",") {
		k := Kind(strings.TrimSpace(name))
		if !slices.Contains(Kinds, k) {
			return nil, fmt.Errorf("unknown fault kind %q (kinds: %s)", k, kindList(Kinds))
		}
		if !slices.Contains(out, k) {
			out = append(out, k)
		}
	}
	return out, nil
}

func kindList(ks []Kind) string {
	s := make([]string, len(ks))
	for i, k := range ks {
		s[i] = string(k)
	}
	return strings.Join(s, ",")
}

// scheduleSpec is what a schedule is drawn from; the same spec and the
// same targets give the same schedule.
type scheduleSpec struct {
	seed   uint64
	faults int
	kinds  []Kind
	// span is the time the faults start in: the workload's duration.
	span     time.Duration
	leaseTTL time.Duration
	hotAd    string
	// targets is Cluster.Targets.
	targets func(Kind) []string
}

// makeSchedule draws sp.faults faults over sp.kinds, each kind at least
// once when there are enough faults, at times spread over the first 85%
// of sp.span in clusters, so that several are often under way at once.
// A fault never targets what another fault is still doing something to
// (a process, a link, Redis, etcd): a kill of a paused process or two
// etcd faults at once would be the schedule's bug, not the cluster's.
// Splits and unsplits of the hot ad alternate, starting with a split.
func makeSchedule(sp scheduleSpec) ([]Fault, error) {
	if len(sp.kinds) == 0 || sp.faults <= 0 {
		return nil, nil
	}
	rng := rand.New(rand.NewPCG(sp.seed, 0xfa17))
	var kinds []Kind
	for len(kinds) < sp.faults {
		// Every kind once, in a random order, then again.
		round := slices.Clone(sp.kinds)
		rng.Shuffle(len(round), func(i, j int) { round[i], round[j] = round[j], round[i] })
		kinds = append(kinds, round...)
	}
	kinds = kinds[:sp.faults]
	// Times: mostly uniform, a third of them close after the previous
	// one so that faults overlap.
	times := make([]time.Duration, len(kinds))
	window := sp.span * 85 / 100
	for i := range times {
		if i > 0 && rng.IntN(3) == 0 {
			times[i] = times[i-1] + time.Duration(rng.Int64N(int64(2*time.Second)))
		} else {
			times[i] = sp.span/20 + time.Duration(rng.Int64N(int64(max(window-sp.span/20, time.Second))))
		}
	}
	slices.Sort(times)
	alternateSplits(kinds)
	busy := map[string]time.Duration{} // resource → when it is free
	var out []Fault
	for i, k := range kinds {
		f := Fault{At: times[i].Round(100 * time.Millisecond), Kind: k}
		f.Duration, f.Param = drawDuration(rng, k, sp.leaseTTL)
		cands := sp.targets(k)
		switch k {
		case Split, Unsplit:
			cands = []string{sp.hotAd}
		case Rebalance:
			cands = []string{""} // no target; it holds "admin"
		}
		if len(cands) == 0 {
			return nil, fmt.Errorf("schedule: no target for a %s fault", k)
		}
		need := 1
		if k == KillSeveral {
			need = 2 + rng.IntN(2)
		}
		// Wait until enough targets are free.
		for {
			free := freeTargets(k, cands, busy, f.At)
			rng.Shuffle(len(free), func(i, j int) { free[i], free[j] = free[j], free[i] })
			if k == KillSeveral {
				free = oneByRole(free)
			}
			if len(free) >= min(need, 2) {
				f.Targets = free[:min(need, len(free))]
				break
			}
			f.At += time.Second
			if f.At > sp.span*3 {
				return nil, fmt.Errorf("schedule: no free target for %s among %v", k, cands)
			}
		}
		if k == Rebalance {
			f.Targets = nil
		}
		slices.Sort(f.Targets)
		// What the fault holds, with a margin for healing and recovery.
		until := f.At + f.Duration + 5*time.Second
		for _, key := range busyKeys(k, f.Targets) {
			busy[key] = max(busy[key], until)
		}
		out = append(out, f)
	}
	slices.SortStableFunc(out, func(a, b Fault) int { return int(a.At - b.At) })
	return out, nil
}

// alternateSplits relabels the splits and unsplits of kinds so that they
// alternate, starting with a split: an unsplit of an ad that is not
// split, or a second split, is refused by the coordinator.
func alternateSplits(kinds []Kind) {
	next := Split
	for i, k := range kinds {
		if k == Split || k == Unsplit {
			kinds[i] = next
			if next == Split {
				next = Unsplit
			} else {
				next = Split
			}
		}
	}
}

// drawDuration draws how long a fault of kind k lasts and its parameter.
func drawDuration(rng *rand.Rand, k Kind, ttl time.Duration) (time.Duration, string) {
	sec := func(lo, hi int) time.Duration {
		return time.Duration(lo)*time.Second + time.Duration(rng.Int64N(int64(hi-lo)*int64(time.Second)+1)).Round(100*time.Millisecond)
	}
	switch k {
	case KillOne, KillSeveral:
		return sec(1, 5), ""
	case Pause:
		if rng.IntN(3) == 0 {
			// Past the lease: the process's partitions move and, woken, it
			// must be fenced.
			return ttl + sec(1, 4), ""
		}
		return sec(1, 4), ""
	case RedisRestart:
		return sec(0, 1), ""
	case RedisFailover:
		return sec(1, 3), ""
	case EtcdMemberKill, EtcdLeaderKill:
		return sec(2, 8), ""
	case EtcdUnreachable:
		return ttl + sec(1, 4), ""
	case NetLatency:
		return sec(3, 8), fmt.Sprintf("%dms", 50+50*rng.IntN(6))
	case NetReset:
		return sec(1, 4), ""
	case NetOneWay:
		return sec(2, 6), ""
	case Drain:
		return sec(3, 8), ""
	}
	return 0, "" // rebalance, split, unsplit: one call
}

// busyKeys are the resources a fault of kind k on targets holds.
func busyKeys(k Kind, targets []string) []string {
	switch k {
	case RedisRestart, RedisFailover:
		return []string{"redis"}
	case EtcdMemberKill, EtcdLeaderKill, EtcdUnreachable:
		return []string{"etcd"}
	case Rebalance, Split, Unsplit, Drain:
		// One admin change of the assignment at a time, and the process
		// a drain names.
		keys := []string{"admin"}
		if k == Drain {
			for _, t := range targets {
				keys = append(keys, "proc:"+t)
			}
		}
		return keys
	case NetLatency, NetReset, NetOneWay:
		// A fault on the link to Redis or etcd holds Redis or etcd.
		var keys []string
		for _, t := range targets {
			switch t {
			case "redis", "etcd":
				keys = append(keys, t)
			default:
				keys = append(keys, "link:"+t)
			}
		}
		return keys
	}
	var keys []string
	for _, t := range targets {
		keys = append(keys, "proc:"+t)
	}
	return keys
}

// freeTargets are the candidates that no fault holds at at.
func freeTargets(k Kind, cands []string, busy map[string]time.Duration, at time.Duration) []string {
	var out []string
	for _, c := range cands {
		ok := true
		for _, key := range busyKeys(k, []string{c}) {
			if busy[key] > at {
				ok = false
			}
		}
		if ok {
			out = append(out, c)
		}
	}
	return out
}

// oneByRole keeps the first process of each role ("aggregator-2" is an
// aggregator): kill-several kills processes of different roles.
func oneByRole(names []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, n := range names {
		role := n
		if i := strings.LastIndexByte(n, '-'); i > 0 {
			role = n[:i]
		}
		if !seen[role] {
			seen[role] = true
			out = append(out, n)
		}
	}
	return out
}

// printSchedule writes the schedule, one fault a line.
func printSchedule(w io.Writer, title string, seed uint64, faults []Fault) {
	fmt.Fprintf(w, "%s (seed %d, %d faults):\n", title, seed, len(faults))
	for _, f := range faults {
		fmt.Fprintf(w, "  %s\n", f)
	}
}
