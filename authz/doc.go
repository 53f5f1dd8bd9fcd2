// Package authz decides who may call what: it identifies the caller of
// every gRPC call and HTTP request, checks that the caller holds the
// permission the method needs, refuses with UNAUTHENTICATED or
// PERMISSION_DENIED and a reason, and writes one audit line per admin
// call.
//
// # Callers
//
// A caller is a client certificate or a bearer token. A certificate
// (verified here against -tls.ca-file, see tlsconf.DeferClientVerification)
// is named by its first URI SAN, else its subject's common name, else its
// first DNS name: cert:clickagg-router. A token is named by its line in
// -auth.tokens-file, which holds only the token's SHA-256, so that the
// file (and a leak of it) does not hold the secret: token:billing. Tokens
// come as "authorization: Bearer <token>", in gRPC metadata or the HTTP
// header. A caller presenting both is named by its certificate.
//
// # Permissions
//
// Every method needs one permission (Method): ingest, query, admin or
// internal. -auth.policy-file grants them to callers by name, with
// globs. Health and reflection need none, since Kubernetes probes and
// grpcurl call them without credentials. A method missing from the table
// is refused to everyone: a new RPC is closed until someone decides who
// may call it.
//
// # Reloading
//
// The policy and token files are Secrets and ConfigMaps that change in
// place. They are checked (package watchfile) at most once a second,
// when a call comes; a file that no longer parses leaves the last good
// one in use and is logged once.
package authz
