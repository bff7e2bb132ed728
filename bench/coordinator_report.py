#!/usr/bin/env python3
"""Turns the results of bench/coordinator.sh into sections of
docs/benchmarks.md (printed, and written with --out)."""

import argparse
import datetime
import glob
import json
import os
import re
import subprocess
import sys

GOAL_INPROC = 20_000
GOAL_LOOPBACK = 5_000
GOAL_MEMORY_MB = 200


def load_jsonl(path):
    if not os.path.exists(path):
        return []
    return [json.loads(line) for line in open(path) if line.strip()]


def load_json(path):
    return json.load(open(path)) if os.path.exists(path) else None


def mb(b):
    return b / 1e6


def fs_type(path):
    """The file system type of `path` (or of its closest existing parent)."""
    p = path
    while p and not os.path.exists(p):
        p = os.path.dirname(p)
    try:
        t = subprocess.run(["stat", "-f", "-c", "%T", p or "/"], capture_output=True,
                           text=True, check=True).stdout.strip()
        return "ext2/3/4" if t == "ext2/ext3" else t
    except (OSError, subprocess.CalledProcessError):
        return "?"


def header(a):
    return (
        f"Measured {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d} on {a.machine}; "
        f"{a.profile} build. Command: `{a.command}`.\n"
    )


def writes(r):
    """Results the cache tier stored / dropped during a run (written behind
    the answers, see cache.max_pending_writes)."""
    if "cache_writes_stored" not in r or r.get("cache") in ("hit", "off"):
        return "-"
    return f"{r['cache_writes_stored']:,} / {r['cache_writes_dropped']:,}"


def median(xs):
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def spread(xs):
    return f"{min(xs):,.0f}-{max(xs):,.0f}" if len(xs) > 1 else "1 run"


def grouped(records, key):
    """Records grouped by key, in the order keys first appear."""
    groups = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    return list(groups.items())


def rounds_note(records, key):
    n = max(len(rs) for _, rs in grouped(records, key))
    return f"Each case ran {n} times, alternating with the others; the median is shown." if n > 1 else ""


def writes_all(rs):
    if any(writes(r) == "-" for r in rs):
        return "-"
    stored = sum(r["cache_writes_stored"] for r in rs)
    dropped = sum(r["cache_writes_dropped"] for r in rs)
    return f"{stored:,} / {dropped:,}"


def inproc_key(r):
    cache = {"miss": "misses", "hit": "hits", "off": "no cache tier"}.get(r["cache"], r["cache"])
    if r["cache"] != "off":
        cache += f" ({fs_type(r['cache_dir'])})"
    inp = f"{r['input_bytes'] // 1024} KiB" if r["input_bytes"] >= 1024 else f"{r['input_bytes']} B"
    return (r["clients"], cache, inp)


def loop_fs(loop):
    return "no cache tier" if loop.get("cache") == "off" else fs_type(loop["cache_dir"])


def throughput(a, inproc, loops):
    out = ["## Coordinator throughput", "", header(a)]
    out.append(
        "No-op workers (the executor returns an empty object at once), so every "
        "figure is the coordinator's own cost: `CoordinatorServer::compile` "
        "(counters, logs at info level to a file, recent tasks) -> admission -> "
        "the coordinator's disk cache tier as `hg-coord` composes it -> retry -> "
        "hedging -> scheduler (P2C) -> circuit breaker -> the worker call. "
        "Every task has a unique input, so every lookup is a miss and every "
        "result goes to the cache (a cold build), unless the cache column "
        "says otherwise. Results are written behind the answers by a background "
        "thread (`cache.max_pending_writes`, 1,024 by default): a result that "
        "finds the queue full is not cached, and counted. The CPU figures "
        "include writing the results still queued at the end of a run.\n"
    )
    if inproc:
        out += [
            "In-process: the composed stack in one process, the worker call going "
            "to an in-process no-op service instead of gRPC. \"coordinator CPU\" is the "
            "process's CPU time per task minus that of the same clients calling the "
            "no-op service directly (the clients' and the no-op worker's share). "
            + rounds_note(inproc, lambda r: inproc_key(r)),
            "",
            "| clients | cache | input | tasks/s: median (range) | coordinator CPU per task (median) | results cached / not (queue full), all runs | vs goal (20,000/s) |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for key, rs in grouped(inproc, inproc_key):
            clients, cache, inp = key
            tps = [r["tasks_per_s"] for r in rs]
            fail = sum(r["failed"] for r in rs)
            fail = f" ({fail} failed)" if fail else ""
            out.append(
                f"| {clients} | {cache} | {inp} | {median(tps):,.0f} ({spread(tps)}){fail} | "
                f"{median([r['coord_cpu_us_per_task'] for r in rs]):.1f} µs | {writes_all(rs)} | "
                f"{median(tps) / GOAL_INPROC:.2f}x |"
            )
        out.append("")
    if loops:
        loop = loops[0]
        flat = [dict(r, fs=loop_fs(l), cache=l.get("cache")) for l in loops for r in l["runs"]]
        out += [
            f"Loopback gRPC: a real `hg-coord` process, {loop['workers']} no-op worker "
            "processes, clients (one HTTP/2 connection each, like `hgbuild` "
            f"processes) in the benchmark process; {loop['input_bytes']} B inputs, "
            "cache misses. CPU is the `hg-coord` process's (from `/proc/<pid>/stat`); "
            "all processes share the machine's cores. "
            + rounds_note(flat, lambda r: (r["fs"], r["clients"])),
            "",
            "| clients | cache dir | tasks/s: median (range) | hg-coord CPU per task (median) | hg-coord capacity per core | results cached / not (queue full), all runs | vs goal (5,000/s) |",
            "|---:|---|---:|---:|---:|---:|---:|",
        ]
        for (fs, clients), rs in grouped(flat, lambda r: (r["fs"], r["clients"])):
            tps = [r["tasks_per_s"] for r in rs]
            cpu = median([r["coord_cpu_us_per_task"] for r in rs])
            cap = 1e6 / cpu if cpu > 0 else float("inf")
            fail = sum(r["failed"] for r in rs)
            fail = f" ({fail} failed)" if fail else ""
            out.append(
                f"| {clients} | {fs} | {median(tps):,.0f} ({spread(tps)}){fail} | {cpu:.0f} µs | "
                f"{cap:,.0f} tasks/s | {writes_all(rs) if fs != 'no cache tier' else '-'} | "
                f"{median(tps) / GOAL_LOOPBACK:.2f}x |"
            )
        out.append("")
        out.append(
            "hg-coord's resident memory after the runs: at most "
            f"{max(mb(l['coord_rss']) for l in loops):.0f} MB (peak "
            f"{max(mb(l['coord_hwm']) for l in loops):.0f} MB)."
        )
        out.append("")
    return "\n".join(out)


def memory(a, m):
    out = ["## Coordinator memory", "", header(a)]
    out.append(
        f"A real `hg-coord` with {m['sim_workers']:,} simulated workers registered over "
        "gRPC (`RegistryService.Register`, fake addresses, a compiler no task asks "
        f"for; registering them took {m['register_s']:.1f} s) and {m['in_flight']:,} "
        f"compiles held in flight by four no-op workers that answer after {m['hold_s']} s. "
        f"Each compile carries {m['input_bytes'] // 1024} KiB of preprocessed system "
        f"headers ({m['input_compressed_bytes'] // 1024} KiB compressed). "
        "Resident memory from `/proc/<pid>/status`:\n"
    )
    out += [
        "| state | VmRSS | peak (VmHWM) |",
        "|---|---:|---:|",
        f"| idle | {mb(m['rss_idle']):.1f} MB | |",
        f"| {m['sim_workers']:,} workers registered | {mb(m['rss_workers']):.1f} MB | |",
        f"| + {m['active_at_read']:,} compiles in flight (read {m['in_flight_after_s']:.1f} s after sending them) | {mb(m['rss_in_flight']):.1f} MB | {mb(m['hwm_in_flight']):.1f} MB |",
        f"| after they finished ({m['completed']:,} succeeded) | {mb(m['rss_after']):.1f} MB | {mb(m['hwm_after']):.1f} MB |",
        "",
        f"Against the goal of < {GOAL_MEMORY_MB} MB: peak {mb(m['hwm_after']):.0f} MB "
        f"({mb(m['hwm_after']) / GOAL_MEMORY_MB:.2f}x of the limit).",
        "",
    ]
    return "\n".join(out)


def payload(a, p):
    runs = p["runs"]
    raw = runs[0]["raw_bytes"]
    comp = runs[0]["compressed_bytes"]
    med = lambda k: sorted(r[k] for r in runs)[len(runs) // 2]  # noqa: E731
    out = ["## Payload path", "", header(a)]
    out.append(
        f"A {mb(raw):.1f} MB preprocessed source (system C and C++ headers run "
        f"through `gcc -E`/`g++ -E`, concatenated; zstd level 1 makes it "
        f"{mb(comp):.1f} MB) from a client through a real `hg-coord` to a worker "
        "and back: the client compresses it, the coordinator decodes and hashes it "
        "for the cache key, passes the compressed bytes on, the worker decodes it "
        "and returns it as the object, compressed (a no-op compile that echoes "
        "the input, so the way back carries as much as the way out), the "
        "coordinator stores the result in its cache, the client decodes the "
        f"object. Median of {len(runs)} run(s), each a cache miss:\n"
    )
    out += [
        "| part | time | throughput (uncompressed MB/s) |",
        "|---|---:|---:|",
        f"| client compresses | {med('compress_s') * 1000:.0f} ms | {mb(raw) / med('compress_s'):,.0f} |",
        f"| round trip (client -> coordinator -> worker -> coordinator -> client) | {med('round_trip_s') * 1000:.0f} ms | {mb(raw) / med('round_trip_s'):,.0f} |",
        f"| total, including decoding the object | {med('total_s') * 1000:.0f} ms | {mb(raw) / med('total_s'):,.0f} |",
        "",
        f"hg-coord's peak resident memory in this run: {mb(p['coord_hwm']):.0f} MB.",
        "",
    ]
    return "\n".join(out)


def criterion_results(root):
    res = {}
    for bj in glob.glob(os.path.join(root, "**", "new", "benchmark.json"), recursive=True):
        d = os.path.dirname(bj)
        try:
            b = json.load(open(bj))
            e = json.load(open(os.path.join(d, "estimates.json")))
        except (OSError, ValueError):
            continue
        res[(b["group_id"], b.get("function_id"), b.get("value_str"))] = e["median"]["point_estimate"]
    return res


def fmt_ns(ns):
    if ns < 1000:
        return f"{ns:.0f} ns"
    if ns < 1e6:
        return f"{ns / 1000:.2f} µs"
    return f"{ns / 1e6:.2f} ms"


def micro(a, root):
    r = criterion_results(root)
    out = ["## Micro-benchmarks", "", header(a)]
    out.append(
        "Criterion medians (`cargo bench -p hybridgrid-exec --bench classify`, "
        "`-p hybridgrid-cache --bench key`, `-p hybridgrid-core --bench schedule`, "
        "with `-- --warm-up-time 1 --measurement-time 2`).\n"
    )
    cls = sorted((k, v) for k, v in r.items() if k[0] == "classify")
    if cls:
        out += [
            "Argument classification (`hybridgrid_exec::args::classify`, gcc, what "
            "`hgbuild` does before every compile):",
            "",
            "| command line | time |",
            "|---|---:|",
        ]
        order = ["short", "cmake", "long", "local"]
        cls.sort(key=lambda kv: next((i for i, o in enumerate(order) if (kv[0][2] or kv[0][1] or "").startswith(o)), 9))
        for k, v in cls:
            out.append(f"| {k[2] or k[1]} | {fmt_ns(v)} |")
        out.append("")
    key = [(k, v) for k, v in r.items() if k[0] == "cache_key"]
    if key:
        out += [
            "Cache key (`CacheKey::for_task`: decode the input, blake3 over compiler, "
            "arguments, target, language and input; the coordinator does this for "
            "every task):",
            "",
            "| input | raw | zstd-compressed (includes decompression) |",
            "|---|---:|---:|",
        ]
        sizes = {"1 KiB": 1024, "100 KiB": 100 * 1024, "1 MiB": 1 << 20}
        for label, n in sizes.items():
            raw = r.get(("cache_key", "raw", label))
            z = r.get(("cache_key", "zstd", label))
            cell = lambda ns: f"{fmt_ns(ns)} ({n / ns * 1e9 / 1e6:,.0f} MB/s)" if ns else "-"  # noqa: E731
            out.append(f"| {label} | {cell(raw)} | {cell(z)} |")
        out.append("")
    sch = [(k, v) for k, v in r.items() if k[0] == "schedule_decision"]
    if sch:
        out += [
            "Scheduling decision (`Scheduler::choose`: capability lookup by compiler "
            "and target, circuit check, placement, cloning the chosen worker's id), "
            "three of four workers capable, loads varied:",
            "",
            "| algorithm | 10 workers | 1,000 workers | 10,000 workers |",
            "|---|---:|---:|---:|",
        ]
        algs = sorted({k[1] for k, _ in sch})
        for alg in algs:
            cells = [fmt_ns(r[("schedule_decision", alg, n)]) if ("schedule_decision", alg, n) in r else "-"
                     for n in ("10", "1000", "10000")]
            out.append(f"| {alg} | " + " | ".join(cells) + " |")
        out += [
            "",
            "The goal is < 10 µs at 10,000 workers. P2C looks at two random capable "
            "workers. Least-loaded scans the capable workers from a random start and "
            "stops at the first idle one (nothing beats zero load; the random start "
            "spreads equal loads), so in a pool that is not saturated it looks at a "
            "handful of workers; a saturated pool is scanned in full. Cost-aware keeps "
            "the capable workers sorted by learned speed (re-sorted after 256 decisions, "
            "or after task completions reaching a quarter of the pool) and visits them "
            "fastest first: once a worker with a free slot is found no slower worker can "
            "finish sooner, so the scan stops there. Pools of up to 64 capable workers "
            "are scanned in full, which is exact and cheap. No speeds are learned in "
            "this benchmark, so cost-aware's scan meets equal speeds.",
            "",
        ]
    return "\n".join(out)


def replace_section(text, title, section, drop=()):
    """Replaces the section `## title...` (up to the next `## `), or appends."""
    for old in drop:
        text = re.sub(r"\n## %s\n.*?(?=\n## |\Z)" % re.escape(old), "\n", text, flags=re.S)
    pat = re.compile(r"## %s\n.*?(?=\n## |\Z)" % re.escape(title), re.S)
    if pat.search(text):
        return pat.sub(lambda m: section.rstrip() + "\n", text, count=1)
    return text.rstrip() + "\n\n" + section.rstrip() + "\n"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--machine", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--profile", required=True)
    ap.add_argument("--out")
    a = ap.parse_args()
    sections = []
    inproc = load_jsonl(os.path.join(a.results, "inproc.jsonl"))
    loops = load_jsonl(os.path.join(a.results, "loopback.jsonl"))
    if inproc or loops:
        sections.append(("Coordinator throughput", throughput(a, inproc, loops), ()))
    m = load_json(os.path.join(a.results, "memory.json"))
    if m:
        sections.append(("Coordinator memory", memory(a, m), ()))
    p = load_json(os.path.join(a.results, "payload.json"))
    if p:
        sections.append(("Payload path", payload(a, p), ()))
    cdir = os.path.join(a.results, "criterion_dir")
    if os.path.exists(cdir):
        root = open(cdir).read().strip()
        sections.append(("Micro-benchmarks", micro(a, root), ("Scheduling decision cost",)))
    for _, s, _ in sections:
        print(s)
    if a.out:
        try:
            text = open(a.out).read()
        except FileNotFoundError:
            text = "# Benchmarks\n"
        for title, s, drop in sections:
            text = replace_section(text, title, s, drop)
        open(a.out, "w").write(text)


if __name__ == "__main__":
    sys.exit(main())
