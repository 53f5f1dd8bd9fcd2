package localserver

import (
	"bufio"
	"context"
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
)

// ErrNoRedisServer is returned when no redis-server binary can be found.
var ErrNoRedisServer = errors.New("redis-server not found: install it (Debian: apt-get install redis-server) or set REDIS_SERVER to its path")

// RedisConfig describes a redis-server child process.
type RedisConfig struct {
	// Dir holds the AOF and RDB files; a restarted server on the same Dir
	// keeps its data.
	Dir string
	// Port is the loopback port; 0 picks a free one.
	Port int
	// AppendFsync is the AOF fsync policy: always, everysec or no.
	AppendFsync string
	// Binary is the redis-server path; empty looks in $REDIS_SERVER, then PATH.
	Binary string
}

// AOFRewritePercentage is the auto-aof-rewrite-percentage of the
// redis-server children; see StartRedis.
const AOFRewritePercentage = 400

// Redis is a running redis-server child process.
type Redis struct {
	Addr string
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

// StartRedis starts redis-server on 127.0.0.1 with AOF on and waits until it
// answers PING.
func StartRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	bin := cfg.Binary
	if bin == "" {
		bin = os.Getenv("REDIS_SERVER")
	}
	if bin == "" {
		p, err := exec.LookPath("redis-server")
		if err != nil {
			return nil, ErrNoRedisServer
		}
		bin = p
	}
	if cfg.AppendFsync == "" {
		cfg.AppendFsync = "everysec"
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("redis data dir: %w", err)
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, err
	}
	port := cfg.Port
	if port == 0 {
		if port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	args := []string{
		"--bind", "127.0.0.1",
		"--port", strconv.Itoa(port),
		"--dir", dir,
		"--appendonly", "yes",
		"--appendfsync", cfg.AppendFsync,
		// Redis rewrites the AOF each time it has grown by this much since
		// the last rewrite. The partition logs grow by every click, so at
		// the default (100%) a busy single machine rewrites about as many
		// bytes as it writes, in a forked child that takes a core and the
		// disk that every acknowledged append waits to fsync on. 400 costs
		// a quarter of that, for an AOF of up to five times the data.
		"--auto-aof-rewrite-percentage", strconv.Itoa(AOFRewritePercentage),
		"--save", "",
		"--protected-mode", "yes",
		"--daemonize", "no",
		"--logfile", filepath.Join(dir, "redis.log"),
	}
	cmd := exec.Command(bin, args...)
	// Own process group, and die with the parent: a test or `clickagg dev`
	// that is killed must not leave a server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start redis-server: %w", err)
	}
	r := &Redis{Addr: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), cmd: cmd, done: make(chan struct{})}
	go func() {
		r.err = cmd.Wait()
		close(r.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := ping(r.Addr); err == nil {
			return r, nil
		}
		select {
		case <-r.done:
			return nil, fmt.Errorf("redis-server exited: %v (log: %s)", r.err, filepath.Join(dir, "redis.log"))
		case <-ctx.Done():
			r.Stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			r.Stop()
			return nil, fmt.Errorf("redis-server on %s did not answer within 30s", r.Addr)
		}
	}
}

// ping speaks just enough RESP to ask a server whether it is ready, so that
// this package does not depend on a Redis client.
func ping(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("redis not ready: %q", strings.TrimSpace(line))
	}
	return nil
}

// Stop shuts the server down with SIGTERM (it flushes its AOF) and waits,
// killing it after 10 seconds.
func (r *Redis) Stop() error {
	select {
	case <-r.done:
		return nil
	default:
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-r.done:
	case <-time.After(10 * time.Second):
		_ = r.cmd.Process.Kill()
		<-r.done
	}
	return nil
}

// Kill stops the server with SIGKILL, as a crash would.
func (r *Redis) Kill() {
	_ = r.cmd.Process.Kill()
	<-r.done
}

// FreePort returns a loopback TCP port that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("find a free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
