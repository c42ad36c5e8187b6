#!/usr/bin/env python3
"""Gathers benchmark JSON lines into one JSON array and prints an aligned table."""
import json
import sys

rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
with open(sys.argv[2], "w") as f:
    json.dump(rows, f, indent=1)
    f.write("\n")
cols = ["name", "value", "unit", "baseline", "baseline_value", "ratio", "goal"]
def fmt(v):
    return f"{v:.4g}" if isinstance(v, float) else str(v)
table = [cols] + [[fmt(r[c]) for c in cols] for r in rows]
widths = [max(len(t[i]) for t in table) for i in range(len(cols))]
for t in table:
    print("  ".join(s.ljust(w) for s, w in zip(t, widths)))
print(f"wrote {sys.argv[2]} ({len(rows)} results)")
