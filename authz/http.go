package authz

import (
	"encoding/json"
	"net/http"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// HTTP serves h to callers holding perm, identified by the same rules as
// gRPC calls: the client certificate
// of the connection or an Authorization: Bearer header. Refusals are 401
// (with WWW-Authenticate) and 403, in the JSON shape of the gateway's
// other errors.
func (a *Authorizer) HTTP(perm Permission, h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d := a.decide(r.Method+" "+r.URL.Path, perm, true, r.TLS, r.Header.Get("Authorization"))
		if d.err == nil {
			h.ServeHTTP(w, r.WithContext(withCaller(r.Context(), d.caller)))
			return
		}
		st := status.Convert(d.err)
		code := http.StatusForbidden
		if st.Code() == codes.Unauthenticated {
			code = http.StatusUnauthorized
			w.Header().Set("WWW-Authenticate", `Bearer realm="clickagg"`)
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(struct {
			Code    codes.Code `json:"code"`
			Message string     `json:"message"`
		}{st.Code(), st.Message()})
	})
}
