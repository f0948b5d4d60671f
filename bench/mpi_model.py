"""The MPI pool's cost model (docs/mpi.md): predicted tasks per second for
W workers, from constants measured by `bench/run mpi-scale`. A MODEL, not a
measurement: it prints what the constants imply on other interconnects.

    mpi_model.py C0 CW C0_ITEM L_US B_GBS

C0: rank 0's CPU time per task (µs), CW: a worker's time per task beside
the task itself (µs), C0_ITEM: rank 0's CPU time per map item with
chunksize 1000 (µs; a worker's is taken equal), L_US and B_GBS: this
machine's one-way latency (µs) and bandwidth (GB/s), from
bench/mpi_pingpong.c. For each interconnect and
workload, with t the task's own time, s its payload each way and k the
tasks in flight per worker (the pool's send-ahead depth: up to 32 tasks or
about 200 µs of work, at least 2):

    worker rate  = min(1 / (t + CW + o), k / (t + CW + o + 2 L + 2 s / B))
    throughput   = min(1 / (C0 + o), B / s, W x worker rate)

1/C0 bounds everything (one rank hands out every task and completes every
future); B/s is rank 0's own link (each task's payload comes in and goes
out through it; full duplex); a worker is busy while its k tasks in flight
cover the round trip, else it waits for the network. o is the CPU time one
more message costs each side on that interconnect beyond what shared memory
costs (already inside C0 and CW): an ASSUMED figure, not measured here
(kernel TCP: a send and a receive system call; InfiniBand and RoCE: user-
space verbs)."""
import sys

c0, cw, c0_item, lat, bw = (float(a) for a in sys.argv[1:6])
# (name, L µs, B GB/s, o µs)
NETS = [
    ("shared memory here (measured L, B)", lat, bw, 0.0),
    ("InfiniBand (1.5 µs, 12 GB/s, o 0.2)", 1.5, 12.0, 0.2),
    ("100 GbE RoCE (5 µs, 10 GB/s, o 0.5)", 5.0, 10.0, 0.5),
    ("10 GbE TCP (25 µs, 1.1 GB/s, o 5)", 25.0, 1.1, 5.0),
]
# (name, task time t in µs, payload s in bytes each way, tasks in flight
# k, rank 0's and a worker's cost per task, items per task)
LOADS = [
    ("tiny task (submit), tasks/s", 0.0, 8, 32, c0, cw, 1),
    ("map of tiny items, chunk 1000, items/s", 0.0, 8000, 2,
     1000 * c0_item, 1000 * c0_item, 1000),
    ("100 µs task, 8 B, tasks/s", 100.0, 8, 2, c0, cw, 1),
    ("1 ms task, 1 MiB each way, tasks/s", 1000.0, 1 << 20, 2, c0, cw, 1),
]
WORKERS = [1, 7, 32, 128, 1024]


def rate(t, s, k, c0, cw, lat_us, bw_gbs, o, w):
    link = s / (bw_gbs * 1e3)  # µs per payload
    cw = cw + o
    per_worker = min(1 / (t + cw), k / (t + cw + 2 * lat_us + 2 * link))
    bounds = [1 / (c0 + o), w * per_worker]
    if s > 0:
        bounds.append(1 / link)
    return min(bounds) * 1e6  # tasks/s


def fmt(x):
    return f"{x / 1e6:.2f} M" if x >= 1e6 else f"{x / 1e3:.1f} k" \
        if x >= 1e3 else f"{x:.0f}"


print(f"Model constants: C0 = {c0} µs, CW = {cw} µs, C0_ITEM = {c0_item} "
      f"µs; here L = {lat} µs, B = {bw} GB/s. Predicted throughput (a "
      f"model, not a measurement):\n")
print("| interconnect | workload | " +
      " | ".join(f"W={w}" for w in WORKERS) + " |")
print("|---|---|" + "---|" * len(WORKERS))
for net, lat_us, bw_gbs, o in NETS:
    for name, t, s, k, c0_, cw_, items in LOADS:
        cells = [fmt(items * rate(t, s, k, c0_, cw_, lat_us, bw_gbs, o, w))
                 for w in WORKERS]
        print(f"| {net} | {name} | " + " | ".join(cells) + " |")
