package authz

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync"

	"google.golang.org/grpc/credentials"

	"github.com/clickagg/clickagg/watchfile"
)

// RegisterTokenFlag registers -auth.token-file, the client side of
// bearer tokens, for the commands that call clickagg servers.
func RegisterTokenFlag(fs *flag.FlagSet, path *string) {
	fs.StringVar(path, "auth.token-file", "", "file holding the bearer token sent with every call, for servers run with -auth.policy-file; reloaded when it changes; needs TLS (-tls.ca-file)")
}

// TokenCredentials returns per-call credentials that send the token in
// path, read again when the file changes so that a rotated Secret is
// used without a restart. The file is read now, so that a missing or
// empty one is an error at start, naming -auth.token-file.
func TokenCredentials(path string) (credentials.PerRPCCredentials, error) {
	t := &tokenFile{f: watchfile.File{Flag: "-auth.token-file", Path: path}}
	if _, err := t.token(); err != nil {
		return nil, err
	}
	return t, nil
}

type tokenFile struct {
	mu  sync.Mutex
	f   watchfile.File
	cur string
}

func (t *tokenFile) token() (string, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	st, differ, err := t.f.Check()
	var tok string
	if err == nil && (differ || t.cur == "") {
		tok = strings.TrimSpace(string(st.Data))
		switch {
		case tok == "":
			err = fmt.Errorf("%s %s: %w", t.f.Flag, t.f.Path, errEmptyToken)
		case strings.ContainsAny(tok, " \t\r\n"):
			err = fmt.Errorf("%s %s: holds more than one word; want the token alone", t.f.Flag, t.f.Path)
		}
	}
	if err != nil {
		// A Secret being swapped: keep sending the last good token.
		if t.cur != "" {
			return t.cur, nil
		}
		return "", err
	}
	if tok != "" {
		t.cur = tok
	}
	t.f.Commit(st)
	return t.cur, nil
}

var errEmptyToken = errors.New("empty")

func (t *tokenFile) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	tok, err := t.token()
	if err != nil {
		return nil, err
	}
	return map[string]string{"authorization": "Bearer " + tok}, nil
}

// RequireTransportSecurity is true: a token sent in clear text is a token
// given to everyone on the path.
func (*tokenFile) RequireTransportSecurity() bool { return true }
