#!/usr/bin/env bash
# The real test bed for lwcontainer's end-to-end tests, brought up from nothing:
#   - a Docker engine of its own (Debian's docker.io) on its own socket, data root and bridge
#     (lwc-br0; never --bridge=none, which makes dockerd delete the host's docker0), so it never
#     meets another engine on the host;
#   - a shared mount under which each test gets its own CVMFS mounts directory (rshared needs it);
#   - Debian's docker-registry with htpasswd auth on loopback (tests that need a registry that
#     refuses pushes start their own from its config, with storage.maintenance.readonly on);
#   - cached fixture images: busybox, an automounter stand-in that bind-mounts the fixture CVMFS
#     after a delay, and a CMS-like Debian base with g++ and a cmsusr user;
#   - podman, configured the podman way (containers.conf, storage.conf: vfs, cgroupfs, runc, host
#     network, explicit ulimits, as this kind of machine needs), for root with a store of the
#     bed's own, and an ordinary user (lwc-podman: a subuid/subgid range, not in the docker
#     group, a private XDG_RUNTIME_DIR, a venv with lwcontainer's dependencies) with the CMS base
#     loaded into its own store.
# Usage: testbed.sh up | down | env | status
# Everything persistent (engine data, image cache, registry storage) lives in LWC_TESTBED_STATE;
# sockets, pids and the shared mount live in LWC_TESTBED_RUN. `down` stops the engine and the
# registry, unmounts the bed's mounts, deletes its bridge and both directories (and the
# benchmark's engine, when it runs): the machine is left as it was before `up`. Nothing here
# touches another engine, docker0, iptables or a mount outside those directories.
# LWC_TESTBED_IMAGES=none brings up engine, registry and mount without building fixture images.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
STATE=${LWC_TESTBED_STATE:-/var/lib/lwc-testbed}
RUN=${LWC_TESTBED_RUN:-/run/lwc-testbed}
PORT=${LWC_TESTBED_PORT:-5055}
SOCK="unix://$RUN/docker.sock"
REG_USER=lwc-tester
BRIDGE=${LWC_TESTBED_BRIDGE:-lwc-br0}
BRIDGE_CIDR=${LWC_TESTBED_BRIDGE_CIDR:-10.213.77.1/24}
BENCH_RUN=/run/lwc-bench
BENCH_STATE=/var/lib/lwc-bench
BENCH_BRIDGE=lwc-br-bench
GITLAB_CI_LOCAL=4.65.0  # the last release that runs on Node 18/20 (newer ones need Node 22)

log() { printf 'testbed: %s\n' "$*" >&2; }
docker() { command docker --host "$SOCK" "$@"; }

ensure_packages() {
  local missing=()
  command -v dockerd >/dev/null || missing+=(docker.io)
  command -v docker-registry >/dev/null || missing+=(docker-registry)
  command -v htpasswd >/dev/null || missing+=(apache2-utils)
  command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
  [ -x /bin/busybox ] && /bin/busybox --list >/dev/null 2>&1 || missing+=(busybox-static)
  command -v curl >/dev/null || missing+=(curl)
  command -v openssl >/dev/null || missing+=(openssl)  # the dind TLS test makes certificates
  command -v shellcheck >/dev/null || missing+=(shellcheck)  # the scripts are linted in tests
  command -v npm >/dev/null || missing+=(npm)  # gitlab-ci-local runs the scaffolded pipelines
  command -v rsync >/dev/null || missing+=(rsync)  # gitlab-ci-local copies the checkout with it
  command -v podman >/dev/null || missing+=(podman)  # the podman engine, root and rootless
  command -v newuidmap >/dev/null || missing+=(uidmap)
  command -v slirp4netns >/dev/null || missing+=(slirp4netns)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import ensurepip' 2>/dev/null \
    || missing+=(python3-venv)  # the podman user's own venv
  # the in-place layers applied by two independent appliers, capabilities read on the host, and
  # the capture's functions run with gawk as well as mawk
  command -v skopeo >/dev/null || missing+=(skopeo)
  command -v umoci >/dev/null || missing+=(umoci)
  command -v getcap >/dev/null || missing+=(libcap2-bin)
  command -v gawk >/dev/null || missing+=(gawk)
  # the benchmark's engine decompresses pulls as the recipe's docker:dind service does: with
  # unpigz (the dind image installs pigz; moby/moby#35697)
  command -v unpigz >/dev/null || missing+=(pigz)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    [ "$(id -u)" -eq 0 ] || { log "need root to install ${missing[*]}"; exit 1; }
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
  if [ "$(gitlab-ci-local --version 2>/dev/null)" != "$GITLAB_CI_LOCAL" ]; then
    log "installing gitlab-ci-local $GITLAB_CI_LOCAL (npm)"
    npm install --global --no-audit --no-fund "gitlab-ci-local@$GITLAB_CI_LOCAL" >/dev/null
  fi
}

bridge_up() { # name cidr: a bridge only this bed's engines use
  ip link show "$1" >/dev/null 2>&1 && return
  ip link add "$1" type bridge
  ip addr add "$2" dev "$1"
  ip link set "$1" up
}

engine_up() {
  mkdir -p "$STATE/docker" "$RUN"
  if docker info >/dev/null 2>&1; then return; fi
  log "starting dockerd on $SOCK"
  # A bridge of the bed's own: --bridge=none would make dockerd delete the host's docker0, and the
  # default bridge would collide with the user's engine. No iptables rules are touched; builds
  # need no network and the daemon reaches the loopback registry from the host namespace.
  bridge_up "$BRIDGE" "$BRIDGE_CIDR"
  setsid dockerd --host "$SOCK" --data-root "$STATE/docker" --exec-root "$RUN/exec" \
    --pidfile "$RUN/dockerd.pid" --bridge "$BRIDGE" --iptables=false --ip-masq=false \
    >"$STATE/dockerd.log" 2>&1 </dev/null &
  for _ in $(seq 120); do
    docker info >/dev/null 2>&1 && return
    sleep 0.5
  done
  log "dockerd did not come up; last log lines:"; tail -20 "$STATE/dockerd.log" >&2; exit 1
}

shared_mount_up() {
  mkdir -p "$RUN/shared"
  if ! findmnt -n -o PROPAGATION --target "$RUN/shared" | grep -q shared \
     || [ "$(findmnt -n -o TARGET --target "$RUN/shared")" != "$RUN/shared" ]; then
    mount --bind "$RUN/shared" "$RUN/shared"
    mount --make-rshared "$RUN/shared"
  fi
}

registry_config() { # port readonly
  cat <<YAML
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $STATE/registry/data}
  delete: {enabled: true}
  maintenance:
    readonly: {enabled: $2}
http: {addr: "127.0.0.1:$1"}
auth:
  htpasswd: {realm: lwc-testbed, path: $STATE/registry/htpasswd}
YAML
}

registry_up() {
  mkdir -p "$STATE/registry/data"
  if [ ! -s "$STATE/registry/password" ]; then
    head -c 18 /dev/urandom | base64 | tr -d '/+=' >"$STATE/registry/password"
    chmod 600 "$STATE/registry/password"
  fi
  htpasswd -Bbn "$REG_USER" "$(cat "$STATE/registry/password")" >"$STATE/registry/htpasswd"
  registry_config "$PORT" false >"$RUN/registry.yml"
  [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v2/")" = 401 ] && return
  log "starting registry on 127.0.0.1:$PORT"
  setsid docker-registry serve "$RUN/registry.yml" >"$STATE/registry.log" 2>&1 </dev/null &
  echo $! >"$RUN/registry.pid"
  for _ in $(seq 50); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$PORT/v2/")" = 401 ] && return
    sleep 0.2
  done
  log "registry did not come up:"; tail -5 "$STATE/registry.log" >&2; exit 1
}

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

busybox_rootfs() { # dir
  mkdir -p "$1/bin" "$1/tmp" "$1/etc" "$1/proc" "$1/sys" "$1/dev" "$1/root"
  chmod 755 "$1"; chmod 1777 "$1/tmp"
  cp /bin/busybox "$1/bin/busybox"
  for applet in $(/bin/busybox --list); do
    [ "$applet" = busybox ] || ln -sf busybox "$1/bin/$applet"
  done
  echo 'root:x:0:0:root:/root:/bin/sh' >"$1/etc/passwd"
  echo 'root:x:0:' >"$1/etc/group"
}

# Fixture images are tagged with a hash of what goes into them, so a change rebuilds them and an
# unchanged one is taken from the engine's cache. Bump a recipe's text to force a rebuild.
BUSYBOX_RECIPE="busybox-static rootfs v1"
CMS_BASE_RECIPE="mmdebstrap apt bookworm g++ make; useradd cmsusr 1000; USER cmsusr WORKDIR /home/cmsusr CMD bash v1"
# A Debian distro Python (PEP 668: pip refuses the system site), as groups' own job images have:
# the scaffolded publish job must install into a venv of its own there. With rsync it is also
# gitlab-ci-local's helper image (it copies checkouts and artifacts with bash and rsync).
PYTHON_RECIPE="mmdebstrap apt bookworm python3 python3-pip rsync; CMD bash v1"
fixture_hash() { { echo "$1"; shift; [ $# -eq 0 ] || cat "$@"; } | sha256sum | cut -c1-12; }

images_up() {
  local tmp
  BUSYBOX="lwc-testbed/busybox:$(fixture_hash "$BUSYBOX_RECIPE" /bin/busybox)"
  if ! have_image "$BUSYBOX"; then
    tmp=$(mktemp -d); busybox_rootfs "$tmp"
    tar -C "$tmp" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/sh"]' - "$BUSYBOX" >/dev/null
    rm -rf "$tmp"; log "built $BUSYBOX"
  fi

  local fixture_files
  fixture_files=$(find "$ROOT/tests/fixtures/cvmfs" "$HERE/automounter-standin.sh" -type f | sort)
  # shellcheck disable=SC2086
  AUTOMOUNTER="lwc-testbed/automounter:$(fixture_hash "$BUSYBOX_RECIPE" $fixture_files)"
  if ! have_image "$AUTOMOUNTER"; then
    tmp=$(mktemp -d); busybox_rootfs "$tmp"
    mkdir -p "$tmp/fixture" "$tmp/cvmfsmounts"
    cp -a "$ROOT/tests/fixtures/cvmfs/." "$tmp/fixture/"
    install -m 755 "$HERE/automounter-standin.sh" "$tmp/bin/automounter"
    tar -C "$tmp" -c . | docker import -c 'ENV PATH=/bin' -c 'CMD ["/bin/automounter"]' - "$AUTOMOUNTER" >/dev/null
    rm -rf "$tmp"; log "built $AUTOMOUNTER"
  fi

  CMS_BASE="lwc-testbed/cms-base:$(fixture_hash "$CMS_BASE_RECIPE")"
  if ! have_image "$CMS_BASE"; then
    log "building $CMS_BASE with mmdebstrap (about a minute, once)"
    tmp=$(mktemp -d)
    mmdebstrap --quiet --variant=apt --include=g++,make bookworm "$tmp/rootfs.tar" \
      --customize-hook='chroot "$1" useradd -m -u 1000 -s /bin/bash cmsusr' \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' >&2
    docker import -c 'USER cmsusr' -c 'WORKDIR /home/cmsusr' -c 'CMD ["/bin/bash"]' \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      "$tmp/rootfs.tar" "$CMS_BASE" >/dev/null
    rm -rf "$tmp"; log "built $CMS_BASE"
  fi

  PYTHON="lwc-testbed/python-debian:$(fixture_hash "$PYTHON_RECIPE")"
  if ! have_image "$PYTHON"; then
    log "building $PYTHON with mmdebstrap (about a minute, once)"
    tmp=$(mktemp -d)
    mmdebstrap --quiet --variant=apt --include=python3,python3-pip,rsync bookworm "$tmp/rootfs.tar" \
      --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' >&2
    docker import -c 'CMD ["/bin/bash"]' \
      -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      "$tmp/rootfs.tar" "$PYTHON" >/dev/null
    rm -rf "$tmp"; log "built $PYTHON"
  fi
}

# lwcontainer's dependencies as wheels for the Python of $PYTHON (bookworm: 3.11), downloaded
# once: the scaffolded pipelines' jobs install from a package index on loopback, offline.
wheels_up() {
  local requirements pip
  requirements=$(sed -n '/^install_requires =/,/^$/p' "$ROOT/setup.cfg" | tail -n +2 \
    | sed 's/#.*//; s/^ *//' | grep . | tr '\n' ' ')
  WHEELS="$STATE/wheels-$(fixture_hash "cp311 manylinux2014_x86_64 $requirements")"
  [ -f "$WHEELS/.complete" ] && return
  for pip in "$ROOT/.venv/bin/python" python3; do
    "$pip" -m pip --version >/dev/null 2>&1 && break
  done
  log "downloading lwcontainer's dependencies as wheels into $WHEELS (once)"
  rm -rf "$WHEELS" && mkdir -p "$WHEELS"
  # shellcheck disable=SC2086 # one word per requirement
  "$pip" -m pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version 3.11 --implementation cp --abi cp311 --platform manylinux2014_x86_64 \
    --platform manylinux_2_17_x86_64 --platform any --dest "$WHEELS" $requirements >&2
  touch "$WHEELS/.complete"
}

prune_images() { # fixture images of older recipes
  docker images --format '{{.Repository}}:{{.Tag}}' | grep '^lwc-testbed/' \
    | grep -v -x -e "$BUSYBOX" -e "$AUTOMOUNTER" -e "$CMS_BASE" -e "$PYTHON" \
    | xargs -r "$(command -v docker)" --host "$SOCK" rmi >/dev/null 2>&1 || true  # never another engine
}

# -- podman: root and an ordinary user ------------------------------------------------------
PODMAN_USER=${LWC_TESTBED_PODMAN_USER:-lwc-podman}
PODMAN_SUBIDS=${LWC_TESTBED_PODMAN_SUBIDS:-420000-485535}
PODMAN_RUN="$RUN/podman"
PODMAN_HOME=/home/$PODMAN_USER
as_user() { runuser -u "$PODMAN_USER" -- env -i PATH=/usr/local/bin:/usr/bin:/bin HOME="$PODMAN_HOME" \
  XDG_RUNTIME_DIR="$PODMAN_RUN/user-runtime" CONTAINERS_CONF="$PODMAN_RUN/containers-user.conf" \
  CONTAINERS_STORAGE_CONF="$PODMAN_RUN/storage-user.conf" "$@"; }
as_root_podman() { CONTAINERS_CONF="$PODMAN_RUN/containers-root.conf" \
  CONTAINERS_STORAGE_CONF="$PODMAN_RUN/storage-root.conf" podman "$@"; }

podman_configs() { # the podman way: files named by CONTAINERS_CONF / CONTAINERS_STORAGE_CONF
  mkdir -p "$PODMAN_RUN" "$STATE/podman/root-graph"
  chmod 755 "$PODMAN_RUN"
  local common='[containers]
# this sandbox: hard limits below podman'"'"'s defaults, and no /dev/net/tun (slirp4netns fails)
default_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]
netns = "host"
[engine]
# crun refuses the cgroups hybrid mode here
cgroup_manager = "cgroupfs"
runtime = "runc"
events_logger = "file"'
  printf '%s\n' "$common" >"$PODMAN_RUN/containers-user.conf"
  printf '%s\ntmp_dir = "%s"\nvolume_path = "%s"\n[network]\nnetwork_config_dir = "%s"\n' \
    "$common" "$PODMAN_RUN/root-tmp" "$STATE/podman/root-volumes" "$PODMAN_RUN/root-networks" \
    >"$PODMAN_RUN/containers-root.conf"
  printf '[storage]\ndriver = "vfs"\nrunroot = "%s"\ngraphroot = "%s"\n' \
    "$PODMAN_RUN/root-run" "$STATE/podman/root-graph" >"$PODMAN_RUN/storage-root.conf"
  # the user's own places, said explicitly: podman 4.3's commit needs runroot set
  printf '[storage]\ndriver = "vfs"\nrunroot = "%s"\ngraphroot = "%s"\n' \
    "$PODMAN_RUN/user-runtime/containers" "$PODMAN_HOME/.local/share/containers/storage" \
    >"$PODMAN_RUN/storage-user.conf"
  chmod 644 "$PODMAN_RUN"/*.conf
}

podman_user() { # an ordinary user: a subordinate id range, not in the docker group
  if ! id "$PODMAN_USER" >/dev/null 2>&1; then
    log "creating user $PODMAN_USER (rootless podman)"
    useradd --create-home --shell /bin/bash "$PODMAN_USER"
    mkdir -p "$STATE/podman" && touch "$STATE/podman/user-created"
  fi
  if ! grep -q "^$PODMAN_USER:" /etc/subuid 2>/dev/null \
     || ! grep -q "^$PODMAN_USER:" /etc/subgid 2>/dev/null; then
    usermod --add-subuids "$PODMAN_SUBIDS" --add-subgids "$PODMAN_SUBIDS" "$PODMAN_USER"
    mkdir -p "$STATE/podman" && touch "$STATE/podman/subids-added"
  fi
  mkdir -p "$PODMAN_RUN/user-runtime"
  chown "$PODMAN_USER:" "$PODMAN_RUN/user-runtime"
  chmod 700 "$PODMAN_RUN/user-runtime"
  if ! runuser -u "$PODMAN_USER" -- "$PODMAN_HOME/venv/bin/python" -c \
      'import plumbum, dotenv, structlog, oras' 2>/dev/null; then
    log "a venv for $PODMAN_USER with lwcontainer's dependencies (pip, once)"
    runuser -u "$PODMAN_USER" -- /usr/bin/python3 -m venv "$PODMAN_HOME/venv"
    runuser -u "$PODMAN_USER" -- "$PODMAN_HOME/venv/bin/pip" install --quiet --disable-pip-version-check \
      'plumbum>=1.8' 'python-dotenv>=1.0' 'structlog>=23.1' 'oras>=0.2.25' >&2
  fi
}

podman_images() { # the CMS base, from the bed's engine into root's and the user's stores (and
  # the automounter stand-in into root's: only rootful podman runs an automounter)
  local tar
  if ! as_root_podman image exists "$AUTOMOUNTER" 2>/dev/null; then
    docker save "$AUTOMOUNTER" | as_root_podman load -q >/dev/null
  fi
  if ! as_root_podman image exists "$CMS_BASE" 2>/dev/null \
     || ! as_user podman image exists "$CMS_BASE" 2>/dev/null; then
    tar="$STATE/podman/cms-base.tar"
    docker save -o "$tar" "$CMS_BASE"
    chmod 644 "$tar"
    as_root_podman image exists "$CMS_BASE" 2>/dev/null || as_root_podman load -q -i "$tar" >/dev/null
    as_user podman image exists "$CMS_BASE" 2>/dev/null || as_user podman load -q -i "$tar" >/dev/null
    rm -f "$tar"; log "loaded $CMS_BASE into podman (root and $PODMAN_USER)"
  fi
}

# What rootful and rootless podman create on the host whatever their configuration says (the
# netavark run directory, the blob-info cache, the shared-memory locks): those absent when the
# bed first came up are listed, and 'down' removes them.
podman_host_paths() {
  printf '%s\n' /run/containers /var/lib/containers /dev/shm/libpod_lock \
    "/dev/shm/libpod_rootless_lock_$(id -u "$PODMAN_USER")"
}

podman_up() {
  podman_configs
  podman_user
  if [ ! -f "$STATE/podman/host-paths" ]; then
    podman_host_paths | while read -r path; do [ -e "$path" ] || echo "$path"; done \
      >"$STATE/podman/host-paths"
  fi
  [ -z "${CMS_BASE:-}" ] || podman_images
}

podman_down() {
  if [ -d "$PODMAN_RUN" ] && id "$PODMAN_USER" >/dev/null 2>&1; then
    as_user podman system reset --force >/dev/null 2>&1 || true  # the user's store
    as_user podman system migrate >/dev/null 2>&1 || true  # ends its pause process
  fi
  if [ -f "$PODMAN_RUN/storage-root.conf" ]; then
    as_root_podman system reset --force >/dev/null 2>&1 || true  # root's store of the bed
  fi
  if [ -f "$STATE/podman/host-paths" ]; then
    xargs -r rm -rf <"$STATE/podman/host-paths"
  fi
  if [ -f "$STATE/podman/subids-added" ] && id "$PODMAN_USER" >/dev/null 2>&1; then
    usermod --del-subuids "$PODMAN_SUBIDS" --del-subgids "$PODMAN_SUBIDS" "$PODMAN_USER" 2>/dev/null || true
  fi
  if [ -f "$STATE/podman/user-created" ] && id "$PODMAN_USER" >/dev/null 2>&1; then
    userdel --force --remove "$PODMAN_USER" 2>/dev/null || true  # --force: a reaped pause process
  fi
}

write_env() {
  cat >"$RUN/env" <<ENV
DOCKER_HOST=$SOCK
LWC_TESTBED_RUN=$RUN
LWC_TESTBED_SHARED=$RUN/shared
LWC_TESTBED_REGISTRY=127.0.0.1:$PORT
LWC_TESTBED_REGISTRY_CONFIG=$RUN/registry.yml
LWC_TESTBED_USER=$REG_USER
LWC_TESTBED_PASSWORD_FILE=$STATE/registry/password
LWC_TESTBED_BUSYBOX=${BUSYBOX:-}
LWC_TESTBED_AUTOMOUNTER=${AUTOMOUNTER:-}
LWC_TESTBED_CMS_BASE=${CMS_BASE:-}
LWC_TESTBED_PYTHON=${PYTHON:-}
LWC_TESTBED_WHEELS=${WHEELS:-}
LWC_TESTBED_PODMAN_USER=$PODMAN_USER
LWC_TESTBED_PODMAN_PYTHON=$PODMAN_HOME/venv/bin/python
LWC_TESTBED_PODMAN_RUNTIME=$PODMAN_RUN/user-runtime
LWC_TESTBED_PODMAN_CONF_USER=$PODMAN_RUN/containers-user.conf
LWC_TESTBED_PODMAN_STORAGE_USER=$PODMAN_RUN/storage-user.conf
LWC_TESTBED_PODMAN_CONF_ROOT=$PODMAN_RUN/containers-root.conf
LWC_TESTBED_PODMAN_STORAGE_ROOT=$PODMAN_RUN/storage-root.conf
ENV
}

stop_pidfile() { # pidfile: TERM, then wait for the process to be gone (KILL after 30 s)
  local pid
  [ -s "$1" ] || return 0
  pid=$(cat "$1")
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null || true
}

unmount_below() { # dir...: every mount at or below them, deepest first
  local dir
  for dir in "$@"; do
    findmnt -rn -o TARGET | grep -e "^$dir\$" -e "^$dir/" || true
  done | sort -ru | xargs -r -n1 umount -l 2>/dev/null || true
}

remove_engine() { # run state bridge pidfile
  stop_pidfile "$4"
  unmount_below "$1" "$2"
  ip link show "$3" >/dev/null 2>&1 && ip link del "$3"
  rm -rf "$1" "$2"
}

down() {
  podman_down
  stop_pidfile "$RUN/registry.pid"
  remove_engine "$RUN" "$STATE" "$BRIDGE" "$RUN/dockerd.pid"
  if [ -z "${LWC_TESTBED_RUN:-}" ]; then  # the default bed: the benchmark's engine too
    remove_engine "$BENCH_RUN" "$BENCH_STATE" "$BENCH_BRIDGE" "$BENCH_RUN/dockerd.pid"
    rm -rf /tmp/lwc-bench
  fi
  log "removed: engine, registry, podman stores and the user it created, mounts, bridge and state ($RUN, $STATE)"
}

status() { # what the bed leaves running, for the end of `make test`
  local running=()
  [ -s "$RUN/dockerd.pid" ] && kill -0 "$(cat "$RUN/dockerd.pid")" 2>/dev/null \
    && running+=("a Docker engine on unix://$RUN/docker.sock")
  [ -s "$RUN/registry.pid" ] && kill -0 "$(cat "$RUN/registry.pid")" 2>/dev/null \
    && running+=("a registry on 127.0.0.1:$PORT")
  [ -s "$BENCH_RUN/dockerd.pid" ] && kill -0 "$(cat "$BENCH_RUN/dockerd.pid")" 2>/dev/null \
    && running+=("the benchmark's engine")
  [ ${#running[@]} -eq 0 ] && return 0
  printf 'testbed: left running: %s; its state (%s) keeps the fixture images for the next run.\n' \
    "$(IFS=';'; echo "${running[*]}" | sed 's/;/, /g')" "$(du -sh "$STATE" 2>/dev/null | cut -f1)" >&2
  printf 'testbed: remove all of it with: make testbed-down\n' >&2
}

case "${1:-up}" in
  up) ensure_packages; engine_up; shared_mount_up; registry_up
      if [ "${LWC_TESTBED_IMAGES:-all}" != none ]; then images_up; prune_images; wheels_up; fi
      podman_up
      write_env; log "ready: source $RUN/env" ;;
  down) down ;;
  status) status ;;
  packages) ensure_packages ;;
  env) cat "$RUN/env" ;;
  *) echo "usage: $0 up|down|env|status|packages" >&2; exit 2 ;;
esac
