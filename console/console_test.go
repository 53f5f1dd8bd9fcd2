package console

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestHandler(t *testing.T) {
	h, err := New(Info{Member: "queryd-<1>", Roles: []string{"queryd", "router"}})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		path, method string
		code         int
		contentType  string
		contains     string
	}{
		{"/", http.MethodGet, 200, "text/html; charset=utf-8", `<script src="/console/console.js" defer></script>`},
		{"/", http.MethodHead, 200, "text/html; charset=utf-8", ""},
		{"/console/console.js", http.MethodGet, 200, "text/javascript; charset=utf-8", `"use strict"`},
		{"/console/console.css", http.MethodGet, 200, "text/css; charset=utf-8", ".tiles"},
		{"/console/favicon.svg", http.MethodGet, 200, "image/svg+xml", "<svg"},
		{"/console/", http.MethodGet, 404, "", ""},
		{"/console/index.html", http.MethodGet, 404, "", ""},
		{"/console/nope.js", http.MethodGet, 404, "", ""},
		{"/index.html", http.MethodGet, 404, "", ""},
	} {
		t.Run(tc.method+tc.path, func(t *testing.T) {
			rr := httptest.NewRecorder()
			h.ServeHTTP(rr, httptest.NewRequest(tc.method, tc.path, nil))
			if rr.Code != tc.code {
				t.Fatalf("%s %s: %d, want %d", tc.method, tc.path, rr.Code, tc.code)
			}
			if tc.code != 200 {
				return
			}
			hd := rr.Header()
			if got := hd.Get("Content-Type"); got != tc.contentType {
				t.Errorf("Content-Type %q, want %q", got, tc.contentType)
			}
			if got := hd.Get("Cache-Control"); got != "no-cache" {
				t.Errorf("Cache-Control %q, want no-cache", got)
			}
			if hd.Get("ETag") == "" || hd.Get("X-Content-Type-Options") != "nosniff" {
				t.Errorf("ETag %q, X-Content-Type-Options %q", hd.Get("ETag"), hd.Get("X-Content-Type-Options"))
			}
			if tc.method == http.MethodHead && rr.Body.Len() != 0 {
				t.Errorf("HEAD answered %d bytes of body", rr.Body.Len())
			}
			if !strings.Contains(rr.Body.String(), tc.contains) {
				t.Errorf("body lacks %q", tc.contains)
			}
		})
	}
}

// TestPageNamesTheProcess: the page says which member serves it, escaped,
// and sends a policy that allows only its own origin.
func TestPageNamesTheProcess(t *testing.T) {
	h, err := New(Info{Member: "queryd-<1>", Roles: []string{"queryd", "router"}, Version: "v1.2.3"})
	if err != nil {
		t.Fatal(err)
	}
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/", nil))
	body := rr.Body.String()
	for _, want := range []string{`data-member="queryd-&lt;1&gt;"`, `queryd, router`, `v1.2.3`} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q", want)
		}
	}
	if strings.Contains(body, "queryd-<1>") {
		t.Error("the member ID is not escaped")
	}
	csp := rr.Header().Get("Content-Security-Policy")
	if !strings.Contains(csp, "script-src 'self'") || !strings.Contains(csp, "connect-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
}

// TestRevalidation: a browser that has the current version gets 304 and
// no body; one with another version gets the asset.
func TestRevalidation(t *testing.T) {
	h, err := New(Info{Member: "m"})
	if err != nil {
		t.Fatal(err)
	}
	rr := httptest.NewRecorder()
	h.ServeHTTP(rr, httptest.NewRequest(http.MethodGet, "/console/console.js", nil))
	etag := rr.Header().Get("ETag")
	for _, tc := range []struct {
		ifNoneMatch string
		code        int
	}{{etag, http.StatusNotModified}, {`"older"`, http.StatusOK}} {
		req := httptest.NewRequest(http.MethodGet, "/console/console.js", nil)
		req.Header.Set("If-None-Match", tc.ifNoneMatch)
		rr := httptest.NewRecorder()
		h.ServeHTTP(rr, req)
		if rr.Code != tc.code {
			t.Errorf("If-None-Match %s: %d, want %d", tc.ifNoneMatch, rr.Code, tc.code)
		}
		if tc.code == http.StatusNotModified && rr.Body.Len() != 0 {
			t.Errorf("304 with %d bytes of body", rr.Body.Len())
		}
	}
}
