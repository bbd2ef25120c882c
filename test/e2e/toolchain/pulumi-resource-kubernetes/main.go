// Command pulumi-resource-kubernetes serves the Kubernetes provider of the module this wrapper
// requires.
//
// Upstream's cmd/pulumi-resource-kubernetes embeds schema-embed.json and
// terraform-mapping-embed.json, which its go:generate step writes at release time and which are
// therefore not in the module zip. The zip does hold the committed schema.json and
// terraform-mapping.json beside that command: build.sh copies those two files from the module
// cache next to this file in its staging directory outside the repository (tool.env EMBED), and
// this main sets the provider version in the schema at start-up, as upstream's generator does.
package main

import (
	_ "embed"
	"encoding/json"

	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/provider"
	"github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version"
	"github.com/pulumi/pulumi/sdk/v3/go/common/util/cmdutil"
)

//go:embed schema.json
var schema []byte

//go:embed terraform-mapping.json
var terraformMapping []byte

func main() {
	provider.Serve("kubernetes", version.Version, withVersion(schema, version.Version), terraformMapping)
}

// withVersion returns the schema with its top-level "version" set to v.
func withVersion(schema []byte, v string) []byte {
	var spec map[string]json.RawMessage
	if err := json.Unmarshal(schema, &spec); err != nil {
		cmdutil.ExitError("embedded schema: " + err.Error())
	}
	spec["version"], _ = json.Marshal(v)
	out, err := json.Marshal(spec)
	if err != nil {
		cmdutil.ExitError("embedded schema: " + err.Error())
	}
	return out
}
