"""The PII detectors of this tree against those of a git revision (default ``main``):
the same findings, and how much faster.

``python -m benchmarks pii_compare --check`` runs both on every text of the corpora
below and counts the texts where ``find``, ``scan`` or ``mask_secrets`` differ (any
difference is listed on stderr and makes the run fail):

- ``canonical``: the input, output, context, session_id and user_id strings of the first
  ``--lines`` lines of the cached canonical demo file (``benchmarks/.cache``);
- ``benchmark``: the labelled sentences of ``python -m benchmarks pii`` (three seeds);
- ``shared``: the text fields of the data sets in ``../shared/data`` (HaluEval,
  TruthfulQA, BEGIN, the strings of the Label Studio exports);
- ``mixed``: sentences of the benchmark glued together in random pairs and triples (more
  findings per text, so overlaps and neighbours);
- ``key_formats``: sentences with tokens in every key format of the secret detector;
- ``mutated``: benchmark sentences, flagged canonical inputs and key formats with a few random
  characters inserted, replaced or deleted (boundaries, separators, "İ" and "ſ");
- ``pieces``: random strings of context words, key prefixes, separators and digit runs.

``--speed`` times both on the inputs of the canonical file's flagged lines (those whose
input the prefilter matches: the texts the ingest's reading thread scans) and on its long
clean contexts, alternating old and new in one process, and reports microseconds per text.

The revision's package is copied out of git into a temporary package (``pii_ref``), so
the two run side by side in one process.
"""

from __future__ import annotations

import argparse
import csv
import importlib
import io
import json
import random
import re
import string
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from benchmarks.common import say
from flywheel import pii

ROOT = Path(__file__).resolve().parent.parent
CANONICAL = ROOT / "benchmarks" / ".cache" / "canonical-1000000-seed7.jsonl"
SHARED = ROOT.parent / "shared" / "data"
TEXT_FIELDS = ("input", "output", "context", "session_id", "user_id")


def load_reference(ref: str):
    """Return the ``flywheel.pii`` package of git revision ``ref``, imported as ``pii_ref``."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", ref, "flywheel/pii"],
                             check=True, capture_output=True).stdout
    where = Path(tempfile.mkdtemp(prefix="pii_ref_"))
    package = where / "pii_ref"
    package.mkdir()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".py"):
                source = tar.extractfile(member).read().decode()
                source = source.replace("flywheel.pii", "pii_ref")
                (package / Path(member.name).name).write_text(source)
    sys.path.insert(0, str(where))
    return importlib.import_module("pii_ref")


# ---------------------------------------------------------------------------------------
# Corpora
# ---------------------------------------------------------------------------------------

def canonical_texts(lines: int) -> list[str]:
    """The distinct strings of the text fields of the first ``lines`` canonical lines."""
    texts: set[str] = set()
    with CANONICAL.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= lines:
                break
            record = json.loads(line)
            for name in TEXT_FIELDS:
                value = record.get(name)
                if isinstance(value, str):
                    texts.add(value)
    return sorted(texts)


def benchmark_texts() -> list[str]:
    """The sentences of the PII benchmark, with its default seed and two others."""
    from benchmarks.pii import generate

    texts = []
    for seed in (16, 1, 2):
        texts += [s.text for s in generate(seed=seed, per_type=800, ordinary=2000)]
    return texts


def _strings(node) -> list[str]:
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for item in node for s in _strings(item)]
    if isinstance(node, dict):
        return [s for key, item in node.items() for s in [key, *_strings(item)]]
    return []


def shared_texts(records: int) -> list[str]:
    """The text fields of up to ``records`` records of each shared data set."""
    texts = []
    with (SHARED / "halueval" / "general_data.json").open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= records:
                break
            row = json.loads(line)
            texts += [row["user_query"], row["chatgpt_response"]]
    for name in ("finetune_truth.jsonl", "finetune_info.jsonl"):
        with (SHARED / "truthfulqa" / name).open(encoding="utf-8") as f:
            for i, line in enumerate(f):
                if i >= records:
                    break
                row = json.loads(line)
                question, _, answer = row["prompt"].partition("\nA:")
                texts += [row["prompt"], question.removeprefix("Q: "), answer, row["completion"]]
    for name in ("begin_test_wow.tsv", "begin_dev_wow.tsv"):
        with (SHARED / "begin" / name).open(encoding="utf-8", newline="") as f:
            for i, row in enumerate(csv.DictReader(f, delimiter="\t")):
                if i >= records:
                    break
                texts += [value for value in row.values() if isinstance(value, str)]
    for path in sorted((SHARED / "label-studio").glob("*.json")):
        texts += _strings(json.loads(path.read_text(encoding="utf-8")))
    return texts


def mixed_texts(sentences: list[str], count: int, seed: int = 3) -> list[str]:
    """``count`` texts of two or three random benchmark sentences joined by a space,
    a newline, ", " or nothing."""
    rng = random.Random(seed)
    return [rng.choice((" ", "\n", ", ", "")).join(rng.sample(sentences, rng.choice((2, 3))))
            for _ in range(count)]


# Characters and pieces the detectors' boundaries and context words turn on (and some
# that lower() or re's case folding treat specially: "İ", "ſ", the Kelvin sign).
_NOISE = list("0123456789 -.+()/,:=@_'\"\n\taZk#%") + ["İ", "ſ", "\u212a", "é", "ß", "١"]
_PIECES = [
    "call", "card", "order", "ref", "ssn", "version", "phone", "tel", "number", "key", "KEY", "Key",
    "api key", "apikey", "password is", "PassWord:", "token=", "secret: ", "pin", "pin code is",
    "sk-", "AKIA", "ghp_", "eyJ", "xoxb-", "Bearer ", "Basic ", "://u:p@", "-----BEGIN PRIVATE KEY-----",
    "+", "00", "(", ")", " ", "-", ".", "/", ",", ":", "::", "=", "@", "\n", "fe80", "192.168.", "GB82",
    "DE89 3704", "IBAN", "with", "x", "İ", "ſ", "mail", ".com", "example.org", "2026-12-04", "12/27",
]


def key_format_texts(count: int, seed: int = 7) -> list[str]:
    """``count`` sentences, each with a token in one of the key formats the secret
    detector knows (the benchmark's secrets lack some: Telegram, Mailchimp, Discord,
    Twilio, Azure, AWS secret keys, PyPI, Square, npm ``_authToken``, PuTTY), at times
    one character short, glued to a word or followed by a dot."""
    rng = random.Random(seed)

    def run(n, alphabet=string.ascii_letters + string.digits):
        return "".join(rng.choice(alphabet) for _ in range(n))

    lower_hex = "0123456789abcdef"
    makers = [
        lambda: f"{rng.randint(10**7, 10**10)}:{run(35, string.ascii_letters + string.digits + '_-')}",
        lambda: f"{run(32, lower_hex)}-us{rng.randint(1, 99)}",
        lambda: f"{rng.choice('MNO')}{run(rng.randint(23, 25))}.{run(6)}.{run(27)}",
        lambda: f"{rng.choice(['AC', 'SK'])}{run(32, lower_hex)}",
        lambda: f"AccountKey={run(86)}==",
        lambda: f"aws_secret_access_key = \"{run(40, string.ascii_letters + string.digits + '/+')}\"",
        lambda: f"AWS_KEY: '{run(40)}'",
        lambda: f"{rng.choice(['AKIA', 'ASIA', 'A3TX', 'ABIA', 'ACCA'])}{run(16, string.ascii_uppercase + string.digits)}",
        lambda: f"pypi-AgEIcHlwaS5vcmc{run(rng.randint(70, 90))}",
        lambda: f"sq0csp-{run(43)}",
        lambda: f"//registry.npmjs.org/:_authToken={run(8, lower_hex)}-{run(4, lower_hex)}-{run(4, lower_hex)}-{run(4, lower_hex)}-{run(12, lower_hex)}",
        lambda: f"sk-{run(20)}T3BlbkFJ{run(20)}",
        lambda: f"{rng.choice(['glpat', 'gldt', 'glrt', 'glcbt', 'glptt', 'gloas', 'glimt'])}-{run(rng.choice([20, 25, 40, 64]))}",
        lambda: f"GR1348941{run(20)}",
        lambda: f"{rng.choice(['ghp', 'gho', 'ghu', 'ghs', 'ghr'])}_{run(36)}",
        lambda: f"github_pat_{run(22)}_{run(59)}",
        lambda: f"xoxp-{rng.randint(10**9, 10**10)}-{run(12, lower_hex)}",
        lambda: f"PuTTY-User-Key-File-2: ssh-rsa\nEncryption: none\nPrivate-MAC: {run(40, lower_hex)}",
        lambda: f"redis://default:{run(16)}@cache.internal:6379",
        lambda: f"Bearer {run(32)}",
        lambda: f"token: {run(24)}",
        lambda: f"PIN code is {rng.randint(1000, 999999)}",
        lambda: f"AIza{run(35, string.ascii_letters + string.digits + '_-')}",
        lambda: f"hf_{run(34)}",
        lambda: f"npm_{run(36)}",
        lambda: f"sk-proj-{run(48, string.ascii_letters + string.digits + '_-')}",
    ]
    templates = ["here it is: {v}", "{v}", "use {v}.", "x{v}y", "(key {v})", "config:\n{v}\n", "\"{v}\"",
                 "é{v}", "İ {v}", "the token {v}, thanks"]
    out = []
    for _ in range(count):
        value = rng.choice(makers)()
        if rng.random() < 0.2:
            value = value[:-1]
        out.append(rng.choice(templates).format(v=value))
    return out


def mutated_texts(texts: list[str], count: int, seed: int = 5) -> list[str]:
    """``count`` texts made from ``texts`` by a few random edits each: characters of
    :data:`_NOISE` inserted, replaced or deleted at random places (boundaries moved)."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        text = list(rng.choice(texts))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(text) + 1)
            action = rng.random()
            if action < 0.4:
                text.insert(i, rng.choice(_NOISE))
            elif action < 0.7 and i < len(text):
                text[i] = rng.choice(_NOISE)
            elif i < len(text):
                del text[i]
        out.append("".join(text))
    return out


def random_piece_texts(count: int, seed: int = 6) -> list[str]:
    """``count`` texts of 3 to 15 random pieces: :data:`_PIECES` and digit, hex and
    letter runs, glued together or with spaces."""
    rng = random.Random(seed)
    out = []
    for _ in range(count):
        parts = []
        for _ in range(rng.randint(3, 15)):
            kind = rng.random()
            if kind < 0.4:
                parts.append(rng.choice(_PIECES))
            elif kind < 0.75:
                parts.append("".join(rng.choice("0123456789") for _ in range(rng.randint(1, 8))))
            elif kind < 0.85:
                parts.append("".join(rng.choice("0123456789abcdef") for _ in range(rng.randint(1, 5))))
            else:
                parts.append("".join(rng.choice("abcdefghijklmnopqrstuvwxyzABCDEFXYZ") for _ in range(rng.randint(1, 40))))
            if rng.random() < 0.5:
                parts.append(rng.choice(" -. "))
        out.append("".join(parts))
    return out


# ---------------------------------------------------------------------------------------
# Equivalence
# ---------------------------------------------------------------------------------------

def _outcome(module, text: str):
    findings = [tuple(f) for f in module.find(text)]
    redacted, kinds = module.scan(text)
    return findings, redacted, sorted(kinds), module.mask_secrets(text)


def compare(old, texts: list[str], corpus: str) -> dict:
    """Return the counts of texts, texts with findings and differing texts of a corpus."""
    differ = with_findings = findings = 0
    for text in texts:
        a, b = _outcome(old, text), _outcome(pii, text)
        findings += len(b[0])
        with_findings += bool(b[0])
        if a != b:
            differ += 1
            if differ <= 20:
                say(f"DIFFERENT in {corpus}: {text!r}\n  old {a[0]}\n  new {b[0]}")
    return {"texts": len(texts), "with_findings": with_findings, "findings": findings, "different": differ}


# ---------------------------------------------------------------------------------------
# Speed
# ---------------------------------------------------------------------------------------

def speed_texts(lines: int) -> tuple[list[str], list[str]]:
    """The inputs of the first ``lines`` canonical lines that the prefilter matches (in
    file order, repeats kept: the reading thread's work), and the distinct contexts the
    prefilter does not match (long clean texts)."""
    prefilter = re.compile(pii.PREFILTER_PATTERN)
    flagged, contexts = [], set()
    with CANONICAL.open(encoding="utf-8") as f:
        for i, line in enumerate(f):
            if i >= lines:
                break
            record = json.loads(line)
            text = record.get("input")
            if isinstance(text, str) and prefilter.search(text):
                flagged.append(text)
            context = record.get("context")
            if isinstance(context, str) and context not in contexts and not prefilter.search(context):
                contexts.add(context)
    return flagged, sorted(contexts)


def time_side_by_side(old, texts: list[str], rounds: int, function: str = "find") -> dict:
    """Microseconds per text of ``old`` and this tree's ``function``: the first pass over
    the texts (the phone numbers' caches still cold) and the best of the rounds after it,
    alternating which runs first."""
    best = {"old": float("inf"), "new": float("inf")}
    first = {}
    modules = {"old": getattr(old, function), "new": getattr(pii, function)}
    for text in texts[:50]:  # the lazy imports of both
        modules["old"](text), modules["new"](text)
    for name, run in modules.items():
        started = time.perf_counter()
        for text in texts:
            run(text)
        first[name] = time.perf_counter() - started
    for r in range(rounds):
        order = ("old", "new") if r % 2 == 0 else ("new", "old")
        for name in order:
            run = modules[name]
            started = time.perf_counter()
            for text in texts:
                run(text)
            best[name] = min(best[name], time.perf_counter() - started)
    us = {name: round(seconds / len(texts) * 1e6, 2) for name, seconds in best.items()}
    cold = {name: round(seconds / len(texts) * 1e6, 2) for name, seconds in first.items()}
    return {"texts": len(texts), "chars_mean": round(sum(map(len, texts)) / len(texts)),
            "old_us": us["old"], "new_us": us["new"], "speedup": round(us["old"] / us["new"], 2),
            "first_pass_old_us": cold["old"], "first_pass_new_us": cold["new"],
            "first_pass_speedup": round(cold["old"] / cold["new"], 2)}


def main(argv: list[str]) -> dict:
    parser = argparse.ArgumentParser(prog="python -m benchmarks pii_compare")
    parser.add_argument("--ref", default="main", help="the git revision to compare with")
    parser.add_argument("--check", action="store_true", help="compare the findings on every corpus")
    parser.add_argument("--speed", action="store_true", help="time both on the canonical file's texts")
    parser.add_argument("--lines", type=int, default=200_000, help="canonical lines for --check")
    parser.add_argument("--speed-lines", type=int, default=250_000, help="canonical lines for --speed")
    parser.add_argument("--records", type=int, default=5_000, help="records of each shared data set")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    if not CANONICAL.exists():
        raise SystemExit(f"{CANONICAL} is missing: `python -m benchmarks ingest --rows 1000000` writes it")
    if args.check and not SHARED.is_dir():
        raise SystemExit(f"{SHARED} is missing: the shared data sets are one of the corpora")
    old = load_reference(args.ref)
    result: dict = {"name": "pii_compare", "ref": args.ref}
    if args.check:
        say("reading the corpora ...")
        sentences = benchmark_texts()
        corpora = {
            "canonical": canonical_texts(args.lines),
            "benchmark": sentences,
            "shared": shared_texts(args.records),
            "mixed": mixed_texts(sentences, 20_000),
        }
        flagged, _ = speed_texts(min(args.lines, args.speed_lines))
        corpora["key_formats"] = key_format_texts(20_000)
        corpora["mutated"] = mutated_texts(sentences + flagged + corpora["key_formats"], 60_000)
        corpora["pieces"] = random_piece_texts(50_000)
        result["check"] = {}
        for corpus, texts in corpora.items():
            say(f"comparing {len(texts)} texts of {corpus} ...")
            result["check"][corpus] = compare(old, texts, corpus)
        result["ok"] = all(c["different"] == 0 for c in result["check"].values())
    if args.speed:
        say("reading the flagged inputs and the clean contexts ...")
        flagged, contexts = speed_texts(args.speed_lines)
        result["speed"] = {
            "flagged_inputs_find": time_side_by_side(old, flagged, args.rounds),
            "flagged_inputs_scan": time_side_by_side(old, flagged, args.rounds, "scan"),
            "clean_contexts_find": time_side_by_side(old, contexts, args.rounds),
        }
    return result
