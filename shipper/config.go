package shipper

import (
	"errors"
	"flag"
	"fmt"
	"path/filepath"
	"strings"
	"time"
	"unicode/utf8"

	"google.golang.org/grpc"
)

// Formats of log lines.
const (
	FormatJSON = "json"
	FormatCSV  = "csv"
)

// Config configures a Shipper.
type Config struct {
	// Files are the paths the ad servers append to.
	Files []string
	// Format is FormatJSON or FormatCSV.
	Format string
	// Routers are the gRPC addresses of routers, tried in turn.
	Routers []string
	// Checkpoint is the checkpoint file; empty means ".<name>.ship.json"
	// next to the first of Files.
	Checkpoint string
	// Host is the first part of every derived event_id; it must be unique
	// among the shippers of a cluster and stable across restarts.
	Host string
	// BatchSize bounds the events of one request.
	BatchSize int
	// PollInterval is how often a file at its end is looked at again.
	PollInterval time.Duration
	// RotateWait is how long a file renamed away must stay unchanged
	// before the shipper moves on to the next one.
	RotateWait time.Duration
	// RetryMin and RetryMax bound the backoff between failed requests.
	RetryMin, RetryMax time.Duration
	// RequestTimeout bounds one Ingest call.
	RequestTimeout time.Duration
	// Dial holds how the connections to the routers are secured: TLS and
	// a bearer token (the command builds them from its -tls.* and
	// -auth.token-file flags); none is plaintext.
	Dial []grpc.DialOption
}

// Defaults used by RegisterFlags.
const (
	DefaultBatchSize      = 1000
	DefaultPollInterval   = 100 * time.Millisecond
	DefaultRotateWait     = time.Second
	DefaultRetryMin       = 100 * time.Millisecond
	DefaultRetryMax       = 10 * time.Second
	DefaultRequestTimeout = 10 * time.Second

	// MaxHostLength keeps derived event_ids well under the routers'
	// default -router.max-id-length of 128 bytes.
	MaxHostLength = 48
)

// listFlag is a comma-separated list flag; setting it replaces the list.
func listFlag(dst *[]string) func(string) error {
	return func(s string) error {
		*dst = nil
		for _, v := range strings.Split(s, ",") {
			if v = strings.TrimSpace(v); v != "" {
				*dst = append(*dst, v)
			}
		}
		return nil
	}
}

// RegisterFlags registers the shipper's flags under -ship. Host is not
// registered: the command sets it from its -id.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.Func("ship.files", "Comma-separated paths of the click log files to tail (the paths the ad servers write to; rotated files are found next to them).", listFlag(&c.Files))
	fs.StringVar(&c.Format, "ship.format", FormatJSON, "Format of the log lines: json ({\"event_id\"?, \"ad_id\", \"click_time\", \"user_id\", \"ip\", \"country\"}) or csv (ad_id,click_timestamp,user_id,ip,country).")
	fs.Func("ship.routers", "Comma-separated gRPC addresses of routers; a failed request is retried at the next one. A target dns:///router-headless.<namespace>.svc:9090 (a headless Service) spreads the requests over every router pod the name resolves to.", listFlag(&c.Routers))
	fs.StringVar(&c.Checkpoint, "ship.checkpoint", "", "Checkpoint file (per log file: identity, acknowledged byte offset and line). Empty means .<name>.ship.json in the directory of the first -ship.files.")
	fs.IntVar(&c.BatchSize, "ship.batch-size", DefaultBatchSize, "Largest number of events in one request to a router; at most the routers' -router.max-events-per-request.")
	fs.DurationVar(&c.PollInterval, "ship.poll-interval", DefaultPollInterval, "How often a file whose end was reached is looked at again for new lines, truncation and rotation.")
	fs.DurationVar(&c.RotateWait, "ship.rotate-wait", DefaultRotateWait, "After a file was renamed away (rotated), how long it must stay unchanged before the shipper finishes it and moves on to the next file.")
	fs.DurationVar(&c.RetryMin, "ship.retry-min", DefaultRetryMin, "First backoff after a failed request; it doubles with each failure in a row.")
	fs.DurationVar(&c.RetryMax, "ship.retry-max", DefaultRetryMax, "Largest backoff between failed requests. The shipper never gives up on a batch: it retries until a router accepts it.")
	fs.DurationVar(&c.RequestTimeout, "ship.request-timeout", DefaultRequestTimeout, "Deadline of one Ingest request; a request past it is retried (with the same event_ids) at the next router.")
}

// Validate reports the first setting that cannot work.
func (c *Config) Validate() error {
	switch {
	case len(c.Files) == 0:
		return errors.New("-ship.files: at least one file is required")
	case c.Format != FormatJSON && c.Format != FormatCSV:
		return fmt.Errorf("-ship.format %q: want json or csv", c.Format)
	case len(c.Routers) == 0:
		return errors.New("-ship.routers: at least one router address is required")
	case c.Host == "" || len(c.Host) > MaxHostLength || !utf8.ValidString(c.Host) || strings.ContainsAny(c.Host, ": \t\n"):
		return fmt.Errorf("-id %q: must be 1 to %d bytes of UTF-8 without ':' or spaces", c.Host, MaxHostLength)
	case c.BatchSize < 1:
		return fmt.Errorf("-ship.batch-size %d: must be at least 1", c.BatchSize)
	case c.PollInterval <= 0, c.RotateWait < 0:
		return errors.New("-ship.poll-interval must be positive and -ship.rotate-wait not negative")
	case c.RetryMin <= 0 || c.RetryMax < c.RetryMin:
		return fmt.Errorf("-ship.retry-min %v, -ship.retry-max %v: want 0 < min <= max", c.RetryMin, c.RetryMax)
	case c.RequestTimeout <= 0:
		return fmt.Errorf("-ship.request-timeout %v: must be positive", c.RequestTimeout)
	}
	var abs []string
	for _, f := range c.Files {
		a, err := filepath.Abs(f)
		if err != nil {
			return fmt.Errorf("-ship.files %q: %w", f, err)
		}
		for _, b := range abs {
			// Rotated files are found by name prefix in the directory:
			// clicks.log and clicks.log.errors would claim each other's.
			if filepath.Dir(a) == filepath.Dir(b) && (strings.HasPrefix(filepath.Base(a), filepath.Base(b)) || strings.HasPrefix(filepath.Base(b), filepath.Base(a))) {
				return fmt.Errorf("-ship.files: %q and %q are in one directory and one name starts with the other, so their rotated files cannot be told apart", b, a)
			}
		}
		abs = append(abs, a)
	}
	return nil
}

// checkpointPath is Checkpoint or its default.
func (c *Config) checkpointPath() string {
	if c.Checkpoint != "" {
		return c.Checkpoint
	}
	dir, name := filepath.Split(c.Files[0])
	return filepath.Join(dir, "."+name+".ship.json")
}
