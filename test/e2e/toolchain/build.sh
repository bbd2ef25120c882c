#!/usr/bin/env bash
# Builds the real-engine toolchain (Pulumi CLI, language host, provider plugins, a Kubernetes
# control plane) from the Go module proxy, one wrapper module per tool in this folder, into a cache
# outside the repository. A tool is rebuilt only when its wrapper (go.mod, go.sum, *.go, tool.env)
# changes: the cache key is a hash of those files.
#
#   test/e2e/toolchain/build.sh [tool ...]   # default: every tool folder here
#   prints the bin directory (put it first on PATH) on its last line
#
# Each tool folder holds go.mod + go.sum (+ main.go where the upstream command cannot be built as
# it is) and tool.env, which sets:
#   PKG      the package(s) to build: an import path, or "." for a main of our own (the binary is
#            named after the last element of the wrapper's module path); several import paths
#            separated by spaces build several binaries in one go (one link each, shared compile)
#   LDFLAGS  optional, e.g. version stamping
#   EMBED    optional, files to take from a required module for a main of our own to go:embed:
#            "MODULE:PATH ..." (PATH relative to that module's root). The wrapper is then built from
#            a staging copy in the cache ($cache/<tool>/<key>/src) with each file copied in beside
#            main.go, so nothing is written into the repository.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${TASKFLEET_TOOLCHAIN_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/taskfleet/toolchain}"
bin="$cache/bin"
mkdir -p "$bin"
export GOFLAGS="${GOFLAGS:-} -mod=readonly -trimpath"
export CGO_ENABLED="${CGO_ENABLED:-0}"

tools=("$@")
if ((${#tools[@]} == 0)); then
  for d in "$here"/*/; do [ -f "$d/tool.env" ] && tools+=("$(basename "$d")"); done
fi

for tool in "${tools[@]}"; do
  dir="$here/$tool"
  [ -f "$dir/tool.env" ] || { echo "build.sh: no tool folder $dir" >&2; exit 2; }
  key=$(cd "$dir" && cat go.mod go.sum tool.env $(ls *.go 2>/dev/null) | sha256sum | cut -c1-16)
  out="$cache/$tool/$key"
  if [ ! -f "$out/.done" ]; then
    PKG="" LDFLAGS="" EMBED=""
    # shellcheck disable=SC1091
    source "$dir/tool.env"
    echo "build.sh: building $tool ($key)" >&2
    start=$SECONDS
    rm -rf "$out" && mkdir -p "$out"
    read -ra pkgs <<<"$PKG"
    src="$dir"
    if [ -n "${EMBED:-}" ]; then
      src="$out/src"
      mkdir -p "$src"
      (cd "$dir" && cp go.mod go.sum $(ls *.go 2>/dev/null) "$src/")
      for e in $EMBED; do
        moddir=$(cd "$src" && go mod download -json "${e%%:*}" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
        [ -f "$moddir/${e#*:}" ] || { echo "build.sh: $tool: no ${e#*:} in ${e%%:*} ($moddir)" >&2; exit 1; }
        install -m 0644 "$moddir/${e#*:}" "$src/"
      done
    fi
    (cd "$src" && go build -ldflags "${LDFLAGS:-}" -o "$out/" "${pkgs[@]}")
    rm -rf "$out/src"
    touch "$out/.done"
    echo "build.sh: $tool built in $((SECONDS - start))s" >&2
  fi
  # Hard links where possible: `pulumi` looks for its bundled language host beside its own resolved
  # path, so a symlinked `pulumi` would warn that it took pulumi-language-nodejs from $PATH.
  for b in "$out"/*; do
    if [ -f "$b" ]; then ln -f "$b" "$bin/" 2>/dev/null || ln -sfn "$b" "$bin/$(basename "$b")"
    else ln -sfn "$b" "$bin/$(basename "$b")"; fi
  done
done
echo "$bin"
