package test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/ring"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

var update = flag.Bool("update", false, "TestRunbook: write the actual outputs into docs/runbook.md")

const runbookPath = "../docs/runbook.md"

// runbookCommand is one marked command of docs/runbook.md: a marker line
// `<!-- runbook: ID -->`, a ```sh block with one grpcurl command, and a
// ```json (or, for a refusal, ```text) block with its output.
type runbookCommand struct {
	id, line, lang string
	// want is the documented output; it is lines[from:to] of the file.
	want     string
	from, to int
}

var runbookMarker = regexp.MustCompile(`^<!-- runbook: (.+) -->$`)

// parseRunbook returns the marked commands of the document, in order.
func parseRunbook(lines []string) ([]runbookCommand, error) {
	var out []runbookCommand
	var cur *runbookCommand
	state := 0 // 0: looking for a marker, 1: for the sh fence, 2: in it, 3: for the output fence, 4: in it
	for i, l := range lines {
		if m := runbookMarker.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			if state != 0 {
				return nil, fmt.Errorf("line %d: marker %q before the blocks of %q are complete", i+1, m[1], cur.id)
			}
			cur, state = &runbookCommand{id: m[1]}, 1
			continue
		}
		switch state {
		case 1:
			if strings.HasPrefix(l, "```") {
				if l != "```sh" {
					return nil, fmt.Errorf("line %d: %s: the command block must be ```sh", i+1, cur.id)
				}
				state = 2
			}
		case 2:
			switch {
			case l == "```":
				if cur.line == "" {
					return nil, fmt.Errorf("line %d: %s: empty command block", i+1, cur.id)
				}
				state = 3
			case strings.TrimSpace(l) == "":
			case cur.line != "":
				return nil, fmt.Errorf("line %d: %s: more than one command in the block", i+1, cur.id)
			default:
				cur.line = l
			}
		case 3:
			if strings.HasPrefix(l, "```") {
				cur.lang = strings.TrimPrefix(l, "```")
				if cur.lang != "json" && cur.lang != "text" {
					return nil, fmt.Errorf("line %d: %s: the output block must be ```json or ```text", i+1, cur.id)
				}
				cur.from, state = i+1, 4
			}
		case 4:
			if l == "```" {
				cur.to = i
				cur.want = strings.Join(lines[cur.from:cur.to], "\n")
				out = append(out, *cur)
				state = 0
			}
		}
	}
	if state != 0 {
		return nil, fmt.Errorf("%s: the document ends before its blocks do", cur.id)
	}
	return out, nil
}

// runbookStep is what the test knows about one documented command.
type runbookStep struct {
	id string
	// read: the call changes nothing, so it is repeated until its output
	// matches the document (and ready accepts it): reads observe a cluster
	// that moves on by itself.
	read bool
	// refusal: the call must fail; its output is grpcurl's error.
	refusal bool
	// ready, when set, checks the decoded output of a read.
	ready func(out []byte) error
	// after checks the call's effect, polled until it holds; before is the
	// assignment just before the call.
	after func(before *clickaggv1.GetAssignmentResponse) error
}

// TestRunbook runs every command of docs/runbook.md, in document order and
// verbatim but for the address, against a cluster of 8 partitions and
// three aggregators with clicks flowing, and checks each output against
// the documented one, and each change's effect on the assignment. With
// -update it writes the actual outputs into the document instead.
//
// The aggregators register before the coordinator starts, so that its
// first plan places every partition at once (no handoffs before the
// runbook's own) on the balanced placement of aggregator-1..3, which the
// test computes with ring.Assign: the document's literal partitions and
// members depend on it.
func TestRunbook(t *testing.T) {
	const partitions = 8
	agg1, agg2, agg3 := "aggregator-1", "aggregator-2", "aggregator-3"
	balanced, err := ring.Assign([]string{agg1, agg2, agg3}, partitions, ring.DefaultLoad)
	if err != nil {
		t.Fatal(err)
	}
	// The document moves partition 3 from aggregator-3 to aggregator-1.
	if balanced[3] != agg3 {
		t.Fatalf("balanced placement %v: partition 3 is not on %s as docs/runbook.md says", balanced, agg3)
	}

	raw, err := os.ReadFile(runbookPath)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSuffix(string(raw), "\n"), "\n")
	cmds, err := parseRunbook(lines)
	if err != nil {
		t.Fatalf("%s: %v", runbookPath, err)
	}

	var cc clickaggv1.CoordinatorServiceClient
	assignment := func() (*clickaggv1.GetAssignmentResponse, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return cc.GetAssignment(ctx, &clickaggv1.GetAssignmentRequest{})
	}
	owned := func(a *clickaggv1.GetAssignmentResponse) map[string][]int32 {
		out := map[string][]int32{}
		for _, p := range a.Partitions {
			out[p.Member] = append(out[p.Member], p.Partition)
		}
		return out
	}
	// unchanged: a dry run or a refusal wrote nothing.
	unchanged := func(before *clickaggv1.GetAssignmentResponse) error {
		a, err := assignment()
		if err != nil {
			return err
		}
		if !proto.Equal(a, before) {
			return fmt.Errorf("assignment changed from %v to %v", before, a)
		}
		return nil
	}
	owns := func(member string, want func(n int) bool, what string) func(*clickaggv1.GetAssignmentResponse) error {
		return func(*clickaggv1.GetAssignmentResponse) error {
			a, err := assignment()
			if err != nil {
				return err
			}
			if got := owned(a)[member]; !want(len(got)) {
				return fmt.Errorf("%s owns partitions %v, want %s", member, got, what)
			}
			return nil
		}
	}
	ownsNone := func(member string) func(*clickaggv1.GetAssignmentResponse) error {
		return owns(member, func(n int) bool { return n == 0 }, "none")
	}
	ownsSome := func(member string) func(*clickaggv1.GetAssignmentResponse) error {
		return owns(member, func(n int) bool { return n > 0 }, "some")
	}
	// splitOf: the split table holds one split of ad-hot over ways
	// partitions on as many distinct aggregators, ended or not; ways 0:
	// no split at all.
	splitOf := func(ways int, ended bool) func(*clickaggv1.GetAssignmentResponse) error {
		return func(*clickaggv1.GetAssignmentResponse) error {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			r, err := cc.GetHotKeys(ctx, &clickaggv1.GetHotKeysRequest{})
			if err != nil {
				return err
			}
			if ways == 0 {
				if len(r.Splits) != 0 {
					return fmt.Errorf("splits %v, want none", r.Splits)
				}
				return nil
			}
			if len(r.Splits) != 1 {
				return fmt.Errorf("splits %v, want one", r.Splits)
			}
			sp := r.Splits[0]
			members := map[string]bool{}
			for _, m := range sp.Members {
				members[m] = true
			}
			if sp.AdId != "ad-hot" || len(sp.Partitions) != ways || len(members) != ways || (sp.To != nil) != ended {
				return fmt.Errorf("split %v: want ad-hot over %d partitions on as many aggregators, ended %v", sp, ways, ended)
			}
			return nil
		}
	}
	isBalanced := func(*clickaggv1.GetAssignmentResponse) error {
		a, err := assignment()
		if err != nil {
			return err
		}
		return checkPlacement(a, balanced)
	}

	steps := []runbookStep{
		{id: "list-members", read: true, ready: decoded(func(r *clickaggv1.ListMembersResponse) error {
			var ids []string
			for _, m := range r.Members {
				ids = append(ids, m.Id)
			}
			if !slices.Equal(ids, []string{agg1, agg2, agg3}) {
				return fmt.Errorf("members %v", ids)
			}
			return nil
		})},
		{id: "get-assignment", read: true, ready: decoded(func(r *clickaggv1.GetAssignmentResponse) error {
			return checkPlacement(r, balanced)
		})},
		{id: "cluster-status-summary", read: true, ready: decoded(func(r *clickaggv1.GetClusterStatusResponse) error {
			t := r.Totals
			if len(r.Unavailable) > 0 || len(r.Partitions) != 0 || r.MinWatermark == nil || t.GetServing() != partitions || t.GetWatermarkDelay() == nil {
				return fmt.Errorf("unavailable %v, %d partitions reported, min watermark %v, totals %v", r.Unavailable, len(r.Partitions), r.MinWatermark, t)
			}
			// Each aggregator serves what the balanced placement gives it.
			want := map[string]int32{}
			for _, m := range balanced {
				want[m]++
			}
			for _, o := range r.Owners {
				if o.Partitions != want[o.Member] || o.Serving != o.Partitions || o.EventsApplied == 0 {
					return fmt.Errorf("owner %s: %d partitions, %d serving, %d events applied; want %d serving and some applied", o.Member, o.Partitions, o.Serving, o.EventsApplied, want[o.Member])
				}
				delete(want, o.Member)
			}
			if len(want) > 0 {
				return fmt.Errorf("owners %v missing", want)
			}
			return nil
		})},
		{id: "cluster-status", read: true, ready: decoded(func(r *clickaggv1.GetClusterStatusResponse) error {
			if len(r.Unavailable) > 0 || len(r.Partitions) != partitions || r.MinWatermark == nil {
				return fmt.Errorf("unavailable %v, %d partitions reported, min watermark %v", r.Unavailable, len(r.Partitions), r.MinWatermark)
			}
			for _, p := range r.Partitions {
				if len(p.Heavy) > 0 {
					return fmt.Errorf("partition %d: heavy %v without include_heavy", p.Partition, p.Heavy)
				}
				if p.State != "serving" || p.LastSnapshot == nil || p.EventsApplied == 0 {
					return fmt.Errorf("partition %d: state %s, last snapshot %v, %d events applied", p.Partition, p.State, p.LastSnapshot, p.EventsApplied)
				}
			}
			return nil
		})},
		{id: "load", read: true, ready: decoded(func(r *clickaggv1.GetLoadResponse) error {
			return checkLoad(r, partitions, map[string]bool{agg1: false, agg2: false, agg3: false})
		})},
		{id: "move-dry-run", after: unchanged},
		{id: "move", after: func(*clickaggv1.GetAssignmentResponse) error {
			a, err := assignment()
			if err != nil {
				return err
			}
			if got := a.Partitions[3].Member; got != agg1 {
				return fmt.Errorf("partition 3 is on %s, want %s", got, agg1)
			}
			return nil
		}},
		{id: "move-again", refusal: true, after: unchanged},
		{id: "move-unknown", refusal: true, after: unchanged},
		{id: "handoffs", read: true, ready: decoded(func(r *clickaggv1.GetHandoffsResponse) error {
			if len(r.Handoffs) != 1 {
				return fmt.Errorf("%d handoffs, want the move's only", len(r.Handoffs))
			}
			if h := r.Handoffs[0]; h.Pause == nil || !h.Planned {
				return fmt.Errorf("handoff %v: want planned and finished", h)
			}
			return nil
		})},
		{id: "drain-without-admin", refusal: true, after: unchanged},
		{id: "drain-dry-run", after: unchanged},
		{id: "drain", after: ownsNone(agg3)},
		{id: "drain-load", read: true, ready: decoded(func(r *clickaggv1.GetLoadResponse) error {
			return checkLoad(r, partitions, map[string]bool{agg1: false, agg2: false, agg3: true})
		})},
		{id: "move-to-draining", refusal: true, after: unchanged},
		{id: "drain-second", after: func(b *clickaggv1.GetAssignmentResponse) error {
			if err := ownsNone(agg2)(b); err != nil {
				return err
			}
			return owns(agg1, func(n int) bool { return n == partitions }, "all")(b)
		}},
		{id: "drain-last", refusal: true, after: unchanged},
		{id: "drain-unknown", refusal: true, after: unchanged},
		{id: "drain-cancel", after: ownsSome(agg2)},
		{id: "drain-cancel-second", after: ownsSome(agg3)},
		{id: "rebalance-dry-run", after: unchanged},
		{id: "rebalance", after: isBalanced},
		{id: "rebalance-done", after: unchanged},
		{id: "hot-keys", read: true, ready: decoded(func(r *clickaggv1.GetHotKeysResponse) error {
			if len(r.Keys) != 1 || r.Keys[0].AdId != "ad-hot" || len(r.Splits) != 0 {
				return fmt.Errorf("keys %v, splits %v: want ad-hot first and no split", r.Keys, r.Splits)
			}
			return nil
		})},
		{id: "split-dry-run", after: splitOf(0, false)},
		{id: "split", after: splitOf(3, false)},
		{id: "hot-keys-split", read: true, ready: decoded(func(r *clickaggv1.GetHotKeysResponse) error {
			if len(r.Splits) != 1 || r.Splits[0].To != nil {
				return fmt.Errorf("splits %v: want the open split of ad-hot", r.Splits)
			}
			return nil
		})},
		{id: "split-too-many", refusal: true, after: splitOf(3, false)},
		{id: "unsplit-dry-run", after: splitOf(3, false)},
		// The split had not started yet: the unsplit removes it.
		{id: "unsplit", after: splitOf(0, false)},
		{id: "unsplit-not-split", refusal: true, after: splitOf(0, false)},
	}
	var ids, documented []string
	for _, s := range steps {
		ids = append(ids, s.id)
	}
	for _, c := range cmds {
		documented = append(documented, c.id)
	}
	if !slices.Equal(ids, documented) {
		t.Fatalf("%s has the commands\n%v\nthe test knows\n%v", runbookPath, documented, ids)
	}
	for i, c := range cmds {
		if !strings.HasPrefix(c.line, "grpcurl ") || !strings.Contains(c.line, "localhost:9090") {
			t.Fatalf("%s: %q is not a grpcurl command against localhost:9090", c.id, c.line)
		}
		if steps[i].refusal != (c.lang == "text") {
			t.Fatalf("%s: output block is ```%s; refusals take ```text, answers ```json", c.id, c.lang)
		}
	}

	root := buildGrpcurl(t)
	c := newTestCluster(t, clusterSpec{partitions: partitions, coordinators: 0, routers: 1, aggregators: 3, tls: true, auth: true})
	c.coordinators = append(c.coordinators, startProc(t, c.dir, "coordinator-1", c.flags("-target=coordinator", c.tlsFlags("coordinator-1"))...))
	// The files the commands name, in the directory they run in.
	creds := c.tlsDir("runbook")
	op := c.ca.Issue(t, tlstest.Options{CommonName: "operator"})
	for name, data := range map[string][]byte{"ca.crt": c.ca.CertPEM, "operator.crt": op.CertPEM, "operator.key": op.KeyPEM, "billing.token": []byte(authTokens["billing"] + "\n")} {
		tlstest.WriteFile(t, filepath.Join(creds, name), data)
	}
	cc = c.coordinatorClient()
	waitCaughtUp(t, cc, partitions, 2*time.Minute)
	a, err := assignment()
	if err != nil {
		t.Fatal(err)
	}
	if err := checkPlacement(a, balanced); err != nil {
		t.Fatalf("first assignment: %v", err)
	}
	hs, err := cc.GetHandoffs(context.Background(), &clickaggv1.GetHandoffsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(hs.Handoffs) > 0 {
		t.Fatalf("%d handoffs before the runbook's first command, want none", len(hs.Handoffs))
	}
	trickle(t, c.ingestClients()[0])

	env := append(os.Environ(), "PATH="+filepath.Join(root, "bin")+string(os.PathListSeparator)+os.Getenv("PATH"))
	run := func(line string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, "bash", "-c", strings.ReplaceAll(line, "localhost:9090", c.coordinators[0].addr))
		cmd.Dir, cmd.Env = creds, env
		out, err := cmd.CombinedOutput()
		return strings.TrimRight(string(out), "\n"), err
	}
	for i, cmd := range cmds {
		step := steps[i]
		before, err := assignment()
		if err != nil {
			t.Fatal(err)
		}
		var got string
		if step.read {
			deadline := time.Now().Add(time.Minute)
			for {
				out, err := run(cmd.line)
				got = out
				if err == nil && step.ready != nil {
					err = step.ready([]byte(out))
				}
				if err == nil && !*update {
					err = sameOutput(cmd.want, out)
				}
				if err == nil {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("%s: %s\n%v; output:\n%s", cmd.id, cmd.line, err, out)
				}
				time.Sleep(300 * time.Millisecond)
			}
		} else {
			out, err := run(cmd.line)
			got = out
			switch {
			case step.refusal && err == nil:
				t.Fatalf("%s: %s succeeded, want a refusal:\n%s", cmd.id, cmd.line, out)
			case !step.refusal && err != nil:
				t.Fatalf("%s: %s: %v\n%s", cmd.id, cmd.line, err, out)
			}
			if !*update {
				var err error
				if step.refusal {
					if out != cmd.want {
						err = fmt.Errorf("refused with\n%s\nthe document shows\n%s", out, cmd.want)
					}
				} else {
					err = sameOutput(cmd.want, out)
				}
				if err != nil {
					t.Errorf("%s: %s\n%v", cmd.id, cmd.line, err)
				}
			}
		}
		if step.after != nil {
			testserver.Eventually(t, time.Minute, func() error {
				err := step.after(before)
				if err != nil {
					time.Sleep(100 * time.Millisecond)
				}
				return err
			})
		}
		t.Logf("%s ok: %s", cmd.id, firstLines(got, 3))
		cmds[i].want = got
	}
	if *update && !t.Failed() {
		// Replace the output blocks from the last, so that the line
		// numbers of the earlier ones still hold.
		for i := len(cmds) - 1; i >= 0; i-- {
			c := cmds[i]
			lines = slices.Replace(lines, c.from, c.to, strings.Split(c.want, "\n")...)
		}
		if err := os.WriteFile(runbookPath, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
		t.Logf("wrote the outputs of %d commands into %s", len(cmds), runbookPath)
	}
}

// decoded adapts a check of a response to a check of grpcurl's JSON output.
func decoded[M any, PM interface {
	*M
	proto.Message
}](check func(PM) error) func([]byte) error {
	return func(out []byte) error {
		m := PM(new(M))
		if err := protojson.Unmarshal(out, m); err != nil {
			return fmt.Errorf("decode %T: %w", m, err)
		}
		return check(m)
	}
}

// checkPlacement checks that a places partition p on want[p].
func checkPlacement(a *clickaggv1.GetAssignmentResponse, want []string) error {
	got := make([]string, len(a.Partitions))
	for i, p := range a.Partitions {
		got[i] = p.Member
	}
	if !slices.Equal(got, want) {
		return fmt.Errorf("owners %v, want %v", got, want)
	}
	return nil
}

// checkLoad checks that every partition reported, and that the members
// are draining's keys, each draining or not as it says, the draining ones
// with no partitions and the others with some load.
func checkLoad(r *clickaggv1.GetLoadResponse, partitions int, draining map[string]bool) error {
	if len(r.Unavailable) > 0 || len(r.Partitions) != partitions {
		return fmt.Errorf("unavailable %v, %d partitions reported", r.Unavailable, len(r.Partitions))
	}
	if len(r.Members) != len(draining) {
		return fmt.Errorf("%d members, want %d", len(r.Members), len(draining))
	}
	for _, m := range r.Members {
		d, ok := draining[m.Member]
		switch {
		case !ok || m.Draining != d:
			return fmt.Errorf("member %s draining %v", m.Member, m.Draining)
		case d && m.Partitions != 0:
			return fmt.Errorf("draining member %s owns %d partitions", m.Member, m.Partitions)
		case !d && (m.Partitions == 0 || m.EventsPerSecond == 0):
			return fmt.Errorf("member %s: %d partitions, %.1f events/s", m.Member, m.Partitions, m.EventsPerSecond)
		}
	}
	return nil
}

// trickle sends 20 clicks every 100ms through ic until the test ends, a
// fifth of them for ad-hot, so that the documented rates are not all zero.
func trickle(t *testing.T, ic clickaggv1.IngestServiceClient) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; ctx.Err() == nil; i++ {
			now := timestamppb.Now()
			events := make([]*clickaggv1.ClickEvent, 20)
			for j := range events {
				ad := fmt.Sprintf("ad-%d", (i*20+j)%50)
				if j < 4 {
					ad = "ad-hot"
				}
				events[j] = &clickaggv1.ClickEvent{
					EventId:   fmt.Sprintf("runbook-%d-%d", i, j),
					AdId:      ad,
					ClickTime: now,
					UserId:    fmt.Sprintf("user-%d", (i+j)%100),
					Ip:        "198.51.100.7",
					Country:   "US",
				}
			}
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			_, _ = ic.Ingest(cctx, &clickaggv1.IngestRequest{Events: events})
			ccancel()
			select {
			case <-ctx.Done():
			case <-time.After(100 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
}

// runbookVariable are the JSON fields whose values differ from run to run:
// of these, only the kind of value (string, number, null, ...) must be the
// documented one. Every other value must be equal, and every object must
// have the documented fields, every list the documented length.
var runbookVariable = map[string]bool{
	"addr": true, "httpAddr": true, "registeredAt": true, "version": true, "epoch": true,
	"offset": true, "lag": true, "lagEntries": true, "lagSeconds": true, "eventsPerSecond": true, "maxLagSeconds": true,
	"watermarkDelay": true,
	"watermark":      true, "minWatermark": true, "lastSnapshot": true, "servingSince": true,
	"eventsApplied": true, "duplicatesDropped": true, "lateEvents": true,
	"stopped": true, "serving": true, "pause": true,
	// What the routers ingested: the trickle keeps sending. Rejected
	// clicks and failed appends stay compared: the trickle's are valid
	// and Redis is up.
	"started": true, "requests": true, "accepted": true, "acceptedPerSecond": true,
	"ingestAccepted": true, "ingestAcceptedPerSecond": true,
	// A hot ad's share of the clicks, and when a split starts and ends.
	"share": true, "from": true, "to": true,
	// heavy, a partition's heaviest ads, depends on the clicks of the
	// last minute: any list will do.
	"heavy": true,
}

// placementList reports whether v is a split's partitions or members (a
// list of numbers or strings): they are the least loaded ones at the time,
// which the document cannot know. Lists of objects under the same names
// (ListMembers's members) are compared as usual.
func placementList(key string, v any) bool {
	l, ok := v.([]any)
	if !ok || key != "partitions" && key != "members" {
		return false
	}
	for _, x := range l {
		if k := kind(x); k != "number" && k != "string" {
			return false
		}
	}
	return true
}

// sameOutput compares grpcurl's JSON output got with the documented want.
func sameOutput(want, got string) error {
	w, err := decodeJSON(want)
	if err != nil {
		return fmt.Errorf("documented output: %w", err)
	}
	g, err := decodeJSON(got)
	if err != nil {
		return fmt.Errorf("output: %w", err)
	}
	return sameJSON("", "", w, g)
}

func decodeJSON(s string) (any, error) {
	d := json.NewDecoder(strings.NewReader(s))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		return nil, err
	}
	if d.More() {
		return nil, fmt.Errorf("more than one JSON value")
	}
	return v, nil
}

func sameJSON(path, key string, want, got any) error {
	if kind(want) != kind(got) {
		return fmt.Errorf("%s: %s %s, the document shows %s %s", path, kind(got), compact(got), kind(want), compact(want))
	}
	if runbookVariable[key] || placementList(key, want) {
		return nil
	}
	switch w := want.(type) {
	case map[string]any:
		g := got.(map[string]any)
		for k := range w {
			if _, ok := g[k]; !ok {
				return fmt.Errorf("%s.%s: missing", path, k)
			}
		}
		for k, gv := range g {
			wv, ok := w[k]
			if !ok {
				return fmt.Errorf("%s.%s: not in the document", path, k)
			}
			if err := sameJSON(path+"."+k, k, wv, gv); err != nil {
				return err
			}
		}
	case []any:
		g := got.([]any)
		if len(w) != len(g) {
			return fmt.Errorf("%s: %d elements, the document shows %d: %s", path, len(g), len(w), compact(got))
		}
		for i := range w {
			if err := sameJSON(fmt.Sprintf("%s[%d]", path, i), key, w[i], g[i]); err != nil {
				return err
			}
		}
	default:
		if want != got {
			return fmt.Errorf("%s: %s, the document shows %s", path, compact(got), compact(want))
		}
	}
	return nil
}

func kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case map[string]any:
		return "object"
	case []any:
		return "list"
	case string:
		return "string"
	case json.Number:
		return "number"
	case bool:
		return "bool"
	}
	return fmt.Sprintf("%T", v)
}

func compact(v any) string {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	_ = enc.Encode(v)
	return strings.TrimSpace(b.String())
}

// TestRunbookChecks checks the checks of TestRunbook: which differences
// between a documented and an actual output fail, and which documents
// parseRunbook refuses.
func TestRunbookChecks(t *testing.T) {
	const doc = `{"moves": [{"partition": 3, "fromMember": "aggregator-3", "toMember": "aggregator-1"}], "dryRun": true, "version": "7", "pause": "0.1s", "heavy": []}`
	for _, tc := range []struct {
		name, got string
		ok        bool
	}{
		{"same", doc, true},
		{"variable values", `{"moves": [{"partition": 3, "fromMember": "aggregator-3", "toMember": "aggregator-1"}], "dryRun": true, "version": "9", "pause": "2.5s", "heavy": [{"adId": "ad-1"}]}`, true},
		{"other member", `{"moves": [{"partition": 3, "fromMember": "aggregator-3", "toMember": "aggregator-2"}], "dryRun": true, "version": "7", "pause": "0.1s", "heavy": []}`, false},
		{"other partition", `{"moves": [{"partition": 4, "fromMember": "aggregator-3", "toMember": "aggregator-1"}], "dryRun": true, "version": "7", "pause": "0.1s", "heavy": []}`, false},
		{"not a dry run", `{"moves": [{"partition": 3, "fromMember": "aggregator-3", "toMember": "aggregator-1"}], "dryRun": false, "version": "7", "pause": "0.1s", "heavy": []}`, false},
		{"more moves", `{"moves": [{"partition": 3, "fromMember": "aggregator-3", "toMember": "aggregator-1"}, {"partition": 4, "fromMember": "aggregator-3", "toMember": "aggregator-1"}], "dryRun": true, "version": "7", "pause": "0.1s", "heavy": []}`, false},
		{"missing field", `{"moves": [{"partition": 3, "fromMember": "aggregator-3", "toMember": "aggregator-1"}], "dryRun": true, "version": "7", "heavy": []}`, false},
		{"extra field", `{"moves": [{"partition": 3, "fromMember": "aggregator-3", "toMember": "aggregator-1"}], "dryRun": true, "version": "7", "pause": "0.1s", "heavy": [], "unavailable": []}`, false},
		{"variable now null", `{"moves": [{"partition": 3, "fromMember": "aggregator-3", "toMember": "aggregator-1"}], "dryRun": true, "version": "7", "pause": null, "heavy": []}`, false},
		{"not JSON", "ERROR:\n  Code: NotFound", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := sameOutput(doc, tc.got)
			if (err == nil) != tc.ok {
				t.Errorf("sameOutput = %v, want ok %v", err, tc.ok)
			}
		})
	}

	for _, tc := range []struct {
		name, doc string
		ids       []string
	}{
		{"two commands", "<!-- runbook: a -->\n```sh\ngrpcurl a\n```\n\n```json\n{}\n```\n<!-- runbook: b -->\n```sh\ngrpcurl b\n```\n<details>\n\n```text\nERROR\n```\n", []string{"a", "b"}},
		{"two commands in a block", "<!-- runbook: a -->\n```sh\ngrpcurl a\ngrpcurl b\n```\n```json\n{}\n```\n", nil},
		{"no output block", "<!-- runbook: a -->\n```sh\ngrpcurl a\n```\n<!-- runbook: b -->\n", nil},
		{"output block not json or text", "<!-- runbook: a -->\n```sh\ngrpcurl a\n```\n```yaml\n{}\n```\n", nil},
		{"unfinished", "<!-- runbook: a -->\n```sh\ngrpcurl a\n```\n```json\n{}\n", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cmds, err := parseRunbook(strings.Split(tc.doc, "\n"))
			var ids []string
			for _, c := range cmds {
				ids = append(ids, c.id)
			}
			if (err == nil) != (tc.ids != nil) || !slices.Equal(ids, tc.ids) {
				t.Errorf("parseRunbook = %v, %v; want %v", ids, err, tc.ids)
			}
		})
	}
}
