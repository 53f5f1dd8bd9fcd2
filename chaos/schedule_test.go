package chaos

import (
	"bytes"
	"slices"
	"strings"
	"testing"
	"time"
)

// testTargets is what a default cluster offers each kind.
func testTargets(k Kind) []string {
	procs := []string{"aggregator-1", "aggregator-2", "aggregator-3", "coordinator-1", "coordinator-2",
		"queryd-1", "queryd-2", "router-1", "router-2"}
	switch k {
	case RedisRestart, RedisFailover:
		return []string{"redis-1"}
	case EtcdMemberKill, EtcdLeaderKill, EtcdUnreachable:
		return []string{"etcd-1", "etcd-2", "etcd-3"}
	case NetLatency, NetReset, NetOneWay:
		return []string{"redis", "etcd", "aggregator-1", "aggregator-2", "aggregator-3"}
	case Drain:
		return procs[:3]
	}
	return procs
}

func testSpec(seed uint64, faults int) scheduleSpec {
	return scheduleSpec{seed: seed, faults: faults, kinds: Kinds, span: 2 * time.Minute,
		leaseTTL: 5 * time.Second, hotAd: hotAd, targets: testTargets}
}

func TestScheduleReplaysFromTheSeed(t *testing.T) {
	a, err := makeSchedule(testSpec(42, 20))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := makeSchedule(testSpec(42, 20))
	c, _ := makeSchedule(testSpec(43, 20))
	var pa, pb, pc bytes.Buffer
	printSchedule(&pa, "schedule", 42, a)
	printSchedule(&pb, "schedule", 42, b)
	printSchedule(&pc, "schedule", 43, c)
	if pa.String() != pb.String() {
		t.Errorf("seed 42 twice:\n%s\n%s", pa.String(), pb.String())
	}
	if pa.String() == pc.String() {
		t.Errorf("seeds 42 and 43 give the same schedule")
	}
	if n := strings.Count(pa.String(), "\n"); n != 21 {
		t.Errorf("printed %d lines, want a title and 20 faults:\n%s", n, pa.String())
	}
	t.Logf("\n%s", pa.String())
}

func TestScheduleRules(t *testing.T) {
	for seed := range uint64(200) {
		faults := 12 + int(seed%50)
		sp := testSpec(seed, faults)
		if seed%3 == 0 {
			sp.kinds = []Kind{KillOne, Pause, Split, Unsplit, NetReset}
		}
		sched, err := makeSchedule(sp)
		if err != nil {
			t.Fatalf("seed %d: %v", seed, err)
		}
		if len(sched) != faults {
			t.Fatalf("seed %d: %d faults, want %d", seed, len(sched), faults)
		}
		kinds := map[Kind]int{}
		split := false
		held := map[string]time.Duration{}
		for i, f := range sched {
			kinds[f.Kind]++
			if i > 0 && f.At < sched[i-1].At {
				t.Fatalf("seed %d: not in time order: %v", seed, sched)
			}
			if f.At < 0 || f.At > sp.span*3 {
				t.Fatalf("seed %d: %s out of the run", seed, f)
			}
			switch f.Kind {
			case Split, Unsplit:
				if (f.Kind == Split) == split {
					t.Fatalf("seed %d: %s while split=%v", seed, f, split)
				}
				split = f.Kind == Split
				if !slices.Equal(f.Targets, []string{hotAd}) {
					t.Fatalf("seed %d: %s not on the hot ad", seed, f)
				}
			case KillSeveral:
				if len(f.Targets) < 2 || len(f.Targets) > 3 || len(oneByRole(f.Targets)) != len(f.Targets) {
					t.Fatalf("seed %d: %s: want 2-3 processes of different roles", seed, f)
				}
			case Rebalance:
				if len(f.Targets) != 0 {
					t.Fatalf("seed %d: %s has targets", seed, f)
				}
			default:
				if len(f.Targets) != 1 || !slices.Contains(testTargets(f.Kind), f.Targets[0]) {
					t.Fatalf("seed %d: %s: targets not of %v", seed, f, testTargets(f.Kind))
				}
			}
			if f.Kind == Pause && f.Duration > sp.leaseTTL {
				kinds["pause-past-ttl"]++
			}
			// No two faults hold one resource at once.
			for _, key := range busyKeys(f.Kind, f.Targets) {
				if held[key] > f.At {
					t.Fatalf("seed %d: %s while %s is held until %v", seed, f, key, held[key])
				}
				held[key] = f.At + f.Duration + 5*time.Second
			}
		}
		if faults >= len(sp.kinds) {
			for _, k := range sp.kinds {
				if kinds[k] == 0 {
					t.Fatalf("seed %d: no %s fault in %v", seed, k, sched)
				}
			}
		}
	}
}

func TestParseKinds(t *testing.T) {
	if ks, err := ParseKinds(""); err != nil || !slices.Equal(ks, Kinds) {
		t.Errorf(`"": %v %v`, ks, err)
	}
	if ks, err := ParseKinds("kill, pause,kill"); err != nil || !slices.Equal(ks, []Kind{KillOne, Pause}) {
		t.Errorf("kill, pause,kill: %v %v", ks, err)
	}
	if _, err := ParseKinds("kill,flood"); err == nil || !strings.Contains(err.Error(), `"flood"`) {
		t.Errorf("kill,flood: %v", err)
	}
}

func TestSummaryPrint(t *testing.T) {
	s := Summary{Seed: 5, Events: 1000, Duplicates: 40, Late: 10, Invalid: 3, Shipped: 100,
		FaultsByKind:   map[Kind]int{KillOne: 2, Pause: 1},
		Recovery:       map[Kind][]time.Duration{KillOne: {3 * time.Second, time.Second}, Pause: {2 * time.Second}},
		AnswersChecked: 500, Duration: 90 * time.Second, Replay: "clickagg chaos run -seed=5"}
	var b bytes.Buffer
	s.Print(&b)
	out := b.String()
	for _, want := range []string{"valid 1000", "duplicates 40", "shipped 100", "kill ", "1s  ", "3s", "pause", "answers checked 500", "wrong 0", "replay: clickagg chaos run -seed=5", "PASS"} {
		if !strings.Contains(out, want) {
			t.Errorf("summary lacks %q:\n%s", want, out)
		}
	}
	s.AnswersWrong, s.Wrong = 1, []string{"final: queryd-1 grpc: count of ad-1 = 4, want 3"}
	b.Reset()
	s.Print(&b)
	if !s.Failed() || !strings.Contains(b.String(), "WRONG final: queryd-1") || !strings.Contains(b.String(), "FAIL") {
		t.Errorf("a wrong answer:\n%s", b.String())
	}
}
