#!/usr/bin/env bash
# EMR bootstrap action: the Spark jobs' Python environment on every node, from one archive.
#
# EMR runs this as the hadoop user on each node before YARN and Spark start. It installs
# Amazon Linux's own python3.11 (the only install left on a node), makes a virtual environment
# of it at /opt/fruits/env (PYSPARK_PYTHON of the cluster request), and unpacks into its
# site-packages the archive that upload_code built from the lock file's wheels
# (plugins/fruits_pipeline/node_env.py). Nothing reaches a package index.
#
# Usage: install_python_deps.sh s3://<bucket>/code/node-env/python-<hash>.tar.gz
set -euo pipefail

readonly PYTHON="${FRUITS_BOOTSTRAP_PYTHON:-/usr/bin/python3.11}"  # overridable for tests
readonly ENV="${FRUITS_NODE_ENV:-/opt/fruits/env}"
# What the jobs import beyond the standard library and PySpark (EMR provides PySpark).
readonly IMPORTS=(boto3 h5py keras matplotlib numpy pandas PIL pyarrow tensorflow)

archive_uri="${1:?usage: install_python_deps.sh s3://bucket/code/node-env/python-HASH.tar.gz}"

# Amazon Linux 2023 (EMR 7.x) ships Python 3.9 as python3; 3.11 is a package of its own.
if [[ ! -x "$PYTHON" ]]; then
  sudo dnf install -y -q python3.11
fi

sudo "$PYTHON" -m venv --without-pip "$ENV"
site="$("$ENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
aws s3 cp --only-show-errors "$archive_uri" - | sudo tar -xz -C "$site"

# Fail the bootstrap (and so the cluster) here, with one line naming what the archive lacks,
# not later inside a Spark task.
"$ENV/bin/python" - "${IMPORTS[@]}" <<'PYTHON'
import importlib
import sys

missing = []
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except ImportError as err:
        missing.append(f"{name} ({err})")
if missing:
    sys.exit(f"install_python_deps: the archive lacks {'; '.join(missing)}")
PYTHON
echo "install_python_deps: ${IMPORTS[*]} import from $ENV"
