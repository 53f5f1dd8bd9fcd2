package tlsconf

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"time"
)

// RacyWindow is how long after its modification time a file's stat is
// not trusted to show a rewrite (see the package doc): wider than any
// file system's timestamp tick that Kubernetes volumes use.
const RacyWindow = 2 * time.Second

// material is one loaded, consistent set: what handshakes use.
type material struct {
	cert *tls.Certificate // nil without -tls.cert-file
	pool *x509.CertPool   // nil without -tls.ca-file: the system's roots
}

// file is one watched file: what was read, and the stat it was read under.
type file struct {
	// flag names the file in errors; cert says it is the certificate
	// (followed by its key) rather than the CA.
	flag, path string
	cert       bool
	info       os.FileInfo
	readAt     time.Time
	data       []byte
}

// trusted reports whether fi shows the file unchanged since it was read.
func (f *file) trusted(fi os.FileInfo) bool {
	return f.info != nil && os.SameFile(f.info, fi) && f.info.Size() == fi.Size() &&
		f.info.ModTime().Equal(fi.ModTime()) && f.readAt.Sub(fi.ModTime()) > RacyWindow
}

// fileSet is the certificate, key and CA files. It is not safe for
// concurrent use: the reloader serializes it.
type fileSet struct {
	files []*file // cert, key (both or neither), then the CA if any
}

func newFileSet(c *Config) *fileSet {
	s := &fileSet{}
	if c.CertFile != "" {
		s.files = append(s.files, &file{flag: c.flag("cert-file"), path: c.CertFile, cert: true}, &file{flag: c.flag("key-file"), path: c.KeyFile})
	}
	if c.CAFile != "" {
		s.files = append(s.files, &file{flag: c.flag("ca-file"), path: c.CAFile})
	}
	return s
}

// changed stats every file and reads again those not trusted. It reports
// whether any content differs from the last set loaded; the new stats and
// contents are staged and only committed by commit.
func (s *fileSet) changed() ([]file, bool, error) {
	next := make([]file, len(s.files))
	differ := false
	for i, f := range s.files {
		next[i] = *f
		fi, err := os.Stat(f.path)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", f.flag, err)
		}
		if f.trusted(fi) {
			continue
		}
		data, err := os.ReadFile(f.path)
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", f.flag, err)
		}
		next[i].info, next[i].readAt = fi, time.Now()
		if !bytes.Equal(data, f.data) {
			next[i].data, differ = data, true
		}
	}
	return next, differ, nil
}

func (s *fileSet) commit(next []file) {
	for i := range s.files {
		*s.files[i] = next[i]
	}
}

// load reads every file and parses the set, committing it on success.
func (s *fileSet) load() (*material, error) {
	next, _, err := s.changed()
	if err != nil {
		return nil, err
	}
	m, err := parse(next)
	if err != nil {
		return nil, err
	}
	s.commit(next)
	return m, nil
}

func parse(files []file) (*material, error) {
	m := &material{}
	rest := files
	if len(rest) >= 2 && rest[0].cert {
		cert, err := tls.X509KeyPair(rest[0].data, rest[1].data)
		if err != nil {
			return nil, fmt.Errorf("%s %s with %s %s: %w", rest[0].flag, rest[0].path, rest[1].flag, rest[1].path, err)
		}
		m.cert = &cert
		rest = rest[2:]
	}
	if len(rest) == 1 {
		m.pool = x509.NewCertPool()
		if !m.pool.AppendCertsFromPEM(rest[0].data) {
			return nil, fmt.Errorf("%s %s: %w", rest[0].flag, rest[0].path, errNoCA)
		}
	}
	return m, nil
}

var errNoCA = errors.New("no PEM certificate in it")
