package cli

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"slices"
	"testing"
	"time"

	"github.com/clickagg/clickagg/testserver"
)

// TestClusterAPIOnEveryProcess: the coordinator's read RPCs answer as
// JSON under /v1/cluster/ on the coordinator's HTTP port (in process)
// and on a queryd's, which has no coordinator and forwards to it, with
// the members etcd lists.
func TestClusterAPIOnEveryProcess(t *testing.T) {
	rs := testserver.Redis(t)
	etcd := testserver.Etcd(t)
	common := []string{"-http.addr=127.0.0.1:0", "-etcd.endpoints=" + etcd.Endpoint, "-cluster.partitions=4"}
	coord := startServer(t, append(common, "-target=coordinator", "-id=coordinator-1")...)
	qd := startServer(t, append(common, "-target=queryd", "-id=queryd-1", "-redis.addr="+rs.Addr, "-redis.password-file="+rs.PasswordFile)...)

	client := &http.Client{Timeout: 10 * time.Second}
	members := func(addr string) ([]string, error) {
		resp, err := client.Get("http://" + addr + "/v1/cluster/members")
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s: %s", resp.Status, body)
		}
		var lm struct{ Members []struct{ ID, Role string } }
		if err := json.Unmarshal(body, &lm); err != nil {
			return nil, err
		}
		var got []string
		for _, m := range lm.Members {
			got = append(got, m.Role+"/"+m.ID)
		}
		slices.Sort(got)
		return got, nil
	}
	want := []string{"coordinator/coordinator-1", "queryd/queryd-1"}
	for name, srv := range map[string]*Server{"coordinator": coord, "queryd": qd} {
		testserver.Eventually(t, 30*time.Second, func() error {
			got, err := members(srv.HTTPAddr())
			if err != nil {
				return fmt.Errorf("%s: %w", name, err)
			}
			if !slices.Equal(got, want) {
				return fmt.Errorf("%s: members %v, want %v", name, got, want)
			}
			return nil
		})
	}
}
