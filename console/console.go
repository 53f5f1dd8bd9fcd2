package console

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"strings"
	"time"
)

//go:embed assets
var assets embed.FS

// AssetPrefix is the path under which the page's assets are served.
const AssetPrefix = "/console/"

// Info is what the page says about the process serving it.
type Info struct {
	// Member is the process's -id.
	Member string
	// Roles are the roles it runs.
	Roles []string
	// Version is the process's version; empty until the build stamps one.
	Version string
}

// file is one answer, ready to serve.
type file struct {
	body        []byte
	etag        string
	contentType string
}

func newFile(body []byte, contentType string) file {
	sum := sha256.Sum256(body)
	return file{body: body, etag: `"` + hex.EncodeToString(sum[:16]) + `"`, contentType: contentType}
}

// contentTypes are the types of the asset kinds the page has; an asset of
// another kind is a mistake caught by New.
var contentTypes = map[string]string{
	".css": "text/css; charset=utf-8",
	".js":  "text/javascript; charset=utf-8",
	".svg": "image/svg+xml",
}

// csp lets the page load and call only its own origin.
const csp = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; " +
	"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler serves the page at / and the assets under /console/.
type Handler struct {
	page   file
	assets map[string]file // by name under AssetPrefix
}

// New renders the page for info and loads the assets.
func New(info Info) (*Handler, error) {
	h := &Handler{assets: map[string]file{}}
	tmpl, err := template.ParseFS(assets, "assets/index.html")
	if err != nil {
		return nil, fmt.Errorf("console page: %w", err)
	}
	var page bytes.Buffer
	if err := tmpl.Execute(&page, struct {
		Info
		RolesText string
	}{info, strings.Join(info.Roles, ", ")}); err != nil {
		return nil, fmt.Errorf("console page: %w", err)
	}
	h.page = newFile(page.Bytes(), "text/html; charset=utf-8")
	err = fs.WalkDir(assets, "assets", func(name string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || name == "assets/index.html" {
			return err
		}
		ct, ok := contentTypes[path.Ext(name)]
		if !ok {
			return fmt.Errorf("console asset %s: no content type for its extension", name)
		}
		body, err := assets.ReadFile(name)
		if err != nil {
			return err
		}
		h.assets[strings.TrimPrefix(name, "assets/")] = newFile(body, ct)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return h, nil
}

// ServeHTTP serves GET and HEAD of / and of the assets; anything else is
// 404 (the caller restricts methods, see cli's allow).
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f, ok := h.page, r.URL.Path == "/"
	if name, isAsset := strings.CutPrefix(r.URL.Path, AssetPrefix); isAsset {
		f, ok = h.assets[name]
	}
	if !ok {
		http.NotFound(w, r)
		return
	}
	hd := w.Header()
	hd.Set("Content-Type", f.contentType)
	hd.Set("ETag", f.etag)
	hd.Set("Cache-Control", "no-cache")
	hd.Set("X-Content-Type-Options", "nosniff")
	hd.Set("Referrer-Policy", "no-referrer")
	if f.contentType == h.page.contentType {
		hd.Set("Content-Security-Policy", csp)
		hd.Set("X-Frame-Options", "DENY")
	}
	// ServeContent answers If-None-Match with 304 and serves HEAD
	// without a body; no modification time: embedded files have none.
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}
