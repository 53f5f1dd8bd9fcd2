// Command clickagg runs any role of the clickagg cluster; see package cli.
package main

import (
	"os"

	"github.com/clickagg/clickagg/cli"
)

func main() {
	os.Exit(cli.Main(os.Args[1:]))
}
