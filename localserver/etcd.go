package localserver

import (
	"context"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"time"

	"go.etcd.io/etcd/api/v3/authpb"
	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
	"go.etcd.io/etcd/server/v3/etcdserver"
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

	// CertFile and KeyFile, when set, make the client URL https: etcd
	// presents them (reloaded from the files per handshake, as etcd does).
	CertFile, KeyFile string
	// ClientCAFile, with CertFile, turns on etcd's --client-cert-auth:
	// a client must present a certificate that chains to this CA.
	ClientCAFile string
	// Username and Password, when set, turn etcd's authentication on, with
	// this user allowed to read and write every key. Enabling auth needs a
	// root user; it gets the same password.
	Username, Password string
}

// Etcd is a running embedded etcd.
type Etcd struct {
	// Endpoint is the client URL, e.g. http://127.0.0.1:2379, or
	// https://127.0.0.1:2379 with a CertFile.
	Endpoint string
	// PeerURL is the peer URL, for tests that check what etcd listens on.
	PeerURL string
	e       *embed.Etcd
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
	if cfg.CertFile != "" {
		cu.Scheme = "https"
		ec.ClientTLSInfo = transport.TLSInfo{CertFile: cfg.CertFile, KeyFile: cfg.KeyFile}
		if cfg.ClientCAFile != "" {
			ec.ClientTLSInfo.TrustedCAFile = cfg.ClientCAFile
			ec.ClientTLSInfo.ClientCertAuth = true
		}
	}
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
	if cfg.Username != "" {
		if err := enableAuth(e.Server, cfg.Username, cfg.Password); err != nil {
			e.Close()
			return nil, fmt.Errorf("embedded etcd: enable auth: %w", err)
		}
	}
	return &Etcd{Endpoint: cu.String(), PeerURL: pu.String(), e: e}, nil
}

// enableAuth adds user with a role that may read and write every key,
// and root, then turns authentication on: the requests etcdctl user add,
// role grant-permission and auth enable send, made on the server directly
// so that no client needs a certificate for them.
func enableAuth(s *etcdserver.EtcdServer, user, password string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := s.UserAdd(ctx, &pb.AuthUserAddRequest{Name: "root", Password: password}); err != nil {
		return err
	}
	if _, err := s.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: "root", Role: "root"}); err != nil {
		return err
	}
	if user != "root" {
		const role = "clickagg-all"
		if _, err := s.RoleAdd(ctx, &pb.AuthRoleAddRequest{Name: role}); err != nil {
			return err
		}
		// Key and range end "\x00" mean every key.
		perm := &authpb.Permission{PermType: authpb.READWRITE, Key: []byte{0}, RangeEnd: []byte{0}}
		if _, err := s.RoleGrantPermission(ctx, &pb.AuthRoleGrantPermissionRequest{Name: role, Perm: perm}); err != nil {
			return err
		}
		if _, err := s.UserAdd(ctx, &pb.AuthUserAddRequest{Name: user, Password: password}); err != nil {
			return err
		}
		if _, err := s.UserGrantRole(ctx, &pb.AuthUserGrantRoleRequest{User: user, Role: role}); err != nil {
			return err
		}
	}
	_, err := s.AuthEnable(ctx, &pb.AuthEnableRequest{})
	return err
}

// Close stops etcd.
func (e *Etcd) Close() { e.e.Close() }

// ListenAddrs returns the addresses etcd's client and peer listeners are
// bound to, for tests that check it listens on loopback only.
func (e *Etcd) ListenAddrs() []net.Addr {
	var addrs []net.Addr
	for _, l := range e.e.Clients {
		addrs = append(addrs, l.Addr())
	}
	for _, l := range e.e.Peers {
		addrs = append(addrs, l.Addr())
	}
	return addrs
}
