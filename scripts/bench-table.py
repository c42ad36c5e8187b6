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
def spread(r):
    """The lowest and highest of the paired rounds' ratios, where the bench gave them."""
    if "ratio_min" not in r:
        return ""
    return f"{r['ratio_min']:.2f}-{r['ratio_max']:.2f} ({r['rounds']})"
table = [cols + ["rounds' ratios"]] + [[fmt(r[c]) for c in cols] + [spread(r)] for r in rows]
widths = [max(len(t[i]) for t in table) for i in range(len(table[0]))]
for t in table:
    print("  ".join(s.ljust(w) for s, w in zip(t, widths)))
print(f"wrote {sys.argv[2]} ({len(rows)} results)")
