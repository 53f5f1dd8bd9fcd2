package test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clickagg/clickagg/localserver"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/shipper"
	"github.com/clickagg/clickagg/testserver"
)

// TestShipExactlyOnceThroughKillsAndRotation runs `clickagg ship` against a
// multi-process cluster while a writer appends 500,000 CSV click lines (0.5%
// of them malformed or invalid, some written in two pieces so the shipper
// sees partial lines) to a log that it rotates by rename twice and by
// copytruncate once, while the shipper is SIGKILLed three times at random
// points and restarted, and while one of the two routers is down for 2s. Then every (ad, minute) count must equal the
// valid lines written, and every bad line must be reported by file and
// line number.
func TestShipExactlyOnceThroughKillsAndRotation(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test of 500,000 shipped lines")
	}
	began := time.Now()
	c := newTestCluster(t, clusterSpec{
		partitions: 16, coordinators: 1, routers: 2, aggregators: 2,
		// Click times run from 10 minutes ago to 1 minute ago.
		routerFlags: []string{"-router.idle-watermark-lag=1h"},
	})
	coordClient := c.coordinatorClient()
	waitCaughtUp(t, coordClient, 16, 2*time.Minute)

	w, path, ckpt := newShipLog(t, c)
	ship := startShip(t, c, path, ckpt, "-ship.rotate-wait=300ms")

	const total = 500_000
	const rate = 12_500 // lines per second: the writing takes 40s
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 11))
	var killAt []int64
	for range 3 {
		killAt = append(killAt, 20_000+rng.Int64N(total-40_000))
	}
	slices.Sort(killAt)
	var written atomic.Int64
	killerDone := make(chan struct{})
	go func() {
		defer close(killerDone)
		for i, at := range killAt {
			for written.Load() < at {
				time.Sleep(5 * time.Millisecond)
			}
			t.Logf("SIGKILL shipper #%d after %d lines written", i+1, written.Load())
			ship.Kill()
			time.Sleep(time.Duration(rng.Int64N(int64(time.Second))))
			restartOnNewPort(t, ship)
		}
	}()

	caughtUp := func() error { return shipCaughtUp(ckpt, path) }
	var routerBack chan struct{}
	start := time.Now()
	const chunk = 500
	for n := int64(0); n < total; n += chunk {
		switch n {
		case 120_000:
			w.rename(path + ".1")
		case 250_000:
			// copytruncate loses what was not shipped before the truncation:
			// wait for the shipper to catch up, as logrotate users must.
			testserver.Eventually(t, 2*time.Minute, caughtUp)
			w.copyTruncate(path + ".2")
		case 380_000:
			w.rename(path + ".3")
		case 320_000:
			// A router outage: the shipper fails over to the other one.
			t.Logf("SIGKILL %s for 2s", c.routers[0].name)
			c.routers[0].Kill()
			routerBack = make(chan struct{})
			go func() {
				defer close(routerBack)
				time.Sleep(2 * time.Second)
				c.routers[0].Restart()
			}()
		}
		w.writeLines(chunk, rng)
		written.Store(n + chunk)
		if d := time.Until(start.Add(time.Duration(n+chunk) * time.Second / rate)); d > 0 {
			time.Sleep(d)
		}
	}
	w.close()
	t.Logf("wrote %d lines (%d valid clicks, %d malformed, %d invalid, %d headers) in %v over %d files",
		total, len(w.clicks), w.malformed, w.invalid, w.headers, time.Since(start).Round(time.Millisecond), len(w.segNames))
	<-killerDone
	<-routerBack

	caughtStart := time.Now()
	testserver.Eventually(t, 2*time.Minute, caughtUp)
	t.Logf("shipper caught up %v after the last line was written", time.Since(caughtStart).Round(time.Millisecond))
	waitCaughtUp(t, coordClient, 16, 2*time.Minute)

	tr := &truth{clicks: w.clicks}
	checkEveryAdMinute(t, c.queryClient(), tr)

	// Every bad line was reported, by a name its file had and its line
	// number, and no good line was.
	resumed, retried := 0, 0
	reported := shipperReports(t, ship.log, &resumed, &retried)
	if retried == 0 {
		t.Errorf("no failed request was retried: the router outage went unnoticed")
	}
	if resumed != len(killAt) {
		t.Errorf("shipper resumed from its checkpoint %d times, want %d (once per kill)", resumed, len(killAt))
	}
	missing := 0
	for _, b := range w.bad {
		found := false
		for _, name := range w.segNames[b.seg] {
			found = found || reported[fileLine{name, b.line, b.off}]
		}
		if !found {
			if missing++; missing <= 10 {
				t.Errorf("bad line %d of segment %d (%v) not reported", b.line, b.seg, w.segNames[b.seg])
			}
		}
	}
	badSet := map[fileLine]bool{}
	for _, b := range w.bad {
		for _, name := range w.segNames[b.seg] {
			badSet[fileLine{name, b.line, b.off}] = true
		}
	}
	wrong := 0
	for fl := range reported {
		if !badSet[fl] {
			if wrong++; wrong <= 10 {
				t.Errorf("good line %s:%d (offset %d) reported as bad", fl.file, fl.line, fl.off)
			}
		}
	}
	t.Logf("%d bad lines, %d distinct reports (file, line, offset), %d missing, %d wrong; %d resumptions, %d retried requests; total %v",
		len(w.bad), len(reported), missing, wrong, resumed, retried, time.Since(began).Round(time.Second))
}

// newShipLog creates the click log a shipper of c tails, and names the
// shipper's checkpoint file.
func newShipLog(t *testing.T, c *testCluster) (w *clickLog, path, ckpt string) {
	t.Helper()
	logDir := filepath.Join(c.dir, "logs")
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		t.Fatal(err)
	}
	path = filepath.Join(logDir, "clicks.log")
	return newClickLog(t, path), path, filepath.Join(c.dir, "ship-checkpoint.json")
}

// startShip starts clickagg ship on the CSV log at path, sending to the
// first two routers of c, with extra flags.
func startShip(t *testing.T, c *testCluster, path, ckpt string, extra ...string) *proc {
	t.Helper()
	return startProc(t, c.dir, "shipper-1", append([]string{"ship", "-ship.files=" + path, "-ship.format=csv",
		"-ship.routers=" + c.routers[0].addr + "," + c.routers[1].addr, "-ship.checkpoint=" + ckpt,
		"-ship.retry-max=1s", "-log.format=json"}, extra...)...)
}

// shipCaughtUp says whether the shipper's checkpoint at ckpt has reached
// the end of the file at path.
func shipCaughtUp(ckpt, path string) error {
	b, err := os.ReadFile(ckpt)
	if err != nil {
		return err
	}
	var cf struct {
		Files map[string]shipper.Position `json:"files"`
	}
	if err := json.Unmarshal(b, &cf); err != nil {
		return err
	}
	p, ok := cf.Files[path]
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	st := fi.Sys().(*syscall.Stat_t)
	if !ok || p.Ino != st.Ino || p.Offset != fi.Size() {
		return fmt.Errorf("checkpoint %+v, file inode %d size %d", p, st.Ino, fi.Size())
	}
	return nil
}

// restartOnNewPort starts p again on a fresh port: while it was down, its
// old port, an ephemeral one, may have been taken by an outgoing
// connection of another process on this machine.
func restartOnNewPort(t *testing.T, p *proc) {
	port, err := localserver.FreePort()
	if err != nil {
		t.Error(err)
		return
	}
	p.addr = fmt.Sprintf("127.0.0.1:%d", port)
	for i, a := range p.args {
		if strings.HasPrefix(a, "-grpc.addr=") {
			p.args[i] = "-grpc.addr=" + p.addr
		}
	}
	p.Restart()
}

type fileLine struct {
	file      string
	line, off int64
}

// shipperReports returns the (file, line, offset) of every malformed or
// rejected line in the shipper's JSON log, and counts its resumptions and
// retried requests.
func shipperReports(t *testing.T, logPath string, resumed, retried *int) map[fileLine]bool {
	t.Helper()
	f, err := os.Open(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	out := map[fileLine]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if !strings.HasPrefix(sc.Text(), "{") {
			continue
		}
		var r struct {
			Msg  string `json:"msg"`
			File string `json:"file"`
			Line int64  `json:"line"`
			Off  int64  `json:"offset"`
		}
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		switch r.Msg {
		case "malformed line", "rejected line":
			out[fileLine{r.File, r.Line, r.Off}] = true
		case "resuming":
			*resumed++
		case "ingest failed, retrying":
			*retried++
		}
	}
	return out
}

// clickLog writes a CSV click log the way an ad server would, and the
// ground truth of what it wrote.
type clickLog struct {
	t    *testing.T
	path string
	f    *os.File
	// A segment is one file, or one life of a file between truncations;
	// segNames are the names the shipper may see it under.
	seg      int
	segNames [][]string
	line     int64
	off      int64 // bytes written to the segment
	now      time.Time

	clicks                      []click
	bad                         []badLine
	malformed, invalid, headers int
}

type badLine struct {
	seg       int
	line, off int64
}

func newClickLog(t *testing.T, path string) *clickLog {
	w := &clickLog{t: t, path: path, now: time.Now()}
	w.open()
	return w
}

func (w *clickLog) open() {
	f, err := os.OpenFile(w.path, os.O_CREATE|os.O_EXCL|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		w.t.Fatal(err)
	}
	w.f = f
	w.newSegment()
}

func (w *clickLog) newSegment() {
	w.seg = len(w.segNames)
	w.segNames = append(w.segNames, []string{w.path})
	w.line, w.off = 0, 0
	w.write([]byte("ad_id,click_timestamp,user_id,ip,country\n"), 1)
	w.headers++
}

func (w *clickLog) write(b []byte, lines int64) {
	if _, err := w.f.Write(b); err != nil {
		w.t.Fatal(err)
	}
	w.line += lines
	w.off += int64(len(b))
}

// rename rotates by renaming the file and starting a new one at the path.
func (w *clickLog) rename(to string) {
	if err := os.Rename(w.path, to); err != nil {
		w.t.Fatal(err)
	}
	w.segNames[w.seg] = append(w.segNames[w.seg], to)
	w.f.Close()
	w.open()
}

// copyTruncate copies the file and truncates it, the same inode going on.
func (w *clickLog) copyTruncate(to string) {
	src, err := os.Open(w.path)
	if err != nil {
		w.t.Fatal(err)
	}
	dst, err := os.Create(to)
	if err != nil {
		w.t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		w.t.Fatal(err)
	}
	src.Close()
	dst.Close()
	if err := w.f.Truncate(0); err != nil {
		w.t.Fatal(err)
	}
	w.newSegment()
}

var shipCountries = []string{"US", "IN", "BR", "DE", "JP", "FR", "GB", "MX"}

// writeLines appends n lines, the last chunk split in two writes so that
// the shipper can see a partial line.
func (w *clickLog) writeLines(n int, rng *rand.Rand) {
	var b []byte
	for range n {
		w.line++
		ct := w.now.Add(-10*time.Minute + time.Duration(rng.Int64N(int64(9*time.Minute)))).Truncate(time.Millisecond)
		ts := strconv.FormatInt(ct.UnixMilli(), 10)
		if rng.IntN(2) == 0 {
			ts = ct.UTC().Format("2006-01-02T15:04:05.000Z07:00")
		}
		ad := fmt.Sprintf("ad-%d", rng.IntN(200))
		user := fmt.Sprintf("u-%d", rng.IntN(5000))
		ip := fmt.Sprintf("10.%d.%d.%d", rng.IntN(4), rng.IntN(256), 1+rng.IntN(254))
		country := shipCountries[rng.IntN(len(shipCountries))]
		if rng.IntN(1000) < 5 {
			w.bad = append(w.bad, badLine{w.seg, w.line, w.off + int64(len(b))})
			switch rng.IntN(4) {
			case 0:
				b = fmt.Appendf(b, "%s;%s;%s\n", ad, ts, user) // one field
				w.malformed++
			case 1:
				b = fmt.Appendf(b, "%s,yesterday,%s,%s,%s\n", ad, user, ip, country)
				w.malformed++
			case 2:
				b = fmt.Appendf(b, "%s,%s,%s,%s,ZZ\n", ad, ts, user, ip) // the router rejects the country
				w.invalid++
			default:
				b = fmt.Appendf(b, "%s,%s,%s,10.0.0.999,%s\n", ad, ts, user, country) // and this ip
				w.invalid++
			}
			continue
		}
		b = fmt.Appendf(b, "%s,%s,%s,%s,%s\n", ad, ts, user, ip, country)
		w.clicks = append(w.clicks, click{
			ev:     &clickaggv1.ClickEvent{AdId: ad, UserId: user, Ip: ip, Country: country},
			minute: ct.Unix() / 60,
		})
	}
	w.off += int64(len(b))
	cut := len(b) - 1 - rng.IntN(30)
	if _, err := w.f.Write(b[:cut]); err != nil {
		w.t.Fatal(err)
	}
	time.Sleep(time.Millisecond)
	if _, err := w.f.Write(b[cut:]); err != nil {
		w.t.Fatal(err)
	}
}

func (w *clickLog) close() { w.f.Close() }
