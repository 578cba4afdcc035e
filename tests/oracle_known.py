"""Cases of tests/test_oracle.py that the current code fails (issue 15), by pytest id.

Each is marked xfail (strict under ORACLE_STRICT=1, see test_oracle.py): when a fix lands the case
XPASSes, and its id is to be removed here. Grouped by cause; the reason is what the mark says.
Pruned on 2026-12-02: the 185 ids that XPASSed (`pytest tests/test_oracle.py -rX`) are gone.
"""

KNOWN = {}


def _mark(reason, test, ids):
    for i in ids:
        KNOWN[f"{test}[{i}]"] = "issue 15: " + reason
