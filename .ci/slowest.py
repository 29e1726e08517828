"""CI report: the slowest tests of a run, from its JUnit XML report.

``python .ci/slowest.py RUN.xml [N]`` prints the ``N`` (default 15) slowest test cases with
their time (setup included, as pytest's JUnit report counts it) and the report's total, so
that cuts to the suite are chosen by measured time.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET


def timings(report: str) -> list[tuple[float, str]]:
    """``(seconds, test id)`` for every test case of a JUnit XML report, slowest first."""
    cases = [
        (float(case.get("time") or 0), f"{case.get('classname')}::{case.get('name')}")
        for case in ET.parse(report).iter("testcase")
    ]
    return sorted(cases, reverse=True)


def main(argv: list[str]) -> int:
    """Print the slowest test cases of the report ``argv[0]`` (``argv[1]`` of them)."""
    cases = timings(argv[0])
    count = int(argv[1]) if len(argv) > 1 else 15
    total = sum(seconds for seconds, _ in cases)
    print(f"{argv[0]}: {len(cases)} tests, {total:.0f} s in tests; the {count} slowest:")
    for seconds, test in cases[:count]:
        print(f"{seconds:8.1f} s  {100 * seconds / total:4.1f} %  {test}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
