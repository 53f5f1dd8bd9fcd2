package test

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

// TestStatus runs clickagg status against a live cluster of 16
// partitions (a coordinator, two aggregators, a router, a queryd) over
// TLS, as a client with a bearer token and no certificate, and compares
// its output by kind: the structure, the member IDs and roles, the
// version each process registered, and the partitions each aggregator
// owns, exact against GetAssignment; rates and lags only by form. It
// also checks what the versions are made of: clickagg -version, ListMembers'
// version and http_addr, and clickagg_build_info on /metrics.
func TestStatus(t *testing.T) {
	const partitions = 16
	c := newTestCluster(t, clusterSpec{partitions: partitions, coordinators: 1, routers: 1, aggregators: 2, tls: true, auth: true})
	cc := c.coordinatorClient()
	waitCaughtUp(t, cc, partitions, 2*time.Minute)
	trickle(t, c.ingestClients()[0])

	out, err := exec.Command(binary, "-version").CombinedOutput()
	if want := "clickagg " + e2eVersion + " (commit "; err != nil || !strings.HasPrefix(string(out), want) {
		t.Fatalf("clickagg -version: %v, %q; want it to start with %q", err, out, want)
	}

	t.Run("ListMembers", func(t *testing.T) {
		r, err := cc.ListMembers(context.Background(), &clickaggv1.ListMembersRequest{})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range r.Members {
			// Only queryd serves HTTP in this cluster: -http.addr= for the others.
			wantHTTP := ""
			if m.Id == "queryd-1" {
				wantHTTP = c.httpAddr
			}
			if m.Version != e2eVersion || m.HttpAddr != wantHTTP {
				t.Errorf("member %s (%s): version %q, http_addr %q; want %q, %q", m.Id, m.Role, m.Version, m.HttpAddr, e2eVersion, wantHTTP)
			}
		}
	})

	t.Run("build info metric", func(t *testing.T) {
		resp, err := c.http.Get(c.httpBase() + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		var line string
		for l := range strings.Lines(string(body)) {
			if strings.HasPrefix(l, "clickagg_build_info{") {
				line = strings.TrimSpace(l)
			}
		}
		if !strings.Contains(line, `version="`+e2eVersion+`"`) || !strings.HasSuffix(line, "} 1") {
			t.Fatalf("queryd's /metrics: clickagg_build_info line %q, want version %s and value 1", line, e2eVersion)
		}
	})

	// The client's files: the CA and the billing token (query only).
	dir := c.tlsDir("status")
	caFile := c.ca.WriteCA(t, dir)
	tokenFile := filepath.Join(dir, "billing.token")
	tlstest.WriteFile(t, tokenFile, []byte(authTokens["billing"]+"\n"))
	status := func(extra ...string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		args := append([]string{"status", "-addr=" + c.coordinators[0].addr, "-tls.ca-file=" + caFile, "-auth.token-file=" + tokenFile}, extra...)
		out, err := exec.CommandContext(ctx, binary, args...).CombinedOutput()
		return string(out), err
	}

	owned := func() map[string]int {
		a, err := cc.GetAssignment(context.Background(), &clickaggv1.GetAssignmentRequest{})
		if err != nil {
			t.Fatal(err)
		}
		n := map[string]int{}
		for _, p := range a.Partitions {
			n[p.Member]++
		}
		return n
	}

	t.Run("summary", func(t *testing.T) {
		var out string
		testserver.Eventually(t, time.Minute, func() error {
			var err error
			if out, err = status(); err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			// Repeated until the trickle's hot ad shows.
			return checkStatus(out, partitions, owned(), false)
		})
		t.Logf("clickagg status:\n%s", out)
	})

	t.Run("partitions", func(t *testing.T) {
		var out string
		testserver.Eventually(t, time.Minute, func() error {
			var err error
			if out, err = status("-partitions"); err != nil {
				return fmt.Errorf("%v: %s", err, out)
			}
			return checkStatus(out, partitions, owned(), true)
		})
	})

	t.Run("refused without a token", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, binary, "status", "-addr="+c.coordinators[0].addr, "-tls.ca-file="+caFile).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "PermissionDenied") && !strings.Contains(string(out), "Unauthenticated") {
			t.Fatalf("clickagg status without a token: %v, %s; want a refusal", err, out)
		}
	})
	_ = os.Remove(tokenFile)
}

// checkStatus compares clickagg status's output by kind: the totals'
// lines, the member table (IDs, roles, the e2e version, the partitions
// of each aggregator exactly as owned says, "-" for the others), the hot
// ads with ad-hot first, no handoff in progress and, with partitions,
// one row per partition naming its owner.
func checkStatus(out string, partitions int, owned map[string]int, withPartitions bool) error {
	blocks := strings.Split(strings.TrimRight(out, "\n"), "\n\n")
	want := 5
	if withPartitions {
		want = 6
	}
	if len(blocks) != want {
		return fmt.Errorf("%d blocks separated by blank lines, want %d", len(blocks), want)
	}
	head := strings.Split(blocks[0], "\n")
	if len(head) != 5 {
		return fmt.Errorf("%d header lines, want 5 (every partition and router available)", len(head))
	}
	if w := fmt.Sprintf("%d partitions: %d serving, 0 restoring, 0 unavailable; leader coordinator-1", partitions, partitions); strings.Join(strings.Fields(head[0])[1:], " ") != w {
		return fmt.Errorf("first line %q, want cluster  %s", head[0], w)
	}
	for i, prefix := range []string{"cluster", "ingested", "applied", "freshness", "moves"} {
		if f := strings.Fields(head[i]); f[0] != prefix {
			return fmt.Errorf("header line %d: %q, want it to start with %s", i, head[i], prefix)
		}
	}
	if !strings.HasSuffix(head[1], " rejected; 1 of 1 routers, each since it started") {
		return fmt.Errorf("ingested line %q, want the one router answering and 0 rejected", head[1])
	}
	if !strings.HasPrefix(strings.Join(strings.Fields(head[4])[1:], " "), "0 handoffs in progress, 0 splits") {
		return fmt.Errorf("moves line %q, want 0 handoffs in progress, 0 splits", head[4])
	}

	rows := strings.Split(blocks[1], "\n")
	if h := strings.Fields(rows[0]); !slices.Equal(h, []string{"MEMBER", "ROLES", "VERSION", "GRPC", "HTTP", "PARTITIONS", "SERVING", "LAG", "OLDEST", "WM", "DELAY", "EVENTS/S"}) {
		return fmt.Errorf("member header %q", rows[0])
	}
	wantRoles := map[string]string{"aggregator-1": "aggregator", "aggregator-2": "aggregator", "coordinator-1": "coordinator", "queryd-1": "queryd", "router-1": "router"}
	var ids []string
	sum := 0
	for _, r := range rows[1:] {
		f := strings.Fields(r)
		if len(f) != 11 {
			return fmt.Errorf("member row %q: %d columns, want 11", r, len(f))
		}
		id := f[0]
		ids = append(ids, id)
		if f[1] != wantRoles[id] || f[2] != e2eVersion {
			return fmt.Errorf("member row %q: roles %s version %s, want %s %s", r, f[1], f[2], wantRoles[id], e2eVersion)
		}
		if f[1] != "aggregator" {
			if !slices.Equal(f[5:], []string{"-", "-", "-", "-", "-", "-"}) {
				return fmt.Errorf("member row %q: partition columns of a %s, want dashes", r, f[1])
			}
			continue
		}
		n, err := strconv.Atoi(f[5])
		if err != nil || n != owned[id] || f[6] != f[5] {
			return fmt.Errorf("member row %q: partitions %s serving %s, want %d both", r, f[5], f[6], owned[id])
		}
		sum += n
		if _, err := strconv.ParseFloat(f[10], 64); err != nil || !strings.HasSuffix(f[8], "s") || !strings.HasSuffix(f[9], "s") {
			return fmt.Errorf("member row %q: oldest %s, watermark delay %s, events/s %s: want seconds and a rate", r, f[8], f[9], f[10])
		}
	}
	if !slices.Equal(ids, []string{"aggregator-1", "aggregator-2", "coordinator-1", "queryd-1", "router-1"}) || sum != partitions {
		return fmt.Errorf("members %v owning %d partitions, want the five processes and %d", ids, sum, partitions)
	}

	// The trickle's clicks are all valid and keep coming: the router
	// accepted some, rejected none, failed no append.
	routers := strings.Split(blocks[2], "\n")
	if len(routers) != 2 || strings.Join(strings.Fields(routers[0]), " ") != "ROUTER ACCEPTED REJECTED FAILED APPENDS CLICKS/S UP" {
		return fmt.Errorf("routers block %q, want a header and router-1", blocks[2])
	}
	if f := strings.Fields(routers[1]); len(f) != 6 || f[0] != "router-1" || f[2] != "0" || f[3] != "0" {
		return fmt.Errorf("router row %q, want router-1 with 0 rejected and 0 failed appends", routers[1])
	} else if n, err := strconv.ParseInt(f[1], 10, 64); err != nil || n <= 0 {
		return fmt.Errorf("router row %q: accepted %s, want a positive count", routers[1], f[1])
	}

	hot := strings.Split(blocks[3], "\n")
	if len(hot) < 2 || strings.Join(strings.Fields(hot[0]), " ") != "HOT AD PARTITION EVENTS/S SHARE" || strings.Fields(hot[1])[0] != "ad-hot" {
		return fmt.Errorf("hot ads block %q, want ad-hot first", blocks[3])
	}
	if blocks[4] != "handoffs in progress: none" {
		return fmt.Errorf("handoffs block %q", blocks[4])
	}
	if !withPartitions {
		return nil
	}
	prows := strings.Split(blocks[5], "\n")
	if len(prows) != partitions+1 {
		return fmt.Errorf("%d partition rows, want %d", len(prows)-1, partitions)
	}
	perOwner := map[string]int{}
	for i, r := range prows[1:] {
		f := strings.Fields(r)
		if len(f) != 8 || f[0] != strconv.Itoa(i) || f[3] != "serving" {
			return fmt.Errorf("partition row %q, want partition %d serving", r, i)
		}
		perOwner[f[1]]++
	}
	for id, n := range owned {
		if perOwner[id] != n {
			return fmt.Errorf("partition rows name %s %d times, want %d", id, perOwner[id], n)
		}
	}
	return nil
}
