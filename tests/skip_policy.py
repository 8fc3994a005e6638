"""The only reasons a test may skip, and the checker `.ci/run` applies to pytest's junit XML.

A skip must come from the machine, never from the project: anything nnraw ships (its modules, weights,
command line) is imported or run directly, so that its failure fails. Each allowed reason is a prefix
the skip message starts with::

    python tests/skip_policy.py junit.xml   # prints every skip with its reason; exit 1 on any other reason
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET

NO_CUDA = "no CUDA device"
NOT_LINUX = "not Linux"
NO_CHROOT_ROOT = "no root for the chroot"
NO_SHARED = "../shared absent"

ALLOWED = (NO_CUDA, NOT_LINUX, NO_CHROOT_ROOT, NO_SHARED)


def _reason(message: str) -> str:
    # pytest writes "path:line: reason" in the skipped element's message
    for allowed in ALLOWED:
        if allowed in message:
            return message[message.index(allowed):]
    return message


def allowed(message: str) -> bool:
    return _reason(message).startswith(ALLOWED)


def skips(junit_xml: str) -> list[tuple[str, str]]:
    """(test id, skip message) for every skipped test case in the file."""
    out = []
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        for skipped in case.findall("skipped"):
            if skipped.get("type") == "pytest.xfail":
                continue  # an xfail is reported as skipped in junit; it is not a skip
            test_id = f"{case.get('classname', '')}::{case.get('name', '')}"
            out.append((test_id, skipped.get("message", "") or (skipped.text or "")))
    return out


def main(junit_xml: str) -> int:
    found = skips(junit_xml)
    bad = [(t, m) for t, m in found if not allowed(m)]
    print(f"skip policy: {len(found)} skipped test(s); allowed reasons: {', '.join(ALLOWED)}")
    for test_id, message in found:
        print(f"  {'ok ' if allowed(message) else 'NOT ALLOWED'}  {test_id}: {message}")
    if bad:
        print(f"skip policy: {len(bad)} test(s) skipped for a reason outside the list (fix the test or the build)")
        return 1
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 2:
        print(__doc__)
        sys.exit(2)
    sys.exit(main(sys.argv[1]))
