package tlsconf

import (
	"context"
	"slices"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
)

// Identity is who a verified client certificate names, for authorization.
type Identity struct {
	CommonName string
	URIs       []string // URI SANs, e.g. spiffe://clickagg/router
	DNSNames   []string
}

// PeerIdentity returns the identity of the gRPC call's peer when it
// presented a certificate that chained to -tls.ca-file; false for a plain
// connection or a client without a (verified) certificate.
func PeerIdentity(ctx context.Context) (Identity, bool) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return Identity{}, false
	}
	info, ok := p.AuthInfo.(credentials.TLSInfo)
	// Only verified chains count: PeerCertificates alone may hold an
	// unverified certificate under other ClientAuth modes.
	if !ok || len(info.State.VerifiedChains) == 0 || len(info.State.VerifiedChains[0]) == 0 {
		return Identity{}, false
	}
	leaf := info.State.VerifiedChains[0][0]
	id := Identity{CommonName: leaf.Subject.CommonName, DNSNames: slices.Clone(leaf.DNSNames)}
	for _, u := range leaf.URIs {
		id.URIs = append(id.URIs, u.String())
	}
	return id, true
}
