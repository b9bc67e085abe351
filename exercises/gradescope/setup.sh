#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
# The zip unpacks to /autograder/source: this file, run_autograder, course/.
# It installs only what grading needs: the course's package with its [grading] extra
# (numpy, a CPU build of torch, nbformat, jupytext) into a venv that every user may run,
# since the grader runs each submission as an unprivileged user.
#
# The environment may change the defaults, e.g. to rehearse the whole setup offline:
#   LLMPERF_APT=0         skip apt-get (python3 and its venv module are already there)
#   LLMPERF_PYTHON        the Python that makes the venv             (default python3)
#   LLMPERF_VENV          where the venv goes                        (default /opt/llmperf)
#   LLMPERF_TORCH         the torch requirement, installed first      (default torch)
#   LLMPERF_TORCH_INDEX   where pip finds it  (default: --index-url https://download.pytorch.org/whl/cpu)
#   LLMPERF_PIP_OPTIONS   extra options for every pip install          (default none)
set -euxo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PYTHON="${LLMPERF_PYTHON:-python3}"
VENV="${LLMPERF_VENV:-/opt/llmperf}"
TORCH="${LLMPERF_TORCH:-torch}"
TORCH_INDEX="${LLMPERF_TORCH_INDEX---index-url https://download.pytorch.org/whl/cpu}"
PIP_OPTIONS="${LLMPERF_PIP_OPTIONS:-}"

if [ "${LLMPERF_APT:-1}" != 0 ]; then
    apt-get update
    apt-get install -y --no-install-recommends python3 python3-venv python3-pip
fi
umask 022   # the venv must be readable and executable by the user that runs submissions
"$PYTHON" -m venv "$VENV"
# A CPU build of torch keeps the image small; then the package with its [grading] extra.
# shellcheck disable=SC2086  # the option variables hold several words
"$VENV/bin/python" -m pip install --quiet $PIP_OPTIONS $TORCH_INDEX "$TORCH"
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install --quiet $PIP_OPTIONS "$HERE/course[grading]"
"$VENV/bin/llmperf" grade --help > /dev/null
