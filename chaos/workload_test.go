package chaos

import (
	"testing"
	"time"
)

func TestWorkloadIsAFunctionOfTheSeed(t *testing.T) {
	start := time.Date(2026, 12, 8, 10, 0, 30, 0, time.UTC)
	a := newWorkload(7, 20_000, start, 3*time.Minute)
	b := newWorkload(7, 20_000, start, 3*time.Minute)
	c := newWorkload(8, 20_000, start, 3*time.Minute)
	same, differ := 0, 0
	for i := range 20_000 {
		x, y := a.click(i), b.click(i)
		if x != y || x != a.click(i) || a.line(x) != b.line(y) || a.event(x).String() != b.event(y).String() {
			t.Fatalf("click %d: %+v and %+v from the same seed", i, x, y)
		}
		if x == c.click(i) {
			same++
		} else {
			differ++
		}
	}
	if differ < 19_000 {
		t.Errorf("seeds 7 and 8: %d clicks differ of 20000", differ)
	}
}

func TestWorkloadShares(t *testing.T) {
	start := time.Date(2026, 12, 8, 10, 0, 30, 0, time.UTC)
	const n = 100_000
	w := newWorkload(3, n, start, 5*time.Minute)
	var dups, late, invalid, shipped, hot, v6 int
	for i := range n {
		c := w.click(i)
		s := w.at(i)
		if c.t.After(s) || c.t.Before(w.start) {
			t.Fatalf("click %d at %v, stream time %v, start %v", i, c.t, s, w.start)
		}
		if c.late {
			late++
			if s.Sub(c.t) < 75*time.Second {
				t.Fatalf("late click %d only %v behind the stream", i, s.Sub(c.t))
			}
		} else if s.Sub(c.t) > 20*time.Second && c.t.After(w.start) {
			t.Fatalf("click %d %v behind the stream, not late", i, s.Sub(c.t))
		}
		if c.dupOf >= 0 {
			dups++
			if c.dupOf >= i {
				t.Fatalf("click %d re-sends click %d", i, c.dupOf)
			}
		}
		if c.invalid != "" {
			invalid++
		}
		if c.shipped {
			shipped++
		}
		if adID(c.ad) == hotAd {
			hot++
		}
		if c.ip%3 == 0 {
			v6++
		}
	}
	within := func(name string, got int, share float64) {
		t.Helper()
		want := share * n
		if float64(got) < want*0.8 || float64(got) > want*1.2 {
			t.Errorf("%s: %d of %d, want about %.0f", name, got, n, want)
		}
	}
	within("duplicates", dups, dupShare)
	within("shipped", shipped, shipShare)
	within("invalid", invalid, invalidShare)
	within("ipv6", v6, 1.0/3)
	// Late clicks need 75s of stream behind them: 4 of 5 minutes.
	within("late", late, lateShare*(300-75)/300)
	if hot < n/20 {
		t.Errorf("hot ad %s has %d clicks of %d: not hot", hotAd, hot, n)
	}
	for _, k := range invalidKinds {
		ev, word := w.invalidEvent(1, k, start)
		if word == "" || ev.EventId == "" && k != "event_id" {
			t.Errorf("invalid kind %s: %v %q", k, ev, word)
		}
	}
}

func TestIPsAreDistinct(t *testing.T) {
	seen := map[string]int{}
	for k := range ips {
		s := ipString(k)
		if j, ok := seen[s]; ok {
			t.Fatalf("ips %d and %d are both %s", j, k, s)
		}
		seen[s] = k
	}
}
