"""What ``lwcontainer init`` writes: GitLab CI job(s) and a CMS build script."""
from __future__ import annotations

DOCKER_VERSION = "24.0.7"

GITLAB_CI = """\
# Written by `lwcontainer init --engine docker`: builds a light-weight image of this analysis
# with CVMFS mounted while building, and pushes it to this project's container registry.
# It needs a runner that allows privileged docker-in-docker services (the CVMFS automounter is
# a privileged container): name that runner's tag in LWC_RUNNER_TAG. CERN's shared runners
# no longer allow this; there, use `lwcontainer init --engine inplace`.
variables:
  LWC_RUNNER_TAG: docker-privileged-xl

build_image:
  stage: build
  tags: [$LWC_RUNNER_TAG]
  image: docker:{docker_version}
  services:
    - docker:{docker_version}-dind
{matrix}  variables:
    DOCKER_TLS_CERTDIR: "/certs"
{image_variables}    # where pip finds lwcontainer: a package index name or "git+https://.../lwcontainer.git"
    LWCONTAINER_PACKAGE: lwcontainer=={version}
  before_script:
    - apk add --no-cache python3 py3-pip bash
    - pip install --break-system-packages "$LWCONTAINER_PACKAGE"
  script:
    - python3 -m lwcontainer
  artifacts:
    reports:
      dotenv: lwcontainer.env
"""

SINGLE_IMAGE = """\
    FROM: {base_image}
    TO: $CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA
"""

# One job per base image: the CI runners are the build farm, lwcontainer runs once per job.
MATRIX = """\
  parallel:
    matrix:
{entries}"""
MATRIX_ENTRY = """\
      - FROM: {base_image}
        IMAGE_NAME: {name}
"""
MATRIX_IMAGE = """\
    TO: $CI_REGISTRY_IMAGE/$IMAGE_NAME:$CI_COMMIT_SHORT_SHA
"""

BUILD_SH = """\
#!/bin/bash
# Written by `lwcontainer init`. Runs inside the base image with /cvmfs mounted and this checkout
# bind-mounted at $PWD. Only what is written outside the checkout ends up in the image, so the
# code is copied into a CMSSW area in the image's home before it is built there.
set -euo pipefail
# cmsrel and cmsenv are aliases
shopt -s expand_aliases

CMSSW_RELEASE=${{CMSSW_RELEASE:-{cmssw_release}}}
CHECKOUT=$PWD

# cmsset_default.sh and cmsenv read unset variables: no `set -u` around them
set +u
source /cvmfs/cms.cern.ch/cmsset_default.sh
set -u

cd "$HOME"
cmsrel "$CMSSW_RELEASE"
mkdir -p "$CMSSW_RELEASE/src/AnalysisCode"
for dir in "$CHECKOUT"/*/; do
  cp -a "$dir" "$CMSSW_RELEASE/src/AnalysisCode/"
done

cd "$CMSSW_RELEASE/src"
set +u
cmsenv
set -u
scram b -j "$(nproc)"
"""

# -- the in-place engine: two jobs, no Docker engine, no privileges ---------------------------
INPLACE_CI = """\
# Written by `lwcontainer init --engine inplace`: builds a light-weight image of this analysis
# with no Docker engine and no privileges, on runners that mount CVMFS into the job (CERN's
# shared runners tagged `cvmfs`).
#   lwc-capture   runs in FROM itself: the build script runs with /cvmfs mounted, and what it
#                 changed on the root filesystem is written as one layer (an artifact);
#   lwc-publish   adds that layer to FROM's layers through the registry API and pushes TO.
variables:
  LWC_RUNNER_TAG: cvmfs          # runners that mount /cvmfs into the job
  # where pip finds lwcontainer: a package index name or "git+https://.../lwcontainer.git@TAG"
  LWCONTAINER_PACKAGE: lwcontainer=={version}

stages: [build, deploy]

.lwc-capture:
  stage: build
  image: $FROM
  tags: [$LWC_RUNNER_TAG]
  script:
    - bash .gitlab/lwcontainer-capture.sh
  artifacts:
    paths: [lwcontainer-layer.tar.gz, lwcontainer-layer.json]
    expire_in: 1 day

.lwc-publish:
  stage: deploy
  image: python:3.12-slim
  variables:
    LWC_ENGINE: inplace
  script:
    - pip install "$LWCONTAINER_PACKAGE"
    - python3 -m lwcontainer publish
  artifacts:
    reports:
      dotenv: lwcontainer.env
{jobs}"""

INPLACE_PAIR = """\

lwc-capture{suffix}:
  extends: .lwc-capture
  variables:
    FROM: {base_image}

lwc-publish{suffix}:
  extends: .lwc-publish
  needs: [lwc-capture{suffix}]
  variables:
    FROM: {base_image}
    TO: {to}
"""

GITIGNORE_LINES = ("lwcontainer.env", "lwcontainer-layer.tar.gz", "lwcontainer-layer.json")
