"""The trust floor of a classifier, per task and per source, like the judges' kappa floor.

A model is *trusted* for a task when the lower bound of the 95% interval of its held-out
AUROC (:func:`flywheel.classifiers.evaluation.auroc_interval`, Hanley-McNeil) reaches
``FLYWHEEL_CLASSIFIER_MIN_AUROC`` on at least ``FLYWHEEL_CLASSIFIER_MIN_TRUST_ROWS``
held-out rows with at least :data:`MIN_CLASS_ROWS` of each class. The same rule is applied
to the held-out rows of each source (the model card's per-source slices):

- a source with enough held-out rows gets its own verdict, whatever the task's;
- a source with labelled rows but too few held-out ones to judge alone takes the task's
  verdict (the model saw its traffic; nothing says it fails there);
- a source without any labelled row is not trusted: the model never saw its traffic and
  nothing measured it there.

The verdicts are computed from the figures stored in ``models.metrics`` (``auroc``,
``n_eval``, ``positives`` of the hold-out and of each source slice), so they follow the
current settings and also judge models trained before the floor existed (those did not
record which sources were labelled: their unlisted sources take the task's verdict).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from flywheel.classifiers.evaluation import auroc_interval
from flywheel.settings import Settings

MIN_CLASS_ROWS = 10  # held-out rows of each class a verdict needs (the interval's normal approximation)
CONFIDENCE = 0.95


@dataclass(frozen=True)
class Verdict:
    """Whether scores of one task (and source) can be used, and why."""

    trusted: bool
    reason: str
    auroc: float | None = None
    low: float | None = None  # lower bound of the 95% interval of the held-out AUROC
    n_eval: int = 0
    positives: int = 0
    basis: str = "own"  # own | task (inherited) | none (never labelled)

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass
class Trust:
    """The verdicts of one model: for the task and for each source."""

    task: Verdict
    sources: dict[str, Verdict] = field(default_factory=dict)
    labelled_sources: set[str] | None = None  # None: not recorded (a model from before the floor)

    def for_source(self, source: str | None) -> Verdict:
        """Return the verdict that applies to logs of ``source``."""
        key = "(none)" if source is None else str(source)
        if key in self.sources:
            return self.sources[key]
        if self.labelled_sources is None:
            return Verdict(self.task.trusted, f"source {key}: not judged alone; task verdict: {self.task.reason}",
                           basis="task")
        return Verdict(False, f"source {key}: no labelled logs of this source, the model was never evaluated on it",
                       basis="none")

    def untrusted_sources(self) -> dict[str, str]:
        """Return source -> why, for the sources whose scores are not used."""
        return {s: v.reason for s, v in sorted(self.sources.items()) if not v.trusted}

    def to_dict(self) -> dict:
        return {"task": self.task.to_dict(), "sources": {s: v.to_dict() for s, v in sorted(self.sources.items())}}


def verdict(auroc: float | None, n_eval: int, positives: int, *, min_auroc: float, min_rows: int,
            what: str) -> Verdict | None:
    """Return the verdict of a held-out set (``what`` names it in the reason), or None when
    the set is too small to be judged (fewer than ``min_rows`` rows or :data:`MIN_CLASS_ROWS`
    of a class)."""
    negatives = n_eval - positives
    if n_eval < min_rows or positives < MIN_CLASS_ROWS or negatives < MIN_CLASS_ROWS or auroc is None:
        return None
    low, _ = auroc_interval(auroc, positives, negatives, confidence=CONFIDENCE)
    figures = f"held-out AUROC {auroc:.3f}, 95% lower bound {low:.3f} on {n_eval} rows ({positives} positive)"
    if low >= min_auroc:
        return Verdict(True, f"{what}: {figures} >= FLYWHEEL_CLASSIFIER_MIN_AUROC {min_auroc:g}", auroc, low,
                       n_eval, positives)
    return Verdict(False, f"{what}: {figures} < FLYWHEEL_CLASSIFIER_MIN_AUROC {min_auroc:g}", auroc, low,
                   n_eval, positives)


def model_trust(metrics: dict | None, settings: Settings) -> Trust:
    """Return the :class:`Trust` of a model from its stored ``metrics`` (the hold-out
    figures, the per-source slices and ``labelled_sources``) under ``settings``."""
    metrics = metrics or {}
    min_auroc, min_rows = settings.classifier_min_auroc, settings.classifier_min_trust_rows
    n_eval, positives = int(metrics.get("n_eval") or 0), int(metrics.get("positives") or 0)
    task = verdict(metrics.get("auroc"), n_eval, positives, min_auroc=min_auroc, min_rows=min_rows, what="task")
    if task is None:
        task = Verdict(False, f"task: {n_eval} held-out rows ({positives} positive): fewer than "
                              f"FLYWHEEL_CLASSIFIER_MIN_TRUST_ROWS={min_rows} rows or {MIN_CLASS_ROWS} of a class "
                              "to judge the model", metrics.get("auroc"), None, n_eval, positives)
    labelled = metrics.get("labelled_sources")
    trust = Trust(task=task, labelled_sources=set(labelled) if labelled is not None else None)
    for s in metrics.get("slices") or []:
        if s.get("slice_type") != "source":
            continue
        name = str(s.get("slice_value"))
        own = verdict(s.get("auroc"), int(s.get("n_eval") or 0), int(s.get("positives") or 0),
                      min_auroc=min_auroc, min_rows=min_rows, what=f"source {name}")
        trust.sources[name] = own or Verdict(
            task.trusted, f"source {name}: {int(s.get('n_eval') or 0)} held-out rows, too few to judge alone; "
                          f"task verdict ({'trusted' if task.trusted else 'not trusted'})",
            s.get("auroc"), None, int(s.get("n_eval") or 0), int(s.get("positives") or 0), basis="task")
    for name in sorted(trust.labelled_sources or ()):
        if name not in trust.sources:  # labelled, but none of its rows held out
            trust.sources[name] = Verdict(task.trusted, f"source {name}: no held-out rows; task verdict "
                                                        f"({'trusted' if task.trusted else 'not trusted'})",
                                          basis="task")
    return trust


def describe(task: str, version: str, trust: Trust) -> list[str]:
    """Return readable lines on whether ``version``'s scores of ``task`` are used, and why:
    the task's verdict, then each source that is not trusted (``flywheel status``, the report)."""
    lines = [f"{task} {version}: {'trusted' if trust.task.trusted else 'NOT trusted'} ({trust.task.reason})"]
    lines += [f"{task} {version}: NOT trusted for {why}" for why in trust.untrusted_sources().values()]
    if trust.task.trusted and not trust.untrusted_sources():
        lines[0] += "; every labelled source trusted"
    return lines
