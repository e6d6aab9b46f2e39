"""The model registry: the ``models`` table, skops artifacts, the champion gate, and the
champion's scorer.

Artifacts live in ``$FLYWHEEL_HOME/models/classifiers/<task>/<version>.skops`` with a
model card next to them (``<version>.md``). They are written with skops and read back
with an explicit list of trusted types (:data:`TRUSTED_TYPES`), never with raw pickle;
the SHA-256 of each file is kept in ``models.artifact_sha256`` and checked on load.

Each model has two artifacts: ``<version>.skops``, the served pipeline (fitted on every
labelled row), and ``<version>.eval.skops``, its evaluation fit (fitted without the
held-out rows), with the log ids that fit was trained on (``<version>.eval-train.parquet``);
``models.metrics.evaluation_fit`` names them. Models trained before the served refit have
only the first (it was their evaluation fit too).

Status of a model: ``champion`` (at most one per task: its scores are the ones in use),
``candidate`` (trained, not promoted; ``reason`` says why) or ``retired`` (a former
champion). A new model becomes champion unless its evaluation fit is worse than the
champion's evaluation fit on the same held-out rows (those neither was trained on) beyond
the noise of that set (:func:`gate`). Whether its scores are *trusted* is a separate,
absolute verdict (:mod:`flywheel.classifiers.trust`), written with every score.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import skops.io as sio

from flywheel.classifiers.evaluation import Comparison, both_classes, compare_auroc
from flywheel.classifiers.features import FEATURES_VERSION, LogFeatures
from flywheel.classifiers.trust import Trust, model_trust
from flywheel.settings import Settings

log = logging.getLogger("flywheel.classifiers")

# Types a classifier artifact may contain beyond what skops trusts by default
# (scikit-learn estimators, numpy and scipy containers). Anything else is refused.
TRUSTED_TYPES = (
    "flywheel.classifiers.features.LogFeatures",
    "flywheel.classifiers.features.TermTfidf",
    "flywheel.classifiers.features.GroundingFeatures",
    "flywheel.classifiers.features.StyleFeatures",
    "flywheel.classifiers.features.TextColumn",
    "sklearn.calibration._CalibratedClassifier",
    "sklearn.calibration._SigmoidCalibration",
)
MIN_PARALLEL_ROWS = 20_000  # below this, a batch is scored in one thread


class ArtifactError(RuntimeError):
    """A model artifact cannot be used: missing, corrupt, altered or untrusted. The
    message names the file."""


# --------------------------------------------------------------------------- artifacts


def artifact_dir(settings: Settings, task: str) -> Path:
    """Return the folder of the task's artifacts and model cards."""
    return settings.models_dir / "classifiers" / task


def resolve(settings: Settings, artifact_path: str) -> Path:
    """Return the file an ``artifact_path`` of the table names (relative to the home)."""
    path = Path(artifact_path)
    return path if path.is_absolute() else settings.home / path


def save_artifact(pipeline, path: Path) -> str:
    """Write ``pipeline`` to ``path`` with skops (atomically) and return the file's SHA-256.

    Raises ArtifactError when the pipeline holds a type outside :data:`TRUSTED_TYPES`
    (it could not be loaded back safely).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    sio.dump(pipeline, tmp)
    untrusted = set(sio.get_untrusted_types(file=tmp)) - set(TRUSTED_TYPES)
    if untrusted:
        tmp.unlink()
        raise ArtifactError(f"{path}: the model holds types outside the trusted list: {sorted(untrusted)}")
    os.replace(tmp, path)
    return _sha256(path)


def load_artifact(path: Path, *, sha256: str | None = None):
    """Return the pipeline stored at ``path``.

    Raises ArtifactError naming the file when it is missing, its SHA-256 differs from
    ``sha256`` (altered or truncated), it holds untrusted types, or skops cannot read it.
    """
    if not path.is_file():
        raise ArtifactError(f"model artifact {path} is missing")
    if sha256 and _sha256(path) != sha256:
        raise ArtifactError(f"model artifact {path} is corrupt: its SHA-256 differs from the registry's")
    try:
        untrusted = set(sio.get_untrusted_types(file=path)) - set(TRUSTED_TYPES)
        if untrusted:
            raise ArtifactError(f"model artifact {path} holds untrusted types {sorted(untrusted)}: refused")
        pipeline = sio.load(path, trusted=list(TRUSTED_TYPES))
    except ArtifactError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure is a corrupt file
        raise ArtifactError(f"model artifact {path} cannot be read ({type(exc).__name__}: {exc})") from exc
    if not hasattr(pipeline, "predict_proba"):
        raise ArtifactError(f"model artifact {path} does not hold a classifier")
    features = (getattr(pipeline, "named_steps", None) or {}).get("features")
    fitted_by = getattr(features, "features_version_", None)
    if isinstance(features, LogFeatures) and fitted_by != FEATURES_VERSION:
        raise ArtifactError(
            f"model artifact {path} was fitted by other feature code (features version {fitted_by or 1}; this "
            f"code computes version {FEATURES_VERSION}): train the task again (flywheel run, or the learn job)")
    return pipeline


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def code_version(root: Path | None = None) -> str:
    """Return the git commit of the source tree (read from ``.git``, no git process), or
    ``flywheel <package version>`` when the code is not a git checkout."""
    root = root or Path(__file__).resolve().parents[2]
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if head.startswith("ref: "):
            ref = head[5:]
            ref_file = git / ref
            if ref_file.is_file():
                return ref_file.read_text().strip()
            packed = git / "packed-refs"
            if packed.is_file():
                for line in packed.read_text().splitlines():
                    if line.endswith(" " + ref):
                        return line.split()[0]
        elif len(head) == 40:
            return head
    except OSError:
        pass
    try:
        return f"flywheel {metadata.version('flywheel')}"
    except metadata.PackageNotFoundError:
        return "flywheel (unknown version)"


# --------------------------------------------------------------------------- scoring


@dataclass
class Scorer:
    """The model that scores a task's logs: ``score(frame)`` returns the probability of
    the positive class (hallucinated; relevant) per row of a pandas or Polars frame with
    the columns ``input``, ``output``, ``context``."""

    task: str
    version: str
    pipeline: object
    artifact_path: Path
    threads: int = 1
    problems: list[str] = field(default_factory=list)  # champions skipped before this one, and why
    trust: Trust | None = None  # None: no verdict known (every score counts as trusted)

    def trusted(self, sources) -> np.ndarray:
        """Return, per row of ``sources`` (the logs' source values), whether this model's
        score of that row is trusted (:meth:`Trust.for_source`)."""
        if self.trust is None:
            return np.ones(len(sources), dtype=bool)
        if isinstance(sources, (pa.Array, pa.ChunkedArray)):
            # an Arrow column is encoded in place: no Python string per row
            encoded = pc.dictionary_encode(sources.combine_chunks() if isinstance(sources, pa.ChunkedArray)
                                           else sources, null_encoding="encode")
            codes = encoded.indices.to_numpy(zero_copy_only=False)
            uniques = encoded.dictionary.to_pylist()
        else:
            codes, uniques = pd.factorize(pd.Series(np.asarray(sources, dtype=object)), use_na_sentinel=False)
        verdicts = np.array([self.trust.for_source(None if pd.isna(u) else u).trusted for u in uniques], dtype=bool)
        return verdicts[codes] if len(codes) else np.zeros(0, dtype=bool)

    def score(self, frame) -> np.ndarray:
        n = frame.height if isinstance(frame, pl.DataFrame) else len(frame)
        if not n:
            return np.zeros(0, dtype=np.float64)
        threads = max(1, min(self.threads, n // MIN_PARALLEL_ROWS))
        if threads == 1:
            return self._predict(frame)
        bounds = np.linspace(0, n, threads + 1).astype(int)
        parts = [_rows(frame, a, b) for a, b in zip(bounds[:-1], bounds[1:])]
        with ThreadPoolExecutor(max_workers=threads) as pool:
            return np.concatenate(list(pool.map(self._predict, parts)))

    def _predict(self, frame) -> np.ndarray:
        return np.asarray(self.pipeline.predict_proba(frame)[:, 1], dtype=np.float64)


def _json(text) -> dict:
    try:
        return json.loads(text) if isinstance(text, str) else (text or {})
    except ValueError:
        return {}


def companion(artifact: Path, kind: str) -> Path:
    """Return the file beside a served artifact ``<version>.skops``: ``kind`` ``eval``
    (``<version>.eval.skops``, the evaluation fit) or ``eval-train``
    (``<version>.eval-train.parquet``, the log ids that fit was trained on)."""
    stem = artifact.name.removesuffix(".skops")
    return artifact.with_name(f"{stem}.eval.skops" if kind == "eval" else f"{stem}.{kind}.parquet")


def save_log_ids(log_ids, path: Path) -> str:
    """Write ``log_ids`` to a Parquet file (atomically); return its SHA-256."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    pq.write_table(pa.table({"log_id": pa.array(list(log_ids), type=pa.string())}), tmp, compression="zstd")
    os.replace(tmp, path)
    return _sha256(path)


def _load_log_ids(path: Path, sha256: str | None) -> set[str]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise ArtifactError(f"log ids {path} are missing")
    if sha256 and _sha256(path) != sha256:
        raise ArtifactError(f"log ids {path} are corrupt: their SHA-256 differs from the registry's")
    return set(pq.read_table(path, columns=["log_id"]).column("log_id").to_pylist())


def _rows(frame, start: int, stop: int):
    if isinstance(frame, pl.DataFrame):
        return frame.slice(start, stop - start)
    return frame.iloc[start:stop]


def scoring_threads(settings: Settings) -> int:
    """Return the threads a scorer uses: the setting, or one per core."""
    return settings.scoring_threads or (os.cpu_count() or 1)


def champion_scorer(con: duckdb.DuckDBPyConnection, settings: Settings, task: str) -> Scorer | None:
    """Return the scorer of the task's champion, or None when no champion loads.

    When the champion's artifact is missing or corrupt, the error (naming the file) is
    logged and kept in ``Scorer.problems``, and the most recent earlier champion (a
    ``retired`` model) whose artifact loads serves instead.
    """
    problems = []
    for version, artifact_path, sha256, status, metrics in _serving_order(con, task):
        path = resolve(settings, artifact_path)
        try:
            pipeline = load_artifact(path, sha256=sha256)
        except ArtifactError as exc:
            message = f"{task} {status} {version}: {exc}"
            log.error(message)
            problems.append(message)
            continue
        if problems:
            log.warning("%s: %s %s serves instead", task, status, version)
        return Scorer(task=task, version=version, pipeline=pipeline, artifact_path=path,
                      threads=scoring_threads(settings), problems=problems,
                      trust=model_trust(_json(metrics), settings))
    for message in problems:
        log.error("%s: no loadable champion (%s)", task, message)
    return None


def champion_trust(con, settings: Settings) -> list[tuple[str, str, Trust]]:
    """Return (task, version, :class:`Trust`) of each task's champion, from the stored
    metrics under the current settings (no artifact is loaded)."""
    rows = con.execute("SELECT task, version, metrics::VARCHAR FROM models WHERE status = 'champion' "
                       "ORDER BY task").fetchall()
    return [(task, version, model_trust(_json(metrics), settings)) for task, version, metrics in rows]


def _serving_order(con, task: str) -> list[tuple]:
    """The champion first, then former champions, most recently promoted first."""
    return con.execute(
        """
        SELECT version, artifact_path, artifact_sha256, status, metrics::VARCHAR FROM models
        WHERE task = ? AND status IN ('champion', 'retired') AND artifact_path IS NOT NULL
        ORDER BY status = 'champion' DESC, coalesce(promoted_at, trained_at) DESC, version DESC
        """,
        [task],
    ).fetchall()


# --------------------------------------------------------------------------- registering


@dataclass
class GateDecision:
    """Whether a new model becomes champion, and why."""

    promote: bool
    reason: str
    champion_version: str | None = None
    comparison: Comparison | None = None

    def to_dict(self) -> dict:
        return {"promote": self.promote, "reason": self.reason, "champion_version": self.champion_version,
                "comparison": self.comparison.to_dict() if self.comparison else None}


@dataclass
class ChampionEvaluation:
    """The champion's evaluation fit: what the gate compares a new model with."""

    version: str
    pipeline: object
    seen: set[str] | None  # log ids it was trained on (None: not recorded, a model from before the refit)


def champion_evaluation(con, settings: Settings, task: str) -> tuple[ChampionEvaluation | None, list[str]]:
    """Return the evaluation fit of the task's serving champion (the model
    :func:`champion_scorer` would serve) and the problems met, or (None, problems).

    A model trained before the served refit has one artifact, which was its evaluation
    fit: it is returned with ``seen`` None."""
    problems = []
    for version, artifact_path, sha256, status, metrics in _serving_order(con, task):
        fit = _json(metrics).get("evaluation_fit") or {}
        try:
            if fit.get("artifact"):
                pipeline = load_artifact(resolve(settings, fit["artifact"]), sha256=fit.get("sha256"))
                seen = _load_log_ids(resolve(settings, fit["train_ids"]), fit.get("train_ids_sha256"))
            else:
                pipeline, seen = load_artifact(resolve(settings, artifact_path), sha256=sha256), None
        except ArtifactError as exc:
            problems.append(f"{task} {status} {version}: {exc}")
            log.error(problems[-1])
            continue
        return ChampionEvaluation(version=version, pipeline=pipeline, seen=seen), problems
    return None, problems


def gate(con, settings: Settings, task: str, *, eval_frame: pd.DataFrame, y: np.ndarray,
         candidate_scores: np.ndarray) -> GateDecision:
    """Decide on a new model of ``task`` given its evaluation fit's scores on the held-out
    rows (``eval_frame``, labels ``y``).

    The champion's *evaluation fit* (:func:`champion_evaluation`; never its served model,
    which was fitted on every row and so has seen the held-out ones) scores the held-out
    rows it was not trained on; the candidate is promoted unless the paired DeLong
    interval (``settings.gate_confidence``) of the AUROC difference on those rows lies
    entirely below zero. When no such rows with both classes remain, the candidate is
    promoted and the reason says so.
    """
    champion, problems = champion_evaluation(con, settings, task)
    if champion is None:
        existing = con.execute("SELECT count(*) FROM models WHERE task = ? AND status = 'champion'",
                               [task]).fetchone()[0]
        why = ("no loadable champion evaluation fit (" + "; ".join(problems) + "): promoted") if existing \
            else "first model of the task: promoted"
        return GateDecision(promote=True, reason=why)
    y = np.asarray(y)
    candidate_scores = np.asarray(candidate_scores, dtype=float)
    unseen = np.ones(len(eval_frame), dtype=bool) if champion.seen is None else \
        ~eval_frame["log_id"].astype(str).isin(champion.seen).to_numpy()
    if not both_classes(y[unseen]):
        return GateDecision(
            promote=True, champion_version=champion.version,
            reason=f"no held-out rows with both classes that champion {champion.version} was not trained on "
                   f"({int(unseen.sum())} unseen): promoted")
    rows = eval_frame[unseen]
    champion_scores = np.asarray(champion.pipeline.predict_proba(rows)[:, 1], dtype=float)
    comparison = compare_auroc(y[unseen], champion_scores, candidate_scores[unseen],
                               confidence=settings.gate_confidence)
    if comparison.worse:
        return GateDecision(
            promote=False, champion_version=champion.version, comparison=comparison,
            reason=f"worse than champion {champion.version} beyond the noise: {comparison.describe()}; not promoted")
    return GateDecision(
        promote=True, champion_version=champion.version, comparison=comparison,
        reason=f"not worse than champion {champion.version}: {comparison.describe()}; promoted")


def new_version(task: str, data_hash: str, now: dt.datetime) -> str:
    """Return a version id that sorts by training time: ``task-YYYYmmdd-HHMMSSffffff-hash8``."""
    return f"{task}-{now:%Y%m%d-%H%M%S%f}-{data_hash[:8]}"


def register(con, settings: Settings, *, task: str, version: str, trained_at: dt.datetime, data_hash: str,
             train_settings: dict, metrics: dict, artifact: Path, sha256: str, decision: GateDecision,
             n_train: int, n_eval: int) -> str:
    """Write the model's row of ``models`` and, on promotion, retire the old champion, in
    one transaction. Returns the new model's status."""
    status = "champion" if decision.promote else "candidate"
    con.execute("BEGIN TRANSACTION")
    try:
        if decision.promote:
            con.execute("UPDATE models SET status = 'retired', retired_at = ? WHERE task = ? AND status = 'champion'",
                        [trained_at, task])
        con.execute(
            "INSERT INTO models (version, task, status, trained_at, data_hash, code_version, settings, metrics, "
            "artifact_path, reason, artifact_sha256, n_train, n_eval, promoted_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [version, task, status, trained_at, data_hash, code_version(), json.dumps(train_settings),
             json.dumps(metrics), settings.source_name(artifact), decision.reason, sha256, n_train, n_eval,
             trained_at if decision.promote else None],
        )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return status
