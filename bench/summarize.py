"""Turn a pytest-benchmark JSON file into a speed-up table (markdown).

    python -m pytest bench --benchmark-json=out.json
    python bench/summarize.py out.json > bench/results/<machine>-<date>.md

Within each group the slowest variant is the baseline; every row shows its
median time and its speed-up over each other variant of the same run.
"""
import json
import sys
from collections import defaultdict


def main(path):
    data = json.load(open(path))
    groups = defaultdict(list)
    for b in data["benchmarks"]:
        groups[b["group"] or b["name"]].append(b)
    machine = data.get("machine_info", {})
    print(f"# Benchmarks — {data.get('datetime', '')[:10]}\n")
    print(f"machine: {machine.get('cpu', {}).get('brand_raw', machine.get('processor', '?'))}, "
          f"python {machine.get('python_version', '?')}\n")
    for group, rows in sorted(groups.items()):
        rows.sort(key=lambda b: b["stats"]["median"])
        print(f"## {group}\n")
        names = [r["param"] or r["name"] for r in rows]
        print("| variant | median (ms) | min (ms) | rounds | " + " | ".join(f"× vs {n}" for n in names) + " |")
        print("|---|---|---|---|" + "---|" * len(names))
        for r, n in zip(rows, names):
            med = r["stats"]["median"]
            ratios = " | ".join(f"{o['stats']['median'] / med:.2f}" for o in rows)
            print(f"| {n} | {1e3 * med:.3f} | {1e3 * r['stats']['min']:.3f} | {r['stats']['rounds']} | {ratios} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
