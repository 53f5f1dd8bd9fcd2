package tlsconf

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/clickagg/clickagg/watchfile"
)

// material is one loaded, consistent set: what handshakes use.
type material struct {
	cert *tls.Certificate // nil without -tls.cert-file
	pool *x509.CertPool   // nil without -tls.ca-file: the system's roots
}

// fileSet is the certificate, key and CA files. It is not safe for
// concurrent use: the reloader serializes it.
type fileSet struct {
	files []*watchfile.File // cert, key (both or neither), then the CA if any
	cert  bool              // files begin with the cert and key
}

func newFileSet(c *Config) *fileSet {
	s := &fileSet{}
	if c.CertFile != "" {
		s.files = append(s.files, &watchfile.File{Flag: c.flag("cert-file"), Path: c.CertFile}, &watchfile.File{Flag: c.flag("key-file"), Path: c.KeyFile})
		s.cert = true
	}
	if c.CAFile != "" {
		s.files = append(s.files, &watchfile.File{Flag: c.flag("ca-file"), Path: c.CAFile})
	}
	return s
}

// staged is a file's path and flag with the state a check saw; cert
// marks the certificate, which its key follows.
type staged struct {
	flag, path string
	cert       bool
	watchfile.State
}

// changed checks every file (see watchfile). It reports whether any
// content differs from the last set loaded; the new states are staged
// and only committed by commit.
func (s *fileSet) changed() ([]staged, bool, error) {
	next := make([]staged, len(s.files))
	differ := false
	for i, f := range s.files {
		st, d, err := f.Check()
		if err != nil {
			return nil, false, err
		}
		next[i] = staged{flag: f.Flag, path: f.Path, cert: s.cert && i == 0, State: st}
		differ = differ || d
	}
	return next, differ, nil
}

func (s *fileSet) commit(next []staged) {
	for i, f := range s.files {
		f.Commit(next[i].State)
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

func parse(files []staged) (*material, error) {
	m := &material{}
	rest := files
	if len(rest) >= 2 && rest[0].cert {
		cert, err := tls.X509KeyPair(rest[0].Data, rest[1].Data)
		if err != nil {
			return nil, fmt.Errorf("%s %s with %s %s: %w", rest[0].flag, rest[0].path, rest[1].flag, rest[1].path, err)
		}
		m.cert = &cert
		rest = rest[2:]
	}
	if len(rest) == 1 {
		m.pool = x509.NewCertPool()
		if !m.pool.AppendCertsFromPEM(rest[0].Data) {
			return nil, fmt.Errorf("%s %s: %w", rest[0].flag, rest[0].path, errNoCA)
		}
	}
	return m, nil
}

var errNoCA = errors.New("no PEM certificate in it")
