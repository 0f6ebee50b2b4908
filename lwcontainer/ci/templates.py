"""What ``lwcontainer init`` writes: GitLab CI job(s), a CMS build script, and the CI/CD
component's templates (``templates/*.yml``, which ``init --component`` includes)."""
from __future__ import annotations

DOCKER_VERSION = "24.0.7"
DEFAULT_BUILD_SCRIPT = ".gitlab/build.sh"
DEFAULT_BUILD_ENV = "CMSSW_RELEASE SCRAM_ARCH ANALYSIS_DIRS BUILD_JOBS"
#: The job's own virtual environment, outside the checkout (the build can write the checkout).
VENV = "/tmp/lwc-venv"

# One pipeline per event: a merge request's pipeline while one is open (not also the branch's),
# else the branch's; tags. GitLab's documented way to avoid duplicate pipelines.
WORKFLOW = """\
workflow:
  rules:
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
    - if: $CI_COMMIT_BRANCH && $CI_OPEN_MERGE_REQUESTS
      when: never
    - if: $CI_COMMIT_BRANCH || $CI_COMMIT_TAG
"""

# The same rules on every job, so every job is in every pipeline and every `needs:` exists:
# merge requests build and check and push nothing; the default branch and tags push; other
# branches build and check without pushing.
RULES = """
    - if: $CI_PIPELINE_SOURCE == "merge_request_event"
      variables:
        LWC_PUSH: never
    - if: $CI_COMMIT_TAG || $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
    - when: on_success
      variables:
        LWC_PUSH: never"""

# lwcontainer goes into a virtual environment of the job: works in the official python images
# and in Debian/Ubuntu distro Pythons (PEP 668 refuses pip into the system site), where
# ensurepip may be missing: then an empty venv filled by the system's pip (--python). Every
# Python runs isolated (-I): the job's directory is the checkout, and `python -m` would import
# a venv.py, pip/ or lwcontainer/ found there before the real one.
VENV_LINES = f"""\
    - >-
      python3 -I -m venv {VENV} >/dev/null 2>&1 && pip="{VENV}/bin/python -I -m pip" ||
      {{ python3 -I -m venv --without-pip --clear {VENV} &&
      pip="python3 -I -m pip --python {VENV}/bin/python"; }}
"""
INDEX_GUARD = """\
    - >-
      test -n "$LWC_PACKAGE_INDEX" || {{ echo "Set LWC_PACKAGE_INDEX (a CI/CD variable) to the
      package index that serves lwcontainer, or {alternative}"; exit 1; }}
"""
INDEX_VARIABLES = """\
  # the package index that serves lwcontainer (set it as a CI/CD variable, or here)
  LWC_PACKAGE_INDEX: ""
"""
INDEX_INSTALL = (INDEX_GUARD.format(alternative="run 'lwcontainer init --package-source\n      "
                                                "git+https://...@TAG'")
                 + VENV_LINES
                 + '    - $pip install --index-url "$LWC_PACKAGE_INDEX" "lwcontainer=={version}"\n')
GIT_INSTALL = VENV_LINES + '    - $pip install "{source}"\n'
LWC = f"{VENV}/bin/python -I -m lwcontainer"

GITLAB_CI = """\
# Written by `lwcontainer init --engine docker`: builds a light-weight image of this analysis
# with CVMFS mounted while building, and pushes it to this project's container registry.
# It needs a runner that allows privileged docker-in-docker services (the CVMFS automounter is
# a privileged container): name that runner's tag in LWC_RUNNER_TAG. CERN's shared runners
# no longer allow this; there, use `lwcontainer init --engine inplace`.
# Merge requests build and check, and push nothing; the default branch and tags push.
{workflow}
variables:
  LWC_RUNNER_TAG: privileged-dind   # the tag of a runner of yours that allows privileged services
{install_variables}  LWC_BUILD_SCRIPT: {build_script}
  # passed into the build by name (read by the build script)
  LWC_BUILD_ENV: "{build_env}"

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
    - {lwc}
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
# GitLab's docker and Kubernetes executors check out with permissive modes (rw for all) and may
# run the job with umask 0000: what this script creates and copies is group/world read-only.
umask 022

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
  # not `cp -a`: the checkout's modes (rw for all, see umask above) stay out of the image
  cp -R "$CHECKOUT/$dir" "$CMSSW_RELEASE/src/AnalysisCode/"
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
# Merge requests build and check, and push nothing; the default branch and tags push.
{workflow}
variables:
  LWC_RUNNER_TAG: cvmfs          # runners that mount /cvmfs into the job
  # the publish job's image: any Python 3.10+, official or a distro's (lwcontainer gets a venv)
  LWC_PYTHON_IMAGE: python:3.12-slim
{install_variables}  LWC_BUILD_SCRIPT: {build_script}
  # passed into the build by name (read by the build script)
  LWC_BUILD_ENV: "{build_env}"

stages: [build, deploy]

.lwc-capture:
  stage: build
  image: $FROM
  tags: [$LWC_RUNNER_TAG]
  rules:{rules}
  script:
    - bash .gitlab/lwcontainer-capture.sh
  artifacts:
    paths: [lwcontainer-layer.tar.gz, lwcontainer-layer.json]
    expire_in: 1 day

.lwc-publish:
  stage: deploy
  image: $LWC_PYTHON_IMAGE
  variables:
    LWC_ENGINE: inplace
  rules:{rules}
  script:
{install}
    - {lwc} publish
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

# -- the CI/CD component (templates/<engine>.yml): the same jobs, set by inputs ---------------
COMPONENT_SPEC = """\
# lwcontainer's GitLab CI/CD component ({engine} engine), written by
# scripts/component_templates.py from lwcontainer/ci/templates.py: edit those, not this file.
# Include it from a project's .gitlab-ci.yml (`lwcontainer init --component PATH@VERSION`):
#   include:
#     - component: $CI_SERVER_FQDN/<group>/lwcontainer/{engine}@<version>
#       inputs: {{base-image: ..., runner-tag: ...}}
# Merge requests build and check, and push nothing; the default branch and tags push. The
# project's own pipeline should carry a `workflow:` against duplicate pipelines (init writes it).
spec:
  inputs:
    base-image:
      description: FROM, the CMS base image the build runs in
      default: {base_image}
    runner-tag:
      description: {runner_help}
      default: {runner_tag}
    package-source:
      description: what pip installs - lwcontainer==VERSION (from $LWC_PACKAGE_INDEX, pip's
        --index-url) or a git URL pinned to a tag, git+https://HOST/PATH@TAG
      default: lwcontainer=={version}
    build-script:
      description: the build script, a path inside the project (LWC_BUILD_SCRIPT)
      default: {build_script}
    build-env:
      description: names of variables passed into the build (LWC_BUILD_ENV)
      default: {build_env}
    extra-tags:
      description: more tags to push besides TO's (LWC_EXTRA_TAGS, comma or space separated)
      default: ""
---
"""
_INPUT = "$[[ inputs.{} ]]"
COMPONENT_INSTALL = (
    """\
    - >-
      case "$[[ inputs.package-source ]]" in git+*) ;; *) test -n "$LWC_PACKAGE_INDEX" || {
      echo "Set LWC_PACKAGE_INDEX (a CI/CD variable) to the package index that serves
      lwcontainer, or give the input package-source as git+https://...@TAG"; exit 1; } ;; esac
"""
    + VENV_LINES
    + '    - $pip install ${LWC_PACKAGE_INDEX:+--index-url "$LWC_PACKAGE_INDEX"} '
      '"$[[ inputs.package-source ]]"\n')
COMPONENT_VARIABLES = """\
    FROM: $[[ inputs.base-image ]]
    LWC_BUILD_SCRIPT: $[[ inputs.build-script ]]
    LWC_BUILD_ENV: "$[[ inputs.build-env ]]"
    LWC_EXTRA_TAGS: "$[[ inputs.extra-tags ]]"
"""

COMPONENT_INPLACE = """\
lwc-capture:
  stage: build
  image: $[[ inputs.base-image ]]
  tags:
    - $[[ inputs.runner-tag ]]
  variables:
{variables}  rules:{rules}
  script:
    - bash .gitlab/lwcontainer-capture.sh
  artifacts:
    paths: [lwcontainer-layer.tar.gz, lwcontainer-layer.json]
    expire_in: 1 day

lwc-publish:
  stage: deploy
  image: python:3.12-slim
  needs: [lwc-capture]
  variables:
    LWC_ENGINE: inplace
{variables}    TO: $CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA
  rules:{rules}
  script:
{install}
    - {lwc} publish
  artifacts:
    reports:
      dotenv: lwcontainer.env
"""

COMPONENT_DOCKER = """\
build_image:
  stage: build
  image: docker:{docker_version}
  services:
    - docker:{docker_version}-dind
  tags:
    - $[[ inputs.runner-tag ]]
  variables:
    DOCKER_TLS_CERTDIR: "/certs"
{variables}    TO: $CI_REGISTRY_IMAGE:$CI_COMMIT_SHORT_SHA
  rules:{rules}
  before_script:
    - apk add --no-cache python3 py3-pip bash
{install}
  script:
    - {lwc}
  artifacts:
    reports:
      dotenv: lwcontainer.env
"""

# What `init --component PATH@VERSION` writes: the project's pipeline includes the component.
INCLUDE_CI = """\
# Written by `lwcontainer init --component {component}`: lwcontainer's CI/CD component
# ({engine} engine) builds a light-weight image of this analysis and pushes it to this
# project's container registry. Merge requests build and check, and push nothing; the default
# branch and tags push.
{workflow}{variables}
include:
  - component: {path}/{engine}@{version}
    inputs:
      base-image: {base_image}
      runner-tag: {runner_tag}
      package-source: "{source}"
      build-script: {build_script}
      build-env: "{build_env}"
"""

GITIGNORE_LINES = ("lwcontainer.env", "lwcontainer-layer.tar.gz", "lwcontainer-layer.json")
#: Where ``lwcontainer init --engine inplace`` writes the capture script, in the project.
CAPTURE_SCRIPT = ".gitlab/lwcontainer-capture.sh"
