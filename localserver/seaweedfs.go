package localserver

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
)

// SeaweedFSVersion is the version of github.com/seaweedfs/seaweedfs that
// scripts/seaweedfs.sh builds `weed` from; the binary is cached under it.
const SeaweedFSVersion = "v0.0.0-20261109003541-7506e5f91cd6"

// ErrNoWeed is returned when no SeaweedFS weed binary can be found.
var ErrNoWeed = errors.New("SeaweedFS weed not found: run `make deps` (scripts/seaweedfs.sh builds it once per machine into " + WeedCachePath() + ") or set CLICKAGG_WEED to its path")

// WeedCachePath is where scripts/seaweedfs.sh puts the weed binary:
// $XDG_CACHE_HOME/clickagg/seaweedfs-<version>/weed (~/.cache by default).
func WeedCachePath() string {
	dir := os.Getenv("XDG_CACHE_HOME")
	if dir == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return ""
		}
		dir = filepath.Join(home, ".cache")
	}
	return filepath.Join(dir, "clickagg", "seaweedfs-"+SeaweedFSVersion, "weed")
}

// SeaweedFSConfig describes a `weed server` child process serving S3.
type SeaweedFSConfig struct {
	// Dir holds the server's data and log.
	Dir string
	// AccessKey and SecretKey are the one identity the S3 API accepts; it
	// may do everything.
	AccessKey, SecretKey string
	// Binary is the weed path; empty looks in $CLICKAGG_WEED, then in
	// WeedCachePath.
	Binary string
}

// SeaweedFS is a running SeaweedFS server (master, volume server, filer and
// S3 gateway in one process) on loopback.
type SeaweedFS struct {
	// Endpoint is the S3 API's URL, e.g. http://127.0.0.1:8333.
	Endpoint string
	// Region is the region clients sign requests for; SeaweedFS accepts any.
	Region  string
	cfg     SeaweedFSConfig
	client  *s3.Client
	cmd     *exec.Cmd
	sockets []string
	done    chan struct{}
	err     error
}

// StartSeaweedFS starts `weed server -s3` on 127.0.0.1 and waits until its
// S3 API stores and serves an object. The ports it picks may be taken by
// another process between the pick and the bind; it then picks again, a
// few times.
func StartSeaweedFS(ctx context.Context, cfg SeaweedFSConfig) (*SeaweedFS, error) {
	return pickAgain(true, func() (*SeaweedFS, error) { return startSeaweedFS(ctx, cfg) })
}

func startSeaweedFS(ctx context.Context, cfg SeaweedFSConfig) (*SeaweedFS, error) {
	bin, err := weedBinary(cfg)
	if err != nil {
		return nil, err
	}
	if cfg.AccessKey == "" || cfg.SecretKey == "" {
		return nil, errors.New("seaweedfs: access key and secret key are required")
	}
	data, s3conf, err := weedDataDir(cfg)
	if err != nil {
		return nil, err
	}
	ports := map[string]int{}
	for _, n := range weedPortFlags {
		p, err := seaweedPort()
		if err != nil {
			return nil, err
		}
		ports[n] = p
	}
	logFile := filepath.Join(data, "weed.log")
	cmd, err := startWeed(bin, weedArgs(data, s3conf, ports), data, logFile)
	if err != nil {
		return nil, err
	}
	s := &SeaweedFS{
		Endpoint: "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(ports["s3.port"])),
		Region:   "us-east-1",
		cfg:      cfg,
		cmd:      cmd,
		done:     make(chan struct{}),
	}
	// weed puts a Unix socket beside each gRPC port in /tmp, whatever
	// $TMPDIR says, and removes it only on a clean shutdown.
	for _, svc := range []string{"master", "volume", "filer", "s3"} {
		s.sockets = append(s.sockets, fmt.Sprintf("/tmp/seaweedfs-%s-grpc-%d.sock", svc, ports[svc+".port.grpc"]))
	}
	s.client = s3.New(s3.Options{
		BaseEndpoint: aws.String(s.Endpoint),
		Region:       s.Region,
		UsePathStyle: true,
		Credentials:  credentials.NewStaticCredentialsProvider(cfg.AccessKey, cfg.SecretKey, ""),
	})
	go func() {
		s.err = cmd.Wait()
		for _, f := range s.sockets {
			os.Remove(f)
		}
		close(s.done)
	}()
	if err := s.waitReady(ctx, logFile); err != nil {
		return nil, err
	}
	return s, nil
}

// weedBinary is the weed binary cfg names, or $CLICKAGG_WEED, or the one
// in WeedCachePath.
func weedBinary(cfg SeaweedFSConfig) (string, error) {
	bin := cfg.Binary
	if bin == "" {
		bin = os.Getenv("CLICKAGG_WEED")
	}
	if bin == "" {
		bin = WeedCachePath()
	}
	if fi, err := os.Stat(bin); err != nil || fi.IsDir() {
		return "", ErrNoWeed
	}
	return bin, nil
}

// weedDataDir makes a new data directory under cfg.Dir and writes into it
// the S3 gateway's config, whose one identity has cfg's keys.
func weedDataDir(cfg SeaweedFSConfig) (data, s3conf string, err error) {
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return "", "", err
	}
	// A fresh data directory per attempt: an attempt that lost a port
	// may have left a half-initialised master behind.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", "", fmt.Errorf("seaweedfs data dir: %w", err)
	}
	data, err = os.MkdirTemp(dir, "weed")
	if err != nil {
		return "", "", fmt.Errorf("seaweedfs data dir: %w", err)
	}
	conf, err := json.Marshal(map[string]any{"identities": []any{map[string]any{
		"name":        "clickagg",
		"credentials": []any{map[string]string{"accessKey": cfg.AccessKey, "secretKey": cfg.SecretKey}},
		"actions":     []string{"Admin", "Read", "List", "Tagging", "Write"},
	}}})
	if err != nil {
		return "", "", err
	}
	s3conf = filepath.Join(data, "s3.json")
	if err := os.WriteFile(s3conf, conf, 0o600); err != nil {
		return "", "", fmt.Errorf("seaweedfs s3 config: %w", err)
	}
	return data, s3conf, nil
}

// weedPortFlags are weed server's port flags. Every listener gets a picked
// port: the defaults (9333, 8080, 8888, 8333, and +10000 for gRPC) would
// collide between test processes.
var weedPortFlags = []string{"master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc", "s3.port", "s3.port.grpc"}

// weedArgs are the arguments of `weed server` with its data in data, the
// S3 config s3conf, and ports for weedPortFlags.
func weedArgs(data, s3conf string, ports map[string]int) []string {
	args := []string{
		// To the log file, not to files in $TMPDIR.
		"-logtostderr",
		"server",
		"-dir=" + data,
		"-ip=127.0.0.1", "-ip.bind=127.0.0.1",
		"-s3", "-s3.config=" + s3conf,
		// Buckets are created on purpose, as on S3, not by a first write.
		"-s3.autoCreateBucket=false",
		// Its Iceberg and Lance catalogs would take fixed ports.
		"-s3.port.iceberg=0", "-s3.port.lance=0",
		// Never a byte off loopback: the master reports usage statistics to
		// seaweedfs.com by default.
		"-master.telemetry=false",
		// Each bucket is a collection with volumes of its own (grown one
		// at a time, see startWeed): room for many buckets of a few
		// kilobytes, in sparse files.
		"-master.volumeSizeLimitMB=64",
		"-volume.max=256",
		"-filer.localSocket=" + filepath.Join(data, "filer.sock"),
		"-s3.localSocket=" + filepath.Join(data, "s3.sock"),
	}
	for _, n := range weedPortFlags {
		args = append(args, "-"+n+"="+strconv.Itoa(ports[n]))
	}
	return args
}

// startWeed starts bin with args in the directory data, its output going
// to logFile.
func startWeed(bin string, args []string, data, logFile string) (*exec.Cmd, error) {
	f, err := os.Create(logFile)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cmd := exec.Command(bin, args...)
	// weed reads master.toml and friends from its working directory too.
	cmd.Dir = data
	// The master grows 7 volumes for each new collection by default.
	cmd.Env = append(os.Environ(), "WEED_MASTER_VOLUME_GROWTH_COPY_1=1")
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start weed: %w", err)
	}
	return cmd, nil
}

// waitReady waits until an object goes in and comes out: the gateway
// answers before the filer and the volume server behind it can store one.
// It stops the server if it is not ready within 90s or ctx ends first.
func (s *SeaweedFS) waitReady(ctx context.Context, logFile string) error {
	deadline := time.Now().Add(90 * time.Second)
	var last error
	for {
		if last = s.probe(ctx); last == nil {
			return nil
		}
		select {
		case <-s.done:
			if b, err := os.ReadFile(logFile); err == nil && strings.Contains(string(b), "address already in use") {
				return fmt.Errorf("weed server: %w", syscall.EADDRINUSE)
			}
			return fmt.Errorf("weed server exited: %v (log: %s)", s.err, logFile)
		case <-ctx.Done():
			s.Stop()
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			s.Stop()
			return fmt.Errorf("weed server on %s did not store an object within 90s: %v (log: %s)", s.Endpoint, last, logFile)
		}
	}
}

// seaweedPort picks the ports of StartSeaweedFS; tests take one.
var seaweedPort = FreePort

const probeBucket = "clickagg-ready"

// probe writes, reads and deletes an object in the probe bucket.
func (s *SeaweedFS) probe(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := s.CreateBucket(ctx, probeBucket); err != nil {
		return err
	}
	key := aws.String("probe")
	if _, err := s.client.PutObject(ctx, &s3.PutObjectInput{Bucket: aws.String(probeBucket), Key: key, Body: strings.NewReader("ok")}); err != nil {
		return fmt.Errorf("put probe: %w", err)
	}
	if _, err := s.client.GetObject(ctx, &s3.GetObjectInput{Bucket: aws.String(probeBucket), Key: key}); err != nil {
		return fmt.Errorf("get probe: %w", err)
	}
	if _, err := s.client.DeleteObject(ctx, &s3.DeleteObjectInput{Bucket: aws.String(probeBucket), Key: key}); err != nil {
		return fmt.Errorf("delete probe: %w", err)
	}
	return nil
}

// CreateBucket creates the bucket name; one that exists already is fine.
func (s *SeaweedFS) CreateBucket(ctx context.Context, name string) error {
	_, err := s.client.CreateBucket(ctx, &s3.CreateBucketInput{Bucket: aws.String(name)})
	var owned *types.BucketAlreadyOwnedByYou
	var exists *types.BucketAlreadyExists
	if err != nil && !errors.As(err, &owned) && !errors.As(err, &exists) {
		return fmt.Errorf("create bucket %s: %w", name, err)
	}
	return nil
}

// BucketURL is the gocloud.dev URL of bucket name on this server, as
// archive.OpenBucket takes it; the credentials come from the standard AWS
// environment variables (see Env).
func (s *SeaweedFS) BucketURL(name string) string {
	return "s3://" + name + "?endpoint=" + s.Endpoint + "&region=" + s.Region + "&use_path_style=true"
}

// Env is the environment that makes AWS SDK clients use this server's
// credentials, and never ask a cloud metadata service for others.
func (s *SeaweedFS) Env() []string {
	return []string{
		"AWS_ACCESS_KEY_ID=" + s.cfg.AccessKey,
		"AWS_SECRET_ACCESS_KEY=" + s.cfg.SecretKey,
		"AWS_EC2_METADATA_DISABLED=true",
	}
}

// Stop kills the server and waits until it has exited. Its data is a
// test's, so SIGKILL costs nothing, while weed's graceful shutdown takes
// over 10 seconds.
func (s *SeaweedFS) Stop() {
	_ = s.cmd.Process.Kill()
	<-s.done
}
