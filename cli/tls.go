package cli

import (
	"log/slog"

	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/clickagg/clickagg/tlsconf"
)

// clientCreds returns the gRPC credentials of a client configured by c:
// TLS when -tls.cert-file or -tls.ca-file is set, else plaintext, so that
// a process without -tls.* flags behaves as before they existed. A client
// presents its certificate only to servers that ask for one.
func clientCreds(c tlsconf.Config, lg *slog.Logger) (credentials.TransportCredentials, error) {
	if !c.Enabled() {
		return insecure.NewCredentials(), nil
	}
	t, err := tlsconf.Load(c, lg.With("component", "tls"))
	if err != nil {
		return nil, err
	}
	return t.ClientCredentials(), nil
}
