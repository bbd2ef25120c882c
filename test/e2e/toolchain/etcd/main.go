// Command etcd is the etcd server of go.etcd.io/etcd/server/v3, built under the name "etcd" (the
// upstream main package lives at the module root, so `go build` would name its binary "server").
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
