package authz

import (
	"fmt"
	"strings"

	clickaggv1 "github.com/clickagg/clickagg/proto/clickagg/v1"
)

// Permission is what a caller must hold to call a method.
type Permission string

// The permissions, the values of -auth.policy-file's lists.
const (
	// Ingest sends clicks: IngestService.
	Ingest Permission = "ingest"
	// Query reads counts and top lists (QueryService), and the cluster's
	// state from the coordinator, which changes nothing.
	Query Permission = "query"
	// Admin changes where partitions and hot ads are served.
	Admin Permission = "admin"
	// Internal is what cluster members call on each other:
	// AggregatorService, RouterService.
	Internal Permission = "internal"
)

// Permissions lists them in the order documentation shows them.
var Permissions = []Permission{Ingest, Query, Admin, Internal}

func parsePermission(s string) (Permission, error) {
	for _, p := range Permissions {
		if string(p) == s {
			return p, nil
		}
	}
	return "", fmt.Errorf("unknown permission %q (want ingest, query, admin or internal)", s)
}

// methods is the permission of every clickagg method.
var methods = map[string]Permission{
	clickaggv1.IngestService_Ingest_FullMethodName:       Ingest,
	clickaggv1.IngestService_IngestStream_FullMethodName: Ingest,

	clickaggv1.QueryService_GetAggregatedCount_FullMethodName: Query,
	clickaggv1.QueryService_GetPopularAds_FullMethodName:      Query,
	clickaggv1.QueryService_WatchPopularAds_FullMethodName:    Query,

	clickaggv1.CoordinatorService_ListMembers_FullMethodName:      Query,
	clickaggv1.CoordinatorService_GetAssignment_FullMethodName:    Query,
	clickaggv1.CoordinatorService_GetClusterStatus_FullMethodName: Query,
	clickaggv1.CoordinatorService_GetLoad_FullMethodName:          Query,
	clickaggv1.CoordinatorService_GetHotKeys_FullMethodName:       Query,
	clickaggv1.CoordinatorService_GetHandoffs_FullMethodName:      Query,
	clickaggv1.CoordinatorService_MovePartition_FullMethodName:    Admin,
	clickaggv1.CoordinatorService_DrainMember_FullMethodName:      Admin,
	clickaggv1.CoordinatorService_Rebalance_FullMethodName:        Admin,
	clickaggv1.CoordinatorService_SplitKey_FullMethodName:         Admin,
	clickaggv1.CoordinatorService_UnsplitKey_FullMethodName:       Admin,

	clickaggv1.AggregatorService_Count_FullMethodName:           Internal,
	clickaggv1.AggregatorService_TopAds_FullMethodName:          Internal,
	clickaggv1.AggregatorService_MinuteRevisions_FullMethodName: Internal,
	clickaggv1.AggregatorService_PartitionStatus_FullMethodName: Internal,
	clickaggv1.AggregatorService_Release_FullMethodName:         Internal,

	clickaggv1.RouterService_RouterStatus_FullMethodName: Internal,
}

// openServices need no identity: probes and grpcurl call them without
// credentials. Reflection can be switched off instead (-grpc.reflection).
var openServices = []string{
	"/grpc.health.v1.Health/",
	"/grpc.reflection.v1.ServerReflection/",
	"/grpc.reflection.v1alpha.ServerReflection/",
}

// Method returns the permission that fullMethod (/package.Service/Method)
// needs; open is true for the methods that need none. An unknown method
// has neither: it is refused.
func Method(fullMethod string) (p Permission, open, known bool) {
	for _, s := range openServices {
		if strings.HasPrefix(fullMethod, s) {
			return "", true, true
		}
	}
	p, known = methods[fullMethod]
	return p, false, known
}

// Methods returns the methods that need p, for documentation and tests.
func Methods(p Permission) []string {
	var out []string
	for m, mp := range methods {
		if mp == p {
			out = append(out, m)
		}
	}
	return out
}
