"""Sync against ``aws s3 sync`` through 30 ms of latency a request, and its memory on 1 GB.

``make bench-sync`` (or ``python benchmarks/bench_sync.py``):

1. starts moto's S3 server (a subprocess) and, in this process, a loopback HTTP proxy in front
   of it that waits ``--latency-ms`` (30) before forwarding each request: real S3 answers in
   tens of milliseconds, and against a bare local moto server concurrency would buy nothing;
2. copies the shared grocery photos under ``--copies`` (4) prefixes (2,240 photos) and runs,
   as whole processes, ``aws s3 sync`` (awscli from PyPI, installed into a throwaway venv: its
   botocore is not the lock's) and the project's sync (:func:`fruits_pipeline.sync.sync`,
   concurrency 10 like the CLI's default), both through the proxy: folder -> S3 into a fresh
   prefix, the same again (nothing changed), then S3 -> a fresh folder. The pair runs
   ``--pairs`` (3) times, alternating which goes first; the median ratio is reported;
3. syncs one 1 GB file (random bytes: the sync does not decode) folder -> S3 and back, each
   in a child process, straight to moto, and prints each child's peak RSS
   (``ru_maxrss``), beside the same child syncing nothing (the imports' share).

Targets (issue 14): no slower than the CLI; peak RSS under 200 MB on the 1 GB file.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
BUCKET = "bench"
REGION = "eu-west-1"
GIB = 1024**3
HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "upgrade",
    "expect",
}
MAX_BODY = 64 * 1024 * 1024
"""The proxy refuses larger request bodies (the sync's parts are 8 MB)."""
MAX_CONNECTIONS = 64
"""Connections the proxy serves at once; more wait to be accepted."""
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
}


# --- the proxy ----------------------------------------------------------------------------------
class DelayProxy(ThreadingHTTPServer):
    """Loopback HTTP proxy to ``127.0.0.1:upstream``, ``delay_s`` added to every request."""

    daemon_threads = True

    def __init__(self, upstream: int, delay_s: float) -> None:
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.upstream, self.delay_s = upstream, delay_s
        self.requests = 0
        self._slots = threading.BoundedSemaphore(MAX_CONNECTIONS)

    @property
    def url(self) -> str:
        """Where clients point their endpoint."""
        return f"http://127.0.0.1:{self.server_address[1]}"

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve the connection in a thread once one of the slots is free."""
        self._slots.acquire()
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        """Close the connection and free its slot."""
        super().shutdown_request(request)
        self._slots.release()


class _ProxyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: DelayProxy
    _upstream: http.client.HTTPConnection | None = None

    def log_message(self, *args: Any) -> None:
        """Quiet: one line a request would drown the figures."""

    def _body(self) -> bytes | None:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks, size = [], 0
            while (length := int(self.rfile.readline().split(b";")[0], 16)) > 0:
                size += length
                if size > MAX_BODY:
                    raise ValueError("request body too large")
                chunks.append(self.rfile.read(length))
                self.rfile.readline()
            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                pass  # trailers
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large")
        return self.rfile.read(length) if length else None

    def _forward(self) -> None:
        try:
            body = self._body()
        except ValueError as error:
            self.send_error(413, str(error))
            self.close_connection = True
            return
        time.sleep(self.server.delay_s)
        self.server.requests += 1
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        if body is not None:
            headers["Content-Length"] = str(len(body))
        response = self._send_upstream(headers, body)
        self.send_response_only(response.status, response.reason)
        length = response.getheader("Content-Length")
        data = None
        if length is None and self.command != "HEAD":
            data = response.read()
            length = str(len(data))
        for name, value in response.getheaders():
            if name.lower() not in HOP_BY_HOP and name.lower() != "content-length":
                self.send_header(name, value)
        if length is not None:
            self.send_header("Content-Length", length)
        self.end_headers()
        if self.command == "HEAD":
            response.read()
        elif data is not None:
            self.wfile.write(data)
        else:
            while block := response.read(1 << 16):
                self.wfile.write(block)

    def _send_upstream(self, headers: dict[str, str], body: bytes | None) -> Any:
        for attempt in (1, 2):
            if self._upstream is None:
                self._upstream = http.client.HTTPConnection("127.0.0.1", self.server.upstream)
            try:
                self._upstream.request(self.command, self.path, body=body, headers=headers)
                return self._upstream.getresponse()
            except (ConnectionError, http.client.HTTPException):
                self._upstream.close()
                self._upstream = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward  # noqa: N815


# --- processes ------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_moto() -> tuple[subprocess.Popen, int]:
    """Start moto's server in its own process (its CPU apart from the proxy's), and its port."""
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).with_name("moto_server")), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return server, port
        time.sleep(0.1)
    server.kill()
    raise RuntimeError("moto server did not start")


def awscli(venv: Path) -> Path:
    """``aws`` from PyPI in ``venv`` (created once; never the project's .venv)."""
    aws = venv / "bin" / "aws"
    if not aws.exists():
        print(f"installing awscli into {venv} (throwaway venv)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "awscli"], check=True)
    return aws


MEASURE = """
import json, resource, subprocess, sys, time
started = time.perf_counter()
done = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL)
seconds = time.perf_counter() - started
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu, peak = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
print(json.dumps({"rc": done.returncode, "seconds": seconds, "cpu_s": cpu, "peak_mb": peak}))
"""
"""Runs a command as this wrapper's only child: its wall time, CPU time and peak RSS."""


def measure(command: list[str]) -> dict[str, float]:
    env = {**os.environ, **AWS_ENV}
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, *command],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout)
    if result["rc"] != 0:
        raise RuntimeError(f"{command[:4]} exited {result['rc']}: {out.stderr[-2000:]}")
    return result


def ours(source: str, dest: str, endpoint: str, max_file_bytes: int = GIB) -> list[str]:
    """The project's sync as a child process (this script's ``child`` mode)."""
    return [
        sys.executable,
        __file__,
        "child",
        source,
        dest,
        "--endpoint",
        endpoint,
        "--max-file-bytes",
        str(max_file_bytes),
    ]


def cli(aws: Path, source: str, dest: str, endpoint: str) -> list[str]:
    return [str(aws), "s3", "sync", source, dest, "--endpoint-url", endpoint, "--only-show-errors"]


def child(source: str, dest: str, endpoint: str, max_file_bytes: int) -> None:
    """Sync ``source`` into ``dest`` with the project's code; print the result."""
    import logging

    import boto3

    from fruits_pipeline.stores import open_store
    from fruits_pipeline.sync import sync

    logging.basicConfig(level=logging.WARNING)
    client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION)
    result = sync(
        open_store(source, client),
        open_store(dest, client),
        max_file_bytes=max_file_bytes,
        concurrency=10,
    )
    summary = {k: v for k, v in result.as_dict().items() if k not in ("refused", "failed")}
    print(json.dumps(summary), file=sys.stderr)
    if result.failed_count or result.refused_count:
        sys.exit(1)


# --- the benchmark -----------------------------------------------------------------------------
def photo_tree(dest: Path, copies: int) -> tuple[int, int]:
    """The grocery photos under ``copy<i>/<Label>/``; how many files and bytes."""
    photos = sorted((SHARED / "data" / "grocery-fruits-sample").glob("*/*.jpg"))
    if not photos:
        raise SystemExit(f"no photos under {SHARED / 'data' / 'grocery-fruits-sample'}")
    for i in range(copies):
        for photo in photos:
            target = dest / f"copy{i}" / photo.parent.name / photo.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(photo, target)
    return len(photos) * copies, sum(p.stat().st_size for p in photos) * copies


def etags(client: Any, prefix: str) -> dict[str, str]:
    paginator = client.get_paginator("list_objects_v2")
    return {
        item["Key"][len(prefix) :]: item["ETag"]
        for page in paginator.paginate(Bucket=BUCKET, Prefix=prefix)
        for item in page.get("Contents", [])
    }


def run_pairs(aws: Path, tree: Path, work: Path, proxy: DelayProxy, pairs: int) -> dict:
    """Each pair: both tools, alternating first, on the three scenarios; seconds by scenario."""
    times: dict[str, dict[str, list[float]]] = {}
    scenarios = ("folder -> S3", "unchanged re-sync", "S3 -> folder")
    for n in range(pairs):
        order = ("aws", "ours") if n % 2 == 0 else ("ours", "aws")
        for tool in order:
            prefix = f"s3://{BUCKET}/{tool}-{n}"
            download = str(work / f"{tool}-{n}")
            runs = [(str(tree), prefix), (str(tree), prefix), (prefix, download)]
            for scenario, (source, dest) in zip(scenarios, runs, strict=True):
                command = (
                    cli(aws, source, dest, proxy.url)
                    if tool == "aws"
                    else ours(source, dest, proxy.url)
                )
                result = measure(command)
                times.setdefault(scenario, {}).setdefault(tool, []).append(result["seconds"])
                print(
                    f"  pair {n + 1} {tool:4} {scenario:18} {result['seconds']:6.2f} s "
                    f"(CPU {result['cpu_s']:5.2f} s)",
                    flush=True,
                )
            shutil.rmtree(download)
    return times


def one_gigabyte(work: Path, endpoint: str, aws: Path) -> list[tuple[str, dict]]:
    """Peak RSS of syncing one 1 GB file each way, ours and the CLI's, and of syncing nothing."""
    source = work / "big"
    (source / "Big").mkdir(parents=True)
    block = os.urandom(8 * 1024 * 1024)
    with open(source / "Big" / "one-gigabyte.jpg", "wb") as handle:
        for _ in range(GIB // len(block)):
            handle.write(block)
    (work / "empty").mkdir()
    cases = [
        ("ours, nothing to copy (imports)", ours(str(work / "empty"), str(work / "e2"), endpoint)),
        ("ours, folder -> S3", ours(str(source), f"s3://{BUCKET}/big-ours", endpoint, 2 * GIB)),
        (
            "ours, S3 -> folder",
            ours(f"s3://{BUCKET}/big-ours", str(work / "b1"), endpoint, 2 * GIB),
        ),
        ("aws,  folder -> S3", cli(aws, str(source), f"s3://{BUCKET}/big-aws", endpoint)),
        ("aws,  S3 -> folder", cli(aws, f"s3://{BUCKET}/big-aws", str(work / "b2"), endpoint)),
    ]
    results = []
    for label, command in cases:
        result = measure(command)
        results.append((label, result))
        print(
            f"  {label:32} {result['seconds']:6.1f} s  CPU {result['cpu_s']:5.1f} s  "
            f"peak RSS {result['peak_mb']:6.1f} MB",
            flush=True,
        )
    copied = work / "b1" / "Big" / "one-gigabyte.jpg"
    if copied.stat().st_size != GIB:
        raise RuntimeError(f"{copied} has {copied.stat().st_size} bytes, not 1 GiB")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=4, help="copies of the 560 photos (4)")
    parser.add_argument("--pairs", type=int, default=3, help="alternating pairs (3)")
    parser.add_argument("--latency-ms", type=float, default=30.0, help="added per request (30)")
    parser.add_argument(
        "--awscli-venv",
        type=Path,
        default=Path(tempfile.gettempdir()) / "fruits-bench-awscli",
        help="throwaway venv for awscli (kept between runs)",
    )
    parser.add_argument("--skip-1gb", action="store_true", help="leave out the 1 GB file")
    args = parser.parse_args(argv)
    os.environ.update(AWS_ENV)
    aws = awscli(args.awscli_venv)
    moto, port = start_moto()
    proxy = DelayProxy(port, args.latency_ms / 1000)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    work = Path(tempfile.mkdtemp(prefix="fruits-bench-sync-"))
    try:
        import boto3

        client = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{port}", region_name=REGION)
        client.create_bucket(
            Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION}
        )
        files, size = photo_tree(work / "photos", args.copies)
        version = subprocess.run([aws, "--version"], capture_output=True, text=True, check=True)
        print(
            f"{files} photos ({size / 1e6:.1f} MB), {args.latency_ms:.0f} ms a request, "
            f"{version.stdout.strip()}"
        )
        times = run_pairs(aws, work / "photos", work, proxy, args.pairs)
        same = etags(client, "aws-0/") == etags(client, "ours-0/")
        print(f"\nboth tools wrote the same {files} keys with the same ETags: {same}")
        print(f"requests through the proxy: {proxy.requests}\n")
        for scenario, by_tool in times.items():
            ratios = [o / a for o, a in zip(by_tool["ours"], by_tool["aws"], strict=True)]
            print(
                f"{scenario:18}  aws s3 sync {statistics.median(by_tool['aws']):6.2f} s   "
                f"ours {statistics.median(by_tool['ours']):6.2f} s   "
                f"ours/aws {statistics.median(ratios):.2f} "
                f"(pairs {', '.join(f'{r:.2f}' for r in ratios)})"
            )
        if not args.skip_1gb:
            print("\n1 GiB file, straight to moto:")
            one_gigabyte(work, f"http://127.0.0.1:{port}", aws)
    finally:
        proxy.shutdown()
        moto.terminate()
        moto.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child_parser = argparse.ArgumentParser(prog="bench_sync.py child")
        child_parser.add_argument("source")
        child_parser.add_argument("dest")
        child_parser.add_argument("--endpoint", required=True)
        child_parser.add_argument("--max-file-bytes", type=int, required=True)
        opts = child_parser.parse_args(sys.argv[2:])
        child(opts.source, opts.dest, opts.endpoint, opts.max_file_bytes)
    else:
        sys.exit(main())
