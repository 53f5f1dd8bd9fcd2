package shipper

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/retry"
)

// maxLine bounds a line; a longer one is reported as malformed.
const maxLine = 16 << 20

// compressed are suffixes of rotated files that are never read: they are
// compressed copies of files already read.
var compressed = []string{".gz", ".zst", ".bz2", ".xz", ".lz4", ".zip"}

// tailer ships one log path: the file at the path and, after a rotation,
// the files it was renamed to, in the order they were written.
type tailer struct {
	s    *Shipper
	path string
	ck   *checkpoints
	snd  *sender
	lag  atomic.Int64

	f      *os.File
	pos    Position
	size   int64     // size of f when last looked at
	grewAt time.Time // when f was opened or last seen growing
	buf    []byte
}

func (t *tailer) run(ctx context.Context) error {
	defer func() {
		if t.f != nil {
			t.f.Close()
		}
	}()
	if err := t.resume(ctx); err != nil {
		return err
	}
	for {
		progressed, err := t.step(ctx, false)
		if err != nil {
			return err
		}
		if progressed {
			continue
		}
		moved, err := t.follow(ctx)
		if err != nil {
			return err
		}
		if moved {
			continue
		}
		if err := retry.Sleep(ctx, t.s.cfg.PollInterval); err != nil {
			return err
		}
	}
}

// identity returns the device and inode of fi.
func identity(fi os.FileInfo) (dev, ino uint64) {
	st := fi.Sys().(*syscall.Stat_t)
	return uint64(st.Dev), st.Ino
}

func (p Position) is(fi os.FileInfo) bool {
	dev, ino := identity(fi)
	return p.Dev == dev && p.Ino == ino
}

// headOf returns the CRC-32 of f's first line, newline included, or "" when
// the first line is not complete yet.
func headOf(f *os.File) (string, error) {
	buf := make([]byte, 64<<10)
	for {
		n, err := f.ReadAt(buf, 0)
		if err != nil && !errors.Is(err, io.EOF) {
			return "", err
		}
		if i := bytes.IndexByte(buf[:n], '\n'); i >= 0 {
			return fmt.Sprintf("%08x", crc32.ChecksumIEEE(buf[:i+1])), nil
		}
		if n < len(buf) || len(buf) >= maxLine {
			return "", nil
		}
		buf = make([]byte, 2*len(buf))
	}
}

// resume opens the file the checkpoint names, wherever it was rotated to,
// or, without a checkpoint, the file at the path once it exists.
func (t *tailer) resume(ctx context.Context) error {
	lg := t.s.lg
	if p, ok := t.ck.get(t.path); ok {
		f, name, err := t.find(p)
		if err != nil {
			return err
		}
		if f != nil {
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return err
			}
			head := p.Head
			if head != "" {
				if head, err = headOf(f); err != nil {
					f.Close()
					return fmt.Errorf("read %s: %w", name, err)
				}
			}
			p.Name = name
			if fi.Size() < p.Offset || head != p.Head {
				// Truncated (copytruncate) while the shipper was down, or
				// the inode now holds another file: read it from the start
				// under a new generation, so its ids are new ones.
				lg.Info("checkpointed file was truncated or replaced; reading it from the start", "file", name, "offset", p.Offset, "size", fi.Size())
				p = Position{Name: name, Dev: p.Dev, Ino: p.Ino, Gen: p.Gen + 1}
			}
			t.setFile(f, fi, p)
			lg.Info("resuming", "file", name, "offset", p.Offset, "line", p.Line)
			return nil
		}
		lg.Warn("checkpointed file not found: it was rotated away and removed before it was shipped to its end; starting at the beginning of the log path",
			"file", p.Name, "dev", p.Dev, "ino", p.Ino, "offset", p.Offset, "line", p.Line)
	}
	for {
		f, err := os.Open(t.path)
		if err == nil {
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return err
			}
			dev, ino := identity(fi)
			t.setFile(f, fi, Position{Name: t.path, Dev: dev, Ino: ino})
			lg.Info("starting", "file", t.path)
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if err := retry.Sleep(ctx, t.s.cfg.PollInterval); err != nil {
			return err
		}
	}
}

func (t *tailer) setFile(f *os.File, fi os.FileInfo, p Position) {
	if t.f != nil {
		t.f.Close()
	}
	t.f, t.pos, t.size, t.grewAt = f, p, fi.Size(), time.Now()
}

// find opens the file with p's identity: at the log path, under its last
// known name, or under any name of a rotated file in the path's directory.
// It returns a nil file when there is none.
func (t *tailer) find(p Position) (*os.File, string, error) {
	names := []string{t.path}
	if p.Name != t.path {
		names = append(names, p.Name)
	}
	rotated, err := t.rotatedNames()
	if err != nil {
		return nil, "", err
	}
	names = append(names, rotated...)
	for _, name := range names {
		f, err := os.Open(name)
		if err != nil {
			continue
		}
		if fi, err := f.Stat(); err == nil && p.is(fi) {
			return f, name, nil
		}
		f.Close()
	}
	return nil, "", nil
}

// rotatedNames lists the regular files in the log path's directory whose
// names start with the log file's name (clicks.log.1, clicks.log-20261126),
// compressed ones excepted.
func (t *tailer) rotatedNames() ([]string, error) {
	dir, base := filepath.Split(t.path)
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	ck := filepath.Base(t.s.cfg.checkpointPath())
	var out []string
	for _, e := range ents {
		n := e.Name()
		if n == base || !strings.HasPrefix(n, base) || !e.Type().IsRegular() {
			continue
		}
		if n == ck || strings.HasPrefix(n, "."+ck+".tmp-") {
			continue // the checkpoint, when kept next to the log
		}
		skip := false
		for _, c := range compressed {
			skip = skip || strings.HasSuffix(n, c)
		}
		if !skip {
			out = append(out, filepath.Join(dir, n))
		}
	}
	return out, nil
}

type lineRef struct {
	no  int64
	off int64
}

// step reads complete lines from the acknowledged offset, up to a batch of
// events, sends them and checkpoints their end. With final, a last line
// without newline counts as complete (the file was rotated away and is
// finished). It reports whether any line was consumed.
func (t *tailer) step(ctx context.Context, final bool) (bool, error) {
	if t.buf == nil {
		t.buf = make([]byte, 256<<10)
	}
	n, err := t.f.ReadAt(t.buf, t.pos.Offset)
	if err != nil && !errors.Is(err, io.EOF) {
		return false, fmt.Errorf("read %s: %w", t.pos.Name, err)
	}
	atEOF := n < len(t.buf)
	data := t.buf[:n]
	p := t.pos
	var events []*clickaggv1.ClickEvent
	var refs []lineRef
	consumed := int64(0)
	for len(events) < t.s.cfg.BatchSize && len(data) > 0 {
		i := bytes.IndexByte(data, '\n')
		var line []byte
		switch {
		case i >= 0:
			line, data = data[:i+1], data[i+1:]
		case final && atEOF:
			line, data = data, nil
		case !atEOF && consumed == 0 && len(t.buf) < maxLine:
			// A line longer than the buffer: read again with a larger one.
			t.buf = make([]byte, 2*len(t.buf))
			return t.step(ctx, final)
		case !atEOF && consumed == 0:
			line, data = data, nil // longer than maxLine: reported below
		default:
			data = nil
			continue
		}
		off := p.Offset
		p.Offset += int64(len(line))
		p.Line++
		consumed++
		if off == 0 {
			p.Head = fmt.Sprintf("%08x", crc32.ChecksumIEEE(line))
		}
		var ev *clickaggv1.ClickEvent
		var perr error
		if len(line) >= maxLine {
			perr = fmt.Errorf("line longer than %d bytes", maxLine)
		} else {
			ev, perr = parseLine(t.s.cfg.Format, bytes.TrimSuffix(line, []byte("\n")))
		}
		if errors.Is(perr, errSkip) {
			continue
		}
		if perr != nil {
			t.s.stats.Malformed.Add(1)
			t.s.lg.Warn("malformed line", "file", p.Name, "line", p.Line, "offset", off, "reason", perr.Error())
			continue
		}
		if ev.EventId == "" {
			ev.EventId = EventID(t.s.cfg.Host, p, off)
		}
		events = append(events, ev)
		refs = append(refs, lineRef{p.Line, off})
	}
	if consumed == 0 {
		return false, nil
	}
	if len(events) > 0 {
		resp, err := t.snd.send(ctx, events)
		if err != nil {
			return false, err
		}
		t.s.stats.Accepted.Add(resp.Accepted)
		for _, r := range resp.Rejected {
			t.s.stats.Rejected.Add(1)
			ref := lineRef{-1, -1}
			if r.Index >= 0 && int(r.Index) < len(refs) {
				ref = refs[r.Index]
			}
			t.s.lg.Warn("rejected line", "file", p.Name, "line", ref.no, "offset", ref.off, "event_id", r.EventId, "reason", r.Reason)
		}
	}
	// Acknowledged: only now does the checkpoint move past these lines.
	if err := t.ck.save(t.path, p); err != nil {
		return false, err
	}
	t.pos = p
	t.s.stats.Lines.Add(consumed)
	if fi, err := t.f.Stat(); err == nil {
		t.lag.Store(max(0, fi.Size()-p.Offset))
	}
	return true, nil
}

// EventID is the event_id of the line at byte offset off of the file at
// position p, shipped by host:
//
//	<host>:<dev>:<ino>:<head>:<gen>:<off>
//
// dev and ino in decimal, head the CRC-32 of the file's first line in hex,
// gen its truncation count. The same bytes of the same file always get the
// same id, however often they are read.
func EventID(host string, p Position, off int64) string {
	return fmt.Sprintf("%s:%d:%d:%s:%d:%d", host, p.Dev, p.Ino, p.Head, p.Gen, off)
}

// follow looks at the file after its complete lines were consumed: it
// follows a truncation back to the start, and a rotation, once the renamed
// file is finished, to the next file. It reports whether it moved.
func (t *tailer) follow(ctx context.Context) (bool, error) {
	fi, err := t.f.Stat()
	if err != nil {
		return false, fmt.Errorf("stat %s: %w", t.pos.Name, err)
	}
	if fi.Size() < t.pos.Offset {
		// copytruncate: the same inode starts again at 0. Lines written
		// after our offset and before the truncation are lost with it;
		// that is copytruncate's own race.
		t.s.lg.Info("file truncated; reading it from the start", "file", t.pos.Name, "offset", t.pos.Offset, "size", fi.Size())
		p := Position{Name: t.pos.Name, Dev: t.pos.Dev, Ino: t.pos.Ino, Gen: t.pos.Gen + 1}
		if err := t.ck.save(t.path, p); err != nil {
			return false, err
		}
		t.pos, t.size, t.grewAt = p, fi.Size(), time.Now()
		t.s.stats.Rotations.Add(1)
		return true, nil
	}
	if fi.Size() != t.size {
		t.size, t.grewAt = fi.Size(), time.Now()
	}
	lag := fi.Size() - t.pos.Offset
	pfi, err := os.Stat(t.path)
	rotated := err == nil && !t.pos.is(pfi)
	if rotated {
		lag += pfi.Size()
	}
	t.lag.Store(lag)
	if !rotated || time.Since(t.grewAt) < t.s.cfg.RotateWait {
		return false, nil
	}
	// Renamed away and no longer written: finish it, a last line without
	// newline included, then move on.
	for {
		progressed, err := t.step(ctx, true)
		if err != nil {
			return false, err
		}
		if !progressed {
			break
		}
	}
	f, nfi, name, err := t.successor(ctx, fi)
	if err != nil {
		return false, err
	}
	dev, ino := identity(nfi)
	p := Position{Name: name, Dev: dev, Ino: ino}
	if err := t.ck.save(t.path, p); err != nil {
		f.Close()
		return false, err
	}
	t.s.lg.Info("finished rotated file; moving on", "file", t.pos.Name, "lines", t.pos.Line, "next", name)
	t.setFile(f, nfi, p)
	t.s.stats.Rotations.Add(1)
	return true, nil
}

// successor opens the file written after cur: the oldest rotated file
// modified after cur, or else the file at the log path.
func (t *tailer) successor(ctx context.Context, cur os.FileInfo) (*os.File, os.FileInfo, string, error) {
	for {
		pfi, perr := os.Stat(t.path)
		names, err := t.rotatedNames()
		if err != nil {
			return nil, nil, "", err
		}
		best, bestT := t.path, time.Time{}
		for _, n := range names {
			fi, err := os.Stat(n)
			if err != nil || os.SameFile(fi, cur) || (perr == nil && os.SameFile(fi, pfi)) || !fi.ModTime().After(cur.ModTime()) {
				continue
			}
			if bestT.IsZero() || fi.ModTime().Before(bestT) {
				best, bestT = n, fi.ModTime()
			}
		}
		f, err := os.Open(best)
		if err == nil {
			fi, err := f.Stat()
			if err != nil {
				f.Close()
				return nil, nil, "", err
			}
			// The file at the path may have been rotated again between
			// the listing and the open: then list again, or it would be
			// skipped.
			if best != t.path || (perr == nil && os.SameFile(fi, pfi)) {
				return f, fi, best, nil
			}
			f.Close()
		}
		if err := retry.Sleep(ctx, t.s.cfg.PollInterval); err != nil {
			return nil, nil, "", err
		}
	}
}
