package localserver

import (
	"fmt"
	"net/url"
	"strconv"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

// EtcdConfig describes an embedded single-member etcd.
type EtcdConfig struct {
	// Dir holds etcd's data; a restarted etcd on the same Dir keeps it.
	Dir string
	// ClientPort and PeerPort are loopback ports; 0 picks free ones.
	ClientPort, PeerPort int
	// LogLevel is etcd's zap level. The default, "fatal", keeps it quiet:
	// embedded etcd logs harmless errors on every shutdown.
	LogLevel string
}

// Etcd is a running embedded etcd.
type Etcd struct {
	// Endpoint is the client URL, e.g. http://127.0.0.1:2379.
	Endpoint string
	e        *embed.Etcd
}

// StartEtcd starts an embedded etcd and waits until it serves. Ports it
// picks itself may be taken by another process between the pick and the
// bind; it then picks again, a few times.
func StartEtcd(cfg EtcdConfig) (*Etcd, error) {
	return pickAgain(cfg.ClientPort == 0 || cfg.PeerPort == 0, func() (*Etcd, error) { return startEtcd(cfg) })
}

// etcdPort picks the ports StartEtcd was not given; tests take one.
var etcdPort = FreePort

func startEtcd(cfg EtcdConfig) (*Etcd, error) {
	var err error
	if cfg.ClientPort == 0 {
		if cfg.ClientPort, err = etcdPort(); err != nil {
			return nil, err
		}
	}
	if cfg.PeerPort == 0 {
		if cfg.PeerPort, err = etcdPort(); err != nil {
			return nil, err
		}
	}
	ec := embed.NewConfig()
	ec.Name = "clickagg-local"
	ec.Dir = cfg.Dir
	ec.LogLevel = cfg.LogLevel
	if ec.LogLevel == "" {
		ec.LogLevel = "fatal"
	}
	cu := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(cfg.ClientPort)}
	pu := url.URL{Scheme: "http", Host: "127.0.0.1:" + strconv.Itoa(cfg.PeerPort)}
	ec.ListenClientUrls, ec.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	ec.ListenPeerUrls, ec.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	ec.InitialCluster = ec.InitialClusterFromName(ec.Name)
	e, err := embed.StartEtcd(ec)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(60 * time.Second):
		e.Server.Stop()
		e.Close()
		return nil, fmt.Errorf("embedded etcd did not become ready within 60s")
	}
	return &Etcd{Endpoint: cu.String(), e: e}, nil
}

// Close stops etcd.
func (e *Etcd) Close() { e.e.Close() }
