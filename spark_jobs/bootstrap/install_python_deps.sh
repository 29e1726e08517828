#!/usr/bin/env bash
# EMR bootstrap action: install the Spark jobs' Python dependencies on every node.
#
# EMR runs this as the hadoop user on each node before YARN and Spark start, so the
# jobs' PYSPARK_PYTHON (/usr/bin/python3.11, set by the cluster request) is ready
# for the driver and every executor. Versions come from the project's lock file,
# uploaded beside this script and passed as the only argument.
#
# Usage: install_python_deps.sh s3://<bucket>/code/<version>/bootstrap/constraints.txt
set -euo pipefail

readonly PYTHON="${FRUITS_BOOTSTRAP_PYTHON:-/usr/bin/python3.11}"  # overridable for tests
# What the jobs import beyond the standard library and PySpark (EMR provides PySpark).
readonly PACKAGES=(tensorflow-cpu h5py pillow numpy pandas pyarrow matplotlib boto3)

constraints_uri="${1:?usage: install_python_deps.sh s3://bucket/code/VERSION/bootstrap/constraints.txt}"
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT

# Amazon Linux 2023 (EMR 7.x) ships Python 3.9 as python3; 3.11 and its pip are separate
# distribution packages, and a node may have the interpreter without pip.
if ! "$PYTHON" -m pip --version >/dev/null 2>&1; then
  sudo dnf install -y -q python3.11 python3.11-pip
fi

aws s3 cp --only-show-errors "$constraints_uri" "$constraints"
sudo "$PYTHON" -m pip install --quiet --no-cache-dir --constraint "$constraints" "${PACKAGES[@]}"

# Fail the bootstrap (and so the cluster) here, not later inside a Spark task.
"$PYTHON" -c 'import boto3, keras, matplotlib, numpy, pandas, PIL, pyarrow, tensorflow'
echo "install_python_deps: ${PACKAGES[*]} ready for $PYTHON"
