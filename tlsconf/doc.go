// Package tlsconf is the TLS every clickagg listener and client will use:
// a certificate and key, a CA that verifies the other side, and whether a
// server asks its clients for certificates (mutual TLS between cluster
// members). It is configured by -tls.* flags and builds *tls.Config values
// and gRPC transport credentials; it does not decide who may call what,
// it only reports who the verified peer is (PeerIdentity) for the
// authorization that will. The etcd client loads its own files the same
// way, from -etcd.cert-file, -etcd.key-file and -etcd.ca-file
// (Config.FlagPrefix), so that its errors name those flags.
//
// # Reloading
//
// Certificates are files, as Kubernetes Secrets and cert-manager mount
// them, and they are rotated in place. Every handshake, server or client,
// first checks the certificate, key and CA files (package watchfile:
// three stat calls, a few microseconds beside a handshake's signature)
// and, when a content differs, parses the whole set and swaps it in.
// Checking at the handshake rather than polling on a timer means no
// window in which a new connection gets a certificate the files no
// longer hold; gRPC connections are long-lived, so handshakes are rare.
//
// A set that does not load (a key half-written by a non-atomic rotation,
// a certificate that does not match its key, a missing file) leaves the
// last good set in use: handshakes go on with the old certificate, the
// error is logged once per distinct error, and the next handshake tries
// again. At start (Load) the same errors are final and name the flag.
//
// # Server, client, CA
//
// A server presents -tls.cert-file and, with -tls.client-auth, verifies
// client certificates against -tls.ca-file; its per-handshake config
// comes from tls.Config.GetConfigForClient so that a new CA applies to
// the next handshake. A client verifies the server against -tls.ca-file
// (the system's roots when empty) and presents -tls.cert-file when the
// server asks; its gRPC credentials build a fresh config per handshake
// for the same reason. -tls.client-auth "verify-if-given" lets clients
// without certificates in (they will carry bearer tokens) while still
// verifying those that present one.
//
// The HTTP listener (/metrics, probes, queryd's JSON API) takes the same
// certificate from HTTPServerConfig, which asks for client certificates
// and verifies those given but never requires one: the kubelet's probes
// and Prometheus's scrapes have none.
package tlsconf
