package testserver

import (
	"context"
	"fmt"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/clickagg/clickagg/localserver"
)

// The one identity of the shared S3 server.
const (
	s3AccessKey = "clickagg-test"
	s3SecretKey = "clickagg-test-secret-key"
)

// shared holds the servers that the tests of one package share, because
// they take seconds to start; Run stops them.
var shared struct {
	main atomic.Bool
	s3   struct {
		once sync.Once
		srv  *localserver.SeaweedFS
		dir  string
		err  error
	}
	buckets atomic.Int64
}

// Run runs the package's tests and then stops the servers they shared. A
// package whose tests call S3Bucket calls it from TestMain:
//
//	func TestMain(m *testing.M) { os.Exit(testserver.Run(m)) }
func Run(m *testing.M) int {
	shared.main.Store(true)
	code := m.Run()
	if s := shared.s3.srv; s != nil {
		s.Stop()
	}
	if shared.s3.dir != "" {
		os.RemoveAll(shared.s3.dir)
	}
	return code
}

// S3 returns the SeaweedFS S3 server shared by the package's tests,
// starting it on first use. The test fails (never skips) when weed is
// missing: `make deps` builds it. It sets the AWS credential variables of
// this process (and so of the processes it starts) to the server's.
func S3(t testing.TB) *localserver.SeaweedFS {
	t.Helper()
	if !shared.main.Load() {
		t.Fatal("testserver.S3 needs the package's TestMain to call testserver.Run, which stops the shared server")
	}
	s := &shared.s3
	s.once.Do(func() {
		dir, err := os.MkdirTemp("", "clickagg-s3")
		if err != nil {
			s.err = err
			return
		}
		s.dir = dir
		s.srv, s.err = localserver.StartSeaweedFS(context.Background(), localserver.SeaweedFSConfig{Dir: dir, AccessKey: s3AccessKey, SecretKey: s3SecretKey})
		if s.err != nil {
			return
		}
		for _, kv := range s.srv.Env() {
			k, v, _ := strings.Cut(kv, "=")
			if err := os.Setenv(k, v); err != nil {
				s.err = err
				return
			}
		}
	})
	if s.err != nil {
		t.Fatalf("start SeaweedFS: %v", s.err)
	}
	return s.srv
}

// S3Bucket creates a new, empty bucket on the shared S3 server and returns
// its URL for archive.OpenBucket.
func S3Bucket(t testing.TB) string {
	t.Helper()
	srv := S3(t)
	name := fmt.Sprintf("test-%d", shared.buckets.Add(1))
	if err := srv.CreateBucket(context.Background(), name); err != nil {
		t.Fatal(err)
	}
	return srv.BucketURL(name)
}
