// Package archivetest is the contract suite of the object store that the
// raw archive and the history live in (archive.Bucket: what the archiver
// and history's writer put, and what history's reader and recount read).
// Every implementation runs RunBucket on its real backend: a directory
// (file://) and S3 (a SeaweedFS server on loopback).
package archivetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/clickagg/clickagg/archive"
)

// Bucket is what the archive and the history use of an object store.
type Bucket interface {
	Put(ctx context.Context, key string, data []byte) error
	Get(ctx context.Context, key string) ([]byte, error)
	List(ctx context.Context, prefix string) ([]string, error)
	ListObjects(ctx context.Context, prefix string) ([]archive.Object, error)
	OpenReaderAt(ctx context.Context, key string) (archive.ReaderAt, error)
}

// RunBucket runs the contract on a new, empty bucket from newBucket: an
// object put is got back whole, a put replaces it, List and ListObjects
// name only the Parquet files under a prefix, in order (a directory
// bucket's temporary files, which a crash mid-write leaves behind, are not
// among them), with their sizes, reads at offsets return the object's
// bytes there, and a missing key is archive.ErrNotFound.
func RunBucket(t *testing.T, newBucket func(t *testing.T) Bucket) {
	b := newBucket(t)
	ctx := context.Background()
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	for k, data := range map[string][]byte{
		"raw/b/y.parquet":                      []byte("y"),
		"raw/a/x.parquet":                      []byte("first"),
		"raw/a/x.parquet.18eee0770ff86a49.tmp": []byte("tmp"),
		"raw/a/z.parquet":                      big,
		"other/w.parquet":                      []byte("w"),
	} {
		if err := b.Put(ctx, k, data); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Put(ctx, "raw/a/x.parquet", []byte("second")); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string][]byte{"raw/a/x.parquet": []byte("second"), "raw/a/z.parquet": big, "other/w.parquet": []byte("w")} {
		got, err := b.Get(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Fatalf("Get(%s) = %d bytes, want the %d put", k, len(got), len(want))
		}
	}
	got, err := b.List(ctx, "raw/")
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"raw/a/x.parquet", "raw/a/z.parquet", "raw/b/y.parquet"}
	if !slices.Equal(got, want) {
		t.Fatalf("List = %v, want %v", got, want)
	}
	objs, err := b.ListObjects(ctx, "raw/a/")
	if err != nil {
		t.Fatal(err)
	}
	if len(objs) != 2 || objs[0].Key != "raw/a/x.parquet" || objs[0].Size != 6 || objs[1].Key != "raw/a/z.parquet" || objs[1].Size != int64(len(big)) {
		t.Fatalf("ListObjects = %+v, want x (6 bytes) and z (%d bytes)", objs, len(big))
	}
	for _, o := range objs {
		if o.ModTime.IsZero() {
			t.Fatalf("ListObjects: %s has no modification time", o.Key)
		}
	}
	if got, err := b.List(ctx, "none/"); err != nil || len(got) != 0 {
		t.Fatalf("List of an empty prefix = %v, %v", got, err)
	}
	if _, err := b.Get(ctx, "raw/none.parquet"); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("Get of a missing key = %v, want ErrNotFound", err)
	}
	// Reads at offsets return the object's bytes there, and io.EOF with
	// what there is past its end.
	ra, err := b.OpenReaderAt(ctx, "raw/a/z.parquet")
	if err != nil {
		t.Fatal(err)
	}
	defer ra.Close()
	if ra.Size() != int64(len(big)) {
		t.Fatalf("Size = %d, want %d", ra.Size(), len(big))
	}
	for _, off := range []int64{0, 17, int64(len(big)) - 100} {
		part := make([]byte, 100)
		if n, err := ra.ReadAt(part, off); n != 100 || err != nil && err != io.EOF || !bytes.Equal(part, big[off:off+100]) {
			t.Fatalf("ReadAt(100 bytes, %d) = %d, %v, %q", off, n, err, part[:n])
		}
	}
	tail := make([]byte, 100)
	if n, err := ra.ReadAt(tail, int64(len(big))-10); n != 10 || err != io.EOF || !bytes.Equal(tail[:10], big[len(big)-10:]) {
		t.Fatalf("ReadAt past the end = %d, %v", n, err)
	}
	if _, err := b.OpenReaderAt(ctx, "raw/none.parquet"); !errors.Is(err, archive.ErrNotFound) {
		t.Fatalf("OpenReaderAt of a missing key = %v, want ErrNotFound", err)
	}
}
