"""Reads the RESULT lines of the benchmark programs (file argv[1]) and prints
one table: per workload, each implementation's median over the runs, its
range, and how many times better cfutures is than that implementation.

    table.py RESULTS REPS [--png CHART.png]

With --png it also draws the table as a chart (python3-matplotlib): one
panel per workload, a bar per implementation (its median, the range as an
error bar), cfutures' bar first and in its own colour, a log scale where
the bars differ by more than 20x."""
import collections
import statistics
import sys

args = [a for a in sys.argv[1:]]
png = None
if "--png" in args:
    k = args.index("--png")
    png = args[k + 1] if k + 1 < len(args) else None
    del args[k:k + 2]
sys.argv = [sys.argv[0]] + args

LOWER_IS_BETTER = {"ns/task", "us", "ms/2s", "ns/switch", "bytes/task",
                   "us/task", "us/item"}
TITLES = {
    "fib": "nested fib(30), task per call",
    "burst": "1M tiny tasks from outside",
    "rtt_median": "round trip, median",
    "rtt_p99": "round trip, p99",
    "rtt_loaded_median": "round trip, median, cores busy",
    "rtt_loaded_p99": "round trip, p99, cores busy",
    "idle_cpu": "idle CPU, 2 s after burst",
    "pending_mem": "memory per pending task (1M)",
    "proc_submit": "procs: tiny tasks via submit",
    "proc_map": "procs: 1M items, map(chunk 1000)",
    "proc_rtt": "procs: round trip, median",
    # For bandwidth the reference is memcpy: the ratio is cfutures' share.
    "bw_1MiB": "procs: 1 MiB there+back (x: of memcpy)",
    "bw_64MiB": "procs: 64 MiB there+back (x: of memcpy)",
    "mpi_submit": "mpi: tiny tasks via submit",
    "mpi_map": "mpi: 1M items, map(chunk 1000)",
    "mpi_rtt": "mpi: round trip, median",
    "mpi_bw_1MiB": "mpi: 1 MiB there+back (x: of memcpy)",
    "mpi_bw_64MiB": "mpi: 64 MiB there+back (x: of memcpy)",
    # bench/run mpi-scale: per task against the rank count, and the
    # interconnect itself (plain MPI ping-pong between ranks 0 and 1)
    **{f"mpi_{w}_{m}_n{n}": f"mpi {n} ranks: {t}, {what}"
       for n in (2, 3, 4, 6, 8)
       for w, t in (("sub", "submit"), ("map", "map chunk 1000"))
       for m, what in (("us", "wall"), ("cpu", "rank-0 CPU"))},
    "mpi_pp_lat": "mpi: ping-pong latency, one way (8 B)",
    "mpi_pp_bw": "mpi: ping-pong bandwidth (4 MiB)",
    "green_switch": "green: switch between two fibers",
    "green_spawn_join": "green: spawn + join an empty task",
    "green_sleeper_mem": "green: memory of a sleeping task",
    "echo_1k": "green: echo 1k conns, 1 core",
    "echo_10k": "green: echo 10k conns, 1 core",
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


def num(x):
    return f"{x:,.0f}" if x >= 1000 else f"{x:.3g}" if x < 10 else f"{x:.1f}"


rows = []
for workload, title in TITLES.items():
    impls = [impl for (w, impl) in order if w == workload]
    if not impls:
        continue
    unit = units[workload]
    med = {i: statistics.median(results[(workload, i)]) for i in impls}
    ours = med.get("cfutures")
    impls.sort(key=lambda i: i != "cfutures")  # cfutures first
    for n, impl in enumerate(impls):
        v = results[(workload, impl)]
        ratio = ""
        if ours and impl != "cfutures" and med[impl] > 0 and ours > 0:
            x = med[impl] / ours if unit in LOWER_IS_BETTER else ours / med[impl]
            ratio = f"{x:.2f}"
        rows.append((title if n == 0 else "", unit if n == 0 else "", impl,
                     num(med[impl]), f"{num(min(v))}..{num(max(v))}", ratio))

reps = sys.argv[2] if len(sys.argv) > 2 else "?"
head = ("workload", "unit", "implementation", "median", "range", "cfutures x")
widths = [max(len(r[c]) for r in rows + [head]) for c in range(len(head))]
right = (False, False, False, True, True, True)


def show(r):
    return "  ".join(s.rjust(w) if rt else s.ljust(w)
                     for s, w, rt in zip(r, widths, right)).rstrip()


print(f"cfutures beside its peers: median of {reps} runs; 'cfutures x' = how "
      "many times better cfutures is than that row (> 1: cfutures wins)")
print(show(head))
print(show(tuple("-" * w for w in widths)))
for r in rows:
    print(show(r))


def chart(path):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    panels = [(w, t) for w, t in TITLES.items()
              if any(wl == w for (wl, _) in order)]
    if not panels:
        return
    cols = 2 if len(panels) > 1 else 1
    nrows = (len(panels) + cols - 1) // cols
    fig, axes = plt.subplots(nrows, cols, figsize=(6.5 * cols, 2.4 * nrows),
                             squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (w, title) in zip(axes.flat, panels):
        impls = [i for (wl, i) in order if wl == w]
        impls.sort(key=lambda i: i != "cfutures")
        meds = [statistics.median(results[(w, i)]) for i in impls]
        lo = [m - min(results[(w, i)]) for m, i in zip(meds, impls)]
        hi = [max(results[(w, i)]) - m for m, i in zip(meds, impls)]
        colours = ["#c0392b" if i == "cfutures" else "#7f8c8d" for i in impls]
        y = list(range(len(impls)))[::-1]
        ax.barh(y, meds, xerr=[lo, hi], color=colours, capsize=3)
        ax.set_yticks(y)
        ax.set_yticklabels(impls, fontsize=8)
        unit = units[w]
        better = "lower" if unit in LOWER_IS_BETTER else "higher"
        ax.set_title(f"{title}", fontsize=9)
        ax.set_xlabel(f"{unit} ({better} is better)", fontsize=8)
        positive = [m for m in meds if m > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_xscale("log")
        ax.tick_params(axis="x", labelsize=7)
    fig.suptitle(f"cfutures beside its peers (median of {reps} runs)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"chart: {path}")


if png:
    try:
        chart(png)
    except ImportError:
        print("chart: python3-matplotlib is missing; no chart drawn",
              file=sys.stderr)
