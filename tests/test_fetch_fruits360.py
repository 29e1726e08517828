"""The Fruits-360 download command against a loopback stand-in for GitHub's contents API.

The stand-in serves the real Fruits-360 images of ../shared in the API's JSON shape; nothing
leaves this machine.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from scripts.fetch_fruits360 import REPO, main
from tests.conftest import FRUITS360


def quote(path) -> str:
    return urllib.parse.quote(str(path))


class FakeGitHub(BaseHTTPRequestHandler):
    def __init__(self, *args, base: str, **kwargs):
        self.base = base
        super().__init__(*args, **kwargs)

    def log_message(self, *args):  # keep test output quiet
        pass

    def do_GET(self):
        parsed = urllib.parse.urlparse(self.path)
        path = urllib.parse.unquote(parsed.path)
        prefix = f"/repos/{REPO}/contents/"
        if path.startswith(prefix):
            folder = FRUITS360 / path[len(prefix) :]
            body = json.dumps(
                [
                    {
                        "name": p.name,
                        "type": "dir" if p.is_dir() else "file",
                        "size": p.stat().st_size,
                        "download_url": f"{self.base}/raw/{quote(p.relative_to(FRUITS360))}",
                    }
                    for p in sorted(folder.iterdir())
                ]
            ).encode()
        elif path.startswith("/raw/"):
            body = (FRUITS360 / path[len("/raw/") :]).read_bytes()
        else:
            self.send_error(404)
            return
        self.send_response(200)
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def github():
    server = ThreadingHTTPServer(("127.0.0.1", 0), None)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    server.RequestHandlerClass = partial(FakeGitHub, base=base)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield base
    server.shutdown()


def test_fetches_classes_in_fruits360_layout_with_attribution(github, tmp_path):
    dest = tmp_path / "sample"
    assert (
        main(
            [
                "--dest",
                str(dest),
                "--classes",
                "2",
                "--per-class",
                "3",
                "--match",
                "cherry",
                "--api",
                github,
            ]
        )
        == 0
    )
    images = sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*.jpg"))
    assert len(images) == 6 and all(p.startswith("Training/Cherry ") for p in images)
    source = FRUITS360 / images[0]
    assert (dest / images[0]).read_bytes() == source.read_bytes()
    assert "CC BY-SA 4.0" in (dest / "ATTRIBUTION.md").read_text()


def test_rerun_downloads_nothing_new(github, tmp_path, caplog):
    args = ["--dest", str(tmp_path), "--classes", "1", "--per-class", "2", "--api", github]
    main(args)
    caplog.clear()
    with caplog.at_level("INFO"):
        main(args)
    assert "0 files written" in caplog.text
