"""A small parser for Envoy's /stats/prometheus text, for tests and scripts/obs_chart.py."""
import re

_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)$')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text):
    """[(name, {label: value}, float)] for every sample line."""
    out = []
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _LINE.match(line)
        if not m:
            continue
        labels = dict(_LABEL.findall(m.group(2) or ""))
        try:
            value = float(m.group(3))
        except ValueError:
            continue
        out.append((m.group(1), labels, value))
    return out


def names(text):
    """Metric family names (histograms by their base name, as in `# TYPE`)."""
    return {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE ")}


def total(samples, name, **labels):
    """Sum of `name` over the samples whose labels include `labels`."""
    return sum(v for n, l, v in samples
               if n == name and all(l.get(k) == str(want) for k, want in labels.items()))
