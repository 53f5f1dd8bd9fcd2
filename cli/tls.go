package cli

import (
	"errors"
	"flag"
	"log/slog"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/clickagg/clickagg/authz"
	"github.com/clickagg/clickagg/tlsconf"
)

// clientFlags are the flags of a command that calls clickagg servers.
type clientFlags struct {
	tls       tlsconf.Config
	tokenFile string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	c.tls.RegisterFlags(fs)
	authz.RegisterTokenFlag(fs, &c.tokenFile)
}

// dialOptions returns how a client configured by c reaches servers: TLS
// when -tls.cert-file or -tls.ca-file is set, else plaintext, so that a
// process without -tls.* flags behaves as before they existed; and the
// bearer token of -auth.token-file. A client presents its certificate
// only to servers that ask for one.
func (c *clientFlags) dialOptions(lg *slog.Logger) ([]grpc.DialOption, error) {
	if !c.tls.Enabled() {
		if c.tokenFile != "" {
			return nil, errors.New("-auth.token-file: needs TLS (-tls.ca-file): a token sent in clear text is given to everyone on the path")
		}
		return []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, nil
	}
	t, err := tlsconf.Load(c.tls, lg.With("component", "tls"))
	if err != nil {
		return nil, err
	}
	opts := []grpc.DialOption{grpc.WithTransportCredentials(t.ClientCredentials())}
	if c.tokenFile != "" {
		pc, err := authz.TokenCredentials(c.tokenFile)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithPerRPCCredentials(pc))
	}
	return opts, nil
}
