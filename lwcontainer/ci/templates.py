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
  LWC_RUNNER_TAG: privileged-dind   # the tag of a runner of yours that allows privileged services
{install_variables}  # passed into the build by name (read by .gitlab/build.sh)
  LWC_BUILD_ENV: CMSSW_RELEASE SCRAM_ARCH ANALYSIS_DIRS BUILD_JOBS

build_image:
  stage: build
  tags: [$LWC_RUNNER_TAG]
  image: docker:{docker_version}
  services:
    - docker:{docker_version}-dind
{matrix}  variables:
    DOCKER_TLS_CERTDIR: "/certs"
{image_variables}  rules:{rules}
  before_script:
    - apk add --no-cache python3 py3-pip bash
{install}
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
        LWC_REPORT_PREFIX: {prefix}
"""
MATRIX_IMAGE = """\
    TO: $CI_REGISTRY_IMAGE/$IMAGE_NAME:$CI_COMMIT_SHORT_SHA
"""

BUILD_SH = """\
#!/bin/bash
# Written by `lwcontainer init`. Runs inside the base image with /cvmfs mounted and this checkout
# at $PWD. Only what is written outside the checkout ends up in the image, so the analysis
# packages are copied into a CMSSW area in the image's home and built there. The variables
# below can be set in CI (the job passes them in by name, LWC_BUILD_ENV).
set -euo pipefail
# cmsrel and cmsenv are aliases
shopt -s expand_aliases

CMSSW_RELEASE=${{CMSSW_RELEASE:-{cmssw_release}}}
# The release's architecture; set before cmsset_default.sh, which would pick the image's default.
export SCRAM_ARCH=${{SCRAM_ARCH:-{scram_arch}}}
# The analysis packages: directories of this checkout, space separated.
ANALYSIS_DIRS=${{ANALYSIS_DIRS:-{analysis_dirs}}}
CHECKOUT=$PWD

# Parallel compile jobs: the CPUs this container may use (its cgroup quota), else at most 4,
# so a shared runner's host size does not decide it.
cpus() {{
  local quota period
  if read -r quota period 2>/dev/null </sys/fs/cgroup/cpu.max && [ "$quota" != max ]; then
    echo $(( (quota + period - 1) / period ))
  elif quota=$(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us 2>/dev/null) && [ "$quota" -gt 0 ]; then
    period=$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)
    echo $(( (quota + period - 1) / period ))
  else
    local n
    n=$(nproc)
    echo $(( n < 4 ? n : 4 ))
  fi
}}
BUILD_JOBS=${{BUILD_JOBS:-$(cpus)}}

if [ -z "$ANALYSIS_DIRS" ]; then
  echo "ANALYSIS_DIRS is empty: name the directories of this checkout to build" >&2
  exit 2
fi

# cmsset_default.sh and cmsenv read unset variables: no `set -u` around them
set +u
source /cvmfs/cms.cern.ch/cmsset_default.sh
set -u

cd "$HOME"
cmsrel "$CMSSW_RELEASE"
mkdir -p "$CMSSW_RELEASE/src/AnalysisCode"
for dir in $ANALYSIS_DIRS; do
  if [ ! -d "$CHECKOUT/$dir" ]; then
    echo "ANALYSIS_DIRS: $dir is no directory of the checkout" >&2
    exit 2
  fi
  cp -a "$CHECKOUT/$dir" "$CMSSW_RELEASE/src/AnalysisCode/"
done

cd "$CMSSW_RELEASE/src"
set +u
cmsenv
set -u
scram b -j "$BUILD_JOBS"
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
{install_variables}  # passed into the build by name (read by .gitlab/build.sh)
  LWC_BUILD_ENV: CMSSW_RELEASE SCRAM_ARCH ANALYSIS_DIRS BUILD_JOBS

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
  rules:{rules}
  script:
{install}
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
    TO: {to}{prefix}
"""

# Push from the default branch and tags; elsewhere build (and check) without pushing.
RULES = """
    - if: $CI_COMMIT_TAG || $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
    - when: on_success
      variables:
        LWC_PUSH: never"""

# lwcontainer installed at an exact version, from the group's package index, or from git.
INDEX_VARIABLES = """\
  # the package index that serves lwcontainer (set it as a CI/CD variable, or here)
  LWC_PACKAGE_INDEX: ""
"""
INDEX_INSTALL = """\
    - >-
      test -n "$LWC_PACKAGE_INDEX" || {{ echo "Set LWC_PACKAGE_INDEX (a CI/CD variable) to the
      package index that serves lwcontainer, or run 'lwcontainer init --package-source
      git+https://...@TAG'"; exit 1; }}
    - pip install {pip_flags}--index-url "$LWC_PACKAGE_INDEX" "lwcontainer=={version}"
"""
GIT_INSTALL = """\
    - pip install {pip_flags}"{source}"
"""

GITIGNORE_LINES = ("lwcontainer.env", "lwcontainer-layer.tar.gz", "lwcontainer-layer.json")
#: Where ``lwcontainer init --engine inplace`` writes the capture script, in the project.
CAPTURE_SCRIPT = ".gitlab/lwcontainer-capture.sh"
