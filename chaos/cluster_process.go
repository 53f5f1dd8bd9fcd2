package chaos

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Process is one child process of the cluster: a clickagg role, an etcd
// member or the shipper, all of the binary under test. It restarts with
// the same flags, address and data dir, as a restarted machine would.
type Process struct {
	// Name is unique in the cluster: "aggregator-2", "etcd-1", "shipper-1".
	Name string
	// Role is router, aggregator, coordinator, queryd, etcd or shipper.
	Role string
	// Addr is the process's own gRPC address (etcd: its client URL's
	// host:port); Advertise is the proxy other members dial, empty when
	// none is in front of it.
	Addr, Advertise string
	// HTTPAddr is its HTTP address, empty when it serves none.
	HTTPAddr string
	// Log is the file its stdout and stderr go to, across restarts.
	Log string

	bin  string
	args []string
	env  []string
	// ready returns nil once the process serves.
	ready func(ctx context.Context) error

	mu     sync.Mutex
	cmd    *exec.Cmd
	done   chan struct{}
	paused bool
	// killed is set by Kill before its SIGKILL; crash is the exit of a
	// process that exited without it.
	killed bool
	crash  error
}

// start runs the process (again) without waiting for it to serve.
func (p *Process) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd != nil {
		select {
		case <-p.done:
		default:
			return fmt.Errorf("%s: still running", p.Name)
		}
	}
	f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(f, "=== %s start %s %s\n", time.Now().UTC().Format(time.RFC3339Nano), p.Name, strings.Join(p.args, " "))
	cmd := exec.Command(p.bin, p.args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.Env = append(os.Environ(), p.env...)
	// Die with the harness: a chaos run that is killed must leave no
	// cluster behind.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		f.Close()
		return fmt.Errorf("start %s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		fmt.Fprintf(f, "=== %s exit %s: %v\n", time.Now().UTC().Format(time.RFC3339Nano), p.Name, err)
		f.Close()
		p.mu.Lock()
		if !p.killed {
			p.crash = fmt.Errorf("%s exited on its own (%v); log %s", p.Name, err, p.Log)
		}
		p.mu.Unlock()
		close(done)
	}()
	p.cmd, p.done, p.paused, p.killed, p.crash = cmd, done, false, false, nil
	return nil
}

// Start runs the process again after a kill and returns once it serves.
// A process that runs already (two faults that overlapped on it, both
// healed) is only waited for.
func (p *Process) Start(ctx context.Context) error {
	if !p.Running() {
		if err := p.start(); err != nil {
			return err
		}
	}
	return p.waitReady(ctx)
}

// waitReady polls the process's readiness until it serves, it exits or
// ctx ends.
func (p *Process) waitReady(ctx context.Context) error {
	p.mu.Lock()
	done := p.done
	p.mu.Unlock()
	var err error
	for {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		err = p.ready(cctx)
		cancel()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited before it served (log %s): %w", p.Name, p.Log, err)
		case <-ctx.Done():
			return fmt.Errorf("%s not ready: %w (%w)", p.Name, ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// Kill stops the process with SIGKILL, as a crash would, and returns
// once it has exited. A paused process is killed too.
func (p *Process) Kill() error {
	p.mu.Lock()
	cmd, done := p.cmd, p.done
	if cmd != nil {
		p.killed = true
	}
	p.mu.Unlock()
	if cmd == nil {
		return nil
	}
	select {
	case <-done:
		return nil
	default:
	}
	if err := cmd.Process.Kill(); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return fmt.Errorf("kill %s: %w", p.Name, err)
	}
	<-done
	return nil
}

// Pause stops the process with SIGSTOP: it neither runs nor dies, its
// connections stay open and its lease runs out. It returns once the
// kernel reports the process stopped: a signal is delivered
// asynchronously.
func (p *Process) Pause() error {
	if err := p.signal(syscall.SIGSTOP, true); err != nil {
		return err
	}
	pid := p.Pid()
	for range 100 {
		if st, err := procState(pid); err != nil || st == "T" {
			return err
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("%s: not stopped 2s after SIGSTOP", p.Name)
}

// procState returns the state letter of process pid (/proc/<pid>/stat):
// R running, S sleeping, T stopped...
func procState(pid int) (string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return "", err
	}
	// "pid (comm) state ...": comm may hold spaces, so read after ") ".
	_, rest, _ := strings.Cut(string(b), ") ")
	st, _, _ := strings.Cut(rest, " ")
	return st, nil
}

// Resume lets a paused process go on (SIGCONT); one that was killed
// meanwhile is left alone.
func (p *Process) Resume() error {
	if !p.Running() {
		return nil
	}
	return p.signal(syscall.SIGCONT, false)
}

func (p *Process) signal(sig syscall.Signal, paused bool) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return fmt.Errorf("%s: not started", p.Name)
	}
	if err := p.cmd.Process.Signal(sig); err != nil {
		return fmt.Errorf("%s: %v: %w", p.Name, sig, err)
	}
	p.paused = paused
	return nil
}

// Running reports whether the process is alive (paused or not).
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cmd == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Crashed returns why the process exited when it exited without Kill
// (a crash, or an exit the system chose), nil while it runs or after a
// Kill. A restart clears it.
func (p *Process) Crashed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.crash
}

// Paused reports whether the process is SIGSTOPped.
func (p *Process) Paused() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.paused
}

// Pid returns the process id of the running process, 0 when none runs.
func (p *Process) Pid() int {
	if !p.Running() {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cmd.Process.Pid
}
