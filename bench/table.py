"""Reads RESULT lines from the benchmark programs and prints one table of
medians, with cfutures' advantage over each peer (> 1: cfutures better)."""
import collections
import statistics
import sys

LOWER_IS_BETTER = {"ns/task", "us", "ms/2s"}
# For bandwidth rows the reference is memcpy: cfutures' share of it.
TITLES = {
    "fib": "nested fib(30), a task per call",
    "burst": "1,000,000 tiny tasks from an outside thread",
    "rtt_median": "submit->result round trip, median",
    "rtt_p99": "submit->result round trip, p99",
    "idle_cpu": "CPU used by an idle pool over 2 s after a burst",
    "proc_submit": "process pool: tiny tasks through submit",
    "proc_map": "process pool: 1,000,000 items through map(chunksize=1000)",
    "proc_rtt": "process pool: submit->result round trip, median",
    "bw_1MiB": "process pool: 1 MiB there and back (cfutures x = share of memcpy)",
    "bw_64MiB": "process pool: 64 MiB there and back (cfutures x = share of memcpy)",
}

results = collections.defaultdict(list)
units = {}
order = []
for line in open(sys.argv[1]):
    if not line.startswith("RESULT "):
        continue
    kv = dict(f.split("=", 1) for f in line.split()[1:])
    key = (kv["workload"], kv["impl"])
    if key not in results:
        order.append(key)
    results[key].append(float(kv["value"]))
    units[kv["workload"]] = kv["unit"]

reps = sys.argv[2] if len(sys.argv) > 2 else "?"
print(f"median of {reps} runs; 'cfutures x' = how many times better cfutures is")
for workload in TITLES:
    rows = [(impl, statistics.median(v)) for (w, impl), v in
            ((k, results[k]) for k in order) if w == workload]
    if not rows:
        continue
    unit = units[workload]
    ours = dict(rows).get("cfutures")
    print(f"\n{TITLES[workload]} [{unit}]")
    for impl, value in rows:
        ratio = ""
        if ours and impl != "cfutures" and value > 0 and ours > 0:
            x = value / ours if unit in LOWER_IS_BETTER else ours / value
            ratio = f"cfutures x {x:.2f}"
        print(f"  {impl:<14} {value:>14,.3f}  {ratio}")
