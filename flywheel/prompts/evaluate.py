"""Prompt evaluation: the candidate against the champion on a fixed evaluation set.

For each prompt name with a candidate (:func:`flywheel.prompts.registry.latest_candidate`):

1. **Replay.** Every log of the prompt's evaluation set
   (:func:`flywheel.prompts.eval_set.evaluation_set`) is sent through the endpoint twice,
   once with each prompt as the system message and the log's context and question as
   the user message (:func:`replay_messages`), at temperature 0. Items where either
   answer failed (HTTP error, budget) are left out of every comparison and counted.
2. **Scores** per answer, all oriented so that higher is better:
   ``classifier:hallucination`` (1 - calibrated probability of a hallucination) and
   ``classifier:relevance`` (probability of relevant) from the classifier champions
   (:func:`flywheel.classifiers.registry.champion_scorer`) that are trusted: a champion
   below the trust floor (:mod:`flywheel.classifiers.trust`) is not used (the problems
   say why), and items of a source it is not trusted for are left out of its metric;
   ``judge:<criterion>`` (1 when
   the trusted judge finds the answer good; parse failures leave the item out of that
   metric) from :func:`flywheel.judges.judge_items` for every trusted criterion, and
   ``assertions`` (1 when the answer passes every check of ``prompts/assertions.toml``).
   ``quality`` is, per item, the mean of its classifier and judge scores.
3. **Tests** are paired over the same items and one-sided (candidate better):
   Wilcoxon signed-rank (:func:`scipy.stats.wilcoxon`) for continuous scores, the exact
   sign test on discordant pairs (exact McNemar, :func:`scipy.stats.binomtest`) for
   binary ones. The same tests the other way round say whether the candidate is
   significantly worse on a metric.
4. **Decision.** The candidate is promoted only when ``quality`` is significantly better
   (``p < FLYWHEEL_PROMPT_EVAL_ALPHA``), no metric is significantly worse, and it fails
   no more assertion checks than the champion. Otherwise it stays a candidate and is
   not written out. With no classifier champion and no trusted judge there is nothing to
   measure quality by, and nothing is promoted.

Results: one ``prompt_evals`` row per metric (``eval_id`` the hash of the prompt pair,
evaluation set, scorers, assertions file and alpha; an evaluation already recorded in full
is reused, not run again; one where replays failed is run again, with the answers that
came back served from the cache), ``eval_id`` on the candidate's registry row, and the promotion
(:func:`flywheel.prompts.registry.promote`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
from scipy import stats

from flywheel.prompts import registry
from flywheel.prompts.assertions import load_assertions
from flywheel.prompts.eval_set import evaluation_set
from flywheel.settings import Settings

PURPOSE = "prompt_eval"
CLASSIFIER_TASKS = ("hallucination", "relevance")
# Labels whose positive value means the answer is bad: a judge criterion aligned with one
# of them finds a failure when its verdict is True (the others find a quality).
FAILURE_LABELS = ("hallucination",)
MAX_ANSWER_TOKENS = 512
SAMPLES_SHOWN = 3


@dataclass
class MetricResult:
    """One metric of one evaluation: mean scores, the one-sided p-values and the test."""

    metric: str
    champion_score: float | None
    candidate_score: float | None
    p_value: float | None  # candidate better
    p_worse: float | None  # candidate worse
    n: int
    test: str
    detail: dict = field(default_factory=dict)


@dataclass
class Evaluation:
    """The evaluation of one candidate against its champion."""

    eval_id: str
    prompt_name: str
    champion_version: str
    candidate_version: str
    eval_set_id: str
    metrics: list[MetricResult] = field(default_factory=list)
    promoted: bool = False
    decision: str = ""
    n_items: int = 0
    n_replayed: int = 0
    reused: bool = False
    scorers: list[str] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)

    def metric(self, name: str) -> MetricResult | None:
        return next((m for m in self.metrics if m.metric == name), None)


@dataclass
class EvalReport:
    """Every evaluation of one run, the names skipped (and why), and problems met."""

    evaluations: dict[str, Evaluation] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    usage: dict = field(default_factory=dict)

    @property
    def promoted(self) -> list[str]:
        return sorted(n for n, e in self.evaluations.items() if e.promoted)

    @property
    def rejected(self) -> list[str]:
        return sorted(n for n, e in self.evaluations.items() if not e.promoted)

    def markdown(self) -> str:
        """Return the comparison table: champion vs candidate per prompt and metric."""
        lines = ["| prompt | metric | champion | candidate | diff | p (better) | n | test | promoted |",
                 "|---|---|---|---|---|---|---|---|---|"]
        for name, ev in sorted(self.evaluations.items()):
            for m in ev.metrics:
                diff = (m.candidate_score - m.champion_score
                        if m.candidate_score is not None and m.champion_score is not None else None)
                lines.append(
                    f"| {name} | {m.metric} | {_fmt(m.champion_score)} | {_fmt(m.candidate_score)} | "
                    f"{_fmt(diff, signed=True)} | {_fmt(m.p_value, p=True)} | {m.n} | {m.test} | {ev.promoted} |"
                )
        for name, why in sorted(self.skipped.items()):
            lines.append(f"| {name} | - | - | - | - | - | - | {why} | False |")
        return "\n".join(lines)

    def decisions(self) -> dict[str, str]:
        return {n: e.decision for n, e in sorted(self.evaluations.items())}


def _fmt(value: float | None, *, signed: bool = False, p: bool = False) -> str:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return "-"
    if p:
        return f"{value:.2g}"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


# ---------------------------------------------------------------------------------------
# Replay and scoring
# ---------------------------------------------------------------------------------------


def replay_messages(prompt_text: str, *, input: str, context: str | None) -> list[dict]:
    """Return the chat messages that replay one logged request with ``prompt_text``:
    the prompt as the system message, the context (when any) and question as the user's."""
    user = f"Context:\n{context.strip()}\n\nQuestion: {input.strip()}" if context and context.strip() else input
    return [{"role": "system", "content": prompt_text}, {"role": "user", "content": user}]


def _classifier_scorers(con, settings) -> tuple[dict[str, object], list[str]]:
    try:
        from flywheel.classifiers.registry import champion_scorer
    except ImportError as exc:
        return {}, [f"classifier registry not available ({exc}); classifiers are not used"]
    scorers, problems = {}, []
    for task in CLASSIFIER_TASKS:
        try:
            scorer = champion_scorer(con, settings, task)
        except Exception as exc:  # a broken model artifact must not stop the evaluation
            problems.append(f"classifier champion of {task} cannot be loaded: {exc}")
            continue
        if scorer is None:
            continue
        if scorer.trust is not None and not scorer.trust.task.trusted:
            problems.append(f"classifier champion {scorer.version} of {task} is not trusted, not used: "
                            f"{scorer.trust.task.reason}")
            continue
        scorers[task] = scorer
    return scorers, problems


def _trusted_judges(con) -> tuple[list[str], object | None, list[str]]:
    try:
        from flywheel import judges
    except ImportError as exc:
        return [], None, [f"judges not available ({exc}); judges are not used"]
    try:
        return list(judges.trusted_criteria(con)), judges, []
    except Exception as exc:
        return [], None, [f"trusted judges cannot be read: {exc}"]


def _classifier_goodness(scorer, task: str, items: pd.DataFrame, outputs: list[str]) -> np.ndarray:
    sources = items["source"].tolist() if "source" in items else [None] * len(items)
    frame = pd.DataFrame({"input": items["input"].tolist(), "output": outputs, "context": items["context"].tolist(),
                          "source": sources})
    proba = np.asarray(scorer.score(frame), dtype=float)
    # an item of a source the model is not trusted for has no classifier score
    proba = np.where(scorer.trusted(frame["source"].to_numpy()), proba, np.nan)
    return 1.0 - proba if task == "hallucination" else proba


def _judge_goodness(judges, client, con, settings, criterion: str, items: pd.DataFrame,
                    outputs: list[str], tag: str) -> np.ndarray:
    rows = [
        {"log_id": f"prompt-eval:{tag}:{log_id}", "input": inp, "output": out,
         "context": ctx if isinstance(ctx, str) else None}
        for log_id, inp, out, ctx in zip(items["log_id"], items["input"], outputs, items["context"])
    ]
    verdicts = judges.judge_items(client, con, settings, criterion=criterion, items=rows)
    found = judges.load_criteria(settings).criteria.get(criterion)
    failure = (found.label if found is not None else criterion) in FAILURE_LABELS
    good = []
    for v in verdicts:
        if v.verdict is None:
            good.append(np.nan)
        elif failure:
            good.append(0.0 if v.verdict else 1.0)
        else:
            good.append(1.0 if v.verdict else 0.0)
    return np.asarray(good, dtype=float)


def paired_test(champion: np.ndarray, candidate: np.ndarray, *, binary: bool) -> tuple[float, float, str, int]:
    """Return (p better, p worse, test name, n) of a paired one-sided comparison.

    Pairs with a missing value on either side are left out. Binary scores: exact sign
    test on the discordant pairs (exact McNemar); continuous: Wilcoxon signed-rank
    (zero differences dropped). Without any difference both p-values are 1.
    """
    mask = ~(np.isnan(champion) | np.isnan(candidate))
    a, b = champion[mask], candidate[mask]
    n = int(mask.sum())
    if binary:
        better = int(((b > a)).sum())
        worse = int(((b < a)).sum())
        if better + worse == 0:
            return 1.0, 1.0, "sign test (exact McNemar)", n
        p_better = stats.binomtest(better, better + worse, 0.5, alternative="greater").pvalue
        p_worse = stats.binomtest(worse, better + worse, 0.5, alternative="greater").pvalue
        return float(p_better), float(p_worse), "sign test (exact McNemar)", n
    diff = b - a
    if n == 0 or np.allclose(diff, 0.0):
        return 1.0, 1.0, "Wilcoxon signed-rank", n
    p_better = stats.wilcoxon(b, a, alternative="greater", zero_method="wilcox").pvalue
    p_worse = stats.wilcoxon(b, a, alternative="less", zero_method="wilcox").pvalue
    return float(p_better), float(p_worse), "Wilcoxon signed-rank", n


def _metric(name: str, champion: np.ndarray, candidate: np.ndarray, *, binary: bool, detail=None) -> MetricResult:
    p_better, p_worse, test, n = paired_test(champion, candidate, binary=binary)
    mask = ~(np.isnan(champion) | np.isnan(candidate))
    return MetricResult(
        metric=name,
        champion_score=float(champion[mask].mean()) if n else None,
        candidate_score=float(candidate[mask].mean()) if n else None,
        p_value=p_better, p_worse=p_worse, n=n, test=test, detail=detail or {},
    )


# ---------------------------------------------------------------------------------------
# One evaluation
# ---------------------------------------------------------------------------------------


def _eval_id(parts: list[object]) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:16]


def _stored(con: duckdb.DuckDBPyConnection, eval_id: str) -> list[tuple] | None:
    rows = con.execute(
        """SELECT metric, champion_score, candidate_score, p_value, n, test, promoted, decision, detail,
                  prompt_name, champion_version, candidate_version, eval_set_id
           FROM prompt_evals WHERE eval_id = ? ORDER BY metric""",
        [eval_id],
    ).fetchall()
    return rows or None


def _from_stored(eval_id: str, rows: list[tuple]) -> Evaluation:
    first = rows[0]
    ev = Evaluation(eval_id=eval_id, prompt_name=first[9], champion_version=first[10],
                    candidate_version=first[11], eval_set_id=first[12], promoted=bool(first[6]),
                    decision=first[7] or "", reused=True)
    for metric, champ, cand, p, n, test, _, _, detail, *_ in rows:
        d = json.loads(detail) if detail else {}
        ev.metrics.append(MetricResult(metric, champ, cand, p, d.get("p_worse"), int(n), test or "", d))
    return ev


def evaluate_prompt(
    con: duckdb.DuckDBPyConnection,
    settings: Settings,
    client,
    *,
    name: str,
    report: EvalReport,
) -> Evaluation | None:
    """Evaluate the newest candidate of ``name`` against its champion, record the result
    and promote the candidate when it wins. Returns the evaluation, or None (with the
    reason in ``report.skipped``) when there is nothing to evaluate."""
    champ = registry.champion(con, name)
    cand = registry.latest_candidate(con, name)
    if champ is None:
        report.skipped[name] = "no champion (no template?)"
        return None
    if cand is None:
        report.skipped[name] = "no candidate"
        return None
    eval_set = evaluation_set(con, settings, name, grow=False)
    if len(eval_set.log_ids) < 2:
        report.skipped[name] = f"evaluation set too small ({len(eval_set.log_ids)} labelled logs)"
        return None
    scorers, problems = _classifier_scorers(con, settings)
    criteria, judges, judge_problems = _trusted_judges(con)
    report.problems.extend(p for p in problems + judge_problems if p not in report.problems)
    checks_file = load_assertions(settings)
    report.problems.extend(p for p in checks_file.problems if p not in report.problems)
    checks = checks_file.checks(name)
    scorer_ids = sorted([f"classifier:{t}:{s.version}" for t, s in scorers.items()]
                        + [f"judge:{c}" for c in criteria])
    assertions_hash = (registry.content_hash(checks_file.path.read_text(encoding="utf-8"))
                       if checks_file.exists else None)
    eval_id = _eval_id([name, champ.version, cand.version, eval_set.eval_set_id, scorer_ids,
                        assertions_hash, settings.prompt_eval_alpha, settings.llm_model])
    stored = _stored(con, eval_id)
    if stored is not None:
        ev = _from_stored(eval_id, stored)
        replays = ev.metric("replay_ok")
        if replays is None or not replays.detail.get("failed_replays"):
            report.evaluations[name] = ev
            return ev
        # Replays failed last time (errors, budget): run it again (answers are cached).

    items = con.execute(
        """SELECT s.log_id, l.input, l.context, l.source FROM prompt_eval_sets s JOIN logs l ON l.log_id = s.log_id
           WHERE s.eval_set_id = ? AND s.prompt_name = ? ORDER BY s.position""",
        [eval_set.eval_set_id, name],
    ).df()
    # An item that is an example of either prompt would favour it: left out.
    shown = set(champ.few_shot_ids) | set(cand.few_shot_ids)
    if shown & set(items["log_id"]):
        report.problems.append(f"{name}: {len(shown & set(items['log_id']))} evaluation items are few-shot "
                               "examples of a compared prompt; they are left out")
        items = items[~items["log_id"].isin(shown)].reset_index(drop=True)
    ev = Evaluation(eval_id=eval_id, prompt_name=name, champion_version=champ.version,
                    candidate_version=cand.version, eval_set_id=eval_set.eval_set_id,
                    n_items=len(items), scorers=scorer_ids)
    requests = [replay_messages(p.text, input=i, context=c if isinstance(c, str) else None)
                for p in (champ, cand) for i, c in zip(items["input"], items["context"])]
    results = client.chat_many(requests, purpose=PURPOSE, temperature=0.0, max_tokens=MAX_ANSWER_TOKENS)
    n = len(items)
    champ_res, cand_res = results[:n], results[n:]
    ok = np.array([a.ok and b.ok for a, b in zip(champ_res, cand_res)])
    failed = [r for r in results if not r.ok]
    if failed:
        report.problems.append(f"{name}: {len(failed)} of {len(results)} replays failed "
                               f"({failed[0].status}: {failed[0].error}); those items are left out")
    items = items[ok].reset_index(drop=True)
    champ_out = [r.text for r, good in zip(champ_res, ok) if good]
    cand_out = [r.text for r, good in zip(cand_res, ok) if good]
    ev.n_replayed = len(items)
    ev.samples = [
        {"log_id": lid, "input": inp[:200], "champion": a[:300], "candidate": b[:300]}
        for lid, inp, a, b in list(zip(items["log_id"], items["input"], champ_out, cand_out))[:SAMPLES_SHOWN]
    ]

    quality_parts: list[tuple[np.ndarray, np.ndarray]] = []
    if len(items):
        for task, scorer in sorted(scorers.items()):
            a = _classifier_goodness(scorer, task, items, champ_out)
            b = _classifier_goodness(scorer, task, items, cand_out)
            ev.metrics.append(_metric(f"classifier:{task}", a, b, binary=False,
                                      detail={"model_version": scorer.version}))
            quality_parts.append((a, b))
        for criterion in criteria:
            a = _judge_goodness(judges, client, con, settings, criterion, items, champ_out, champ.version)
            b = _judge_goodness(judges, client, con, settings, criterion, items, cand_out, cand.version)
            ev.metrics.append(_metric(f"judge:{criterion}", a, b, binary=True,
                                      detail={"parse_failures": int(np.isnan(a).sum() + np.isnan(b).sum())}))
            quality_parts.append((a, b))
    assert_a = np.array([0.0 if checks.failures(t) else 1.0 for t in champ_out])
    assert_b = np.array([0.0 if checks.failures(t) else 1.0 for t in cand_out])
    failures_b = sorted({f for t in cand_out for f in checks.failures(t)})
    assertions = _metric("assertions", assert_a, assert_b, binary=True,
                         detail={"checks": not checks.empty, "candidate_failures": failures_b[:10]})
    quality = None
    if quality_parts:
        with np.errstate(all="ignore"):
            a = np.nanmean(np.vstack([p[0] for p in quality_parts]), axis=0)
            b = np.nanmean(np.vstack([p[1] for p in quality_parts]), axis=0)
        quality = _metric("quality", a, b, binary=False, detail={"scores": scorer_ids})
        ev.metrics.insert(0, quality)
    ev.metrics.append(assertions)
    ev.metrics.append(MetricResult("replay_ok", None, None, None, None, int(ok.sum()), "count",
                                   {"items": n, "failed_replays": len(failed)}))

    alpha = settings.prompt_eval_alpha
    worse = [m.metric for m in ev.metrics if m.p_worse is not None and m.p_worse < alpha]
    more_failures = int((assert_b < 1).sum()) > int((assert_a < 1).sum())
    if ev.n_replayed < 2:
        ev.decision = (f"not promoted: only {ev.n_replayed} of {n} items were answered for both prompts "
                       f"({len(failed)} replays failed or were over the budget)")
    elif quality is None:
        ev.decision = "not promoted: no classifier champion and no trusted judge to measure quality with"
    elif quality.n < 2:
        ev.decision = f"not promoted: only {quality.n} items could be compared"
    elif not quality.p_value < alpha:
        ev.decision = (f"not promoted: quality {_fmt(quality.candidate_score)} vs {_fmt(quality.champion_score)} "
                       f"is not significantly better (p = {quality.p_value:.3g} >= {alpha})")
    elif worse:
        ev.decision = f"not promoted: significantly worse on {', '.join(worse)}"
    elif more_failures:
        ev.decision = (f"not promoted: fails more assertion checks ({int((assert_b < 1).sum())} vs "
                       f"{int((assert_a < 1).sum())} answers)")
    else:
        ev.promoted = True
        ev.decision = (f"promoted: quality {_fmt(quality.candidate_score)} vs {_fmt(quality.champion_score)} "
                       f"(p = {quality.p_value:.3g} < {alpha}, n = {quality.n})")
    _record(con, ev)
    registry.set_eval(con, name=name, version=cand.version, eval_id=eval_id)
    if ev.promoted:
        registry.promote(con, settings, name=name, version=cand.version, eval_id=eval_id)
    report.evaluations[name] = ev
    return ev


def _record(con: duckdb.DuckDBPyConnection, ev: Evaluation) -> None:
    now = dt.datetime.now(dt.timezone.utc)
    rows = [
        (ev.eval_id, ev.prompt_name, ev.champion_version, ev.candidate_version, m.metric, _num(m.champion_score),
         _num(m.candidate_score), _num(m.p_value), m.n, ev.promoted, now, m.test, ev.eval_set_id, ev.decision,
         json.dumps({**m.detail, "p_worse": _num(m.p_worse)}, default=str))
        for m in ev.metrics
    ]
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM prompt_evals WHERE eval_id = ?", [ev.eval_id])
        con.executemany(
            """INSERT INTO prompt_evals (eval_id, prompt_name, champion_version, candidate_version, metric,
               champion_score, candidate_score, p_value, n, promoted, evaluated_at, test, eval_set_id, decision,
               detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
            rows,
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise


def _num(value: float | None) -> float | None:
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    return float(value)


def evaluate_candidates(con: duckdb.DuckDBPyConnection, settings: Settings, client) -> EvalReport:
    """Evaluate the newest candidate of every prompt name with a champion; returns the
    evaluations (promoted or not) and the names skipped, with reasons."""
    report = EvalReport()
    names = [r[0] for r in con.execute(
        "SELECT DISTINCT name FROM prompts WHERE status = 'champion' ORDER BY 1").fetchall()]
    for name in names:
        evaluate_prompt(con, settings, client, name=name, report=report)
    if hasattr(client, "usage"):
        report.usage = client.usage()
    return report


def written_out_losers(con: duckdb.DuckDBPyConnection, settings: Settings) -> list[str]:
    """Return a message per prompt name whose published champion file is not its
    registry champion, or is a version an evaluation rejected (empty when all is well)."""
    problems = []
    rejected = {(r[0], r[1]) for r in con.execute(
        "SELECT prompt_name, candidate_version FROM prompt_evals GROUP BY ALL HAVING NOT bool_or(promoted)").fetchall()}
    for name in [r[0] for r in con.execute(
            "SELECT DISTINCT name FROM prompts WHERE status = 'champion' ORDER BY 1").fetchall()]:
        champ = registry.champion(con, name)
        meta = registry.published(settings, name) or {}
        version = meta.get("version")
        text_path, _ = registry.champion_paths(settings, name)
        if (name, version) in rejected and version != champ.version:
            problems.append(f"{name}: the published prompt {version} lost its evaluation")
        elif version != champ.version:
            problems.append(f"{name}: the published prompt is {version}, the registry champion {champ.version}")
        elif not text_path.exists() or registry.version_of(text_path.read_text(encoding="utf-8")) != champ.version:
            problems.append(f"{name}: {text_path} does not hold the champion's text {champ.version}")
    return problems
