#!/usr/bin/env python3
"""The figures of scripts/syscalls.sh.

  syscalls_report.py row BACKEND CONNS SIZE PIPELINE TASKS ATTACHED CLK_TCK S0 S1 S2 S3 STRACE_OUT
      one JSON line from the four counter snapshots and the `strace -c` summary
  syscalls_report.py line JSON
      that line, readable, for the console
  syscalls_report.py table RAW_JSONL OUT_MD [URING_PROBE_LINE]
      the Markdown tables (also appended to make bench's report)
"""

import json
import sys

TOP = 6


def snapshot(path):
    values = {}
    with open(path) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 2:
                values[parts[0]] = float(parts[1])
    return values


def parse_strace(path):
    """`strace -c` summary → ({syscall: (calls, errors)}, total calls, total errors)."""
    calls = {}
    total = (0, 0)
    dashes = 0
    with open(path) as f:
        for line in f:
            if line.startswith("------"):
                dashes += 1
                continue
            if dashes == 0:
                continue
            fields = line.split()
            # % time, seconds, usecs/call, calls, [errors], syscall
            if len(fields) == 6:
                entry = (int(fields[3]), int(fields[4]))
            elif len(fields) == 5:
                entry = (int(fields[3]), 0)
            else:
                continue
            if fields[-1] == "total":
                total = entry
            else:
                calls[fields[-1]] = entry
    if total == (0, 0) and calls:
        total = (sum(c for c, _ in calls.values()), sum(e for _, e in calls.values()))
    return calls, total


def delta(a, b, key):
    if key not in a or key not in b:
        return None
    return b[key] - a[key]


def row(args):
    backend, conns, size, pipeline, tasks, attached, clk_tck = args[:7]
    s0, s1, s2, s3 = (snapshot(p) for p in args[7:11])
    size, clk_tck = int(size), int(clk_tck)
    calls, (total, errors) = parse_strace(args[11])

    def window(a, b):
        seconds = b["time"] - a["time"]
        requests = delta(a, b, "holdfast_bytes_written_total") / size
        out = {"seconds": round(seconds, 3), "requests": int(requests)}
        if requests > 0:
            out["rps"] = round(requests / seconds, 1)
            out["cpu_us_per_req"] = round(delta(a, b, "cpu_ticks") / clk_tck * 1e6 / requests, 3)
            out["loop_turns_per_req"] = round(delta(a, b, "holdfast_loop_iterations_total") / requests, 4)
            enters = delta(a, b, "holdfast_uring_enters_total")
            if enters is not None and (backend == "uring" or enters > 0):
                out["uring_enters_per_req"] = round(enters / requests, 4)
        return out

    line = {
        "kind": "syscalls",
        "backend": backend,
        "conns": int(conns),
        "size": size,
        "pipeline": int(pipeline),
        "threads": int(tasks),
        "threads_traced": int(attached),
        "plain": window(s0, s1),
        "strace": window(s2, s3),
        "syscalls": total,
        "syscall_errors": errors,
        "by_syscall": {name: {"calls": c, "errors": e} for name, (c, e) in
                       sorted(calls.items(), key=lambda kv: -kv[1][0])},
    }
    requests = line["strace"]["requests"]
    if requests > 0:
        line["syscalls_per_req"] = round(total / requests, 4)
        # Each loop turn makes one waiting syscall (epoll_wait, or the
        # io_uring_enter that submits and waits); the slowed server makes
        # fewer turns per request. Swapping the strace window's turns for
        # the plain window's estimates the count at full speed.
        plain, traced = line["plain"].get("loop_turns_per_req"), line["strace"].get("loop_turns_per_req")
        if plain is not None and traced is not None:
            line["est_syscalls_per_req"] = round(total / requests - traced + plain, 4)
    print(json.dumps(line))


def top(d, n=TOP):
    requests = d["strace"]["requests"]
    if requests <= 0:
        return "–"
    def per(x):
        x /= requests
        return "%.3f" % x if x >= 0.01 else "%.4f" % x

    parts = []
    rest = 0
    for name, v in d["by_syscall"].items():
        # Below 1 in 10000 requests: the admin scrapes and the like.
        if len(parts) < n and v["calls"] / requests >= 1e-4:
            text = "%s %s" % (name, per(v["calls"]))
            if v["errors"] / requests >= 1e-4:
                text += " (%s errors)" % per(v["errors"])
            parts.append(text)
        else:
            rest += v["calls"]
    if rest:
        parts.append("others %s" % (per(rest) if rest / requests >= 1e-4 else "<0.0001"))
    return ", ".join(parts)


def line(args):
    d = json.loads(args[0])
    print("%-5s conns %s size %s pipeline %-2s  %s syscalls / %s requests = %s per request; top: %s" % (
        d["backend"], d["conns"], d["size"], d["pipeline"], d["syscalls"], d["strace"]["requests"],
        "%.3f" % d["syscalls_per_req"] if "syscalls_per_req" in d else "–", top(d, 4)))


def fmt(v, pattern):
    return "–" if v is None else pattern % v


def table(args):
    raw, md = args[0], args[1]
    probe = args[2] if len(args) > 2 else ""
    rows = [json.loads(l) for l in open(raw) if l.strip()]
    data = [r for r in rows if r.get("kind") == "syscalls"]
    skips = [r for r in rows if r.get("kind") == "skip"]
    out = ["### Syscalls per request (`make syscalls`)\n"]
    if data:
        d = data[0]
        out.append(
            "One shard (`--threads 1`) pinned to CPU 0, `holdfast bench` on CPU 1: %d conns × %d B echo. "
            "`strace -c -f -p PID` attached to the server (every thread) for %.1f s of steady load; "
            "syscalls per request = strace's calls ÷ the requests the server answered in that window "
            "(its `holdfast_bytes_written_total` ÷ size). strace slows the server many times over: these "
            "are counts, not timings. The *plain* columns come from a window just before, without strace "
            "(server CPU from /proc/PID/stat, one sample: noisy; loop turns and io_uring enters from /metrics). "
            "The slowed server batches more per loop turn, and each turn makes one waiting syscall "
            "(`epoll_wait`, or the `io_uring_enter` that submits and waits), so *at full speed* "
            "estimates the count without strace: syscalls/req − strace's loop turns/req + the plain "
            "window's.\n"
            % (d["conns"], d["size"], d["strace"]["seconds"]))
        if probe:
            out.append("io_uring probe: `%s`.\n" % probe)
        out.append("| backend | pipeline | requests (strace window) | syscalls/req under strace | ×epoll | top syscalls per request | "
                   "loop turns/req plain / strace | io_uring enters/req plain / strace | syscalls/req at full speed (est.) | ×epoll | "
                   "req/s plain / strace | plain CPU µs/req |")
        out.append("|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|")
        epoll = {(r["conns"], r["size"], r["pipeline"]): r for r in data if r["backend"] == "epoll"}
        for r in data:
            base = epoll.get((r["conns"], r["size"], r["pipeline"]))
            ratio = est_ratio = None
            if base and base.get("syscalls_per_req") and r.get("syscalls_per_req") is not None:
                ratio = r["syscalls_per_req"] / base["syscalls_per_req"]
            if base and base.get("est_syscalls_per_req") and r.get("est_syscalls_per_req") is not None:
                est_ratio = r["est_syscalls_per_req"] / base["est_syscalls_per_req"]
            p, s = r["plain"], r["strace"]
            traced = "" if r["threads_traced"] >= r["threads"] else " (%d of %d threads traced)" % (r["threads_traced"], r["threads"])
            out.append("| %s | %d | %d | %s | %s | %s%s | %s / %s | %s / %s | %s | %s | %s / %s | %s |" % (
                r["backend"], r["pipeline"], s["requests"],
                fmt(r.get("syscalls_per_req"), "%.3f"), fmt(ratio, "%.2f"), top(r), traced,
                fmt(p.get("loop_turns_per_req"), "%.4f"), fmt(s.get("loop_turns_per_req"), "%.4f"),
                fmt(p.get("uring_enters_per_req"), "%.4f"), fmt(s.get("uring_enters_per_req"), "%.4f"),
                fmt(r.get("est_syscalls_per_req"), "%.3f"), fmt(est_ratio, "%.2f"),
                fmt(p.get("rps"), "%.0f"), fmt(s.get("rps"), "%.0f"), fmt(p.get("cpu_us_per_req"), "%.3f")))
        out.append("")
    for s in skips:
        out.append("**--backend %s skipped**: %s\n" % (s["backend"], s["reason"]))
    if not data and not skips:
        out.append("No measurement.\n")
    with open(md, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    {"row": row, "line": line, "table": table}[sys.argv[1]](sys.argv[2:])
