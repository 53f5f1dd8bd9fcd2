// Package loadgen generates synthetic clicks and sends them to a router:
// Zipf-distributed ads, a few hundred countries, many users and IPs, at a
// target rate, over the router's streaming Ingest API. `clickagg loadgen`
// and `clickagg dev` use it.
package loadgen
