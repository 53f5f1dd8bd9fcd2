package testserver_test

import (
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/clickagg/clickagg/testserver"
)

// TestProxyFreezes: bytes go through both ways; frozen, the connection
// stays open and nothing goes through, new connections included; thawed,
// the held bytes arrive.
func TestProxyFreezes(t *testing.T) {
	echo := testserver.Listen(t)
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()
	t.Cleanup(func() { _ = echo.Close() })
	p := testserver.NewProxy(t, echo.Addr().String())
	dial := func() net.Conn {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c
	}
	roundTrip := func(c net.Conn, msg string, wait time.Duration) (string, error) {
		if _, err := io.WriteString(c, msg); err != nil {
			t.Fatal(err)
		}
		if err := c.SetReadDeadline(time.Now().Add(wait)); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, len(msg))
		_, err := io.ReadFull(c, b)
		return string(b), err
	}

	c := dial()
	if got, err := roundTrip(c, "before", 30*time.Second); err != nil || got != "before" {
		t.Fatalf("through the proxy: %q, %v", got, err)
	}
	p.Freeze()
	// Nothing may come back while frozen: waiting a little proves
	// nothing came in that time, and a late byte would fail the reads
	// after the thaw.
	if got, err := roundTrip(c, "frozen", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("through the frozen proxy: %q, %v; want nothing", got, err)
	}
	fresh := dial()
	if got, err := roundTrip(fresh, "new", 300*time.Millisecond); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("new connection through the frozen proxy: %q, %v; want nothing", got, err)
	}
	p.Thaw()
	for _, tc := range []struct {
		c    net.Conn
		want string
	}{{c, "frozen"}, {fresh, "new"}} {
		if err := tc.c.SetReadDeadline(time.Now().Add(30 * time.Second)); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, len(tc.want))
		if _, err := io.ReadFull(tc.c, b); err != nil || string(b) != tc.want {
			t.Fatalf("held bytes after the thaw: %q, %v; want %q", b, err, tc.want)
		}
	}
}
