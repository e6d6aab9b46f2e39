"""Asking a judge about items, and keeping its verdicts in `judge_verdicts`."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from flywheel.judges.criteria import Criterion, load_criteria
from flywheel.judges.prompt import RESPONSE_FORMAT, JudgePrompt, parse_verdict
from flywheel.judges.selection import few_shot_examples, holdout_items
from flywheel.llm import LLMClient
from flywheel.settings import Settings

# Judges answer in one short JSON object; this caps what a rambling answer can cost.
MAX_ANSWER_TOKENS = 200


@dataclass(frozen=True)
class Verdict:
    """A judge's answer about one item.

    ``verdict`` is True/False with the polarity of the human label (True = hallucinated
    for ``hallucination``, relevant for ``relevance``), or None when there is none:
    ``status`` is then ``parse_error`` (the answer was malformed; ``parse_error`` says
    how), ``error`` (the request failed; ``error`` says why) or ``budget`` (not sent).
    """

    verdict: bool | None
    reason: str
    parse_error: str | None
    status: str = "ok"
    error: str | None = None
    log_id: str | None = None
    prompt_version: str | None = None
    request_hash: str | None = None
    cached: bool = False


def criterion_named(settings: Settings, name: str) -> Criterion:
    """Return the criterion called ``name`` (built in or from a judges file)."""
    criteria = load_criteria(settings).criteria
    if name not in criteria:
        raise KeyError(f"no judge criterion {name!r}: known are {', '.join(sorted(criteria))}")
    return criteria[name]


def current_prompt(con: duckdb.DuckDBPyConnection, settings: Settings, criterion: Criterion, *, model: str) -> JudgePrompt:
    """Return the criterion's prompt with few-shot examples drawn from today's consensus.

    The examples never include the criterion's held-out alignment items.
    """
    holdout = holdout_items(con, label=criterion.label, size=settings.judge_holdout_size)
    examples = few_shot_examples(
        con, label=criterion.label, k=settings.judge_few_shot, exclude={i.log_id for i in holdout}
    )
    return JudgePrompt.build(criterion, model, examples)


def trusted_prompt(con: duckdb.DuckDBPyConnection, criterion: Criterion, *, model: str) -> JudgePrompt | None:
    """Return the most recently aligned trusted prompt version of ``criterion`` for ``model``."""
    row = con.execute(
        """
        SELECT p.messages, p.few_shot_ids
        FROM judge_alignment a
        JOIN judge_prompts p ON p.criterion = a.criterion AND p.prompt_version = a.prompt_version
        WHERE a.criterion = ? AND a.trusted AND p.model = ?
        ORDER BY a.evaluated_at DESC, a.prompt_version
        LIMIT 1
        """,
        [criterion.name, model],
    ).fetchone()
    if row is None:
        return None
    return JudgePrompt.from_stored(criterion, model, json.loads(row[0]), row[1])


def ask(client: LLMClient, prompt: JudgePrompt, items: Sequence, *, purpose: str) -> list[Verdict]:
    """Return the judge's verdicts on ``items`` (objects or dicts with log_id, input, output, context)."""
    def field(item, name):
        return item.get(name) if isinstance(item, dict) else getattr(item, name)

    batch = [
        prompt.messages(input=field(i, "input") or "", output=field(i, "output") or "", context=field(i, "context"))
        for i in items
    ]
    results = client.chat_many(
        batch, purpose=purpose, response_format=RESPONSE_FORMAT, temperature=0.0, max_tokens=MAX_ANSWER_TOKENS
    )
    verdicts = []
    for item, result in zip(items, results):
        common = {"log_id": field(item, "log_id"), "prompt_version": prompt.version,
                  "request_hash": result.request_hash, "cached": result.cached}
        if not result.ok:
            verdicts.append(Verdict(None, "", None, status=result.status, error=result.error, **common))
            continue
        verdict, reason, problem = parse_verdict(result.text)
        status = "ok" if problem is None else "parse_error"
        verdicts.append(Verdict(verdict, reason, problem, status=status, **common))
    return verdicts


def judge_items(
    client: LLMClient,
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    *,
    criterion: str,
    items: Sequence[dict],
) -> list[Verdict]:
    """Return one :class:`Verdict` per item (dicts with log_id, input, output, context).

    Uses the criterion's most recent trusted prompt version (exactly the prompt that was
    aligned with people); when none is trusted yet, the prompt with today's few-shot
    examples. Nothing is written to `judge_verdicts` (the items may be new outputs,
    not logs); the requests are cached and recorded in `llm_calls` as usual.
    """
    found = criterion_named(settings, criterion)
    prompt = trusted_prompt(con, found, model=client.model) or current_prompt(con, settings, found, model=client.model)
    return ask(client, prompt, list(items), purpose=f"judge:{criterion}")


def save_prompt(con: duckdb.DuckDBPyConnection, prompt: JudgePrompt) -> None:
    """Record a judge prompt version in `judge_prompts` (once per version)."""
    exists = con.execute(
        "SELECT count(*) FROM judge_prompts WHERE criterion = ? AND prompt_version = ?",
        [prompt.criterion.name, prompt.version],
    ).fetchone()[0]
    if exists:
        return
    con.execute(
        "INSERT INTO judge_prompts (criterion, prompt_version, model, template_hash, few_shot_ids, source, "
        "messages, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        [prompt.criterion.name, prompt.version, prompt.model, prompt.criterion.template_hash(),
         list(prompt.example_ids), prompt.criterion.source, json.dumps(list(prompt.prefix)),
         dt.datetime.now(dt.UTC)],
    )


_VERDICT_SCHEMA = pa.schema([
    ("log_id", pa.string()), ("criterion", pa.string()), ("prompt_version", pa.string()),
    ("verdict", pa.bool_()), ("reason", pa.string()), ("parse_error", pa.string()),
    ("judged_at", pa.timestamp("us", tz="UTC")), ("request_hash", pa.string()),
    ("status", pa.string()), ("holdout", pa.bool_()), ("error", pa.string()),
])


def write_verdicts(con: duckdb.DuckDBPyConnection, *, criterion: str, verdicts: Sequence[Verdict], holdout: bool) -> int:
    """Replace the rows of these (log, criterion, version) in `judge_verdicts`; return rows written.

    Requests refused by the budget are not written (they were never asked); failed
    requests are written with status ``error`` and asked again next run.
    """
    now = dt.datetime.now(dt.UTC)
    rows = [
        {"log_id": v.log_id, "criterion": criterion, "prompt_version": v.prompt_version,
         "verdict": v.verdict, "reason": v.reason, "parse_error": v.parse_error, "error": v.error,
         "judged_at": now, "request_hash": v.request_hash, "status": v.status, "holdout": holdout}
        for v in verdicts
        if v.status != "budget"
    ]
    if not rows:
        return 0
    table = pa.Table.from_pylist(rows, schema=_VERDICT_SCHEMA)
    con.register("_judge_rows", table)
    try:
        con.execute("BEGIN TRANSACTION")
        con.execute(
            "DELETE FROM judge_verdicts j USING _judge_rows r "
            "WHERE j.log_id = r.log_id AND j.criterion = r.criterion AND j.prompt_version = r.prompt_version"
        )
        con.execute("INSERT INTO judge_verdicts BY NAME SELECT * FROM _judge_rows")
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    finally:
        con.unregister("_judge_rows")
    return len(rows)
