"""CSV and Markdown output of measurements and fits."""
import csv
import math
import os

import numpy as np

from .grid import AXES
from .verdict import WORK, sublinearity


def write_csv(out, name, rows, fields=None):
    """Write a list of dicts as ``out/name`` (columns: ``fields``, else the union of keys in
    first-seen order; floats written exactly); returns the path."""
    path = os.path.join(out, name)
    if fields is None:
        fields = []
        for r in rows:
            fields += [k for k in r if k not in fields]
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: (repr(float(v)) if isinstance(v, (float, np.floating)) else v)
                        for k, v in r.items()})
    return path


def read_csv(path):
    """Rows back from a CSV written by :func:`write_csv` (numbers parsed, text kept)."""
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            row = {}
            for k, v in r.items():
                try:
                    row[k] = int(v)
                except ValueError:
                    try:
                        row[k] = float(v)
                    except ValueError:
                        row[k] = v
            rows.append(row)
    return rows


def md_table(header, rows):
    def cell(x):
        return str(x).replace("|", "\\|")
    lines = ["| " + " | ".join(cell(h) for h in header) + " |",
             "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(cell(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def _f3(x):
    text = f"{x:.3f}"
    return "0.000" if text == "-0.000" else text


def fmt_fit(fit):
    """An exponent with its 95% interval: a ``theory.PowerLawFit`` or its ``fit.fit_dict``."""
    if not fit:
        return "n/a"
    get = fit.get if isinstance(fit, dict) else lambda k: getattr(fit, k)
    if not (math.isfinite(get("ci_low")) and math.isfinite(get("ci_high"))):
        return f"{_f3(get('exponent'))} (no CI: {get('n')} points)"
    return f"{_f3(get('exponent'))} [{_f3(get('ci_low'))}, {_f3(get('ci_high'))}]"


def format_table(fitted):
    """The Markdown table of exponents, one row per engine and quantity."""
    rows = []
    for e in fitted:
        verdict = sublinearity(e)[0] if e["quantity"] == WORK else "(does not decide)"
        rows.append([e["engine"], e["quantity"], e["points"], e["method"]]
                    + [fmt_fit(e["fits"].get(a)) for a in AXES] + [verdict])
    return md_table(["engine", "quantity", "points", "fit", "exponent in m [95% CI]",
                     "exponent in n [95% CI]", "exponent in d [95% CI]",
                     "cost o(m)? (work counts decide)"], rows)


def format_slices(fitted):
    return md_table(["engine", "quantity", "slice fit in m", "slice fit in n",
                     "slice fit in d"],
                    [[e["engine"], e["quantity"]] + [fmt_fit(e["slices"].get(a)) for a in AXES]
                     for e in fitted])


def verdicts(fitted):
    """{engine: (status, reason)} from the work counts, for every engine in ``fitted``."""
    out = {}
    for e in fitted:
        out.setdefault(e["engine"], None)
        if e["quantity"] == WORK:
            out[e["engine"]] = sublinearity(e)
    return {k: v if v is not None else sublinearity(None) for k, v in out.items()}


def format_verdicts(fitted):
    """One line per engine: the verdict from the work counts, the time exponent beside it."""
    lines = []
    for engine, (status, reason) in verdicts(fitted).items():
        t = next((e for e in fitted if e["engine"] == engine and e["quantity"] == "seconds"),
                 None)
        time = (f"; time m-exponent {fmt_fit(t['fits'].get('m'))} (reported, does not decide)"
                if t is not None else "")
        lines.append(f"- **{engine}**: cost per iteration sublinear in m: **{status}** "
                     f"({reason}){time}")
    return "\n".join(lines)
