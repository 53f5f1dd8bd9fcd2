package authz

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path"
	"strings"
)

// Caller kinds.
const (
	KindCert  = "cert"
	KindToken = "token"
)

// Caller is who made a call.
type Caller struct {
	Kind string // KindCert or KindToken
	Name string
}

// String is the caller as policies, logs and refusals name it:
// cert:clickagg-router, token:billing.
func (c Caller) String() string { return c.Kind + ":" + c.Name }

// grant is one line of a policy: callers matching the glob hold perms.
type grant struct {
	kind, glob string
	perms      []Permission
}

// policy is a parsed -auth.policy-file.
type policy []grant

// permissions returns what c holds: the union of the grants it matches.
func (p policy) permissions(c Caller) []Permission {
	var out []Permission
	for _, g := range p {
		if g.kind != c.Kind {
			continue
		}
		if ok, _ := path.Match(g.glob, c.Name); !ok {
			continue
		}
		for _, perm := range g.perms {
			if !containsPerm(out, perm) {
				out = append(out, perm)
			}
		}
	}
	return out
}

func containsPerm(ps []Permission, p Permission) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// parsePolicy reads lines of "<kind>:<name glob> <perm>[,<perm>...]";
// # starts a comment. Globs are path.Match patterns: * does not cross a
// slash, so spiffe://cluster/ns/clickagg/sa/* names one namespace's
// accounts.
func parsePolicy(data []byte) (policy, error) {
	var p policy
	err := eachLine(data, func(n int, fields []string) error {
		if len(fields) != 2 {
			return fmt.Errorf("line %d: want \"<kind>:<name> <permission>[,<permission>...]\", got %d fields", n, len(fields))
		}
		kind, glob, ok := strings.Cut(fields[0], ":")
		if !ok || (kind != KindCert && kind != KindToken) {
			return fmt.Errorf("line %d: %q: want cert:<name> or token:<name>", n, fields[0])
		}
		if glob == "" {
			return fmt.Errorf("line %d: %q: empty name", n, fields[0])
		}
		if _, err := path.Match(glob, ""); err != nil {
			return fmt.Errorf("line %d: %q: %w", n, glob, err)
		}
		g := grant{kind: kind, glob: glob}
		for _, s := range strings.Split(fields[1], ",") {
			perm, err := parsePermission(s)
			if err != nil {
				return fmt.Errorf("line %d: %w", n, err)
			}
			g.perms = append(g.perms, perm)
		}
		p = append(p, g)
		return nil
	})
	return p, err
}

// tokens maps the SHA-256 of each token to its name.
type tokens map[[sha256.Size]byte]string

// parseTokens reads lines of "<name> sha256:<64 hex digits>".
func parseTokens(data []byte) (tokens, error) {
	t := tokens{}
	names := map[string]bool{}
	err := eachLine(data, func(n int, fields []string) error {
		if len(fields) != 2 {
			return fmt.Errorf("line %d: want \"<name> sha256:<hex>\", got %d fields", n, len(fields))
		}
		name := fields[0]
		hexSum, ok := strings.CutPrefix(fields[1], "sha256:")
		var sum [sha256.Size]byte
		if b, err := hex.DecodeString(hexSum); !ok || err != nil || len(b) != sha256.Size {
			// The line's own text stays out of the error: it might be a
			// token pasted where its hash belongs.
			return fmt.Errorf("line %d (%s): want sha256: and the 64 hex digits of the token's SHA-256 (printf %%s \"$TOKEN\" | sha256sum)", n, name)
		} else {
			copy(sum[:], b)
		}
		if names[name] {
			return fmt.Errorf("line %d: token name %q given twice", n, name)
		}
		if other, dup := t[sum]; dup {
			return fmt.Errorf("line %d: %s has the same token as %s", n, name, other)
		}
		names[name] = true
		t[sum] = name
		return nil
	})
	return t, err
}

func (t tokens) lookup(token string) (string, bool) {
	name, ok := t[sha256.Sum256([]byte(token))]
	return name, ok
}

// eachLine calls f with the fields of every line that is not blank or a
// comment, numbered from 1.
func eachLine(data []byte, f func(n int, fields []string) error) error {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; sc.Scan(); n++ {
		line, _, _ := strings.Cut(sc.Text(), "#")
		fields := strings.Fields(line)
		if len(fields) == 0 {
			continue
		}
		if err := f(n, fields); err != nil {
			return err
		}
	}
	return sc.Err()
}
