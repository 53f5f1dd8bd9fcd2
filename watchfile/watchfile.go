package watchfile

import (
	"bytes"
	"fmt"
	"os"
	"time"
)

// RacyWindow is how long after its modification time a file's stat is
// not trusted to show a rewrite (see the package doc): wider than any
// file system's timestamp tick that Kubernetes volumes use.
const RacyWindow = 2 * time.Second

// File is one watched file. Flag names the setting that gave its path,
// for errors. A File is not safe for concurrent use.
type File struct {
	Flag, Path string
	cur        State
}

// State is what a check saw: the stat the file was read under, and its
// content.
type State struct {
	info   os.FileInfo
	readAt time.Time
	Data   []byte
}

// trusted reports whether fi shows the file unchanged since s was read.
func (s *State) trusted(fi os.FileInfo) bool {
	return s.info != nil && os.SameFile(s.info, fi) && s.info.Size() == fi.Size() &&
		s.info.ModTime().Equal(fi.ModTime()) && s.readAt.Sub(fi.ModTime()) > RacyWindow
}

// Check stats the file and reads it again unless the stat shows it
// unchanged since the last Commit. It returns the state to commit and
// whether its content differs from the committed one; errors name Flag.
func (f *File) Check() (State, bool, error) {
	next := f.cur
	fi, err := os.Stat(f.Path)
	if err != nil {
		return State{}, false, fmt.Errorf("%s: %w", f.Flag, err)
	}
	if f.cur.trusted(fi) {
		return next, false, nil
	}
	data, err := os.ReadFile(f.Path)
	if err != nil {
		return State{}, false, fmt.Errorf("%s: %w", f.Flag, err)
	}
	next.info, next.readAt = fi, time.Now()
	differ := f.cur.info == nil || !bytes.Equal(data, f.cur.Data)
	if differ {
		next.Data = data
	}
	return next, differ, nil
}

// Commit makes s, from Check, the state later checks compare with.
func (f *File) Commit(s State) { f.cur = s }

// Data is the content last committed.
func (f *File) Data() []byte { return f.cur.Data }
