package chaos

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/clickagg/clickagg/localserver"
)

// proxies are the toxiproxy proxies of one cluster, by link name. They
// run in this process: a toxic is a function call, not an HTTP request to
// a toxiproxy server, and nothing outlives the harness.
type proxies struct {
	server *toxiproxy.ApiServer
	mu     sync.Mutex
	byName map[string]*toxiproxy.Proxy
}

func newProxies() *proxies {
	return &proxies{
		server: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), zerolog.Nop()),
		byName: map[string]*toxiproxy.Proxy{},
	}
}

// add starts a proxy named name on a free loopback port in front of
// upstream and returns its address. A port taken between the pick and
// the bind is picked again.
func (ps *proxies) add(name, upstream string) (string, error) {
	var err error
	for range 5 {
		var port int
		if port, err = localserver.FreePort(); err != nil {
			return "", err
		}
		p := toxiproxy.NewProxy(ps.server, name, net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), upstream)
		if err = ps.server.Collection.Add(p, true); err == nil {
			ps.mu.Lock()
			ps.byName[name] = p
			ps.mu.Unlock()
			return p.Listen, nil
		}
	}
	return "", fmt.Errorf("proxy %s: %w", name, err)
}

// get returns the proxy of link name.
func (ps *proxies) get(name string) (*toxiproxy.Proxy, error) {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	p, ok := ps.byName[name]
	if !ok {
		return nil, fmt.Errorf("no link %q", name)
	}
	return p, nil
}

// toxic is one toxiproxy toxic, as its API takes it.
type toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"`
	Toxicity   float32        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

// addToxic puts t on the proxy of link name; the toxic applies to the
// connections already open as well as to new ones.
func (ps *proxies) addToxic(name string, t toxic) error {
	p, err := ps.get(name)
	if err != nil {
		return err
	}
	t.Toxicity = 1
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	if _, err := p.Toxics.AddToxicJson(bytes.NewReader(b)); err != nil {
		return fmt.Errorf("link %s: toxic %s: %w", name, t.Name, err)
	}
	return nil
}

// removeToxic takes the toxic called toxicName off link name; one
// already off is fine (a heal that is retried).
func (ps *proxies) removeToxic(ctx context.Context, name, toxicName string) error {
	p, err := ps.get(name)
	if err != nil {
		return err
	}
	if err := p.Toxics.RemoveToxic(ctx, toxicName); err != nil && !errors.Is(err, toxiproxy.ErrToxicNotFound) {
		return fmt.Errorf("link %s: remove toxic %s: %w", name, toxicName, err)
	}
	return nil
}

// down stops the proxy of link name: its open connections are closed
// and new ones are refused, as a host that fell off the network.
func (ps *proxies) down(name string) error {
	p, err := ps.get(name)
	if err != nil {
		return err
	}
	p.Stop()
	return nil
}

// up starts the proxy of link name again on its address.
func (ps *proxies) up(name string) error {
	p, err := ps.get(name)
	if err != nil {
		return err
	}
	if err := p.Start(); err != nil && !errors.Is(err, toxiproxy.ErrProxyAlreadyStarted) {
		return fmt.Errorf("link %s: %w", name, err)
	}
	return nil
}

// close stops every proxy.
func (ps *proxies) close() {
	_ = ps.server.Collection.Clear()
}
