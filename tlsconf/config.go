package tlsconf

import (
	"crypto/tls"
	"flag"
	"fmt"
)

// Client authentication modes, the values of -tls.client-auth.
const (
	ClientAuthNone          = "none"
	ClientAuthVerifyIfGiven = "verify-if-given"
	ClientAuthRequire       = "require"
)

// Config names the TLS files and policy. The zero value is TLS off.
type Config struct {
	CertFile   string
	KeyFile    string
	CAFile     string
	ClientAuth string
	ServerName string
	// FlagPrefix is the prefix of the flags that errors name: "tls" when
	// empty (-tls.cert-file); the etcd client's files are -etcd.cert-file.
	FlagPrefix string
}

// flag returns the flag of the setting name, e.g. "-tls.cert-file".
func (c *Config) flag(name string) string {
	p := c.FlagPrefix
	if p == "" {
		p = "tls"
	}
	return "-" + p + "." + name
}

// RegisterFlags registers the -tls.* flags.
func (c *Config) RegisterFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.CertFile, "tls.cert-file", "", "PEM file of this process's certificate (and intermediates), shown by its servers and clients; reloaded when it changes; empty: TLS off unless -tls.ca-file is set")
	fs.StringVar(&c.KeyFile, "tls.key-file", "", "PEM file of the private key of -tls.cert-file; reloaded with it")
	fs.StringVar(&c.CAFile, "tls.ca-file", "", "PEM file of the CAs that servers' (and, with -tls.client-auth, clients') certificates must chain to; reloaded on change; empty: system roots, no client certificates")
	fs.StringVar(&c.ClientAuth, "tls.client-auth", ClientAuthNone, "whether servers verify client certificates against -tls.ca-file: none, verify-if-given (clients without one may still use a token), or require (mutual TLS)")
	fs.StringVar(&c.ServerName, "tls.server-name", "", "name servers' certificates must hold; empty: the host of each address dialled")
}

// Enabled reports whether TLS is on: a certificate or a CA is given.
func (c *Config) Enabled() bool { return c.CertFile != "" || c.CAFile != "" }

// Validate checks the flags together and that the files load: a missing
// file, a certificate that does not match its key, or a CA file without
// certificates is an error naming the flag.
func (c *Config) Validate() error {
	if err := c.validateFlags(); err != nil || !c.Enabled() {
		return err
	}
	_, err := newFileSet(c).load()
	return err
}

// validateFlags checks the flags together, without reading the files.
func (c *Config) validateFlags() error {
	if (c.CertFile == "") != (c.KeyFile == "") {
		if c.CertFile == "" {
			return fmt.Errorf("%s: set without %s", c.flag("key-file"), c.flag("cert-file"))
		}
		return fmt.Errorf("%s: set without %s", c.flag("cert-file"), c.flag("key-file"))
	}
	auth, err := c.clientAuth()
	if err != nil {
		return err
	}
	if auth != tls.NoClientCert {
		if c.CertFile == "" {
			return fmt.Errorf("%s %s: needs %s, the server's certificate", c.flag("client-auth"), c.ClientAuth, c.flag("cert-file"))
		}
		if c.CAFile == "" {
			return fmt.Errorf("%s %s: needs %s, the CA client certificates must chain to", c.flag("client-auth"), c.ClientAuth, c.flag("ca-file"))
		}
	}
	if c.ServerName != "" && !c.Enabled() {
		return fmt.Errorf("%s: set without %s or %s", c.flag("server-name"), c.flag("ca-file"), c.flag("cert-file"))
	}
	return nil
}

func (c *Config) clientAuth() (tls.ClientAuthType, error) {
	switch c.ClientAuth {
	case "", ClientAuthNone:
		return tls.NoClientCert, nil
	case ClientAuthVerifyIfGiven:
		return tls.VerifyClientCertIfGiven, nil
	case ClientAuthRequire:
		return tls.RequireAndVerifyClientCert, nil
	}
	return 0, fmt.Errorf("%s %q: want none, verify-if-given or require", c.flag("client-auth"), c.ClientAuth)
}
