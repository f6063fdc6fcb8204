"""Renders loadtest/run's measurements as RESULTS.md and an SVG latency plot (stdlib only).

    report.py RESULTS.jsonl VERSIONS.json WORKDIR OUT.md OUT.svg
    report.py --check RESULTS.jsonl      # the --quick smoke assertions
"""

import json
import statistics
import sys
from collections import OrderedDict


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def by_name(rows, scenario):
    out = OrderedDict()
    for r in rows:
        if r["scenario"] == scenario:
            out.setdefault(r["name"], []).append(r)
    return out


def mmm(values):
    values = sorted(values)
    return values[0], statistics.median(values), values[-1]


def fmt_rate(v):
    return f"{v / 1000:.1f} k/s" if v < 1e6 else f"{v / 1e6:.2f} M/s"


def triple(values, f):
    lo, med, hi = mmm(values)
    return f"{f(med)} ({f(lo)} – {f(hi)})"


def check(rows):
    scenarios = {r["scenario"] for r in rows}
    missing = {1, 2, 3, 4, 5, 6} - scenarios
    assert not missing, f"scenarios without numbers: {sorted(missing)}"
    for r in rows:
        for k in ("rate", "upstream", "ops", "messages"):
            if k in r:
                assert r[k] == r[k], f"{r['name']}: {k} is not a number"
    steady = [r for r in rows if r["scenario"] == 4 and r["name"] == "mailpolicyd steady"][0]
    ratio = steady["upstream"] / steady["messages"]
    assert ratio < 0.05, f"scenario 4: {ratio:.4f} upstream queries per message (limit 0.05)"
    print(f"loadtest smoke: 6 scenarios produced numbers; scenario 4 steady-state ratio {ratio:.4f} < 0.05")


def svg(curves, path):
    """Latency (log scale) by percentile, one line per configuration."""
    w, h, left, bottom = 720, 420, 70, 50
    pts = {k: v for k, v in curves.items() if v}
    if not pts:
        return
    import math
    ymax = max(max(l for _, l in v) for v in pts.values())
    ymin = max(min(min(l for _, l in v) for v in pts.values()), 0.5)
    lo, hi = math.log10(ymin), math.log10(ymax * 1.2)
    ticks = [0.0, 0.5, 0.9, 0.99, 0.999, 0.9999]

    def x(p):
        return left + (w - left - 20) * (-math.log10(1 - min(p, 0.9999) + 1e-9) / 4)

    def y(v):
        return h - bottom - (h - bottom - 20) * ((math.log10(max(v, ymin)) - lo) / (hi - lo))

    colors = ["#1b6ca8", "#e07b00", "#2a9d3c", "#c0392b", "#7d3c98", "#555"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
           f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w/2}" y="15" text-anchor="middle">Round-trip latency by percentile (µs, log scale), cached answers</text>']
    for t in ticks:
        out.append(f'<line x1="{x(t):.1f}" y1="20" x2="{x(t):.1f}" y2="{h-bottom}" stroke="#ddd"/>')
        out.append(f'<text x="{x(t):.1f}" y="{h-bottom+15}" text-anchor="middle">p{t*100:g}</text>')
    v = 10 ** math.floor(lo)
    while v <= 10 ** hi:
        if ymin <= v <= ymax * 1.2:
            out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{w-20}" y2="{y(v):.1f}" stroke="#eee"/>')
            out.append(f'<text x="{left-5}" y="{y(v)+4:.1f}" text-anchor="end">{v:g}</text>')
        v *= 10
    for i, (name, series) in enumerate(pts.items()):
        c = colors[i % len(colors)]
        d = " ".join(f"{x(p):.1f},{y(l):.1f}" for p, l in series)
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{d}"/>')
        out.append(f'<text x="{left+10}" y="{40+16*i}" fill="{c}">{name}</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def main(results, versions, work, md_path, svg_path):
    rows = load(results)
    ver = json.load(open(versions))
    lines = ["# Load test: mailpolicyd against Unbound", ""]
    lines.append("Produced by `loadtest/run`" + (" --quick" if ver.get("quick") else "") +
                 f" on {ver['cpus']} CPUs (kernel {ver['kernel']}). Every server and client pinned to CPU 0"
                 " (at most 2 busy threads; a cross-CPU wake-up costs 45–60 µs on this VM). Figures are"
                 " median (min – max) of the runs. Loopback only.")
    lines += ["", f"Versions: {ver['nsd']}; {ver['unbound']}; dnsperf {ver['dnsperf']}; {ver['mailpolicyd']}.", ""]

    s1 = by_name(rows, 1)
    lines += ["## 1. Cached policy lookups", "", "| client | rate | p50 | p99 | p99.9 |", "|---|---|---|---|---|"]
    for name, rs in s1.items():
        p = lambda k: triple([r.get(k, 0) for r in rs], lambda v: f"{v:.1f} µs") if "p50_us" in rs[0] else "–"
        lines.append(f"| {name} | {triple([r['rate'] for r in rs], fmt_rate)} | {p('p50_us')} | {p('p99_us')} | {p('p999_us')} |")
    med = lambda name, k="rate", d=s1: statistics.median([r[k] for r in d[name]]) if name in d else float("nan")
    lines += ["", "Ratios (mailpolicyd / Unbound, medians):", "",
              "| comparison | ratio | goal |", "|---|---|---|"]
    pp_rate = med("mailpolicyd socket 1x1") / med("unbound udp 1x1")
    pp_p99 = med("mailpolicyd socket 1x1", "p99_us") / med("unbound udp 1x1", "p99_us")
    pl = med("mailpolicyd socket 8x16") / med("unbound dnsperf saturated")
    f8 = med("mailpolicyd socket 8x1") / med("unbound udp 8x1")
    lines.append(f"| ping-pong rate, socket 1×1 vs UDP 1×1 | {pp_rate:.2f} | ≥ 1.5 — {'met' if pp_rate >= 1.5 else 'missed'} |")
    lines.append(f"| ping-pong p99, socket 1×1 vs UDP 1×1 | {pp_p99:.2f} | ≤ 0.5 — {'met' if pp_p99 <= 0.5 else 'missed'} |")
    lines.append(f"| 8 flows × 1, socket vs UDP | {f8:.2f} | – |")
    lines.append(f"| pipelined socket 8×16 vs Unbound saturated (dnsperf) | {pl:.2f} | ≥ 5 — {'met' if pl >= 5 else 'missed'} |")
    if "no-work echo socket 1x1" in s1:
        floor = med("no-work echo socket 1x1")
        floor_p99 = med("no-work echo socket 1x1", "p99_us")
        lines += ["", "Against the floor (a server that does no work, same framing, same client, same run):", "",
                  "| comparison | rate | p99 |", "|---|---|---|",
                  f"| mailpolicyd socket 1×1 / no-work echo 1×1 | {med('mailpolicyd socket 1x1') / floor:.2f} | "
                  f"{med('mailpolicyd socket 1x1', 'p99_us') / floor_p99:.2f} |",
                  f"| Unbound UDP 1×1 / no-work echo 1×1 | {med('unbound udp 1x1') / floor:.2f} | "
                  f"{med('unbound udp 1x1', 'p99_us') / floor_p99:.2f} |",
                  f"| no-work echo 1×1 / Unbound UDP 1×1 (the most any socket server could reach here) | "
                  f"{floor / med('unbound udp 1x1'):.2f} | {floor_p99 / med('unbound udp 1x1', 'p99_us'):.2f} |"]

    s2 = by_name(rows, 2)
    lines += ["", "## 2. DNS front-end (dnsperf, cached)", "", "| server | qps |", "|---|---|"]
    for name, rs in s2.items():
        lines.append(f"| {name} | {triple([r['rate'] for r in rs], fmt_rate)} |")
    r2 = med("mailpolicyd dns dnsperf", d=s2) / med("unbound dnsperf", d=s2)
    lines += ["", f"Ratio mailpolicyd / Unbound: **{r2:.2f}** (goal ≥ 1.0 — {'met' if r2 >= 1.0 else 'missed'})."]

    s3 = by_name(rows, 3)
    lines += ["", "## 3. Cold misses (one pass over every name, empty caches)", "", "| server | names/s |", "|---|---|"]
    for name, rs in s3.items():
        lines.append(f"| {name} | {triple([r['rate'] if 'rate' in r else r['ops']/r['seconds'] for r in rs], fmt_rate)} |")
    cold = lambda n: statistics.median([(r['rate'] if 'rate' in r else r['ops'] / r['seconds']) for r in s3[n]])
    r3 = cold("mailpolicyd cold pass") / cold("unbound cold pass")
    lines += ["", f"Ratio mailpolicyd / Unbound: **{r3:.2f}** (goal: not slower, ≥ 1.0 — {'met' if r3 >= 1.0 else 'missed'})."]

    s4 = by_name(rows, 4)
    lines += ["", "## 4. Per-message upstream load (Zipf s=1.1 trace; DMARC + SPF check + DKIM key per message)", "",
              "| model | messages | upstream queries (at NSD) | per message |", "|---|---|---|---|"]
    for name, rs in s4.items():
        r = rs[0]
        lines.append(f"| {name} | {r['messages']:,} | {r['upstream']:,} | {r['upstream']/r['messages']:.4f} |")
    steady = s4["mailpolicyd steady"][0]
    warm = s4["mailpolicyd warm-up"][0]
    col = warm.get("collapse") or {}
    lines += ["", f"Steady state: **{steady['upstream']/steady['messages']:.4f}** upstream queries per message"
              f" (goal ≤ 0.01 — {'met' if steady['upstream']/steady['messages'] <= 0.01 else 'missed'}); naive filter"
              f" {s4['naive filter'][0]['upstream']/s4['naive filter'][0]['messages']:.2f}.",
              f"Organizational fallback collapse (warm-up pass): answers for `_dmarc.<org>` that came from"
              f" upstream (source `miss`, requests that joined the in-flight query included):"
              f" {col.get('org_dmarc_upstream', '?')} for {col.get('orgs', '?')} organizations, against"
              f" {col.get('sub_dmarc_upstream', '?')} for the subdomains' own `_dmarc` names: the org-level"
              f" lookup is shared, not repeated per subdomain."]

    s5 = by_name(rows, 5)
    lines += ["", "## 5. Abuse: random subdomains of one wildcard organization", ""]
    fl = s5["wildcard flood"][0]
    lines.append(f"{fl['ops']:,} questions in {fl['seconds']:.1f} s; upstream queries at NSD during the flood: "
                 f"**{fl['upstream']}** (limiter budget for that time: {fl['budget']:.0f}; the wildcard mark after 100"
                 f" identical subdomains ends them). Other domains' p99: quiet {s5['other domains p99, quiet'][0]['p99_us']:.1f} µs,"
                 f" under attack {s5['other domains p99, under attack'][0]['p99_us']:.1f} µs.")

    s6 = by_name(rows, 6)
    c6, u6 = s6["cached names during outage"][0], s6["uncached names during outage"][0]
    lines += ["", "## 6. Outage: NSD stopped", "",
              f"Cached names (TTL 30 s, expiring during the outage): {c6['ops']:,} lookups, **{c6['errors']} failed**"
              f" (served fresh, then stale). Uncached names: {u6['ops']:,} lookups, {u6['errors']} failed"
              f" ({100*u6['errors']/max(u6['ops'],1):.0f} % error rate: nothing to serve)."]

    curves = OrderedDict()
    for key, label in [("curve-mp-1x1.txt", "mailpolicyd socket 1×1"), ("curve-unbound-1x1.txt", "Unbound UDP 1×1"),
                       ("curve-mp-8x1.txt", "mailpolicyd socket 8×1"), ("curve-unbound-8x1.txt", "Unbound UDP 8×1"),
                       ("curve-mp-8x16.txt", "mailpolicyd socket 8×16")]:
        try:
            with open(f"{work}/{key}") as f:
                curves[label] = [tuple(map(float, l.split())) for l in f if l.strip()]
        except OSError:
            pass
    svg(curves, svg_path)
    lines += ["", "![latency by percentile](latency.svg)", ""]
    import os
    profile = os.path.join(os.path.dirname(os.path.abspath(__file__)), "PROFILE.md")
    if os.path.exists(profile):
        with open(profile) as f:
            lines += ["", f.read()]
    # The memory measurement (loadtest/memory) is run apart; its committed figures stay.
    memory = os.path.join(os.path.dirname(os.path.abspath(__file__)), "MEMORY.md")
    if os.path.exists(memory):
        with open(memory) as f:
            lines += ["", f.read()]
    with open(md_path, "w") as f:
        f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    if sys.argv[1] == "--check":
        check(load(sys.argv[2]))
    else:
        main(*sys.argv[1:6])
