package hotkey

import (
	"cmp"
	"errors"
	"flag"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func plannerConfig(t *testing.T) Config {
	t.Helper()
	var c Config
	c.RegisterFlags(flag.NewFlagSet("test", flag.ContinueOnError))
	c.SplitRate = 100
	c.UnsplitRate = 25
	c.MinSplit = 2 * time.Minute
	c.MaxWays = 8
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	return c
}

// observation has partitions 0..15 on five members, m<p%5>, each at rate
// 10 + p, with heavy ads as given (ad → partition → rate) added to their
// partitions' rates.
func observation(heavy map[string]map[int]float64, members ...string) Observation {
	o := Observation{Members: members}
	for p := range testPartitions {
		pl := PartitionLoad{Partition: p, Member: "m" + string(rune('0'+p%5)), Rate: float64(10 + p)}
		for ad, byPart := range heavy {
			if r, ok := byPart[p]; ok {
				pl.Heavy = append(pl.Heavy, AdRate{AdID: ad, Rate: r})
				pl.Rate += r
			}
		}
		o.Partitions = append(o.Partitions, pl)
	}
	return o
}

var allMembers = []string{"m0", "m1", "m2", "m3", "m4"}

func TestPlanSplitsHotAds(t *testing.T) {
	parts := partitioner(t)
	p := NewPlanner(plannerConfig(t), parts)
	now := time.Unix(1_772_366_400, 0)
	hotP := parts.Partition("ad-hot")

	t.Run("one hot ad over every member", func(t *testing.T) {
		// 400/s against a mean member load of (280+400)/5: 4·400/136 > 5,
		// so all five members take a sub-key, each its least loaded
		// partition (the lowest numbered: rate 10+p).
		obs := observation(map[string]map[int]float64{"ad-hot": {hotP: 400}}, allMembers...)
		got := p.Plan(now, nil, obs)
		want := []Decision{{Change: Change{AdID: "ad-hot", Partitions: []int{0, 1, 2, 3, 4}, Members: []string{"m0", "m1", "m2", "m3", "m4"}}, Rate: 400}}
		if hotP < 5 {
			// Its member's lightest other partition is p+5.
			want[0].Partitions[hotP] = hotP + 5
			want[0].Partitions, want[0].Members = sortPicks(want[0].Partitions, want[0].Members)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("Plan = %+v\nwant %+v", got, want)
		}
	})

	t.Run("draining members take no sub-key and ways follow the rate", func(t *testing.T) {
		// 110/s: 4·110/mean(≈97) → 5 ways, capped at the 3 eligible members.
		obs := observation(map[string]map[int]float64{"ad-hot": {hotP: 110}}, "m1", "m2", "m4")
		got := p.Plan(now, nil, obs)
		if len(got) != 1 || len(got[0].Partitions) != 3 || !reflect.DeepEqual(sortedCopy(got[0].Members), []string{"m1", "m2", "m4"}) {
			t.Fatalf("Plan = %+v, want one split over m1, m2 and m4", got)
		}
	})

	t.Run("second hot ad sees the load the first one moved", func(t *testing.T) {
		cfg := plannerConfig(t)
		cfg.MaxWays = 2
		p := NewPlanner(cfg, parts)
		// ad-a (300/s) goes to the two least loaded members; ad-b (200/s)
		// then avoids them.
		aP, bP := parts.Partition("ad-a"), parts.Partition("ad-b")
		obs := observation(map[string]map[int]float64{"ad-a": {aP: 300}, "ad-b": {bP: 200}}, allMembers...)
		got := p.Plan(now, nil, obs)
		if len(got) != 2 || got[0].AdID != "ad-a" || got[1].AdID != "ad-b" {
			t.Fatalf("Plan = %+v, want ad-a then ad-b", got)
		}
		for _, m := range got[1].Members {
			for _, m0 := range got[0].Members {
				if m == m0 {
					t.Fatalf("ad-b placed on %v, sharing %s with ad-a on %v, although others were lighter", got[1].Members, m, got[0].Members)
				}
			}
		}
	})

	t.Run("ads already split and cool ads are left alone", func(t *testing.T) {
		tab := mustTable(t, 1, Interval{AdID: "ad-hot", Partitions: []int{1, 2}, FromMinute: now.Unix() / 60})
		obs := observation(map[string]map[int]float64{"ad-hot": {1: 500, 2: 500}, "ad-warm": {4: 99.9}}, allMembers...)
		if got := p.Plan(now, tab, obs); len(got) != 0 {
			t.Fatalf("Plan = %+v, want nothing", got)
		}
	})

	t.Run("a rate summed over partitions", func(t *testing.T) {
		// An ad's rate is its total: 60 + 60 reported by two partitions
		// (another process's split, or a stale report) passes 100.
		obs := observation(map[string]map[int]float64{"ad-x": {1: 60, 2: 60}}, allMembers...)
		if got := p.Plan(now, nil, obs); len(got) != 1 || got[0].Rate != 120 {
			t.Fatalf("Plan = %+v, want a split of ad-x at 120/s", got)
		}
	})
}

// sortPicks sorts partitions ascending, keeping each member with its
// partition, as Place returns them.
func sortPicks(ps []int, ms []string) ([]int, []string) {
	idx := make([]int, len(ps))
	for i := range idx {
		idx[i] = i
	}
	slices.SortFunc(idx, func(a, b int) int { return cmp.Compare(ps[a], ps[b]) })
	ops, oms := make([]int, len(ps)), make([]string, len(ms))
	for i, j := range idx {
		ops[i], oms[i] = ps[j], ms[j]
	}
	return ops, oms
}

func sortedCopy(s []string) []string { return slices.Sorted(slices.Values(s)) }

func TestPlanUnsplitsCooledAds(t *testing.T) {
	parts := partitioner(t)
	p := NewPlanner(plannerConfig(t), parts)
	start := time.Unix(1_772_366_400, 0) // a minute boundary
	m := start.Unix() / 60
	tab := mustTable(t, 1,
		Interval{AdID: "ad-a", Partitions: []int{1, 2}, FromMinute: m},
		Interval{AdID: "ad-old", Partitions: []int{1, 2}, FromMinute: m - 10, ToMinute: m - 5},
	)
	unsplit := []Decision{{Change: Change{AdID: "ad-a", Unsplit: true}, Rate: 20}}
	cool := map[string]map[int]float64{"ad-a": {1: 10, 2: 10}}
	for _, tc := range []struct {
		name string
		now  time.Time
		obs  Observation
		want []Decision
	}{
		{"cool after MinSplit", start.Add(2 * time.Minute), observation(cool, allMembers...), unsplit},
		{"cool before MinSplit", start.Add(2*time.Minute - time.Second), observation(cool, allMembers...), nil},
		{"still warm", start.Add(time.Hour), observation(map[string]map[int]float64{"ad-a": {1: 10, 2: 15}}, allMembers...), nil},
		{"a sub-key partition did not report", start.Add(time.Hour), dropPartition(observation(cool, allMembers...), 2), nil},
		{"its own partition did not report", start.Add(time.Hour), dropPartition(observation(cool, allMembers...), parts.Partition("ad-a")), nil},
		{"gone from every report", start.Add(time.Hour), observation(nil, allMembers...), []Decision{{Change: Change{AdID: "ad-a", Unsplit: true}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := p.Plan(tc.now, tab, tc.obs); !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("Plan = %+v, want %+v", got, tc.want)
			}
		})
	}
	// A split that starts in the future is not judged yet.
	future := mustTable(t, 1, Interval{AdID: "ad-a", Partitions: []int{1, 2}, FromMinute: m + 100})
	if got := p.Plan(start.Add(time.Hour), future, observation(cool, allMembers...)); len(got) != 0 {
		t.Fatalf("Plan of a split not started = %+v, want nothing", got)
	}
}

func dropPartition(o Observation, p int) Observation {
	var keep []PartitionLoad
	for _, pl := range o.Partitions {
		if pl.Partition != p {
			keep = append(keep, pl)
		}
	}
	o.Partitions = keep
	return o
}

func TestPlaceAndWays(t *testing.T) {
	p := NewPlanner(plannerConfig(t), partitioner(t))
	obs := observation(nil, allMembers...)
	c, err := p.Place("ad-x", 3, obs)
	// Member loads: m0 70 (four partitions), m1 48, m2 51, m3 54, m4 57;
	// the lightest three take their lightest partition.
	if want := (Change{AdID: "ad-x", Partitions: []int{1, 2, 3}, Members: []string{"m1", "m2", "m3"}}); err != nil || !reflect.DeepEqual(c, want) {
		t.Fatalf("Place = %+v, %v; want %+v", c, err, want)
	}
	for _, tc := range []struct {
		name string
		ad   string
		ways int
		obs  Observation
		want string
	}{
		{"one way", "ad-x", 1, obs, "cannot split ad-x 1 ways: 5 aggregators own partitions"},
		{"more ways than members", "ad-x", 6, obs, "cannot split ad-x 6 ways: 5 aggregators own partitions"},
		{"members without partitions do not count", "ad-x", 3, observation(nil, "m1", "m2", "m9"), "cannot split ad-x 3 ways: 2 aggregators own partitions"},
		{"no ad", "", 2, obs, "empty ad_id"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := p.Place(tc.ad, tc.ways, tc.obs); !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Place = %v, want ErrInvalid with %q", err, tc.want)
			}
		})
	}

	// Mean member load of observation(nil): (10+...+25)/5 = 56.
	for _, tc := range []struct {
		rate float64
		obs  Observation
		want int
	}{
		{10, obs, 2},                            // a quarter of the mean needs 1: at least 2
		{42, obs, 3},                            // 4·42/56 = 3
		{1000, obs, 5},                          // capped by the members
		{1000, observation(nil, "m1", "m2"), 2}, // by the eligible members
		{1000, Observation{Members: allMembers}, 2}, // nothing reported
	} {
		if got := p.Ways(tc.rate, tc.obs); got != tc.want {
			t.Errorf("Ways(%v) = %d, want %d", tc.rate, got, tc.want)
		}
	}
}

func TestConfigValidate(t *testing.T) {
	var def Config
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	def.RegisterFlags(fs)
	if err := def.Validate(); err != nil {
		t.Fatalf("defaults: %v", err)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if !strings.HasPrefix(f.Name, "hotkey.") || f.Usage == "" {
			t.Errorf("flag -%s: want the hotkey. prefix and a help text", f.Name)
		}
	})
	for _, tc := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.MaxStaleness = 0 }, "-hotkey.max-staleness 0s: must be positive"},
		{func(c *Config) { c.ConfirmInterval = c.MaxStaleness }, "-hotkey.confirm-interval 5s: must be positive and below -hotkey.max-staleness=5s"},
		{func(c *Config) { c.Safety = c.MaxStaleness }, "-hotkey.safety 5s: must be above -hotkey.max-staleness=5s"},
		{func(c *Config) { c.LeadTime = c.Safety }, "-hotkey.lead-time 10s: must be above -hotkey.safety=10s"},
		{func(c *Config) { c.AckPollInterval = 0 }, "-hotkey.ack-poll-interval 0s: must be positive"},
		{func(c *Config) { c.Keep = time.Minute }, "-hotkey.keep 1m0s: must be at least 1h"},
		{func(c *Config) { c.MaxSkew = -1 }, "max clock skew -1ns: must not be negative"},
		{func(c *Config) { c.SplitRate = 0 }, "-hotkey.split-rate 0: must be positive"},
		{func(c *Config) { c.UnsplitRate = c.SplitRate }, "-hotkey.unsplit-rate 1000: must be in [0, -hotkey.split-rate=1000)"},
		{func(c *Config) { c.MinSplit = -1 }, "-hotkey.min-split -1ns: must not be negative"},
		{func(c *Config) { c.MaxWays = 1 }, "-hotkey.max-ways 1: must be in [2, 64]"},
		{func(c *Config) { c.CheckInterval = 0 }, "-hotkey.check-interval 0s: must be positive"},
		{func(c *Config) { c.SketchCapacity = 0 }, "-hotkey.sketch-capacity 0: must be in [1, 10000]"},
	} {
		c := def
		tc.mod(&c)
		if err := c.Validate(); err == nil || err.Error() != tc.want {
			t.Errorf("Validate = %v, want %q", err, tc.want)
		}
	}
}
