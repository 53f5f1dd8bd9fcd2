// Package console is the web console: one page, with its stylesheet and
// script, embedded in the binary (embed.FS) and served on every process's
// HTTP port at / (the page) and /console/... (its assets). Nothing is
// built on the user's machine and no library is loaded from elsewhere:
// the script is plain JavaScript and the pictures (the partition ring,
// the charts) are SVG it draws itself.
//
// The page reads only public APIs, with the caller's own permissions:
// queryd's JSON API (/v1/ads/...) for counts and top ads, and the
// coordinator's read RPCs under /v1/cluster/... (package gateway) for the
// members, the partition map, lag, watermarks, hot keys and handoffs, and
// what the routers ingested (GetClusterStatus's routers). The ingest rate
// is the routers' own accepted-per-second over their last minute, never a
// difference of their totals: each router counts from its own start, so a
// restart would read as a negative rate. It polls them every 2 seconds and keeps the last 10 minutes of samples in
// the browser for its charts. A bearer token pasted into the page is kept
// in the tab's sessionStorage and sent as Authorization; with mutual TLS
// the browser's client certificate does. The page and its assets are
// public: they hold no data, and a browser must be able to load the page
// before it can ask for a token.
//
// Caching: every answer carries a strong ETag (a hash of the content) and
// Cache-Control: no-cache, so a browser revalidates each load and gets 304
// while the binary is the same, and the new assets at once after an
// upgrade; no file name carries a version. The page sends a
// Content-Security-Policy that allows only same-origin scripts, styles and
// requests.
package console
