#!/usr/bin/env python3
"""Draws one benchmark run as an SVG timeline: the CPU each side used (the source server, the
target server, the client processes) over time, with dbsync's phases and its units' exports,
loads and index builds as bars beneath, so that idle cores show at a glance.

    timeline.py CPU_TSV REPORT_JSON|- OUTPUT_SVG TITLE CORES

CPU_TSV: lines of "seconds source target client", each the CPU seconds used so far (bench.sh's
sampler); REPORT_JSON: dbsync's --report (its "timeline"), or - for another tool.
"""
import json
import sys
from html import escape

cpu_path, report_path, output, title, cores = sys.argv[1:6]
cores = int(cores)
samples = [tuple(float(value) for value in line.split("\t")) for line in open(cpu_path) if line.strip()]
timeline = {"phases": [], "steps": []}
if report_path != "-":
    timeline = json.load(open(report_path)).get("timeline", timeline)

wall = max([samples[-1][0] if samples else 1.0]
           + [step["end"] for step in timeline["steps"]] + [phase["end"] for phase in timeline["phases"]])
left, width, top, plot = 70, 900, 40, 180
x = lambda seconds: left + width * seconds / max(wall, 0.001)
y = lambda used: top + plot - plot * min(used, cores) / cores
colours = {"source": "#1f77b4", "target": "#ff7f0e", "client": "#2ca02c", "all": "#555555"}
activity_colours = {"export": "#9ecae1", "import": "#fdae6b", "copy": "#c7a0d9", "index": "#a1d99b"}

# Lanes for the steps: each goes to the first lane free when it starts.
lanes = []
placed = []
for step in sorted(timeline["steps"], key=lambda step: step["start"]):
    lane = next((index for index, end in enumerate(lanes) if end <= step["start"] + 1e-6), None)
    if lane is None:
        lanes.append(0.0)
        lane = len(lanes) - 1
    lanes[lane] = step["end"]
    placed.append((lane, step))
phase_row = top + plot + 30
steps_top = phase_row + 30
height = steps_top + 14 * max(len(lanes), 1) + 50

parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{left + width + 30}" height="{height}" '
         'font-family="sans-serif" font-size="11">',
         f'<text x="{left}" y="20" font-size="14">{escape(title)}</text>']
for used in range(cores + 1):
    parts.append(f'<line x1="{left}" x2="{left + width}" y1="{y(used)}" y2="{y(used)}" stroke="#ddd"/>')
    parts.append(f'<text x="{left - 8}" y="{y(used) + 4}" text-anchor="end">{used}</text>')
parts.append(f'<text x="15" y="{top + plot / 2}" transform="rotate(-90 15 {top + plot / 2})" '
             'text-anchor="middle">cores busy</text>')
step_seconds = max(1, round(wall / 10))
for second in range(0, int(wall) + 1, step_seconds):
    parts.append(f'<line x1="{x(second)}" x2="{x(second)}" y1="{top}" y2="{top + plot}" stroke="#eee"/>')
    parts.append(f'<text x="{x(second)}" y="{top + plot + 14}" text-anchor="middle">{second}s</text>')
for column, side in enumerate(["source", "target", "client", "all"], start=1):
    points = []
    for previous, current in zip(samples, samples[1:]):
        span = current[0] - previous[0]
        if span > 0:
            columns = [1, 2, 3] if side == "all" else [column]
            used = sum(current[index] - previous[index] for index in columns) / span
            points.append(f"{x(previous[0]):.1f},{y(used):.1f} {x(current[0]):.1f},{y(used):.1f}")
    if points:
        dash = ' stroke-dasharray="4 2"' if side == "all" else ""
        parts.append(f'<polyline fill="none" stroke="{colours[side]}" stroke-width="1.5"{dash} points="{" ".join(points)}"/>')
    parts.append(f'<text x="{left + width - 270 + 70 * (column - 1)}" y="20" fill="{colours[side]}">{side}</text>')
for index, phase in enumerate(timeline["phases"]):
    start, end = x(phase["start"]), x(phase["end"])
    shade = "#e0e0e0" if index % 2 else "#c8c8c8"
    parts.append(f'<rect x="{start:.1f}" y="{phase_row}" width="{max(end - start, 0.5):.1f}" height="18" fill="{shade}">'
                 f'<title>{escape(phase["phase"])}: {phase["end"] - phase["start"]:.2f} s</title></rect>')
    if end - start > 40:
        parts.append(f'<text x="{start + 3:.1f}" y="{phase_row + 13}">{escape(phase["phase"])}</text>')
parts.append(f'<text x="{left - 8}" y="{phase_row + 13}" text-anchor="end">phases</text>')
for lane, step in placed:
    start, end = x(step["start"]), x(step["end"])
    colour = activity_colours.get(step["activity"], "#bbb")
    parts.append(f'<rect x="{start:.1f}" y="{steps_top + 14 * lane}" width="{max(end - start, 0.5):.1f}" height="12" '
                 f'fill="{colour}" stroke="white"><title>{escape(step["activity"])} {escape(step["name"])}: '
                 f'{step["start"]:.2f}–{step["end"]:.2f} s</title></rect>')
if placed:
    parts.append(f'<text x="{left - 8}" y="{steps_top + 10}" text-anchor="end">steps</text>')
legend_y = height - 20
for index, (activity, colour) in enumerate(activity_colours.items()):
    parts.append(f'<rect x="{left + 90 * index}" y="{legend_y - 10}" width="12" height="12" fill="{colour}"/>'
                 f'<text x="{left + 90 * index + 16}" y="{legend_y}">{activity}</text>')
parts.append("</svg>")
with open(output, "w") as out:
    out.write("\n".join(parts) + "\n")
