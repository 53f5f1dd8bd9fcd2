package shipper

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
)

// Position is where the shipping of one log path stands: the file being
// read (by identity, and the name it was last seen under) and the end of
// what the routers acknowledged in it.
type Position struct {
	// Name is where the file was last seen: the log path, or the name it
	// was rotated to.
	Name string `json:"name"`
	Dev  uint64 `json:"dev"`
	Ino  uint64 `json:"ino"`
	// Head is the CRC-32 (IEEE, hex) of the file's first line, newline
	// included; empty until the first line is complete. It tells a file
	// from a later one that reuses its inode.
	Head string `json:"head"`
	// Gen counts the truncations (copytruncate) of this file seen so far.
	Gen int `json:"gen"`
	// Offset is the byte offset just past the last acknowledged line.
	Offset int64 `json:"offset"`
	// Line is the number of lines up to Offset (the last acknowledged line's
	// number, counting from 1).
	Line int64 `json:"line"`
}

// checkpointVersion is written into every checkpoint file.
const checkpointVersion = 1

type checkpointFile struct {
	Version int                 `json:"version"`
	Files   map[string]Position `json:"files"`
}

// checkpoints is the checkpoint file of a shipper: a position per log path,
// saved atomically as a whole.
type checkpoints struct {
	path  string
	mu    sync.Mutex
	files map[string]Position
}

// loadCheckpoints reads path; a missing file is an empty checkpoint.
func loadCheckpoints(path string) (*checkpoints, error) {
	c := &checkpoints{path: path, files: map[string]Position{}}
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read checkpoint: %w", err)
	}
	var f checkpointFile
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("checkpoint %s: %w", path, err)
	}
	if f.Version != checkpointVersion {
		return nil, fmt.Errorf("checkpoint %s: version %d, want %d", path, f.Version, checkpointVersion)
	}
	if f.Files != nil {
		c.files = f.Files
	}
	return c, nil
}

func (c *checkpoints) get(file string) (Position, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	p, ok := c.files[file]
	return p, ok
}

// save records p for file and writes the whole checkpoint atomically: a
// temporary file in the same directory, fsynced, renamed over the old one,
// and the directory fsynced, so that a crash leaves either the old or the
// new checkpoint, never a mix or nothing.
func (c *checkpoints) save(file string, p Position) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.files[file] = p
	b, err := json.MarshalIndent(checkpointFile{Version: checkpointVersion, Files: c.files}, "", "  ")
	if err != nil {
		return err
	}
	return writeAtomic(c.path, append(b, '\n'))
}

func writeAtomic(path string, b []byte) error {
	dir, name := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	tmp, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Sync()
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("write checkpoint: %w", err)
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("write checkpoint: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("write checkpoint: sync %s: %w", dir, err)
	}
	return nil
}
