package shipper

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testsupport"
)

func TestMain(m *testing.M) { testsupport.VerifyTestMain(m) }

// fakeRouter is an IngestService on loopback that records events by id,
// rejects country "ZZ", and fails the first failFirst calls.
type fakeRouter struct {
	clickaggv1.UnimplementedIngestServiceServer
	addr string

	mu        sync.Mutex
	failFirst int
	calls     int
	sends     int // events received, duplicates included
	byID      map[string]*clickaggv1.ClickEvent
	conflicts []string // ids seen with two different events
	rejected  int
}

func startFakeRouter(t *testing.T, failFirst int) *fakeRouter {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeRouter{addr: l.Addr().String(), failFirst: failFirst, byID: map[string]*clickaggv1.ClickEvent{}}
	gs := grpc.NewServer()
	clickaggv1.RegisterIngestServiceServer(gs, f)
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	return f
}

func (f *fakeRouter) Ingest(_ context.Context, req *clickaggv1.IngestRequest) (*clickaggv1.IngestResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls++
	if f.calls <= f.failFirst {
		return nil, status.Error(codes.Unavailable, "router down")
	}
	resp := &clickaggv1.IngestResponse{}
	for i, e := range req.Events {
		if e.Country == "ZZ" {
			resp.Rejected = append(resp.Rejected, &clickaggv1.Rejection{Index: int32(i), EventId: e.EventId, Reason: "country \"ZZ\" is not an assigned ISO 3166-1 alpha-2 code"})
			f.rejected++
			continue
		}
		f.sends++
		if old, ok := f.byID[e.EventId]; ok && !proto.Equal(old, e) {
			f.conflicts = append(f.conflicts, e.EventId)
		}
		f.byID[e.EventId] = e
		resp.Accepted++
	}
	return resp, nil
}

// users returns, per user_id (the tests' line identity), the ids it was
// received under.
func (f *fakeRouter) users() map[string][]string {
	f.mu.Lock()
	defer f.mu.Unlock()
	m := map[string][]string{}
	for id, e := range f.byID {
		m[e.UserId] = append(m[e.UserId], id)
	}
	return m
}

func (f *fakeRouter) distinct() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.byID)
}

// clickLine is line i of a test log; its user_id u-<i> identifies it.
func clickLine(format string, i int) string {
	ms := time.Now().UnixMilli()
	if format == FormatCSV {
		return fmt.Sprintf("ad-%d,%d,u-%d,10.0.0.1,US\n", i%7, ms, i)
	}
	return fmt.Sprintf(`{"ad_id":"ad-%d","click_time":%d,"user_id":"u-%d","ip":"10.0.0.1","country":"US"}`+"\n", i%7, ms, i)
}

func appendLines(t *testing.T, path, format string, from, to int) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var b strings.Builder
	for i := from; i < to; i++ {
		b.WriteString(clickLine(format, i))
	}
	if _, err := f.WriteString(b.String()); err != nil {
		t.Fatal(err)
	}
}

type run struct {
	s      *Shipper
	cancel context.CancelFunc
	done   chan error
}

func startShipper(t *testing.T, r *fakeRouter, path, format string, lg *slog.Logger) *run {
	t.Helper()
	cfg := Config{
		Files: []string{path}, Format: format, Routers: []string{r.addr}, Host: "host-1",
		BatchSize: 100, PollInterval: 10 * time.Millisecond, RotateWait: 50 * time.Millisecond,
		RetryMin: time.Millisecond, RetryMax: 20 * time.Millisecond, RequestTimeout: 5 * time.Second,
	}
	if lg == nil {
		lg = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	s, err := New(cfg, lg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ru := &run{s: s, cancel: cancel, done: make(chan error, 1)}
	go func() { ru.done <- s.Run(ctx) }()
	t.Cleanup(ru.stop)
	return ru
}

func (r *run) stop() {
	r.cancel()
	<-r.done
	r.done <- nil // later stops return at once
}

// eventually polls cond until it holds or 10 seconds pass.
func eventually(t *testing.T, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// checkExactlyOnce checks that lines [0, n) each arrived under exactly one
// id and that no id carried two different clicks.
func checkExactlyOnce(t *testing.T, r *fakeRouter, n int) {
	t.Helper()
	eventually(t, func() error {
		if d := r.distinct(); d != n {
			return fmt.Errorf("%d distinct ids received, want %d", d, n)
		}
		return nil
	})
	users := r.users()
	for i := range n {
		if ids := users[fmt.Sprintf("u-%d", i)]; len(ids) != 1 {
			t.Errorf("line %d received under ids %v, want exactly one", i, ids)
		}
	}
	if len(r.conflicts) > 0 {
		t.Errorf("ids with two different clicks: %v", r.conflicts)
	}
}

func readCheckpoint(t *testing.T, path string) map[string]Position {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var f checkpointFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f.Files
}

func TestShipsEveryLineOnceAndCheckpointsTheEnd(t *testing.T) {
	for _, format := range []string{FormatJSON, FormatCSV} {
		t.Run(format, func(t *testing.T) {
			r := startFakeRouter(t, 0)
			path := filepath.Join(t.TempDir(), "clicks.log")
			appendLines(t, path, format, 0, 250)
			startShipper(t, r, path, format, nil)
			checkExactlyOnce(t, r, 250)
			fi, _ := os.Stat(path)
			eventually(t, func() error {
				if p := readCheckpoint(t, filepath.Join(filepath.Dir(path), ".clicks.log.ship.json"))[path]; p.Offset != fi.Size() || p.Line != 250 {
					return fmt.Errorf("checkpoint %+v, want offset %d line 250", p, fi.Size())
				}
				return nil
			})
		})
	}
}

func TestPartialLineWaitsForItsNewline(t *testing.T) {
	r := startFakeRouter(t, 0)
	path := filepath.Join(t.TempDir(), "clicks.log")
	appendLines(t, path, FormatJSON, 0, 10)
	line := clickLine(FormatJSON, 10)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	f.WriteString(line[:20])
	startShipper(t, r, path, FormatJSON, nil)
	checkExactlyOnce(t, r, 10)
	time.Sleep(100 * time.Millisecond) // ten polls: the partial line must stay unread
	if d := r.distinct(); d != 10 {
		t.Fatalf("%d events after a partial line, want 10", d)
	}
	f.WriteString(line[20:])
	checkExactlyOnce(t, r, 11)
}

func TestIDsAreStableAcrossRereads(t *testing.T) {
	r := startFakeRouter(t, 0)
	dir := t.TempDir()
	path := filepath.Join(dir, "clicks.log")
	appendLines(t, path, FormatCSV, 0, 300)
	ru := startShipper(t, r, path, FormatCSV, nil)
	checkExactlyOnce(t, r, 300)
	ru.stop()
	before := r.users()
	// Losing the checkpoint is the worst case of a crash between ack and
	// checkpoint: everything is sent again, under the same ids.
	os.Remove(filepath.Join(dir, ".clicks.log.ship.json"))
	r.mu.Lock()
	sent := r.sends
	r.mu.Unlock()
	startShipper(t, r, path, FormatCSV, nil)
	eventually(t, func() error {
		r.mu.Lock()
		defer r.mu.Unlock()
		if r.sends != 2*sent {
			return fmt.Errorf("%d events received, want %d", r.sends, 2*sent)
		}
		return nil
	})
	checkExactlyOnce(t, r, 300)
	after := r.users()
	for u, ids := range before {
		if after[u][0] != ids[0] {
			t.Errorf("%s: id %s after a reread, %s before", u, after[u][0], ids[0])
		}
	}
	id := before["u-0"][0]
	parts := strings.Split(id, ":")
	if len(parts) != 6 || parts[0] != "host-1" || parts[5] != "0" || parts[4] != "0" || len(parts[3]) != 8 {
		t.Errorf("id of line 1 = %q, want host-1:<dev>:<ino>:<head>:0:0", id)
	}
}

func TestResumeSendsOnlyWhatWasNotAcknowledged(t *testing.T) {
	r := startFakeRouter(t, 0)
	path := filepath.Join(t.TempDir(), "clicks.log")
	appendLines(t, path, FormatJSON, 0, 200)
	ru := startShipper(t, r, path, FormatJSON, nil)
	checkExactlyOnce(t, r, 200)
	// The router has the events before the shipper has its answer: a stop
	// in between cancels the request, and the restart sends them again
	// (under the same ids), as it must. Stop once they are checkpointed.
	eventually(t, func() error {
		if n := ru.s.Stats().Lines.Load(); n != 200 {
			return fmt.Errorf("%d lines checkpointed, want 200", n)
		}
		return nil
	})
	ru.stop()
	appendLines(t, path, FormatJSON, 200, 350)
	startShipper(t, r, path, FormatJSON, nil)
	checkExactlyOnce(t, r, 350)
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.sends != 350 {
		t.Errorf("%d events sent, want 350: acknowledged lines were sent again", r.sends)
	}
}

func TestRenameRotationFinishesTheOldFileFirst(t *testing.T) {
	r := startFakeRouter(t, 0)
	path := filepath.Join(t.TempDir(), "clicks.log")
	appendLines(t, path, FormatJSON, 0, 100)
	ru := startShipper(t, r, path, FormatJSON, nil)
	checkExactlyOnce(t, r, 100)
	// Live: the old file is renamed and still written to for a moment
	// (the ad server's open descriptor) before the new one starts.
	old, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(path, path+".1"); err != nil {
		t.Fatal(err)
	}
	for i := 100; i < 150; i++ {
		old.WriteString(clickLine(FormatJSON, i))
	}
	old.WriteString(strings.TrimSuffix(clickLine(FormatJSON, 150), "\n")) // a last line without newline
	old.Close()
	appendLines(t, path, FormatJSON, 151, 200)
	checkExactlyOnce(t, r, 200)

	// Stopped: two rotations while the shipper is down; the file it was
	// reading and the one rotated in between are both shipped, in order.
	ru.stop()
	// Rotated files are ordered by modification time, whose granularity is
	// the kernel's clock tick: the rotations are some ticks apart.
	appendLines(t, path, FormatJSON, 200, 220)
	os.Rename(path, path+".2")
	time.Sleep(20 * time.Millisecond)
	appendLines(t, path, FormatJSON, 220, 240)
	time.Sleep(20 * time.Millisecond)
	os.Rename(path, path+".3")
	appendLines(t, path, FormatJSON, 240, 260)
	startShipper(t, r, path, FormatJSON, nil)
	checkExactlyOnce(t, r, 260)
}

func TestCopyTruncateStartsTheSameFileAgain(t *testing.T) {
	r := startFakeRouter(t, 0)
	dir := t.TempDir()
	path := filepath.Join(dir, "clicks.log")
	appendLines(t, path, FormatCSV, 0, 100)
	ru := startShipper(t, r, path, FormatCSV, nil)
	checkExactlyOnce(t, r, 100)
	if err := os.Truncate(path, 0); err != nil {
		t.Fatal(err)
	}
	appendLines(t, path, FormatCSV, 100, 130) // shorter than before: seen as a truncation
	checkExactlyOnce(t, r, 130)
	eventually(t, func() error {
		if p := readCheckpoint(t, filepath.Join(dir, ".clicks.log.ship.json"))[path]; p.Gen != 1 || p.Line != 30 {
			return fmt.Errorf("checkpoint %+v, want gen 1 and line 30", p)
		}
		return nil
	})

	// Truncated while the shipper is down, and written past the old
	// offset again: the first line's checksum tells.
	ru.stop()
	os.Truncate(path, 0)
	appendLines(t, path, FormatCSV, 130, 200)
	startShipper(t, r, path, FormatCSV, nil)
	checkExactlyOnce(t, r, 200)
}

func TestRetriesUntilARouterAcceptsAndReportsRejections(t *testing.T) {
	r := startFakeRouter(t, 5)
	path := filepath.Join(t.TempDir(), "clicks.log")
	appendLines(t, path, FormatCSV, 0, 50)
	f, _ := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	f.WriteString("garbage\nad-1,1,u-x,10.0.0.1,ZZ\n")
	f.Close()
	appendLines(t, path, FormatCSV, 50, 60)
	var logs testsupport.SyncBuffer
	ru := startShipper(t, r, path, FormatCSV, slog.New(slog.NewTextHandler(&logs, nil)))
	checkExactlyOnce(t, r, 60)
	eventually(t, func() error {
		if n := ru.s.Stats().Lines.Load(); n != 62 {
			return fmt.Errorf("%d lines consumed, want 62", n)
		}
		return nil
	})
	st := ru.s.Stats()
	if st.Malformed.Load() != 1 || st.Rejected.Load() != 1 || st.Retries.Load() != 5 || st.Accepted.Load() != 60 {
		t.Errorf("malformed %d rejected %d retries %d accepted %d, want 1 1 5 60", st.Malformed.Load(), st.Rejected.Load(), st.Retries.Load(), st.Accepted.Load())
	}
	out := logs.String()
	for _, want := range []string{`msg="malformed line" file=` + path + ` line=51`, `msg="rejected line" file=` + path + ` line=52`, `ZZ`} {
		if !strings.Contains(out, want) {
			t.Errorf("log lacks %q:\n%s", want, out)
		}
	}
}

func TestCheckpointIsAtomic(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "ck.json")
	ck, err := loadCheckpoints(path)
	if err != nil {
		t.Fatal(err)
	}
	// A temporary file left by a crash during a write is ignored.
	os.WriteFile(filepath.Join(dir, ".ck.json.tmp-123"), []byte("{\"ver"), 0o644)
	done := make(chan struct{})
	var readErr error
	go func() {
		defer close(done)
		for i := 0; i < 2000; i++ {
			b, err := os.ReadFile(path)
			if os.IsNotExist(err) {
				continue
			}
			var f checkpointFile
			if err == nil {
				err = json.Unmarshal(b, &f)
			}
			if err != nil {
				readErr = fmt.Errorf("read %d: %v: %q", i, err, b)
				return
			}
		}
	}()
	for i := range 300 {
		if err := ck.save("/var/log/clicks.log", Position{Name: "/var/log/clicks.log", Dev: 1, Ino: 2, Offset: int64(i) * 1000, Line: int64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	<-done
	if readErr != nil {
		t.Fatal(readErr)
	}
	again, err := loadCheckpoints(path)
	if err != nil {
		t.Fatal(err)
	}
	if p, _ := again.get("/var/log/clicks.log"); p.Offset != 299000 || p.Line != 299 {
		t.Errorf("reloaded %+v", p)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 2 {
		t.Errorf("%d files in the directory, want the checkpoint and the old temporary file", len(ents))
	}
	os.WriteFile(path, []byte("{not json"), 0o644)
	if _, err := loadCheckpoints(path); err == nil {
		t.Error("a corrupt checkpoint was loaded without error")
	}
}

func TestConfigValidate(t *testing.T) {
	ok := Config{Files: []string{"a.log"}, Format: FormatCSV, Routers: []string{"r:1"}, Host: "h", BatchSize: 1,
		PollInterval: time.Second, RetryMin: time.Second, RetryMax: time.Second, RequestTimeout: time.Second}
	if err := ok.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*Config){
		"no files":   func(c *Config) { c.Files = nil },
		"twice":      func(c *Config) { c.Files = []string{"a.log", "./a.log"} },
		"prefix":     func(c *Config) { c.Files = []string{"a.log", "a.log.err"} },
		"format":     func(c *Config) { c.Format = "xml" },
		"no routers": func(c *Config) { c.Routers = nil },
		"host colon": func(c *Config) { c.Host = "a:b" },
		"host long":  func(c *Config) { c.Host = strings.Repeat("h", MaxHostLength+1) },
		"batch":      func(c *Config) { c.BatchSize = 0 },
		"retry":      func(c *Config) { c.RetryMax = time.Millisecond },
		"timeout":    func(c *Config) { c.RequestTimeout = 0 },
	} {
		t.Run(name, func(t *testing.T) {
			c := ok
			mod(&c)
			if err := c.Validate(); err == nil {
				t.Error("valid")
			}
		})
	}
}
