"""One training run of the classifiers: for each task, train from the labels, evaluate,
gate against the champion, register the model fitted on every label, and write the model
card (figures of the evaluation fit, and the trust verdicts per source).

:func:`train_task` never raises for a data problem: too few labels, a hold-out without
both classes, or labels unchanged since the last model all end in a :class:`TaskReport`
that says why nothing was trained.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import duckdb

from flywheel.classifiers import registry
from flywheel.classifiers.model import TASKS
from flywheel.classifiers.trust import model_trust
from flywheel.classifiers.training import (
    CV_FOLDS,
    FIT_WORKERS,
    FULL_CV_ROWS,
    GROUP_MAX_SHARE,
    HOLDOUT_BUCKETS,
    PipelineFactory,
    TrainedModel,
    default_factory,
    fit_and_evaluate,
    load_training_data,
)
from flywheel.settings import Settings

METRIC_COLUMNS = ("auroc", "ap", "f1", "precision", "recall", "ece", "brier", "threshold", "n_eval", "positives")


@dataclass
class TaskReport:
    """What a training run did for one task."""

    task: str
    status: str  # skipped | unchanged | champion | candidate
    message: str
    version: str | None = None
    positives: int = 0
    negatives: int = 0
    metrics: dict | None = None
    gate: dict | None = None
    card: str = ""
    card_path: str | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        """A model was trained but kept out by the gate."""
        return self.status == "candidate"

    def summary(self) -> dict:
        return {"task": self.task, "status": self.status, "version": self.version, "positives": self.positives,
                "negatives": self.negatives, "message": self.message,
                **{k: (self.metrics or {}).get(k) for k in ("auroc", "ap", "f1", "ece")}}


def train_all(con: duckdb.DuckDBPyConnection, settings: Settings, *, tasks=TASKS,
              factory: PipelineFactory = default_factory, now: dt.datetime | None = None) -> list[TaskReport]:
    """Return one :class:`TaskReport` per task.

    The tasks' fits share one pool of :data:`FIT_WORKERS` threads (both tasks' fits are
    packed onto the cores together, not one task after the other); loading, the gate and
    registering run one task after the other on ``con``."""
    now = now or dt.datetime.now(dt.timezone.utc)
    prepared = {task: _prepare(con, settings, task, factory=factory) for task in tasks}
    pending = {task: p for task, p in prepared.items() if isinstance(p, tuple)}
    fitted: dict[str, object] = {}
    if pending:
        with ThreadPoolExecutor(max_workers=FIT_WORKERS) as pool, \
                ThreadPoolExecutor(max_workers=len(pending)) as tasks_pool:
            futures = {task: tasks_pool.submit(_fit, data, factory=factory, pool=pool)
                       for task, (_, data, _) in pending.items()}
            fitted = {task: future.result() for task, future in futures.items()}
    reports = []
    for task in tasks:
        p = prepared[task]
        if not isinstance(p, tuple):
            reports.append(p)
            continue
        report, data, train_settings = p
        reports.append(_finish(con, settings, report, data, train_settings, fitted[task], now=now))
    return reports


def train_task(con: duckdb.DuckDBPyConnection, settings: Settings, task: str, *,
               factory: PipelineFactory = default_factory, now: dt.datetime | None = None) -> TaskReport:
    """Train, evaluate, gate and register one model of ``task``; return what happened."""
    return train_all(con, settings, tasks=(task,), factory=factory, now=now)[0]


def _fit(data, *, factory, pool) -> TrainedModel | ValueError:
    try:
        return fit_and_evaluate(data, factory=factory, pool=pool)
    except ValueError as exc:  # a data problem (a side without a class): reported, not raised
        return exc


def _prepare(con, settings: Settings, task: str, *, factory: PipelineFactory):
    """Return (report, data, train settings) of a task to train, or its final
    :class:`TaskReport` when it is not trained (too few labels; nothing changed)."""
    started = time.perf_counter()
    data = load_training_data(con, task)
    data.seconds = round(time.perf_counter() - started, 2)
    report = TaskReport(task=task, status="skipped", message="", positives=data.positives, negatives=data.negatives)
    need = settings.min_labels_per_class
    if data.positives < need or data.negatives < need:
        report.message = (
            f"{task}: {data.positives} positive and {data.negatives} negative consensus labels; "
            f"FLYWHEEL_MIN_LABELS_PER_CLASS={need} needs at least {need} of each: not trained")
        return report
    train_settings = _jsonable({
        "pipeline": repr(factory(task, data.has_context)),
        "has_context": data.has_context,
        "min_labels_per_class": need,
        "holdout": f"groups hashing to bucket 0 of {HOLDOUT_BUCKETS}",
        "groups": f"session, else (input, context); at most {GROUP_MAX_SHARE:.0%} of the rows per group",
        "cv_folds": CV_FOLDS,
        "full_cv_rows": FULL_CV_ROWS,
        "calibration": "sigmoid on out-of-fold scores",
        "served": "refitted on every labelled row",
        "gate_confidence": settings.gate_confidence,
    })
    latest = con.execute(
        "SELECT version, status, data_hash, code_version, settings FROM models WHERE task = ? "
        "ORDER BY trained_at DESC, version DESC LIMIT 1", [task]).fetchone()
    if latest and latest[2] == data.data_hash and latest[3] == registry.code_version() \
            and json.loads(latest[4] or "null") == train_settings:
        report.status, report.version = "unchanged", latest[0]
        report.message = (f"{task}: labels, code and settings unchanged since {latest[0]} ({latest[1]}): "
                          "not retrained")
        return report
    return report, data, train_settings


def _finish(con, settings: Settings, report: TaskReport, data, train_settings: dict, trained, *,
            now: dt.datetime) -> TaskReport:
    """Save, gate and register a fitted model; write its card; return the report."""
    task = report.task
    if isinstance(trained, ValueError):
        report.message = f"{trained}: not trained"
        return report
    version = registry.new_version(task, data.data_hash, now)
    folder = registry.artifact_dir(settings, task)
    artifact = folder / f"{version}.skops"
    started = time.perf_counter()
    sha256 = registry.save_artifact(trained.pipeline, artifact)
    eval_artifact = registry.companion(artifact, "eval")
    eval_sha256 = registry.save_artifact(trained.eval_pipeline, eval_artifact)
    ids_path = registry.companion(artifact, "eval-train")
    ids_sha256 = registry.save_log_ids(data.frame.loc[trained.train_mask, "log_id"].astype(str), ids_path)
    saved = time.perf_counter()
    decision = registry.gate(con, settings, task, eval_frame=trained.eval_frame, y=trained.eval_labels,
                             candidate_scores=trained.eval_scores)
    ev = trained.evaluation
    ev.seconds.update(load=data.seconds, save=round(saved - started, 2), gate=round(time.perf_counter() - saved, 2))
    n_fit, n_eval = int(trained.train_mask.sum()), int(trained.held_mask.sum())
    metrics = {**ev.holdout, "cv": ev.cv, "time_split": ev.time_split, "slices": ev.slices,
               "gate": decision.to_dict(), "notes": ev.notes, "labelled_sources": ev.labelled_sources,
               "evaluation_fit": {"artifact": settings.source_name(eval_artifact), "sha256": eval_sha256,
                                  "train_ids": settings.source_name(ids_path), "train_ids_sha256": ids_sha256,
                                  "n_train": n_fit, "n_eval": n_eval},
               "served_fit": {"n_train": trained.n_served}, "seconds": ev.seconds}
    trust = model_trust(metrics, settings)
    metrics["trust"] = {**trust.to_dict(), "min_auroc": settings.classifier_min_auroc,
                        "min_rows": settings.classifier_min_trust_rows}
    metrics["trusted"] = trust.task.trusted
    status = registry.register(
        con, settings, task=task, version=version, trained_at=now, data_hash=data.data_hash,
        train_settings=train_settings, metrics=metrics, artifact=artifact, sha256=sha256, decision=decision,
        n_train=trained.n_served, n_eval=n_eval)
    report.status, report.version, report.message = status, version, f"{task}: {version} {decision.reason}"
    if not trust.task.trusted:
        report.message += f"; its scores are not trusted ({trust.task.reason})"
    elif trust.untrusted_sources():
        report.message += "; not trusted for source(s) " + ", ".join(trust.untrusted_sources())
    report.metrics, report.gate, report.notes = metrics, decision.to_dict(), ev.notes
    report.card = model_card(trained, version=version, status=status, decision=decision, sha256=sha256,
                             trust=trust)
    card_path = folder / f"{version}.md"
    card_path.write_text(report.card, encoding="utf-8")
    report.card_path = settings.source_name(card_path)
    return report


def model_card(trained: TrainedModel, *, version: str, status: str, decision: registry.GateDecision,
               sha256: str, trust=None) -> str:
    """Return the markdown model card of a trained model."""
    ev, data = trained.evaluation, trained.data
    n_fit, n_eval = int(trained.train_mask.sum()), int(trained.held_mask.sum())
    lines = [
        f"## {trained.task}: {version} ({status})",
        "",
        f"**Gate:** {decision.reason}",
        "",
    ]
    if trust is not None:
        lines += [f"**Trust:** {'trusted' if trust.task.trusted else 'NOT trusted'}: {trust.task.reason}", ""]
    lines += [
        f"**Served model:** fitted on all {trained.n_served} labelled logs. The figures below are those of its "
        f"evaluation fit: the same pipeline fitted on {n_fit} logs and scored on {n_eval} held-out logs "
        f"(groups: session, else the normalized (input, context) pair, none larger than "
        f"{GROUP_MAX_SHARE:.0%} of the rows; a fixed quarter of the groups is held out). "
        f"Labels: {data.positives} positive, {data.negatives} negative; context "
        f"{'used' if data.has_context else 'absent'}; data hash `{data.data_hash[:16]}`; artifact SHA-256 "
        f"`{sha256[:16]}`; threshold {trained.threshold:.3f} (best F1 on out-of-fold scores of the training "
        f"part, which also calibrate it: a sigmoid fit).",
        "",
        "| evaluation | " + " | ".join(METRIC_COLUMNS) + " |",
        "|---|" + "---|" * len(METRIC_COLUMNS),
    ]
    for name, values in (("held out", ev.holdout), ("grouped CV (training part, out of fold)", ev.cv),
                         ("time split", ev.time_split)):
        if values:
            label = name if name != "time split" else f"time split (test {values.get('test_day')})"
            lines.append(f"| {label} | " + " | ".join(_fmt(values.get(c)) for c in METRIC_COLUMNS) + " |")
    if decision.comparison:
        c = decision.comparison
        lines += ["", f"Champion {decision.champion_version} (its evaluation fit) on the same {c.n} held-out rows: "
                      f"AUROC {c.champion_auroc:.4f}; difference {c.delta:+.4f}, {c.confidence:.0%} interval "
                      f"[{c.low:+.4f}, {c.high:+.4f}] ({c.method})."]
    if ev.slices:
        cols = ("n_eval", "positives", "auroc", "ap", "f1", "precision", "recall", "ece")
        lines += ["", "**Per slice (held out)**", "", "| slice | " + " | ".join(cols) + " | AUROC 95% low | trusted |",
                  "|---|" + "---|" * (len(cols) + 2)]
        for s in ev.slices:
            verdict = trust.sources.get(s["slice_value"]) if trust is not None and s["slice_type"] == "source" \
                else None
            tail = (f" {_fmt(verdict.low)} | {'yes' if verdict.trusted else 'no'} ({verdict.basis}) |"
                    if verdict is not None else " – | – |")
            lines.append(f"| {s['slice_type']}={s['slice_value']} | " + " | ".join(_fmt(s.get(c)) for c in cols)
                         + " |" + tail)
    if trust is not None and trust.untrusted_sources():
        lines += ["", "**Sources whose scores are not trusted:** " + "; ".join(trust.untrusted_sources().values())]
    if ev.notes:
        lines += ["", "Notes: " + "; ".join(ev.notes)]
    if ev.plots:
        lines += ["", ev.plots]
    return "\n".join(lines) + "\n"


def _fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def _jsonable(value):
    return json.loads(json.dumps(value))
