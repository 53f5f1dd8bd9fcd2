package authz

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/clickagg/clickagg/tlsconf"
	"github.com/clickagg/clickagg/watchfile"
)

// checkEvery bounds how often a call checks the files: a stat per call
// would serialize every RPC on the reload lock for nothing.
const checkEvery = time.Second

// Authorizer identifies callers and checks their permissions.
type Authorizer struct {
	tls     *tlsconf.TLS // verifies client certificates; nil: tokens only
	log     *slog.Logger
	audit   *slog.Logger
	refused *prometheus.CounterVec

	cur atomic.Pointer[rules]

	checked atomic.Int64 // unix nanoseconds of the last check of the files

	mu      sync.Mutex // serializes reloads
	policy  *watchfile.File
	tokens  *watchfile.File   // nil without -auth.tokens-file
	lastErr map[string]string // per flag, to log each error once
}

// rules is one loaded policy and token list.
type rules struct {
	policy policy
	tokens tokens
}

// New loads cfg's files. t verifies client certificates (the server's
// TLS with DeferClientVerification); with t nil only tokens identify
// callers. Refusals are counted in reg and admin calls written to log
// as audit lines.
func New(cfg Config, t *tlsconf.TLS, log *slog.Logger, reg prometheus.Registerer) (*Authorizer, error) {
	if !cfg.Enabled() {
		return nil, errors.New("authz: -auth.policy-file is not set")
	}
	a := &Authorizer{
		tls:     t,
		log:     log,
		audit:   log.With("log", "audit"),
		policy:  &watchfile.File{Flag: "-auth.policy-file", Path: cfg.PolicyFile},
		lastErr: map[string]string{},
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "clickagg_auth_refused_total",
			Help: "Calls refused by authorization, by gRPC code (Unauthenticated: no valid identity; PermissionDenied: identity without the permission) and the permission the method needs.",
		}, []string{"code", "permission"}),
	}
	if cfg.TokensFile != "" {
		a.tokens = &watchfile.File{Flag: "-auth.tokens-file", Path: cfg.TokensFile}
	}
	r := &rules{}
	if err := a.load(a.policy, func(data []byte) (err error) { r.policy, err = parsePolicy(data); return err }); err != nil {
		return nil, err
	}
	if a.tokens != nil {
		if err := a.load(a.tokens, func(data []byte) (err error) { r.tokens, err = parseTokens(data); return err }); err != nil {
			return nil, err
		}
	}
	a.cur.Store(r)
	a.checked.Store(time.Now().UnixNano())
	if reg != nil {
		reg.MustRegister(a.refused)
		for _, p := range Permissions {
			a.refused.WithLabelValues(codes.Unauthenticated.String(), string(p))
			a.refused.WithLabelValues(codes.PermissionDenied.String(), string(p))
		}
	}
	return a, nil
}

// load checks f and, when its content changed, parses it with parse and
// commits it; a parse error names the file.
func (a *Authorizer) load(f *watchfile.File, parse func([]byte) error) error {
	st, differ, err := f.Check()
	if err == nil && differ {
		if err = parse(st.Data); err != nil {
			err = fmt.Errorf("%s %s: %w", f.Flag, f.Path, err)
		}
	}
	if err != nil {
		return err
	}
	f.Commit(st)
	return nil
}

// rules returns the rules in use, reloading changed files at most once
// per checkEvery; a file that does not load keeps its last good content.
func (a *Authorizer) rules() *rules {
	if time.Now().UnixNano()-a.checked.Load() < int64(checkEvery) {
		return a.cur.Load()
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if time.Now().UnixNano()-a.checked.Load() < int64(checkEvery) {
		return a.cur.Load()
	}
	a.checked.Store(time.Now().UnixNano())
	next := *a.cur.Load()
	changed := false
	for _, f := range []*watchfile.File{a.policy, a.tokens} {
		if f == nil {
			continue
		}
		before := f.Data()
		err := a.load(f, func(data []byte) (err error) {
			if f == a.policy {
				next.policy, err = parsePolicy(data)
			} else {
				next.tokens, err = parseTokens(data)
			}
			return err
		})
		if err != nil {
			if msg := err.Error(); msg != a.lastErr[f.Flag] {
				a.lastErr[f.Flag] = msg
				a.log.Error("authorization file not reloaded; keeping the last good one", "err", err)
			}
			continue
		}
		delete(a.lastErr, f.Flag)
		if string(before) != string(f.Data()) {
			changed = true
			a.log.Info("authorization file reloaded", "file", f.Path, "flag", f.Flag)
		}
	}
	if changed {
		a.cur.Store(&next)
	}
	return a.cur.Load()
}

// errNoIdentity is the refusal of a caller that presented nothing.
var errNoIdentity = errors.New("no client certificate or bearer token (authorization: Bearer <token>) presented")

// authenticate names the caller from its TLS state and its authorization
// header (gRPC metadata or HTTP). A certificate, when presented, decides:
// one that does not verify is refused even with a good token.
func (a *Authorizer) authenticate(state *tls.ConnectionState, authorization string, r *rules) (Caller, error) {
	if state != nil && len(state.PeerCertificates) > 0 && a.tls != nil {
		leaf, err := a.tls.VerifyClient(state)
		if err != nil {
			return Caller{}, fmt.Errorf("client certificate %q refused: %w", state.PeerCertificates[0].Subject.CommonName, err)
		}
		return Caller{Kind: KindCert, Name: certName(leaf.URIs, leaf.Subject.CommonName, leaf.DNSNames)}, nil
	}
	if authorization == "" {
		return Caller{}, errNoIdentity
	}
	scheme, token, ok := strings.Cut(authorization, " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(token) == "" {
		return Caller{}, errors.New("authorization: want \"Bearer <token>\"")
	}
	name, ok := r.tokens.lookup(strings.TrimSpace(token))
	if !ok {
		// Never the token itself: refusals reach logs.
		return Caller{}, errors.New("bearer token not in -auth.tokens-file (revoked, or never issued)")
	}
	return Caller{Kind: KindToken, Name: name}, nil
}

// certName is a certificate's caller name: its first URI SAN (a SPIFFE
// ID names a workload), else its common name, else its first DNS name.
func certName(uris []*url.URL, cn string, dns []string) string {
	switch {
	case len(uris) > 0:
		return uris[0].String()
	case cn != "":
		return cn
	case len(dns) > 0:
		return dns[0]
	}
	return ""
}

// decision is the outcome of checking one call.
type decision struct {
	caller Caller
	perm   Permission
	open   bool
	err    error // a status error, nil when allowed
}

// check decides whether the caller with this TLS state and authorization
// may call fullMethod.
func (a *Authorizer) check(fullMethod string, state *tls.ConnectionState, authorization string) decision {
	perm, open, known := Method(fullMethod)
	if open {
		return decision{open: true}
	}
	return a.decide(fullMethod, perm, known, state, authorization)
}

// decide checks a call of what (a method, or an HTTP request) that needs
// perm; known is false for a method without a permission.
func (a *Authorizer) decide(what string, perm Permission, known bool, state *tls.ConnectionState, authorization string) decision {
	r := a.rules()
	caller, err := a.authenticate(state, authorization, r)
	d := decision{caller: caller, perm: perm}
	switch {
	case err != nil:
		d.err = status.Errorf(codes.Unauthenticated, "%s: %v", what, err)
	case !known:
		d.err = status.Errorf(codes.PermissionDenied, "%s: no permission is defined for this method; it is refused to every caller", what)
	default:
		held := r.policy.permissions(caller)
		if !containsPerm(held, perm) {
			d.err = status.Errorf(codes.PermissionDenied, "%s needs permission %q; %s holds %s in -auth.policy-file", what, perm, caller, describe(held))
		}
	}
	if d.err != nil {
		a.refused.WithLabelValues(status.Code(d.err).String(), string(perm)).Inc()
	}
	return d
}

func describe(ps []Permission) string {
	if len(ps) == 0 {
		return "none"
	}
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = string(p)
	}
	return strings.Join(s, ",")
}

type callerKey struct{}

// CallerFrom returns the caller of an authorized call; false when
// authorization is off or the method is open.
func CallerFrom(ctx context.Context) (Caller, bool) {
	c, ok := ctx.Value(callerKey{}).(Caller)
	return c, ok
}

func withCaller(ctx context.Context, c Caller) context.Context {
	return context.WithValue(ctx, callerKey{}, c)
}
