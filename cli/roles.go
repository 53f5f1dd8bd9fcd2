package cli

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/clickagg/clickagg/aggregator"
	"github.com/clickagg/clickagg/archive"
	"github.com/clickagg/clickagg/authz"
	"github.com/clickagg/clickagg/buildinfo"
	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/console"
	"github.com/clickagg/clickagg/coordinator"
	"github.com/clickagg/clickagg/gateway"
	clickhealth "github.com/clickagg/clickagg/health"
	"github.com/clickagg/clickagg/history"
	"github.com/clickagg/clickagg/hotkey"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/queryd"
	"github.com/clickagg/clickagg/router"
	"github.com/clickagg/clickagg/snapshot"
	"github.com/clickagg/clickagg/toplist"
)

// verifyRedis runs the gate that checks that Redis is the cluster's
// (health.VerifyRedis); ingest and queries wait for it.
func (p *process) verifyRedis() {
	cfg := p.cfg
	p.g.Go(func() error {
		return p.gate.Run(p.gctx, func(ctx context.Context) error {
			err := clickhealth.VerifyRedis(ctx, p.cl, p.rdb, cfg.RedisPrefix, cfg.Redis.String())
			// A wrong password is no Redis still starting: stop,
			// naming the flag.
			if cerr := cfg.Redis.CredentialsError(err); cerr != nil {
				return cerr
			}
			return err
		}, p.lg)
	})
}

// startFollower starts this process's copy of the split table of hot ads.
// Routers and queryds keep one (Follower) and work only while it is
// confirmed current; a router acknowledges each version on its membership
// lease, so it registers here, first, and the coordinator then waits for
// its acks before any change takes effect.
func (p *process) startFollower(ctx context.Context, isRouter bool) (*hotkey.Follower, error) {
	cfg := p.cfg
	var acker *hotkey.Acker
	if isRouter {
		acker = &hotkey.Acker{ID: cfg.ID}
	}
	follower := hotkey.NewFollower(cfg.hotKey(), p.splits, acker, p.lg.With("component", "splits"), time.Now)
	if acker != nil {
		// Acknowledgements go on the router's membership lease, which
		// is a new one each time it registers again. Keep sets the
		// first before it returns, and so before Run writes any.
		reg, err := p.cl.Keep(ctx, p.member(RoleRouter), cfg.Cluster.LeaseTTL, func(m cluster.Member) {
			follower.SetAckLease(clientv3.LeaseID(m.Incarnation))
		}, p.lg)
		if err != nil {
			return nil, fmt.Errorf("register %s: %w", RoleRouter, err)
		}
		p.onClose(func() { closeMembership(reg) })
	}
	p.g.Go(func() error { return follower.Run(p.gctx) })
	return follower, nil
}

func (p *process) startRouter(follower *hotkey.Follower) *router.Router {
	cfg := p.cfg
	r := router.New(cfg.Router, cfg.ID, p.parts, p.plog, p.lg.With("role", RoleRouter), time.Now,
		router.WithSplits(follower), router.WithMetrics(p.reg), router.WithMemoryBound(p.plog))
	clickaggv1.RegisterIngestServiceServer(p.gs, router.NewServer(r))
	clickaggv1.RegisterRouterServiceServer(p.gs, router.NewStatusServer(r))
	p.services = append(p.services, clickaggv1.IngestService_ServiceDesc.ServiceName)
	p.g.Go(func() error { return r.Run(p.gctx) })
	return r
}

func (p *process) startAggregator(ctx context.Context) (*aggregator.Aggregator, error) {
	cfg := p.cfg
	store := snapshot.New(p.rdb, cfg.RedisPrefix, snapshot.WithWriter(p.w))
	opts := []aggregator.Option{aggregator.WithMetrics(p.reg), aggregator.WithSketchCapacity(cfg.hotKey().SketchCapacity),
		aggregator.WithRedisProbe(clickhealth.RedisWritable(p.rdb, clickhealth.ProbeKey(cfg.RedisPrefix, RoleAggregator, cfg.ID)))}
	var revisionsKnown chan struct{} // closed once the applied history revisions are read
	if cfg.ArchiveBucket != "" {
		archiving, known, err := p.archive(ctx, store)
		if err != nil {
			return nil, err
		}
		opts, revisionsKnown = append(opts, archiving...), known
	}
	self := aggregator.Self{ID: cfg.ID, Addr: p.advertise, LeaseTTL: cfg.Cluster.LeaseTTL, Version: buildinfo.Get().Version, HTTPAddr: p.httpAdvertise}
	a := aggregator.New(cfg.Aggregator, self, p.plog, store, p.cl, p.lg.With("role", RoleAggregator), time.Now, opts...)
	clickaggv1.RegisterAggregatorServiceServer(p.gs, aggregator.NewServer(a))
	p.services = append(p.services, clickaggv1.AggregatorService_ServiceDesc.ServiceName)
	p.g.Go(func() error {
		// Registering is asking for partitions: not before the Redis
		// they live in is known to be the cluster's.
		if err := p.gate.Wait(p.gctx); err != nil {
			return nil
		}
		if revisionsKnown != nil {
			select {
			case <-revisionsKnown:
			case <-p.gctx.Done():
				return nil
			}
		}
		return a.Run(p.gctx)
	})
	return a, nil
}

// archive opens -archive.bucket and returns the aggregator's options that
// archive the partition logs there, write the history files and read
// them. Until the applied history revisions are known, the history could
// be read at a revision no longer served: the aggregator asks for
// partitions only once revisionsKnown is closed.
func (p *process) archive(ctx context.Context, store *snapshot.Store) (opts []aggregator.Option, revisionsKnown chan struct{}, err error) {
	cfg, lg := p.cfg, p.lg
	bucket, err := archive.OpenBucket(ctx, cfg.ArchiveBucket)
	if err != nil {
		return nil, nil, err
	}
	p.onClose(func() { _ = bucket.Close() })
	ar, err := archive.New(cfg.Archive, p.plog, aggregator.ArchiveOffsets{Store: store}, bucket, p.reg, lg.With("role", RoleAggregator, "component", "archive"))
	if err != nil {
		return nil, nil, err
	}
	hw, err := history.New(cfg.History, aggregator.HistoryMarks{Store: store}, bucket, p.reg, lg.With("role", RoleAggregator, "component", "history"))
	if err != nil {
		return nil, nil, err
	}
	hr := history.NewReader(bucket, history.WithCache(cfg.History.CacheBytes))
	revisionsKnown = make(chan struct{})
	var once sync.Once
	p.g.Go(func() error {
		return p.cl.WatchAppliedRevisions(p.gctx, func(data []byte) error {
			applied, err := history.DecodeApplied(data)
			if err != nil {
				return err
			}
			hr.SetApplied(applied)
			once.Do(func() { close(revisionsKnown) })
			lg.Info("history revisions applied", "version", applied.Version())
			return nil
		})
	})
	lg.Info("archiving partition logs", "bucket", bucket.URL(), "interval", cfg.Archive.Interval)
	return []aggregator.Option{aggregator.WithArchiver(ar), aggregator.WithHistory(hw),
		aggregator.WithHistoryReader(hr, aggregator.HistoryMarks{Store: store})}, revisionsKnown, nil
}

// startCoordinator starts the coordinator and returns its gRPC server,
// which the HTTP routes of its read RPCs call in process (serveClusterAPI).
func (p *process) startCoordinator() clickaggv1.CoordinatorServiceServer {
	cfg := p.cfg
	c := coordinator.New(cfg.Coordinator, cluster.Candidate{ID: cfg.ID, Addr: p.advertise}, p.cl, p.partitions, p.dial.Conn, p.lg.With("role", RoleCoordinator),
		coordinator.WithHotKeys(p.splits, cfg.hotKey(), time.Now), coordinator.WithMaxIDLength(cfg.Router.MaxIDLength), coordinator.WithMetrics(p.reg))
	srv := coordinator.NewServer(c)
	clickaggv1.RegisterCoordinatorServiceServer(p.gs, srv)
	p.services = append(p.services, clickaggv1.CoordinatorService_ServiceDesc.ServiceName)
	p.g.Go(func() error { return c.Run(p.gctx) })
	return srv
}

// serveClusterAPI serves the coordinator's read RPCs as JSON under
// /v1/cluster/ (package gateway): through local, the process's own
// coordinator, when it has one, else forwarded over gRPC to a live
// coordinator from the etcd membership, so that every process's console
// shows the cluster. They need the query permission, as their gRPC
// methods do; no Redis gate: coordinators answer from etcd and the
// aggregators.
func (p *process) serveClusterAPI(local clickaggv1.CoordinatorServiceServer) error {
	var h http.Handler
	var err error
	if local != nil {
		h, err = gateway.NewLocal(p.gctx, local)
	} else {
		h, err = gateway.New(p.gctx, gateway.NewForwarder(p.cl, p.dial.Conn))
	}
	if err != nil {
		return fmt.Errorf("cluster http: %w", err)
	}
	if p.az != nil {
		h = p.az.HTTP(authz.Query, h)
	}
	p.mux.Handle(gateway.Prefix, allow(h, http.MethodGet))
	return nil
}

// serveConsole serves the web console at / and its assets under
// /console/. They are public, holding no data: the page's calls to
// /v1/ go through authorization as any other client's.
func (p *process) serveConsole(roles []string) error {
	h, err := console.New(console.Info{Member: p.cfg.ID, Roles: roles, Version: buildinfo.Get().Version})
	if err != nil {
		return err
	}
	page := allow(h, http.MethodGet, http.MethodHead)
	p.mux.Handle("/{$}", page)
	p.mux.Handle(console.AssetPrefix, page)
	return nil
}

// startQueryd starts queryd and serves its JSON API under /v1/, behind
// the same Redis gate and authorization as its gRPC API.
func (p *process) startQueryd(follower *hotkey.Follower) (*queryd.Queryd, error) {
	cfg := p.cfg
	q := queryd.New(cfg.Queryd, p.parts, p.cl, toplist.New(p.rdb, cfg.RedisPrefix), p.dial.Aggregator, p.lg.With("role", RoleQueryd), time.Now,
		queryd.WithSplits(follower), queryd.WithMaxIDLength(cfg.Router.MaxIDLength), queryd.WithMetrics(p.reg))
	qs := queryd.NewServer(q)
	clickaggv1.RegisterQueryServiceServer(p.gs, qs)
	p.services = append(p.services, clickaggv1.QueryService_ServiceDesc.ServiceName)
	h, err := queryd.NewHTTPHandler(p.gctx, qs)
	if err != nil {
		return nil, fmt.Errorf("queryd http: %w", err)
	}
	h = gateHTTP(p.gate, h)
	if p.az != nil {
		h = p.az.HTTP(authz.Query, h)
	}
	// The gateway answers a wrong method with 501.
	p.mux.Handle("/v1/", allow(h, http.MethodGet))
	p.g.Go(func() error { return q.Run(p.gctx) })
	return q, nil
}

// registerMembers registers queryds and coordinators so that operators
// can list them, and registers them again if their lease is lost; routers
// registered in startFollower; aggregators register themselves, since
// their lease is part of partition ownership.
func (p *process) registerMembers(ctx context.Context, roles []string) error {
	for _, role := range roles {
		if role == RoleAggregator || role == RoleRouter {
			continue
		}
		reg, err := p.cl.Keep(ctx, p.member(role), p.cfg.Cluster.LeaseTTL, nil, p.lg)
		if err != nil {
			return fmt.Errorf("register %s: %w", role, err)
		}
		p.onClose(func() { closeMembership(reg) })
	}
	return nil
}

// member is this process's registration in role: its addresses and
// version, for the coordinator and for operators (ListMembers).
func (p *process) member(role string) cluster.Member {
	return cluster.Member{ID: p.cfg.ID, Role: role, Addr: p.advertise, Version: buildinfo.Get().Version, HTTPAddr: p.httpAdvertise}
}

// closeMembership stops registering again and revokes the current lease,
// bounded in time.
func closeMembership(reg *cluster.Membership) {
	cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = reg.Close(cctx)
}
