"""Slicing on HaluEval "general": where is the hallucination rate significantly higher?

`python -m benchmarks.slicing_halueval [--data PATH] [--home DIR]` loads
``../shared/data/halueval/general_data.json`` as one day of logs (log_id
``halueval-<ID>``, input = ``user_query``, output = ``chatgpt_response``), ingests it,
and runs :func:`flywheel.slicing.slice_day` with the data set's own labels
(``hallucination == "yes"``) as the failure signal. It prints the significantly worse
topic and keyword slices and the mined keywords (input and output), each with its
rate, 95% Wilson interval, lift, test and BH q-value, and, as its last line, a JSON
object with the top findings.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data" / "halueval" / "general_data.json").resolve()
DAY = "2026-01-01"


def load_halueval(path: Path, settings) -> int:
    """Write HaluEval as canonical logs of :data:`DAY` into the home's landing folder;
    return the number of records."""
    landing = settings.landing_for(DAY)
    landing.mkdir(parents=True, exist_ok=True)
    n = 0
    with path.open(encoding="utf-8") as src, (landing / "halueval.jsonl").open("w", encoding="utf-8") as out:
        for line in src:
            item = json.loads(line)
            out.write(json.dumps({
                "log_id": f"halueval-{item['ID']}", "ts": f"{DAY}T00:00:00Z", "source": "halueval",
                "input": item["user_query"], "output": item["chatgpt_response"],
                "metadata": {"hallucination": item["hallucination"]},
            }) + "\n")
            n += 1
    return n


def findings(report) -> list[dict]:
    """Return the significant topic and keyword slices and mined keywords, most lifted
    (by the lower end of the interval) first."""
    out = []
    for r in report.worst.rows if report.worst else []:
        if r.slice_type in ("topic", "keyword"):
            out.append({
                "kind": f"{r.slice_type} slice", "name": f"{r.slice_type}={r.slice_value}", "label": r.label,
                "n": r.n_signal, "failures": r.failures, "rate": r.failure_rate,
                "ci": [r.failure_low, r.failure_high], "lift": r.lift, "lift_low": r.lift_low,
                "test": r.test, "p": r.p_value, "q": r.q_value,
            })
    for c in report.candidates:
        out.append({
            "kind": f"mined {'bigram' if c.ngram == 2 else 'term'} ({c.field})", "name": c.term, "label": None,
            "n": c.n, "failures": c.failures, "rate": c.rate, "ci": [c.rate_low, c.rate_high],
            "lift": c.lift, "lift_low": c.lift_low, "test": c.test, "p": c.p_value, "q": c.q_value,
        })
    return sorted(out, key=lambda f: (-f["lift_low"], f["q"]))


def run(data: Path = DATA, home: Path | None = None) -> tuple[object, list[dict]]:
    """Ingest HaluEval into ``home`` (a temporary one by default), slice it with its labels;
    return (SliceReport, findings)."""
    from flywheel import store
    from flywheel.ingest.loader import ingest_day
    from flywheel.settings import load
    from flywheel.slicing import FailureSignal, slice_day
    from flywheel.slicing.config import load_config

    def go(home_dir: Path):
        settings = load({"FLYWHEEL_HOME": str(home_dir)})
        load_halueval(data, settings)
        with store.connection(settings) as con:
            ingest_day(con, settings, DAY)
            con.execute(
                """CREATE OR REPLACE TABLE halueval_labels AS
                   SELECT log_id, json_extract_string(metadata, '$.hallucination') = 'yes' AS hallucinated
                   FROM logs WHERE day = ?""", [DAY])
            config = load_config(settings, con)
            # A small labelled set: mine both texts, with a support fitting 4.5k logs.
            config.mining = replace(config.mining, fields=("input", "output"), min_support=20)
            report = slice_day(con, settings, DAY, config=config,
                               failure_signal=FailureSignal.from_table("halueval_labels", "hallucinated",
                                                                       name="HaluEval hallucination label"))
        return report, findings(report)

    if home is not None:
        return go(home)
    with tempfile.TemporaryDirectory() as tmp:
        return go(Path(tmp) / "home")


def _fmt(f: dict) -> str:
    label = f" ({f['label']})" if f["label"] and f["kind"].startswith("topic") else ""
    return (f"{f['kind']:<22} {f['name']}{label}: {f['failures']}/{f['n']} = {100 * f['rate']:.1f}% "
            f"[95% CI {100 * f['ci'][0]:.1f}%, {100 * f['ci'][1]:.1f}%], lift {f['lift']:.2f}, "
            f"{f['test']}, p={f['p']:.2g}, q={f['q']:.2g}")


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.slicing_halueval")
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--home", type=Path, default=None, help="keep the home (default: a temporary one)")
    parser.add_argument("--top", type=int, default=10)
    args = parser.parse_args(argv)
    report, found = run(args.data, args.home)
    print(f"HaluEval general: {report.rows} logs, {report.failures} hallucinated "
          f"({100 * report.failures / max(report.n_signal, 1):.1f}%)", file=sys.stderr)
    for f in found[: args.top]:
        print(_fmt(f), file=sys.stderr)
    return {"name": "slicing_halueval", "rows": report.rows, "hallucinated": report.failures,
            "findings": len(found), "top": [_fmt(f) for f in found[:5]]}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:])))
