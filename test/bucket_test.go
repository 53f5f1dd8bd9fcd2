package test

import (
	"context"
	"testing"

	"github.com/clickagg/clickagg/archive"
)

// eachFile reads every file under prefix of the bucket at bucketURL (a
// directory or URL) with read (archive.ReadChunk, history.Read), in the
// order the bucket lists them, hands each to fn, and returns their keys.
// One file at a time: a long run's archive need not fit in memory.
func eachFile[F any](t *testing.T, bucketURL, prefix string, read func(key string, data []byte) (F, error), fn func(F)) []string {
	t.Helper()
	ctx := context.Background()
	bucket, err := archive.OpenBucket(ctx, bucketURL)
	if err != nil {
		t.Fatal(err)
	}
	defer bucket.Close()
	keys, err := bucket.List(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		data, err := bucket.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		f, err := read(k, data)
		if err != nil {
			t.Fatal(err)
		}
		fn(f)
	}
	return keys
}
