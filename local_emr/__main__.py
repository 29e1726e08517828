"""``python -m local_emr [--port 5055]``: run the stand-in until interrupted."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from pathlib import Path

from local_emr.server import LocalEmr, UnsafeEnvironmentError, connection_uri


def parser() -> argparse.ArgumentParser:
    """The command line."""
    p = argparse.ArgumentParser(prog="python -m local_emr", description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=5055, help="port on 127.0.0.1 (%(default)s)")
    p.add_argument("--host", default="127.0.0.1", help="loopback address (%(default)s)")
    p.add_argument("--region", default="eu-west-1", help="default region (%(default)s)")
    p.add_argument("--workdir", type=Path, help="staging folder (default: a temporary one)")
    p.add_argument(
        "--master", default="local-cluster[2,1,2048]", help="Spark master of steps (%(default)s)"
    )
    p.add_argument(
        "--container",
        action="store_true",
        help="inside a container: allow --host 0.0.0.0 (compose's private network)",
    )
    p.add_argument(
        "--idle-scale",
        type=float,
        default=1.0,
        help="factor on AutoTerminationPolicy.IdleTimeout (%(default)s)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """Start the stand-in, print how to use it, serve until SIGINT/SIGTERM."""
    args = parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    try:
        emr = LocalEmr(
            args.port,
            workdir=args.workdir,
            region=args.region,
            host=args.host,
            master=args.master,
            idle_scale=args.idle_scale,
            container=args.container,
        ).start()
    except UnsafeEnvironmentError as err:
        print(f"refused: {err}", file=sys.stderr)
        return 2
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    print(f"local EMR stand-in on {emr.endpoint}", flush=True)
    print(f"export AIRFLOW_CONN_AWS_DEFAULT='{connection_uri(emr.endpoint, args.region)}'")
    print(
        f"export AWS_ENDPOINT_URL={emr.endpoint} AWS_ACCESS_KEY_ID=testing "
        "AWS_SECRET_ACCESS_KEY=testing",
        flush=True,
    )
    done.wait()
    emr.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
