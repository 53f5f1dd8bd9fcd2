package archive

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gocloud.dev/blob"
	_ "gocloud.dev/blob/fileblob" // file:// buckets
	_ "gocloud.dev/blob/s3blob"   // s3:// buckets
	"gocloud.dev/gcerrors"
)

// Bucket is the object store the archive lives in: a gocloud.dev/blob
// bucket, which speaks to a local directory, S3 and S3-compatible servers,
// with the operations the archive needs.
type Bucket struct {
	b   *blob.Bucket
	url string
	dir string // the directory of a file:// bucket, else empty
}

// ErrNotFound is wrapped by Get's error when no object has the key.
var ErrNotFound = errors.New("archive: no such object")

// OpenBucket opens the bucket at u: a plain directory path, which is
// created if missing, or a gocloud.dev URL:
//
//   - file:///var/lib/clickagg/archive
//   - s3://bucket?region=eu-west-1 for AWS S3;
//   - s3://bucket?endpoint=http://minio:9000&region=us-east-1&use_path_style=true
//     for an S3-compatible server (MinIO, SeaweedFS, Ceph), which usually
//     wants path-style requests (http://host/bucket/key).
//
// S3 credentials come from the AWS SDK's default chain: AWS_ACCESS_KEY_ID
// and AWS_SECRET_ACCESS_KEY, AWS_PROFILE and the shared config files, or
// the role of the pod or instance. The bucket must exist.
func OpenBucket(ctx context.Context, u string) (*Bucket, error) {
	if u == "" {
		return nil, errors.New("open archive bucket: empty URL")
	}
	if !strings.Contains(u, "://") {
		dir, err := filepath.Abs(u)
		if err != nil {
			return nil, fmt.Errorf("open archive bucket %q: %w", u, err)
		}
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil, fmt.Errorf("open archive bucket %q: %w", u, err)
		}
		// Temporary files next to the objects, so the final rename never
		// crosses file systems; no sidecar metadata files among the
		// Parquet files that readers glob.
		u = (&url.URL{Scheme: "file", Path: filepath.ToSlash(dir), RawQuery: "no_tmp_dir=1&metadata=skip"}).String()
	}
	b, err := blob.OpenBucket(ctx, u)
	if err != nil {
		return nil, fmt.Errorf("open archive bucket %q: %w", u, err)
	}
	bk := &Bucket{b: b, url: u}
	if pu, err := url.Parse(u); err == nil && pu.Scheme == "file" {
		bk.dir = filepath.FromSlash(pu.Path)
	}
	return bk, nil
}

// URL is the URL the bucket was opened with.
func (b *Bucket) URL() string { return b.url }

// Close releases the bucket.
func (b *Bucket) Close() error { return b.b.Close() }

// Put writes data under key, replacing what was there; the object is
// visible whole or not at all.
func (b *Bucket) Put(ctx context.Context, key string, data []byte) error {
	if err := b.b.WriteAll(ctx, key, data, &blob.WriterOptions{ContentType: "application/vnd.apache.parquet"}); err != nil {
		return fmt.Errorf("put %s: %w", key, err)
	}
	return nil
}

// Get reads the object under key; ErrNotFound if there is none.
func (b *Bucket) Get(ctx context.Context, key string) ([]byte, error) {
	data, err := b.b.ReadAll(ctx, key)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("get %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("get %s: %w", key, err)
	}
	return data, nil
}

// List returns the keys of the Parquet files under prefix, in lexical
// order. Other objects are left out: a directory bucket writes each object
// to a temporary file beside it first, which a crash may leave behind.
func (b *Bucket) List(ctx context.Context, prefix string) ([]string, error) {
	objs, err := b.ListObjects(ctx, prefix)
	if err != nil {
		return nil, err
	}
	keys := make([]string, len(objs))
	for i, o := range objs {
		keys[i] = o.Key
	}
	return keys, nil
}

// Object is a listed object.
type Object struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// ListObjects is List with each object's size and modification time,
// which a reader caching decoded files checks: an object written again
// under the same key (restored from a backup, or tampered with) is read
// again.
func (b *Bucket) ListObjects(ctx context.Context, prefix string) ([]Object, error) {
	var out []Object
	it := b.b.List(&blob.ListOptions{Prefix: prefix})
	for {
		o, err := it.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("list %s: %w", prefix, err)
		}
		if !o.IsDir && strings.HasSuffix(o.Key, ".parquet") {
			out = append(out, Object{Key: o.Key, Size: o.Size, ModTime: o.ModTime})
		}
	}
}

// ReaderAt reads parts of one object, for readers of Parquet files that
// want a footer and a few column chunks rather than the whole file.
type ReaderAt interface {
	io.ReaderAt
	io.Closer
	Size() int64
}

// OpenReaderAt opens the object under key for reads at offsets;
// ErrNotFound if there is none. A file:// bucket's object is opened as
// the file itself, so a read is a pread; others read each part with a
// range request.
func (b *Bucket) OpenReaderAt(ctx context.Context, key string) (ReaderAt, error) {
	if b.dir != "" && plainKey(key) {
		f, err := os.Open(filepath.Join(b.dir, filepath.FromSlash(key)))
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open %s: %w", key, ErrNotFound)
		}
		if err != nil {
			return nil, fmt.Errorf("open %s: %w", key, err)
		}
		st, err := f.Stat()
		if err != nil {
			_ = f.Close()
			return nil, fmt.Errorf("open %s: %w", key, err)
		}
		return fileReaderAt{f, st.Size()}, nil
	}
	attrs, err := b.b.Attributes(ctx, key)
	if gcerrors.Code(err) == gcerrors.NotFound {
		return nil, fmt.Errorf("open %s: %w", key, ErrNotFound)
	}
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", key, err)
	}
	return &rangeReaderAt{ctx: ctx, b: b.b, key: key, size: attrs.Size}, nil
}

// plainKey reports whether fileblob stores key under its own path,
// unescaped: no control characters, "//", "../" or trailing slash.
func plainKey(key string) bool {
	if key == "" || strings.HasSuffix(key, "/") || strings.Contains(key, "//") || strings.Contains(key, "../") || strings.HasPrefix(key, "/") {
		return false
	}
	for i := 0; i < len(key); i++ {
		if key[i] < 32 || key[i] == '\\' {
			return false
		}
	}
	return true
}

type fileReaderAt struct {
	*os.File
	size int64
}

func (f fileReaderAt) Size() int64 { return f.size }

type rangeReaderAt struct {
	ctx  context.Context
	b    *blob.Bucket
	key  string
	size int64
}

func (r *rangeReaderAt) Size() int64  { return r.size }
func (r *rangeReaderAt) Close() error { return nil }

func (r *rangeReaderAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= r.size {
		return 0, io.EOF
	}
	n := min(int64(len(p)), r.size-off)
	rr, err := r.b.NewRangeReader(r.ctx, r.key, off, n, nil)
	if err != nil {
		return 0, fmt.Errorf("read %s at %d: %w", r.key, off, err)
	}
	defer rr.Close()
	k, err := io.ReadFull(rr, p[:n])
	if err == nil && n < int64(len(p)) {
		err = io.EOF
	}
	return k, err
}
