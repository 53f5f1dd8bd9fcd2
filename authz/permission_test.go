package authz_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc"

	"github.com/clickagg/clickagg/authz"
	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// TestEveryMethodHasAPermission: a new RPC must be given a permission
// before it can be called at all; this test names the one that has none.
func TestEveryMethodHasAPermission(t *testing.T) {
	for _, sd := range []grpc.ServiceDesc{clickaggv1.IngestService_ServiceDesc, clickaggv1.QueryService_ServiceDesc,
		clickaggv1.CoordinatorService_ServiceDesc, clickaggv1.AggregatorService_ServiceDesc, clickaggv1.RouterService_ServiceDesc} {
		var names []string
		for _, m := range sd.Methods {
			names = append(names, m.MethodName)
		}
		for _, s := range sd.Streams {
			names = append(names, s.StreamName)
		}
		for _, n := range names {
			full := "/" + sd.ServiceName + "/" + n
			if _, open, known := authz.Method(full); !known || open {
				t.Errorf("%s has no permission in authz's table", full)
			}
		}
	}
	if _, _, known := authz.Method("/clickagg.v1.CoordinatorService/Unheard"); known {
		t.Fatal("an unknown method is known")
	}
	if _, open, _ := authz.Method("/grpc.health.v1.Health/Check"); !open {
		t.Fatal("health is not open")
	}
}

func TestValidateNamesTheLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	good := write("good", "cert:a internal\n")
	for _, c := range []struct {
		cfg  authz.Config
		want string
	}{
		{authz.Config{TokensFile: good}, "-auth.tokens-file: set without -auth.policy-file"},
		{authz.Config{PolicyFile: filepath.Join(dir, "missing")}, "-auth.policy-file: open"},
		{authz.Config{PolicyFile: write("p1", "# ok\nuser:bob query\n")}, "line 2: \"user:bob\": want cert:<name> or token:<name>"},
		{authz.Config{PolicyFile: write("p2", "cert:bob read\n")}, `line 1: unknown permission "read"`},
		{authz.Config{PolicyFile: write("p3", "cert:[bob query\n")}, "syntax error in pattern"},
		{authz.Config{PolicyFile: good, TokensFile: write("t1", "bob hunter2\n")}, "line 1 (bob): want sha256:"},
		{authz.Config{PolicyFile: good, TokensFile: write("t2", "bob sha256:"+strings.Repeat("ab", 32)+"\nbob sha256:"+strings.Repeat("cd", 32)+"\n")}, `token name "bob" given twice`},
		{authz.Config{PolicyFile: good, TokensFile: write("t3", "bob sha256:"+strings.Repeat("ab", 32)+"\nann sha256:"+strings.Repeat("ab", 32)+"\n")}, "ann has the same token as bob"},
	} {
		err := c.cfg.Validate()
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.cfg, err, c.want)
		}
		if err != nil && strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error echoes a token: %v", err)
		}
	}
}
