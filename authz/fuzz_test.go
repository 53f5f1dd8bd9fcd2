package authz

import (
	"encoding/hex"
	"maps"
	"slices"
	"strings"
	"testing"
)

// FuzzParsePolicy feeds -auth.policy-file's parser arbitrary files. It must
// never panic, every accepted grant must hold a valid glob and only known
// permissions, and the policy written out again parses to itself.
func FuzzParsePolicy(f *testing.F) {
	for _, s := range []string{
		"cert:clickagg-* internal,query # members\ntoken:billing query\n",
		"cert:spiffe://cluster/ns/clickagg/sa/* admin\n\n  # comment only\n",
		"token:[a-\n",
		"cert:x ingest,bogus\n",
		"cert: query\n",
		"cert:x\tingest,ingest  \r\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := parsePolicy(data)
		if err != nil {
			return
		}
		var lines []string
		for _, g := range p {
			if g.kind != KindCert && g.kind != KindToken || g.glob == "" {
				t.Fatalf("accepted grant %+v", g)
			}
			perms := make([]string, len(g.perms))
			for i, perm := range g.perms {
				if !slices.Contains(Permissions, perm) {
					t.Fatalf("accepted permission %q", perm)
				}
				perms[i] = string(perm)
			}
			lines = append(lines, g.kind+":"+g.glob+" "+strings.Join(perms, ","))
		}
		again, err := parsePolicy([]byte(strings.Join(lines, "\n")))
		if err != nil {
			t.Fatalf("policy written again does not parse: %v", err)
		}
		if !slices.EqualFunc(again, p, func(a, b grant) bool {
			return a.kind == b.kind && a.glob == b.glob && slices.Equal(a.perms, b.perms)
		}) {
			t.Fatalf("policy %+v written again parses to %+v", p, again)
		}
	})
}

// FuzzParseTokens feeds -auth.token-file's parser arbitrary files. It must
// never panic; an accepted file names each token once, and written out
// again parses to itself.
func FuzzParseTokens(f *testing.F) {
	f.Add([]byte("billing sha256:" + strings.Repeat("ab", 32) + "\nops sha256:" + strings.Repeat("0c", 32) + " # on-call\n"))
	f.Add([]byte("billing sha256:" + strings.Repeat("ab", 32) + "\nbilling sha256:" + strings.Repeat("cd", 32) + "\n"))
	f.Add([]byte("raw-token-pasted s3cr3t\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		toks, err := parseTokens(data)
		if err != nil {
			return
		}
		var lines []string
		names := map[string]bool{}
		for sum, name := range toks {
			if names[name] || name == "" {
				t.Fatalf("accepted name %q twice or empty", name)
			}
			names[name] = true
			lines = append(lines, name+" sha256:"+hex.EncodeToString(sum[:]))
		}
		again, err := parseTokens([]byte(strings.Join(lines, "\n")))
		if err != nil {
			t.Fatalf("tokens written again do not parse: %v", err)
		}
		if !maps.Equal(again, toks) {
			t.Fatalf("tokens %v written again parse to %v", toks, again)
		}
	})
}
