#!/usr/bin/env bash
# The recipe's plain command sequence (../shared/seed), as a careful user would write it today:
# password on stdin, a readiness loop for CVMFS, then build, commit, tag, push. The benchmark
# runs it against lwcontainer. The automounter is left for the harness to read and remove.
# Needs: FROM TO CI_REGISTRY CI_REGISTRY_USER PASSWORD_FILE MOUNTS AM AM_IMAGE AM_OPTIONS NAME.
set -euo pipefail
docker login --username "$CI_REGISTRY_USER" --password-stdin "$CI_REGISTRY" <"$PASSWORD_FILE"
# shellcheck disable=SC2086
docker run -d --name "$AM" --pid=host --user 0 $AM_OPTIONS --restart always \
  -v "$MOUNTS:/cvmfsmounts:rshared" "$AM_IMAGE" >/dev/null
until docker exec "$AM" ls /cvmfsmounts/cvmfs/cms.cern.ch/cmsset_default.sh >/dev/null 2>&1; do
  sleep 1
done
docker run -v "$MOUNTS/cvmfs:/cvmfs:rslave" -v "$PWD:$PWD" -w "$PWD" --name "$NAME" "$FROM" \
  /bin/bash ./.gitlab/build.sh
SHA256=$(docker commit "$NAME")
docker tag "$SHA256" "$TO"
docker push "$TO"
docker rm "$NAME" >/dev/null
