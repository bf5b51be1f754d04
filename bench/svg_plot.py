"""Two plot shapes as plain SVG strings (no plotting library, no network): `lines` (one polyline
per series) and `dots` (one dot per sample, a panel per series, for latency whose outliers are
the story). Axes with round ticks; colours fixed per series position."""

import math

COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]
W, H, LEFT, RIGHT, TOP, BOTTOM = 760, 380, 64, 180, 36, 44


def esc(text):
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def ticks(lo, hi, n=6):
    """Round tick values covering [lo, hi]."""
    span = (hi - lo) or 1.0
    raw = span / n
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10, 20, 50) if m * mag >= raw)
    start = (lo // step) * step
    out, v = [], start
    while v <= hi + step * 0.001:
        if v >= lo - step * 0.001:
            out.append(round(v, 6))
        v += step
    return out


def frame(title, xlabel, ylabel, x0, x1, y0, y1, height=H, top=TOP):
    pw, ph = W - LEFT - RIGHT, height - top - BOTTOM
    sx = lambda x: LEFT + (x - x0) / ((x1 - x0) or 1) * pw  # noqa: E731
    sy = lambda y: top + ph - (y - y0) / ((y1 - y0) or 1) * ph  # noqa: E731
    parts = [f'<text x="{LEFT}" y="{top - 14}" font-size="14" font-weight="bold">{esc(title)}</text>'] if title else []
    parts.append(f'<rect x="{LEFT}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for t in ticks(x0, x1):
        parts.append(f'<line x1="{sx(t):.1f}" y1="{top + ph}" x2="{sx(t):.1f}" y2="{top + ph + 4}" stroke="#888"/>'
                     f'<text x="{sx(t):.1f}" y="{top + ph + 16}" font-size="11" text-anchor="middle">{t:g}</text>')
    for t in ticks(y0, y1, 5):
        parts.append(f'<line x1="{LEFT}" y1="{sy(t):.1f}" x2="{LEFT + pw}" y2="{sy(t):.1f}" stroke="#eee"/>'
                     f'<text x="{LEFT - 6}" y="{sy(t) + 4:.1f}" font-size="11" text-anchor="end">{t:g}</text>')
    parts.append(f'<text x="{LEFT + pw / 2}" y="{top + ph + 34}" font-size="12" text-anchor="middle">{esc(xlabel)}</text>')
    parts.append(f'<text x="16" y="{top + ph / 2}" font-size="12" text-anchor="middle" '
                 f'transform="rotate(-90 16 {top + ph / 2})">{esc(ylabel)}</text>')
    return parts, sx, sy


def svg(width, height, parts):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(parts) + "\n</svg>\n")


def lines(series, title, xlabel, ylabel, x_from=None):
    """series: [(label, [(x, y)])]; one polyline each, y from 0."""
    pts = [p for _, s in series for p in s if x_from is None or p[0] >= x_from]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y1 = max(p[1] for p in pts) * 1.08
    parts, sx, sy = frame(title, xlabel, ylabel, x0, x1, 0, y1)
    for i, (label, s) in enumerate(series):
        c = COLOURS[i % len(COLOURS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in s if x0 <= x <= x1)
        parts.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.6" points="{path}"/>')
        ly = TOP + 14 + 18 * i
        parts.append(f'<line x1="{W - RIGHT + 10}" y1="{ly - 4}" x2="{W - RIGHT + 30}" y2="{ly - 4}" stroke="{c}" stroke-width="2"/>'
                     f'<text x="{W - RIGHT + 34}" y="{ly}" font-size="11">{esc(label)}</text>')
    return svg(W, H, parts)


def dots(series, title, xlabel, ylabel, x_from=None, panel=110):
    """series: [(label, [(x, y)])]; one panel per series, the axes shared (a stall stands out
    against the others' flat line), y from 0."""
    pts = [p for _, s in series for p in s if x_from is None or p[0] >= x_from]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    top = max(p[1] for p in pts) * 1.1
    parts, height = [f'<text x="{LEFT}" y="22" font-size="14" font-weight="bold">{esc(title)}</text>'], 36
    for i, (label, s) in enumerate(series):
        s = [(x, y) for x, y in s if x0 <= x <= x1]
        sub, sx, sy = frame("", xlabel if i == len(series) - 1 else "", ylabel, x0, x1, 0, top,
                            height=height + panel + BOTTOM, top=height)
        parts += sub
        c = COLOURS[i % len(COLOURS)]
        # One dot per pixel: thousands of steady requests overlap anyway.
        pixels = sorted({(round(sx(x)), round(sy(y))) for x, y in s})
        parts += [f'<circle cx="{px}" cy="{py}" r="1.6" fill="{c}"/>' for px, py in pixels]
        parts.append(f'<text x="{W - RIGHT + 10}" y="{height + 16}" font-size="11">{esc(label)}</text>'
                     f'<text x="{W - RIGHT + 10}" y="{height + 32}" font-size="11">worst {max([y for _, y in s] + [0]):g} ms</text>')
        height += panel + (BOTTOM if i == len(series) - 1 else 12)
    return svg(W, height + 8, parts)
