#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image.
# The zip unpacks to /autograder/source: this file, run_autograder, course/.
set -euxo pipefail
apt-get update
apt-get install -y --no-install-recommends python3 python3-venv python3-pip
python3 -m venv /opt/llmperf
/opt/llmperf/bin/pip install --upgrade pip
# CPU torch keeps the image small; the analytic exercises do not need it at all.
/opt/llmperf/bin/pip install --extra-index-url https://download.pytorch.org/whl/cpu /autograder/source/course
