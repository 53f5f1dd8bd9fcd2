package test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	clientv3 "go.etcd.io/etcd/client/v3"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/clickagg/clickagg/cluster"
	"github.com/clickagg/clickagg/localserver"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
	"github.com/clickagg/clickagg/testserver"
	"github.com/clickagg/clickagg/tlsconf"
	"github.com/clickagg/clickagg/tlsconf/tlstest"
)

// testCluster is a multi-process clickagg cluster on loopback: a real
// redis-server, an embedded etcd and clickagg processes of the built binary.
type testCluster struct {
	t          *testing.T
	dir        string
	redis      *localserver.Redis         // nil on a Redis Cluster or under Sentinel
	rcluster   *localserver.RedisCluster  // set when spec.redisCluster is
	rsentinel  *localserver.RedisSentinel // set when spec.redisSentinel is
	etcd       *localserver.Etcd
	etcdCfg    cluster.Config // how the harness and every process reach etcd
	partitions int
	common     []string

	coordinators []*proc
	routers      []*proc
	aggregators  []*proc
	queryd       *proc
	httpAddr     string
	// http is the client of queryd's HTTP port: over TLS with spec.tls,
	// trusting the CA and without a certificate, as a probe or a scrape.
	http *http.Client

	// ca, when spec.tls, issued every process's certificate and the
	// harness's client certificate; creds are the harness's credentials.
	ca    *tlstest.CA
	creds credentials.TransportCredentials
}

type clusterSpec struct {
	partitions   int
	coordinators int
	routers      int
	aggregators  int
	// extra flags per role, added to the common ones.
	coordinatorFlags, routerFlags, aggregatorFlags []string
	// commonFlags go to every process.
	commonFlags []string
	// redisCluster, when its primaries are set, runs the cluster on a
	// Redis Cluster of that many primaries with that many replicas each
	// instead of one redis-server.
	redisCluster struct{ primaries, replicas int }
	// redisSentinel, when its sentinels are set, runs the cluster on a
	// primary with that many replicas under that many sentinels (quorum a
	// majority, down after 5s), which have a password of their own;
	// clickagg finds the primary through the sentinels.
	redisSentinel struct{ replicas, sentinels int }
	// tls runs every process with a certificate of its own from one CA
	// and -tls.client-auth=require: members and the harness talk over
	// mutual TLS.
	tls bool
	// auth, with tls, turns authorization on: members hold internal and
	// query, the harness's certificate ingest, query and admin, and the
	// tokens of c.tokens what authPolicy says. Clients without a
	// certificate are let in (-tls.client-auth=verify-if-given) to be
	// refused by authorization.
	auth bool
	// redisACL runs clickagg on one Redis as an ACL user of its own that
	// may touch only the cluster's keys and not run admin or dangerous
	// commands but INFO, as the production overlay's user.
	redisACL bool
	// etcdTLS runs etcd over TLS with client certificates required
	// (--client-cert-auth), from a CA of its own; every process gets
	// -etcd.ca-file, -etcd.cert-file and -etcd.key-file.
	etcdTLS bool
}

// redisACLRules are the rules of clusterSpec.redisACL's user.
var redisACLRules = []any{"on", "resetkeys", "~clickagg*", "resetchannels", "+@all", "-@admin", "-@dangerous", "+info"}

// authPolicy is the -auth.policy-file of clusterSpec.auth.
const authPolicy = `# members
cert:coordinator-*  internal,query,admin
cert:aggregator-*   internal,query
cert:router-*       internal,query
cert:queryd-*       internal,query
# the test itself, and clickagg ship
cert:e2e-harness    ingest,query,admin
cert:operator       admin,query
cert:shipper-*      ingest
token:shipper       ingest
token:billing       query
`

// authTokens are the bearer tokens of clusterSpec.auth, by name.
var authTokens = map[string]string{"shipper": "shipper-token-4f1c", "billing": "billing-token-9a2e"}

func newTestCluster(t *testing.T, spec clusterSpec) *testCluster {
	t.Helper()
	dir := t.TempDir()
	c := &testCluster{t: t, dir: dir, partitions: spec.partitions, creds: insecure.NewCredentials(), http: &http.Client{}}
	if spec.tls {
		c.ca = tlstest.NewCA(t, "clickagg-e2e-ca")
		caFile := c.ca.WriteCA(t, c.tlsDir(""))
		if spec.auth {
			policy, tokens := filepath.Join(c.tlsDir(""), "policy"), filepath.Join(c.tlsDir(""), "tokens")
			tlstest.WriteFile(t, policy, []byte(authPolicy))
			var lines strings.Builder
			for name, tok := range authTokens {
				sum := sha256.Sum256([]byte(tok))
				fmt.Fprintf(&lines, "%s sha256:%x\n", name, sum)
			}
			tlstest.WriteFile(t, tokens, []byte(lines.String()))
			c.common = append(c.common, "-tls.ca-file="+caFile, "-tls.client-auth=verify-if-given",
				"-auth.policy-file="+policy, "-auth.tokens-file="+tokens)
		} else {
			c.common = append(c.common, "-tls.ca-file="+caFile, "-tls.client-auth=require")
		}
		leaf := c.ca.Issue(t, tlstest.Options{CommonName: "e2e-harness"})
		cert, key := leaf.WriteFiles(t, c.tlsDir("harness"))
		c.creds = tlsCreds(t, tlsconf.Config{CertFile: cert, KeyFile: key, CAFile: caFile})
		// The HTTP client trusts the CA and, as the gRPC one, presents the
		// harness's certificate (queryd's /v1/ wants it under spec.auth).
		pair, err := tls.X509KeyPair(leaf.CertPEM, leaf.KeyPEM)
		if err != nil {
			t.Fatal(err)
		}
		roots := x509.NewCertPool()
		roots.AddCert(c.ca.Cert)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, Certificates: []tls.Certificate{pair}}}
		t.Cleanup(tr.CloseIdleConnections)
		c.http = &http.Client{Transport: tr}
	}
	if spec.redisCluster.primaries > 0 {
		c.rcluster = testserver.RedisCluster(t, spec.redisCluster.primaries, spec.redisCluster.replicas)
		c.common = append(c.common,
			"-redis.cluster-addrs="+strings.Join(c.rcluster.Addrs(), ","),
			"-redis.password-file="+c.rcluster.Nodes[0].PasswordFile)
	} else if spec.redisSentinel.sentinels > 0 {
		c.rsentinel = testserver.RedisSentinel(t, localserver.RedisSentinelConfig{
			Replicas: spec.redisSentinel.replicas, Sentinels: spec.redisSentinel.sentinels, SentinelPassword: true,
			// Not 1s: a primary that stalls longer on an fsync (2 shared
			// cores, a busy disk) was failed over a second time, back to
			// the old primary, losing what the first promotion took.
			DownAfter: 5 * time.Second,
		})
		c.common = append(c.common,
			"-redis.sentinel-master="+c.rsentinel.MasterName,
			"-redis.sentinel-addrs="+strings.Join(c.rsentinel.SentinelAddrs(), ","),
			"-redis.sentinel-password-file="+c.rsentinel.SentinelPasswordFile,
			"-redis.password-file="+c.rsentinel.Nodes[0].PasswordFile)
	} else {
		rs, err := localserver.StartRedis(context.Background(), localserver.RedisConfig{Dir: filepath.Join(dir, "redis"), AppendFsync: "everysec"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { rs.Stop() })
		c.redis = rs
		if spec.redisACL {
			pwFile := filepath.Join(dir, "redis-clickagg.password")
			tlstest.WriteFile(t, pwFile, []byte("acl-user-password\n"))
			admin := redis.NewClient(testserver.RedisOptions(rs))
			err := admin.Do(context.Background(), append([]any{"ACL", "SETUSER", "clickagg", ">acl-user-password"}, redisACLRules...)...).Err()
			admin.Close()
			if err != nil {
				t.Fatal(err)
			}
			c.common = append(c.common, "-redis.addr="+rs.Addr, "-redis.username=clickagg", "-redis.password-file="+pwFile)
		} else {
			c.common = append(c.common, "-redis.addr="+rs.Addr, "-redis.password-file="+rs.PasswordFile)
		}
	}
	c.startEtcd(spec.etcdTLS)
	c.common = append(c.common, c.etcdFlags()...)
	c.common = append(c.common,
		fmt.Sprintf("-cluster.partitions=%d", spec.partitions),
		"-etcd.lease-ttl=5s",
		"-log.level=info",
	)
	c.common = append(c.common, spec.commonFlags...)
	for i := range spec.coordinators {
		name := fmt.Sprintf("coordinator-%d", i+1)
		c.coordinators = append(c.coordinators, startProc(t, dir, name, c.flags("-target=coordinator", append(c.tlsFlags(name), spec.coordinatorFlags...))...))
	}
	for i := range spec.aggregators {
		name := fmt.Sprintf("aggregator-%d", i+1)
		c.aggregators = append(c.aggregators, startProc(t, dir, name, c.flags("-target=aggregator", append(c.tlsFlags(name), spec.aggregatorFlags...))...))
	}
	for i := range spec.routers {
		name := fmt.Sprintf("router-%d", i+1)
		c.routers = append(c.routers, startProc(t, dir, name, c.flags("-target=router", append(c.tlsFlags(name), spec.routerFlags...))...))
	}
	port, err := localserver.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	c.httpAddr = fmt.Sprintf("127.0.0.1:%d", port)
	start := startProc
	if spec.coordinators == 0 || spec.aggregators == 0 {
		// Nobody assigns partitions yet, so queryd cannot be ready: it has
		// no owner to ask (see cli's readiness).
		start = startLive
	}
	c.queryd = start(t, dir, "queryd-1", c.flags("-target=queryd", append(c.tlsFlags("queryd-1"), "-http.addr="+c.httpAddr))...)
	return c
}

// startEtcd starts the cluster's etcd, over TLS with client certificates
// required when withTLS; one client certificate serves every process.
func (c *testCluster) startEtcd(withTLS bool) {
	c.etcdCfg = cluster.Config{Prefix: cluster.DefaultPrefix, DialTimeout: 5 * time.Second, LeaseTTL: 5 * time.Second}
	if !withTLS {
		c.etcd = testserver.Etcd(c.t)
		c.etcdCfg.Endpoints = []string{c.etcd.Endpoint}
		return
	}
	ca := tlstest.NewCA(c.t, "clickagg-e2e-etcd-ca")
	c.etcd, c.etcdCfg.CAFile = testserver.EtcdTLS(c.t, ca)
	c.etcdCfg.Endpoints = []string{c.etcd.Endpoint}
	c.etcdCfg.CertFile, c.etcdCfg.KeyFile = ca.Issue(c.t, tlstest.Options{CommonName: "clickagg"}).WriteFiles(c.t, c.tlsDir("etcd-client"))
}

// etcdFlags are the flags that reach the cluster's etcd: its endpoint
// and, with spec.etcdTLS, its CA and the client certificate.
func (c *testCluster) etcdFlags() []string {
	f := []string{"-etcd.endpoints=" + strings.Join(c.etcdCfg.Endpoints, ",")}
	if c.etcdCfg.CertFile != "" {
		f = append(f, "-etcd.ca-file="+c.etcdCfg.CAFile, "-etcd.cert-file="+c.etcdCfg.CertFile, "-etcd.key-file="+c.etcdCfg.KeyFile)
	}
	return f
}

// etcdClient returns a client to the cluster's etcd, dialled as the
// processes dial it, closed by the test's cleanup.
func (c *testCluster) etcdClient() *clientv3.Client {
	c.t.Helper()
	cli, err := cluster.Dial(context.Background(), c.etcdCfg, slog.New(slog.DiscardHandler))
	if err != nil {
		c.t.Fatal(err)
	}
	c.t.Cleanup(func() { cli.Close() })
	return cli
}

// httpBase is the URL of queryd's HTTP port: https:// with spec.tls.
func (c *testCluster) httpBase() string {
	if c.ca != nil {
		return "https://" + c.httpAddr
	}
	return "http://" + c.httpAddr
}

// tlsFlags returns the certificate flags of process name, issued for
// it by the cluster's CA; none without spec.tls.
func (c *testCluster) tlsFlags(name string) []string {
	if c.ca == nil {
		return nil
	}
	cert, key := c.ca.Issue(c.t, tlstest.Options{CommonName: name}).WriteFiles(c.t, c.tlsDir(name))
	return []string{"-tls.cert-file=" + cert, "-tls.key-file=" + key}
}

// tlsDir makes and returns the directory of name's certificate.
func (c *testCluster) tlsDir(name string) string {
	d := filepath.Join(c.dir, "tls", name)
	if err := os.MkdirAll(d, 0o700); err != nil {
		c.t.Fatal(err)
	}
	return d
}

func (c *testCluster) flags(target string, extra []string) []string {
	return append(append(append([]string{}, c.common...), target), extra...)
}

// redisClient returns a client to the cluster's Redis (one server, a
// Redis Cluster, or the primary the sentinels name), closed by the test's
// cleanup.
func (c *testCluster) redisClient() redis.UniversalClient {
	var rdb redis.UniversalClient
	switch {
	case c.rcluster != nil:
		rdb = redis.NewClusterClient(testserver.RedisClusterOptions(c.rcluster))
	case c.rsentinel != nil:
		rdb = redis.NewFailoverClient(testserver.RedisSentinelOptions(c.rsentinel))
	default:
		rdb = redis.NewClient(testserver.RedisOptions(c.redis))
	}
	c.t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

func (c *testCluster) coordinatorClient() clickaggv1.CoordinatorServiceClient {
	return clickaggv1.NewCoordinatorServiceClient(dialWith(c.t, c.coordinators[0].addr, c.creds))
}

func (c *testCluster) queryClient() clickaggv1.QueryServiceClient {
	return clickaggv1.NewQueryServiceClient(dialWith(c.t, c.queryd.addr, c.creds))
}

func (c *testCluster) ingestClients() []clickaggv1.IngestServiceClient {
	var out []clickaggv1.IngestServiceClient
	for _, r := range c.routers {
		out = append(out, clickaggv1.NewIngestServiceClient(dialWith(c.t, r.addr, c.creds)))
	}
	return out
}

// ingestResult is what sending a workload observed.
type ingestResult struct {
	sent, retried, resentEvents atomic.Int64
	mu                          sync.Mutex
	rejectedBy                  map[*clickaggv1.ClickEvent]string
}

// ingest sends every request of w with 4 concurrent clients. Each request
// goes to one router; a failure is retried with the same events through the
// next one, as a client would, and every 50th request is sent twice, as if
// its response were lost. hook runs before request i is handed out, in
// order, so that a test can act at fixed points of the stream.
func ingest(t *testing.T, w *workload, clients []clickaggv1.IngestServiceClient, hook func(i int, res *ingestResult)) *ingestResult {
	t.Helper()
	res := &ingestResult{rejectedBy: map[*clickaggv1.ClickEvent]string{}}
	jobs := make(chan int)
	g, gctx := errgroup.WithContext(context.Background())
	for worker := range 4 {
		g.Go(func() error {
			for i := range jobs {
				batch := w.batches[i]
				wantAccepted := int64(len(batch))
				for _, ev := range batch {
					if _, bad := w.invalidAt[ev]; bad {
						wantAccepted--
					}
				}
				r := (i + worker) % len(clients)
				resent := false
				deadline := time.Now().Add(2 * time.Minute)
				for {
					cctx, cancel := context.WithTimeout(gctx, 10*time.Second)
					resp, err := clients[r].Ingest(cctx, &clickaggv1.IngestRequest{Events: batch})
					cancel()
					if err == nil {
						if resp.Accepted != wantAccepted {
							return fmt.Errorf("request %d: accepted %d, want %d", i, resp.Accepted, wantAccepted)
						}
						if i%50 == 0 && !resent && len(clients) > 1 {
							resent = true
							res.resentEvents.Add(int64(len(batch)))
							r = (r + 1) % len(clients)
							continue
						}
						res.mu.Lock()
						for _, rej := range resp.Rejected {
							res.rejectedBy[batch[rej.Index]] = rej.Reason
						}
						res.mu.Unlock()
						break
					}
					if time.Now().After(deadline) {
						return fmt.Errorf("request %d: routers failing for 2 minutes: %v", i, err)
					}
					res.retried.Add(1)
					r = (r + 1) % len(clients)
					time.Sleep(50 * time.Millisecond)
				}
				res.sent.Add(1)
			}
			return nil
		})
	}
	g.Go(func() error {
		defer close(jobs)
		for i := range w.batches {
			if hook != nil {
				hook(i, res)
			}
			select {
			case jobs <- i:
			case <-gctx.Done():
				return nil
			}
		}
		return nil
	})
	if err := g.Wait(); err != nil {
		t.Fatal(err)
	}
	t.Logf("ingest done: %d requests, %d retried after an error, %d events sent again through another router", res.sent.Load(), res.retried.Load(), res.resentEvents.Load())
	return res
}
