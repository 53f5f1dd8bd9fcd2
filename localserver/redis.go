package localserver

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
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
	// Args are more redis-server arguments (e.g. "--cluster-enabled",
	// "yes"), after the ones StartRedis gives, which they override.
	Args []string
}

// AOFRewritePercentage is the auto-aof-rewrite-percentage of the
// redis-server children; see StartRedis.
const AOFRewritePercentage = 400

// Redis is a running redis-server child process. It requires a password
// (requirepass), kept in PasswordFile under its Dir: a restarted server on
// the same Dir keeps its password as it keeps its data.
type Redis struct {
	Addr string
	// Password is the default user's password; PasswordFile holds it
	// (mode 0600), for -redis.password-file.
	Password     string
	PasswordFile string
	cfg          RedisConfig // as started, with its port: Restart's
	p            *child
}

// redisPort picks the port StartRedis was not given; tests take one.
var redisPort = FreePort

// StartRedis starts redis-server on 127.0.0.1 with AOF on and waits until it
// answers PING. A port it picks itself may be taken by another process
// between the pick and the bind; it then picks again, a few times.
func StartRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	return pickAgain(cfg.Port == 0, func() (*Redis, error) { return startRedis(ctx, cfg) })
}

func startRedis(ctx context.Context, cfg RedisConfig) (*Redis, error) {
	bin, err := redisBinary(cfg.Binary)
	if err != nil {
		return nil, err
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
	pwFile := filepath.Join(dir, PasswordFileName)
	pw, err := password(pwFile)
	if err != nil {
		return nil, err
	}
	port := cfg.Port
	if port == 0 {
		if port, err = redisPort(); err != nil {
			return nil, err
		}
	}
	logFile := filepath.Join(dir, "redis.log")
	// The password goes in a config file, not on the command line, where
	// ps would show it to every user of the machine. masterauth is the
	// same password: a server that is made a replica (Redis Cluster, or a
	// primary watched by Sentinel after a failover) authenticates to its
	// primary with it; a server that never replicates ignores it.
	conf := filepath.Join(dir, "redis-auth.conf")
	if err := os.WriteFile(conf, []byte("requirepass "+pw+"\nmasterauth "+pw+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("redis config: %w", err)
	}
	args := []string{
		conf,
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
		"--logfile", logFile,
	}
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	p, err := startChild(ctx, "redis-server", bin, append(args, cfg.Args...), addr, pw, logFile)
	if err != nil {
		return nil, err
	}
	cfg.Port = port
	return &Redis{Addr: addr, Password: pw, PasswordFile: pwFile, cfg: cfg, p: p}, nil
}

// child is a redis-server child process: a server or a sentinel.
type child struct {
	cmd  *exec.Cmd
	done chan struct{} // closed when it has exited
	err  error         // its exit, set before done is closed
}

// startChild starts bin with args, logging to logFile, and waits until
// the server on addr answers, after AUTH with password, as this very
// process: another one may hold the port, and this one then exits with
// EADDRINUSE.
func startChild(ctx context.Context, what, bin string, args []string, addr, password, logFile string) (*child, error) {
	// What this process logs starts where the log ends now: a restarted
	// one appends to its predecessor's.
	var logStart int64
	if fi, err := os.Stat(logFile); err == nil {
		logStart = fi.Size()
	}
	cmd := exec.Command(bin, args...)
	// Own process group, and die with the parent: a test or `clickagg dev`
	// that is killed must not leave a server behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", what, err)
	}
	p := &child{cmd: cmd, done: make(chan struct{})}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	deadline := time.Now().Add(30 * time.Second)
	for {
		if pid, err := ready(addr, password); err == nil && pid == cmd.Process.Pid {
			return p, nil
		}
		select {
		case <-p.done:
			if b, err := os.ReadFile(logFile); err == nil && int64(len(b)) >= logStart && strings.Contains(string(b[logStart:]), "already in use") {
				return nil, fmt.Errorf("%s on %s: %w", what, addr, syscall.EADDRINUSE)
			}
			return nil, fmt.Errorf("%s exited: %v (log: %s)", what, p.err, logFile)
		case <-ctx.Done():
			p.stop()
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			p.stop()
			return nil, fmt.Errorf("%s on %s did not answer within 30s", what, addr)
		}
	}
}

// stop stops the process with SIGTERM (a server flushes its AOF) and
// waits, killing it after 10 seconds. SIGTERM is sent again every 200ms:
// a server refuses to shut down while it writes its first AOF (a replica
// just after its first sync logs "Writing initial AOF, can't exit") and
// then runs on, and a repeated SIGTERM only asks again.
func (p *child) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	kill := time.After(10 * time.Second)
	again := time.NewTicker(200 * time.Millisecond)
	defer again.Stop()
	for {
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			return
		case <-again.C:
		case <-kill:
			p.kill()
			return
		}
	}
}

// kill stops the process with SIGKILL.
func (p *child) kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// redisBinary returns bin, else $REDIS_SERVER, else redis-server in PATH.
func redisBinary(bin string) (string, error) {
	if bin == "" {
		bin = os.Getenv("REDIS_SERVER")
	}
	if bin == "" {
		p, err := exec.LookPath("redis-server")
		if err != nil {
			return "", ErrNoRedisServer
		}
		bin = p
	}
	return bin, nil
}

// PasswordFileName is the file under a server's Dir holding its password.
const PasswordFileName = "redis.password"

// password returns the password kept in file, first writing a random one.
func password(file string) (string, error) {
	if b, err := os.ReadFile(file); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return strings.TrimSpace(string(b)), nil
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("redis password: %w", err)
	}
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		return "", fmt.Errorf("redis password: %w", err)
	}
	pw := hex.EncodeToString(b)
	if err := os.WriteFile(file, []byte(pw+"\n"), 0o600); err != nil {
		return "", fmt.Errorf("redis password: %w", err)
	}
	return pw, nil
}

// ping reports whether the server r is ready.
func (r *Redis) ping() error {
	_, err := ready(r.Addr, r.Password)
	return err
}

// ready asks the server at addr, in one round trip, whether it serves
// (PING: one still loading its AOF answers -LOADING) and which process it
// is (INFO server), after AUTH with password. It speaks just enough RESP
// that this package does not depend on a Redis client.
func ready(addr, password string) (pid int, err error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte(authCommand(password) + "PING\r\nINFO server\r\n")); err != nil {
		return 0, err
	}
	rd := bufio.NewReader(c)
	if err := readAuth(rd, password); err != nil {
		return 0, err
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		return 0, err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return 0, fmt.Errorf("redis not ready: %q", strings.TrimSpace(line))
	}
	head, err := rd.ReadString('\n')
	if err != nil {
		return 0, err
	}
	n, err := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(head, "$")))
	if err != nil || !strings.HasPrefix(head, "$") {
		return 0, fmt.Errorf("unexpected INFO reply %q", strings.TrimSpace(head))
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(rd, body); err != nil {
		return 0, err
	}
	for line := range strings.Lines(string(body)) {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "process_id:"); ok {
			return strconv.Atoi(v)
		}
	}
	return 0, errors.New("INFO server has no process_id")
}

// authCommand is the AUTH command for password in RESP, empty for no
// password (a sentinel may have none).
func authCommand(password string) string {
	if password == "" {
		return ""
	}
	return fmt.Sprintf("*2\r\n$4\r\nAUTH\r\n$%d\r\n%s\r\n", len(password), password)
}

// readAuth reads the reply to authCommand(password), if it sent one.
func readAuth(rd *bufio.Reader, password string) error {
	if password == "" {
		return nil
	}
	line, err := rd.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+OK") {
		return fmt.Errorf("redis auth: %q", strings.TrimSpace(line))
	}
	return nil
}

// Stop shuts the server down with SIGTERM (it flushes its AOF) and waits,
// killing it after 10 seconds.
func (r *Redis) Stop() error {
	r.p.stop()
	return nil
}

// Kill stops the server with SIGKILL, as a crash would.
func (r *Redis) Kill() { r.p.kill() }

// Signal sends sig to the server: SIGSTOP freezes it (a hung server, or
// a replica that stops acknowledging), SIGCONT lets it go on.
func (r *Redis) Signal(sig syscall.Signal) error {
	return r.p.cmd.Process.Signal(sig)
}

// StartReplica starts a redis-server that replicates primary (replicaof),
// in cfg.Dir, with primary's password: it authenticates to primary with
// its own (masterauth = requirepass), and a client of the primary reaches
// it too. It returns once the server answers; the first sync may still
// be running.
func StartReplica(ctx context.Context, primary *Redis, cfg RedisConfig) (*Redis, error) {
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, fmt.Errorf("redis data dir: %w", err)
	}
	if err := os.WriteFile(filepath.Join(cfg.Dir, PasswordFileName), []byte(primary.Password+"\n"), 0o600); err != nil {
		return nil, fmt.Errorf("redis password: %w", err)
	}
	host, port, _ := strings.Cut(primary.Addr, ":")
	cfg.Args = append([]string{"--replicaof", host, port}, cfg.Args...)
	return StartRedis(ctx, cfg)
}

// Restart starts a stopped or killed server again on its address and Dir,
// with its data and password, as a restarted machine would. Another
// process may have taken its port meanwhile: Restart then fails.
func (r *Redis) Restart(ctx context.Context) error {
	select {
	case <-r.p.done:
	default:
		return fmt.Errorf("redis-server on %s: still running", r.Addr)
	}
	n, err := startRedis(ctx, r.cfg)
	if err != nil {
		return err
	}
	r.p = n.p
	return nil
}

// pickAgain calls start, which picks the free ports it binds when picked
// is true, until it succeeds or fails for another reason than a taken
// port, at most 5 times: another process may take a picked port between
// the pick and the bind.
func pickAgain[T any](picked bool, start func() (T, error)) (T, error) {
	for attempt := 1; ; attempt++ {
		v, err := start()
		if err == nil || !picked || attempt == 5 || !inUse(err) {
			return v, err
		}
	}
}

// inUse reports whether err is a listener's "address already in use".
func inUse(err error) bool {
	return errors.Is(err, syscall.EADDRINUSE) || strings.Contains(err.Error(), "address already in use")
}

// handedOut is every port FreePort has returned in this process: the
// kernel may offer a port again as soon as it is closed, before the child
// it was meant for has bound it, and tests that start clusters side by
// side would then hand one port to two children.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// FreePort returns a loopback TCP port that was free a moment ago and that
// it has not returned before in this process.
func FreePort() (int, error) {
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = make(map[int]bool)
	}
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("find a free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if !handedOut.ports[port] {
			handedOut.ports[port] = true
			return port, nil
		}
	}
	return 0, errors.New("find a free port: the kernel offered only ports already handed out")
}
