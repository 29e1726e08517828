"""CI check: without ``../shared`` only the tests that need the real ImageNet weights may skip.

``python .ci/bare_skips.py FULL.xml BARE.xml`` reads the JUnit reports of the suite with
``../shared`` and of the suite on a bare clone. A test that the bare run skips and the full run
did not, for any reason other than the missing weights, is a regression of the bare case: it
is named on stderr and the exit status is 1.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

WEIGHTS_REASON = "needs the real ImageNet weights"
"""The start of the skip reason of ``tests.conftest.needs_real_weights``."""


def skipped(report: str) -> dict[str, str]:
    """``{test id: skip message}`` for every skipped test case of a JUnit XML report."""
    found = {}
    for case in ET.parse(report).iter("testcase"):
        skip = case.find("skipped")
        if skip is not None:
            found[f"{case.get('classname')}::{case.get('name')}"] = skip.get("message", "")
    return found


def main(argv: list[str]) -> int:
    """Compare the full and the bare report (``argv``); 1 when a test skipped unexpectedly."""
    full, bare = (skipped(path) for path in argv)
    unexpected = {
        test: message
        for test, message in sorted(bare.items())
        if test not in full and WEIGHTS_REASON not in message
    }
    for test, message in unexpected.items():
        print(f"bare run skipped {test}: {message}", file=sys.stderr)
    print(f"skipped: {len(full)} with ../shared, {len(bare)} without it")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
