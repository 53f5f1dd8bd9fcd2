package cli

import (
	"flag"
	"io"
	"slices"
	"testing"

	"github.com/clickagg/clickagg/shipper"
)

func TestShipFlags(t *testing.T) {
	t.Setenv("CLICKAGG_SHIP_ROUTERS", "r1:9090, r2:9090")
	t.Setenv("CLICKAGG_SHIP_FORMAT", "json")
	fs := flag.NewFlagSet("clickagg ship", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cfg shipper.Config
	var sf shipFlags
	registerShipFlags(fs, &cfg, &sf)
	if err := parse(fs, []string{"-ship.files=/var/log/a.log,/var/log/b.log", "-ship.format=csv", "-id=web-1"}); err != nil {
		t.Fatal(err)
	}
	cfg.Host = sf.id
	if !slices.Equal(cfg.Files, []string{"/var/log/a.log", "/var/log/b.log"}) || !slices.Equal(cfg.Routers, []string{"r1:9090", "r2:9090"}) {
		t.Errorf("files %q routers %q", cfg.Files, cfg.Routers)
	}
	if cfg.Format != "csv" {
		t.Errorf("format %q, want the command line's csv", cfg.Format)
	}
	if err := cfg.Validate(); err != nil {
		t.Errorf("validate: %v", err)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if len(f.Usage) < 20 {
			t.Errorf("-%s: usage %q explains too little", f.Name, f.Usage)
		}
	})
}
