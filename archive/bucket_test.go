package archive_test

import (
	"context"
	"testing"

	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/archive/archivetest"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/testserver"
)

// The suite's Bucket holds every method the archiver and the history use:
// a method they start to use does not compile here until the suite covers
// it.
var (
	_ archive.Store = archivetest.Bucket(nil)
	_ history.Store = archivetest.Bucket(nil)
)

// openBucket opens the bucket at u for the test.
func openBucket(t *testing.T, u string) archivetest.Bucket {
	t.Helper()
	b, err := archive.OpenBucket(context.Background(), u)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// TestBucketContractDir runs the contract suite on a directory bucket.
func TestBucketContractDir(t *testing.T) {
	archivetest.RunBucket(t, func(t *testing.T) archivetest.Bucket { return openBucket(t, t.TempDir()) })
}

// TestBucketContractS3 runs the contract suite on a SeaweedFS S3 bucket.
func TestBucketContractS3(t *testing.T) {
	archivetest.RunBucket(t, func(t *testing.T) archivetest.Bucket { return openBucket(t, testserver.S3Bucket(t)) })
}

// TestBucketContractFileURL runs the contract suite on a file:// URL as
// given, with gocloud's defaults (metadata sidecar files, temporary files
// in the system's directory).
func TestBucketContractFileURL(t *testing.T) {
	archivetest.RunBucket(t, func(t *testing.T) archivetest.Bucket { return openBucket(t, "file://"+t.TempDir()) })
}
