#!/usr/bin/env python3
"""Reads meson's testlog.json and prints why each test skipped, then the closing line
'N passed, N failed, N skipped'. Exit status 1 when any test failed or none ran."""
import json
import sys

passed = failed = skipped = 0
for line in open(sys.argv[1]):
    t = json.loads(line)
    r = t.get("result")
    if r in ("OK", "EXPECTEDFAIL"):
        passed += 1
    elif r == "SKIP":
        skipped += 1
        why = (t.get("stdout") or "").strip().splitlines()
        print(f"skipped: {t['name']}: {why[-1] if why else 'no reason given'}")
    else:
        failed += 1
        print(f"failed: {t['name']} ({r})")
print(f"{passed} passed, {failed} failed, {skipped} skipped")
sys.exit(1 if failed or passed == 0 else 0)
