#!/usr/bin/env python3
"""Turns the raw lines of scripts/bench.sh into the Markdown table and the
SVG chart: medians over rounds, ratios to tokio current_thread and to the
floor (the minimal C servers of reference/floor/), and the io_uring driver
against the epoll one."""

import json
import math
import os
import platform
import statistics
import subprocess
import sys

ALL_SERVERS = ["holdfast", "holdfast_uring", "tokio_ct", "tokio_mt", "base", "base_uring", "front",
               "front_uring", "floor_epoll", "floor_uring"]
SERVERS = ALL_SERVERS  # narrowed in main() to the servers that ran
LABEL = {
    "holdfast": "holdfast epoll (1 shard)",
    "holdfast_uring": "holdfast io_uring (1 shard)",
    "tokio_ct": "tokio current_thread",
    "tokio_mt": "tokio multi_thread",
    "base": "baseline holdfast epoll (BASELINE)",
    "base_uring": "baseline holdfast io_uring (BASELINE)",
    "front": "holdfast epoll with FRONT_ARGS",
    "front_uring": "holdfast io_uring with FRONT_ARGS",
    "floor_epoll": "floor: minimal C epoll",
    "floor_uring": "floor: minimal C io_uring",
}
COLOR = {"holdfast": "#d62728", "holdfast_uring": "#9467bd", "tokio_ct": "#1f77b4", "tokio_mt": "#2ca02c",
         "base": "#ff9896", "base_uring": "#c5b0d5", "front": "#8c564b", "front_uring": "#e377c2",
         "floor_epoll": "#7f7f7f", "floor_uring": "#bcbd22"}
BASE = "tokio_ct"


def floor_of(server):
    """The floor a server's CPU per request is compared with: the minimal
    io_uring server for the io_uring servers, the minimal epoll server for
    the others (tokio included). floor_uring's own floor is floor_epoll, so
    its row says what io_uring itself gains or costs at the minimum."""
    return "floor_uring" if server.endswith("_uring") and server != "floor_uring" else "floor_epoll"

# The io_uring target (issue 6): at these connection counts, CPU per request
# at most URING_CPU_TARGET × epoll's and no row behind epoll in req/s.
URING_TARGET_CONNS = (1000, 10000)
URING_CPU_TARGET = 0.9


def machine():
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    except OSError:
        rustc = "?"
    mem = "?"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = "%.0f GiB" % (kib / 2**20)
    except (OSError, ValueError, IndexError):
        pass
    return "%d CPUs (%s), %s RAM, Linux %s, %s" % (
        os.cpu_count() or 0, model, mem, platform.release(), rustc)


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(value, base):
    if value is None or not base:
        return None
    return value / base


def fmt(value, pattern):
    return "–" if value is None else pattern % value


def geomean(values):
    return math.exp(sum(map(math.log, values)) / len(values)) if values else None


def floor_lines(geo_floor, skipped):
    """The geometric mean of ×floor, server by server; or why there is none."""
    out = []
    missing = [f for f in ("floor_epoll", "floor_uring")
               if f not in SERVERS and any(floor_of(s) == f for s in SERVERS)]
    for f in missing:
        reason = skipped.get(f)
        out.append("**%s not measured**: %s; the ×floor of the servers it is the floor of is left blank.\n" % (
            LABEL[f], "`%s`" % reason if reason else "`%s` was not among the servers run" % f))
    measured = [s for s in SERVERS if geo_floor[s]]
    if measured:
        out.append("Geometric mean over the matrix of CPU µs/req relative to each server's floor: " + ", ".join(
            "%s %s (÷ %s)" % (LABEL[s], fmt(geomean(geo_floor[s]), "%.2f×"), floor_of(s)) for s in measured) + ".\n")
    return out


def uring_section(cells, med, skipped):
    """io_uring against epoll, cell by cell, and the issue's target."""
    out = ["### io_uring against epoll\n"]
    if "holdfast_uring" not in SERVERS:
        reason = skipped.get("holdfast_uring")
        out.append("**Not measured**: %s.\n" % (
            "this kernel cannot run the io_uring driver: `%s`" % reason if reason
            else "`holdfast_uring` was not among the servers run"))
        return out
    if "holdfast" not in SERVERS:
        out.append("**Not compared**: the epoll server (`holdfast`) was not among the servers run.\n")
        return out
    out.append("The same release binary (built with `--features uring`), `--backend uring` against "
               "`--backend epoll`, alternated within each cell like the other servers. Ratios are "
               "io_uring ÷ epoll of the medians: req/s higher is better; p99 and CPU/req lower is better.\n")
    out.append("| conns | size | pipeline | epoll req/s | io_uring req/s | ×epoll | epoll p99 µs | io_uring p99 µs | ×epoll | "
               "epoll CPU µs/req | io_uring CPU µs/req | ×epoll |")
    out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    cpu_ratios, rps_ratios = [], []
    cpu_miss, rps_miss, checked = [], [], []
    for cell in cells:
        e, u = med[cell, "holdfast"], med[cell, "holdfast_uring"]
        r_rps, r_p99, r_cpu = ratio(u["rps"], e["rps"]), ratio(u["p99"], e["p99"]), ratio(u["cpu"], e["cpu"])
        if r_cpu:
            cpu_ratios.append(r_cpu)
        if r_rps:
            rps_ratios.append(r_rps)
        name = "%d×%d×%d" % cell
        if cell[0] in URING_TARGET_CONNS:
            checked.append(name)
            if r_cpu is None or r_cpu > URING_CPU_TARGET:
                cpu_miss.append("%s %s" % (name, fmt(r_cpu, "%.2f")))
            if r_rps is None or r_rps < 1.0:
                rps_miss.append("%s %s" % (name, fmt(r_rps, "%.2f")))
        out.append("| %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
            cell[0], cell[1], cell[2],
            fmt(e["rps"], "%.0f"), fmt(u["rps"], "%.0f"), fmt(r_rps, "%.2f"),
            fmt(e["p99"], "%.1f"), fmt(u["p99"], "%.1f"), fmt(r_p99, "%.2f"),
            fmt(e["cpu"], "%.3f"), fmt(u["cpu"], "%.3f"), fmt(r_cpu, "%.2f")))
    out.append("")
    out.append("Geometric mean over the matrix, io_uring ÷ epoll: CPU µs/req %s, req/s %s.\n" % (
        fmt(geomean(cpu_ratios), "%.2f×"), fmt(geomean(rps_ratios), "%.2f×")))
    if checked:
        out.append("Against the target (at %s conns: CPU/request ≤ %.1f× epoll's, no row behind epoll in req/s), "
                   "over the %d rows measured there: CPU %s; req/s %s.\n" % (
                       " and ".join(str(c) for c in URING_TARGET_CONNS), URING_CPU_TARGET, len(checked),
                       "**met**" if not cpu_miss else "**missed** on " + ", ".join(cpu_miss),
                       "**met**" if not rps_miss else "**missed** on " + ", ".join(rps_miss)))
    else:
        out.append("No row at %s conns was measured: the target is not checked.\n" % (
            " or ".join(str(c) for c in URING_TARGET_CONNS)))
    return out


def baseline_section(cells, med):
    """This build against BASELINE (an older holdfast), driver by driver;
    and this build with FRONT_ARGS against it without."""
    out = []
    pairs = (("holdfast", "base"), ("holdfast_uring", "base_uring"),
             ("front", "holdfast"), ("front_uring", "holdfast_uring"))
    for new, old in pairs:
        if new not in SERVERS or old not in SERVERS:
            continue
        out.append("### %s against %s\n" % (LABEL[new], LABEL[old]))
        if new.startswith("front"):
            out.append("FRONT_ARGS: `%s`.\n" % os.environ.get("FRONT_ARGS", "?"))
        out.append("Alternated within each cell like the other servers; ratios are this build ÷ the "
                   "baseline of the medians (CPU/req lower is better).\n")
        out.append("| conns | size | pipeline | baseline CPU µs/req | this CPU µs/req | ×base | baseline req/s | this req/s | ×base |")
        out.append("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        cpu_ratios = []
        for cell in cells:
            b, n = med[cell, old], med[cell, new]
            r_cpu, r_rps = ratio(n["cpu"], b["cpu"]), ratio(n["rps"], b["rps"])
            if r_cpu:
                cpu_ratios.append(r_cpu)
            out.append("| %d | %d | %d | %s | %s | %s | %s | %s | %s |" % (
                cell[0], cell[1], cell[2], fmt(b["cpu"], "%.3f"), fmt(n["cpu"], "%.3f"), fmt(r_cpu, "%.2f"),
                fmt(b["rps"], "%.0f"), fmt(n["rps"], "%.0f"), fmt(r_rps, "%.2f")))
        out.append("")
        out.append("Geometric mean of CPU µs/req, this ÷ baseline: %s.\n" % fmt(geomean(cpu_ratios), "%.3f×"))
    return out


def main():
    global SERVERS, BASE
    raw, md_path, svg_path, elapsed, duration, warmup, rounds = sys.argv[1:8]
    rows = [json.loads(line) for line in open(raw) if line.strip()]
    load = [r for r in rows if r.get("kind") == "load"]
    idle = [r for r in rows if r.get("kind") == "idle"]
    skipped = {r["server"]: r.get("reason", "?") for r in rows if r.get("kind") == "skip"}
    present = {r.get("server") for r in load}
    SERVERS = [s for s in ALL_SERVERS if s in present]
    if BASE not in SERVERS and SERVERS:
        BASE = SERVERS[0]  # a reduced matrix without tokio_ct (SERVERS=...)
    cells = sorted({(r["conns"], r["size"], r["pipeline"]) for r in load if "conns" in r})

    med = {}
    errors = {}
    connected = {}
    for cell in cells:
        for server in SERVERS:
            runs = [r for r in load if r["server"] == server and (r.get("conns"), r.get("size"), r.get("pipeline")) == cell]
            med[cell, server] = {
                "rps": median([r.get("rps") for r in runs]),
                "p99": median([r.get("p99_us") for r in runs]),
                "cpu": median([r.get("server_cpu_us_per_req") for r in runs]),
            }
            errors[cell, server] = sum(max(r.get("errors", 0), 0) for r in runs) + sum(1 for r in runs if r.get("errors", 0) < 0)
            # Fewest connections established in any round (a failed run: 0).
            connected[cell, server] = min((r.get("connected", 0) for r in runs), default=0)

    out = []
    out.append("## `make bench` results\n")
    out.append("Machine: %s.  " % machine())
    out.append("Each cell: %s measured after %s warm-up, median of %s rounds; server pinned to CPU 0, "
               "`holdfast bench` to CPU 1; echo protocol; ratios (×ct) are to %s "
               "(req/s: higher is better; p99 and CPU/req: lower is better). "
               "×floor is CPU µs/req ÷ that of the server's floor (reference/floor/, minimal C): "
               "the io_uring floor for the io_uring servers, the epoll floor for the others "
               "(and for the io_uring floor itself). "
               "Whole run: %s s.\n" % (duration, warmup, rounds, LABEL[BASE], elapsed))
    out.append("`connected` is the fewest connections established in any round; ⚠ marks a cell where some "
               "round had fewer than requested (its medians then mix in a lighter load).\n")
    out.append("| conns | size | pipeline | server | connected | req/s | ×ct | p99 µs | ×ct | CPU µs/req | ×ct | ×floor | errors |")
    out.append("|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    short = []
    geo = {s: [] for s in SERVERS}
    geo_floor = {s: [] for s in SERVERS}
    for cell in cells:
        base = med[cell, BASE]
        for server in SERVERS:
            m = med[cell, server]
            r_rps, r_p99, r_cpu = ratio(m["rps"], base["rps"]), ratio(m["p99"], base["p99"]), ratio(m["cpu"], base["cpu"])
            if r_cpu:
                geo[server].append(r_cpu)
            floor = floor_of(server)
            r_floor = ratio(m["cpu"], med[cell, floor]["cpu"]) if floor in SERVERS else None
            if r_floor:
                geo_floor[server].append(r_floor)
            under = connected[cell, server] < cell[0]
            if under:
                short.append("%d×%d×%d %s (%d)" % (cell[0], cell[1], cell[2], LABEL[server], connected[cell, server]))
            out.append("| %d | %d | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d |" % (
                cell[0], cell[1], cell[2], LABEL[server],
                "%d%s" % (connected[cell, server], " ⚠" if under else ""),
                fmt(m["rps"], "%.0f"), fmt(r_rps, "%.2f"),
                fmt(m["p99"], "%.1f"), fmt(r_p99, "%.2f"),
                fmt(m["cpu"], "%.3f"), fmt(r_cpu, "%.2f"), fmt(r_floor, "%.2f"),
                errors[cell, server]))
    out.append("")
    if short:
        out.append("**Under-connected cells (⚠)**: " + ", ".join(short) + ".\n")
    else:
        out.append("Every run of every cell established all its connections.\n")
    out.append("Geometric mean over the matrix of CPU µs/req relative to %s: " % LABEL[BASE] + ", ".join(
        "%s %s" % (LABEL[s], fmt(geomean(geo[s]), "%.2f×")) for s in SERVERS) + ".\n")
    out.extend(floor_lines(geo_floor, skipped))
    out.extend(uring_section(cells, med, skipped))
    out.extend(baseline_section(cells, med))

    out.append("### Memory per idle connection\n")
    out.append("RSS read once the server's fd count shows every connection held (the client still holding "
               "them); (after − before) ÷ connections held; one figure per round, then the median. "
               "⚠: the server held fewer than requested in that round.\n")
    out.append("| server | idle conns | held (per round) | RSS before KiB | RSS after KiB | bytes/conn per round | bytes per connection (median) |")
    out.append("|---|---:|---:|---:|---:|---:|---:|")
    for server in SERVERS:
        runs = [r for r in idle if r["server"] == server]
        if not runs:
            continue
        per_round = [(r["rss_after_kib"] - r["rss_before_kib"]) * 1024 / max(r.get("held", r["conns"]), 1) for r in runs]
        out.append("| %s | %d | %s | %s | %s | %s | %.0f |" % (
            LABEL[server], runs[0]["conns"],
            "/".join("%d%s" % (r.get("held", -1), " ⚠" if r.get("held", -1) < r["conns"] else "") for r in runs),
            "/".join(str(r["rss_before_kib"]) for r in runs),
            "/".join(str(r["rss_after_kib"]) for r in runs),
            "/".join("%.0f" % v for v in per_round), median(per_round)))
    out.append("")
    with open(md_path, "w") as f:
        f.write("\n".join(out) + "\n")
    with open(svg_path, "w") as f:
        f.write(svg(cells, med))


def svg(cells, med):
    """Four panels (size × pipeline), req/s against connections (log x)."""
    conns = sorted({c[0] for c in cells})
    panels = sorted({(c[1], c[2]) for c in cells})
    pw, ph, margin = 380, 260, 60
    width = pw * 2 + margin
    legend_rows = (len(SERVERS) + 3) // 4
    height = ph * ((len(panels) + 1) // 2) + 70 + 16 * (legend_rows - 1)
    parts = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" font-size="11">' % (width, height),
             '<rect width="100%" height="100%" fill="white"/>',
             '<text x="%d" y="18" font-size="14" text-anchor="middle">requests/s against connections (median of rounds; server on 1 CPU)</text>' % (width / 2)]
    for i, server in enumerate(SERVERS):
        x, y = 20 + (i % 4) * 200, 30 + (i // 4) * 16
        parts.append('<rect x="%d" y="%d" width="12" height="12" fill="%s"/><text x="%d" y="%d">%s</text>' % (
            x, y, COLOR[server], x + 16, y + 10, LABEL[server]))
    for index, (size, pipeline) in enumerate(panels):
        ox = margin + (index % 2) * pw
        oy = 60 + 16 * (legend_rows - 1) + (index // 2) * ph
        w, h = pw - 70, ph - 70
        top = max((med[(c, size, pipeline), s]["rps"] or 0) for c in conns for s in SERVERS) or 1
        top = top * 1.1
        parts.append('<text x="%d" y="%d" text-anchor="middle" font-size="12">%d B, pipeline %d</text>' % (ox + w / 2, oy + 12, size, pipeline))
        y0 = oy + 20
        parts.append('<rect x="%d" y="%d" width="%d" height="%d" fill="none" stroke="#888"/>' % (ox, y0, w, h))
        for k in range(5):
            v = top * k / 4
            y = y0 + h - h * k / 4
            parts.append('<line x1="%d" y1="%.1f" x2="%d" y2="%.1f" stroke="#eee"/>' % (ox, y, ox + w, y))
            parts.append('<text x="%d" y="%.1f" text-anchor="end">%s</text>' % (ox - 4, y + 4, human(v)))

        def xpos(c):
            return ox + w * (conns.index(c) / max(1, len(conns) - 1))
        for c in conns:
            parts.append('<text x="%.1f" y="%d" text-anchor="middle">%d</text>' % (xpos(c), y0 + h + 14, c))
        for server in SERVERS:
            points = [(xpos(c), y0 + h - h * (med[(c, size, pipeline), server]["rps"] or 0) / top) for c in conns]
            parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (
                COLOR[server], " ".join("%.1f,%.1f" % p for p in points)))
            for p in points:
                parts.append('<circle cx="%.1f" cy="%.1f" r="3" fill="%s"/>' % (p[0], p[1], COLOR[server]))
        parts.append('<text x="%.1f" y="%d" text-anchor="middle">connections</text>' % (ox + w / 2, y0 + h + 28))
    parts.append("</svg>\n")
    return "\n".join(parts)


def human(v):
    if v >= 1e6:
        return "%.1fM" % (v / 1e6)
    if v >= 1e3:
        return "%.0fk" % (v / 1e3)
    return "%.0f" % v


if __name__ == "__main__":
    main()
