#!/bin/sh
# Stand-in for the CERN cvmfs-automounter, for the test bed only. Like the real one it runs as a
# long-lived container with /cvmfsmounts bind-mounted rshared, and makes each repository appear
# under /cvmfsmounts/cvmfs/<repo> after a while. Here a repository is a fixture directory baked
# into the image (/fixture/<repo>), bind-mounted after LWC_STANDIN_DELAY seconds.
# LWC_STANDIN_MODE=never keeps it from ever mounting (for "CVMFS never comes" tests).
# On SIGTERM it unmounts what it mounted, as a well-behaved automounter does.
delay=${LWC_STANDIN_DELAY:-1}
mode=${LWC_STANDIN_MODE:-mount}
mounted=""
cleanup() {
  for m in $mounted; do umount -l "$m" 2>/dev/null; done
  exit 0
}
trap cleanup TERM INT
echo "automounter stand-in: mode=$mode delay=${delay}s"
sleep "$delay" & wait $!
if [ "$mode" = mount ]; then
  for repo in /fixture/*; do
    target=/cvmfsmounts/cvmfs/$(basename "$repo")
    mkdir -p "$target"
    mount --bind "$repo" "$target" && mounted="$mounted $target" && echo "mounted $target"
    mount -o remount,bind,ro "$target" 2>/dev/null || true
  done
fi
while :; do sleep 3600 & wait $!; done
