"""Few-shot refresh: diverse, approved examples per prompt name, and candidate prompts.

**Approved logs** of a prompt name are its logs that people judged good: consensus
``hallucination = 0`` *and* consensus ``relevance = 1`` (ties and missing labels do not
count), feedback not -1, no personal data found in them (``logs.pii`` empty), and not in
the prompt's evaluation set (:mod:`flywheel.prompts.eval_set`). Identical
(input, output) pairs count once.

**Choice** (:func:`mmr_select`): TF-IDF vectors of input + output (scikit-learn);
the relevance of a log is its cosine similarity to the centroid of the prompt's traffic
(how typical it is). Greedy maximal marginal relevance picks, one at a time, the log
maximizing ``lambda * relevance - (1 - lambda) * max similarity to those already
picked`` (``FLYWHEEL_FEW_SHOT_LAMBDA``). The first ``ceil(k/2)`` picks go to the worst
slices (table ``worst_slices`` of the latest day, best rank first): each still uncovered
slice with approved members gets its best MMR member; the remaining picks are plain MMR
over all approved logs.

:func:`refresh_few_shot` writes the choice to ``few_shot_examples``;
:func:`render_candidates` renders each template with its examples and registers the
result as a candidate (or finds it is the champion already).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass, field

import duckdb
import numpy as np
import pandas as pd
from sklearn.feature_extraction.text import TfidfVectorizer

from flywheel import store
from flywheel.prompts import registry
from flywheel.prompts.eval_set import evaluation_set
from flywheel.settings import Settings

POOL_LIMIT = 5000  # approved logs considered per prompt name (stable hash order)
TRAFFIC_SAMPLE = 2000  # logs of the prompt that define its typical request
WORST_SLICES = 10  # worst slices (by rank) the examples try to cover


@dataclass
class Pick:
    """One chosen example: its position in the pool, why, and its MMR terms."""

    index: int
    reason: str
    relevance: float
    max_similarity: float
    mmr: float


@dataclass
class Selection:
    """The examples chosen for one prompt name."""

    prompt_name: str
    examples: list[registry.Example] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    slices: list[list[str]] = field(default_factory=list)
    label_hash: str = ""
    n_approved: int = 0
    n_eval_set: int = 0
    worst_slices: list[str] = field(default_factory=list)
    covered_slices: list[str] = field(default_factory=list)
    picks: list[Pick] = field(default_factory=list)

    @property
    def log_ids(self) -> list[str]:
        return [e.log_id for e in self.examples]


@dataclass
class FewShotReport:
    """What one refresh chose, per prompt name, and the problems it met."""

    selections: dict[str, Selection] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    prompt_names: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        """Return a table of the chosen examples per prompt name."""
        lines = ["| prompt | rank | log_id | reason | worst slices | input |", "|---|---|---|---|---|---|"]
        for name, sel in sorted(self.selections.items()):
            if not sel.examples:
                lines.append(f"| {name} | - | - | no approved logs ({sel.n_approved}) | - | - |")
            for rank, (ex, why, sl) in enumerate(zip(sel.examples, sel.reasons, sel.slices), 1):
                text = ex.input.replace("|", "/").replace("\n", " ")[:80]
                lines.append(f"| {name} | {rank} | {ex.log_id} | {why} | {', '.join(sl) or '-'} | {text} |")
        return "\n".join(lines)

    def summary(self) -> dict[str, object]:
        return {
            "prompt_names": self.prompt_names,
            "examples": {n: s.log_ids for n, s in sorted(self.selections.items())},
            "approved_logs": {n: s.n_approved for n, s in sorted(self.selections.items())},
            "covered_worst_slices": {n: s.covered_slices for n, s in sorted(self.selections.items())},
            "label_hash": {n: s.label_hash for n, s in sorted(self.selections.items())},
            "problems": self.problems,
        }


# ---------------------------------------------------------------------------------------
# Reading
# ---------------------------------------------------------------------------------------


def approved_logs(
    con: duckdb.DuckDBPyConnection, *, prompt_name: str, exclude: tuple[str, ...] | list[str] = ()
) -> pd.DataFrame:
    """Return the approved logs of ``prompt_name`` (columns log_id, input, output, context),
    ordered by log id, without ``exclude`` and without repeated (input, output) pairs."""
    frame = con.execute(
        """
        SELECT l.log_id, l.input, l.output, l.context
        FROM logs l
        JOIN consensus h ON h.log_id = l.log_id AND h.label = 'hallucination' AND h.value = 0
        JOIN consensus r ON r.log_id = l.log_id AND r.label = 'relevance' AND r.value = 1
        WHERE l.prompt_name = ?
          AND coalesce(l.feedback, 0) <> -1
          AND coalesce(len(l.pii), 0) = 0
          AND length(trim(l.input)) > 0 AND length(trim(l.output)) > 0
          AND l.log_id NOT IN (SELECT unnest(?::VARCHAR[]))
        ORDER BY md5(l.log_id), l.log_id
        LIMIT ?
        """,
        [prompt_name, list(exclude), POOL_LIMIT],
    ).df()
    frame = frame.sort_values("log_id", kind="stable")
    frame = frame.drop_duplicates(subset=["input", "output"], keep="first")
    return frame.reset_index(drop=True)


def label_hash(con: duckdb.DuckDBPyConnection, prompt_name: str) -> str:
    """Return the hash of the consensus rows (and feedback) that decide which logs of
    ``prompt_name`` are approved: the labels the examples were chosen from."""
    rows = con.execute(
        """
        SELECT c.log_id, c.label, coalesce(c.value::VARCHAR, 'tie'), coalesce(l.feedback::VARCHAR, '')
        FROM consensus c JOIN logs l ON l.log_id = c.log_id
        WHERE l.prompt_name = ? AND c.label IN ('hallucination', 'relevance')
        ORDER BY 1, 2
        """,
        [prompt_name],
    ).fetchall()
    digest = hashlib.sha256()
    for row in rows:
        digest.update(("\t".join(row) + "\n").encode("utf-8"))
    return digest.hexdigest()[:16]


def traffic_texts(con: duckdb.DuckDBPyConnection, prompt_name: str) -> list[str]:
    """Return a stable sample of the prompt's requests and answers (its typical traffic)."""
    rows = con.execute(
        "SELECT input || ' ' || output FROM logs WHERE prompt_name = ? ORDER BY md5(log_id) LIMIT ?",
        [prompt_name, TRAFFIC_SAMPLE],
    ).fetchall()
    return [r[0] for r in rows]


def worst_slice_members(
    con: duckdb.DuckDBPyConnection, log_ids: list[str]
) -> tuple[list[str], dict[str, list[str]]]:
    """Return the worst slices of the latest day (best rank first, as ``type=value``) and,
    per log id of ``log_ids``, the worst slices it belongs to.

    Defensive: without the slicing tables, or with rows it cannot read, there are no
    worst slices (the choice is then by MMR alone).
    """
    try:
        if not (store.table_exists(con, "worst_slices") and store.table_exists(con, "slice_membership")):
            return [], {}
        latest = con.execute("SELECT max(day) FROM worst_slices").fetchone()[0]
        if latest is None:
            return [], {}
        slices = con.execute(
            """SELECT slice_type, slice_value FROM worst_slices
               WHERE day = ? AND slice_type IS NOT NULL AND slice_value IS NOT NULL
               ORDER BY rank LIMIT ?""",
            [latest, WORST_SLICES],
        ).fetchall()
        names = list(dict.fromkeys(f"{t}={v}" for t, v in slices))
        if not names or not log_ids:
            return names, {}
        members = con.execute(
            """SELECT DISTINCT m.log_id, m.slice_type || '=' || m.slice_value
               FROM slice_membership m
               WHERE m.log_id IN (SELECT unnest(?::VARCHAR[]))
                 AND m.slice_type || '=' || m.slice_value IN (SELECT unnest(?::VARCHAR[]))""",
            [log_ids, names],
        ).fetchall()
    except duckdb.Error:
        return [], {}
    order = {n: i for i, n in enumerate(names)}
    by_log: dict[str, list[str]] = {}
    for log_id, name in members:
        by_log.setdefault(log_id, []).append(name)
    for value in by_log.values():
        value.sort(key=order.__getitem__)
    return names, by_log


# ---------------------------------------------------------------------------------------
# Choosing
# ---------------------------------------------------------------------------------------


def _vectors(texts: list[str], reference: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Return l2-normalized TF-IDF rows of ``texts`` and the unit centroid of ``reference``."""
    for stop_words in ("english", None):
        vectorizer = TfidfVectorizer(sublinear_tf=True, ngram_range=(1, 2), stop_words=stop_words,
                                     max_features=50_000)
        try:
            matrix = vectorizer.fit_transform(texts)
        except ValueError:  # an empty vocabulary (only stop words, or no words at all)
            continue
        ref = vectorizer.transform(reference or texts)
        centroid = np.asarray(ref.mean(axis=0)).ravel()
        norm = np.linalg.norm(centroid)
        return matrix.toarray() if matrix.shape[0] * matrix.shape[1] <= 5e7 else matrix, (
            centroid / norm if norm > 0 else centroid)
    return np.zeros((len(texts), 1)), np.zeros(1)


def mmr_select(
    texts: list[str],
    *,
    k: int,
    lam: float,
    reference: list[str] | None = None,
    groups: list[list[str]] | None = None,
    group_order: list[str] | None = None,
    group_slots: int | None = None,
) -> list[Pick]:
    """Return up to ``k`` picks from ``texts`` by greedy maximal marginal relevance.

    ``reference``: texts whose TF-IDF centroid defines relevance (default ``texts``).
    ``groups[i]``: the groups (worst slices) text ``i`` belongs to; the first
    ``group_slots`` picks (default ``ceil(k/2)``) cover groups of ``group_order`` in
    order, each with its best-MMR member, before plain MMR fills the rest. Ties go to
    the lower index, so the same input always gives the same picks.
    """
    n = len(texts)
    if n == 0 or k <= 0:
        return []
    matrix, centroid = _vectors(texts, reference or [])
    relevance = np.asarray(matrix @ centroid).ravel()
    max_sim = np.zeros(n)
    chosen = np.zeros(n, dtype=bool)
    picks: list[Pick] = []

    def pick(allowed: np.ndarray, reason: str) -> Pick | None:
        if not allowed.any():
            return None
        score = lam * relevance - (1.0 - lam) * max_sim
        score = np.where(allowed & ~chosen, score, -np.inf)
        best = int(np.argmax(score))
        if not np.isfinite(score[best]):
            return None
        result = Pick(best, reason, float(relevance[best]), float(max_sim[best]), float(score[best]))
        chosen[best] = True
        row = matrix[best]
        sims = np.asarray(matrix @ (row.toarray().ravel() if hasattr(row, "toarray") else row)).ravel()
        np.maximum(max_sim, sims, out=max_sim)
        picks.append(result)
        return result

    groups = groups or [[] for _ in range(n)]
    slots = math.ceil(k / 2) if group_slots is None else group_slots
    covered: set[str] = set()
    for group in group_order or []:
        if len(picks) >= min(slots, k):
            break
        if group in covered:
            continue
        members = np.array([group in g for g in groups])
        got = pick(members, f"worst slice {group}")
        if got is not None:
            covered.update(groups[got.index])
    while len(picks) < min(k, n):
        if pick(np.ones(n, dtype=bool), "diversity (MMR)") is None:
            break
    return picks


def select_examples(con: duckdb.DuckDBPyConnection, settings: Settings, prompt_name: str) -> Selection:
    """Return the few-shot examples of ``prompt_name`` chosen from its approved logs."""
    eval_set = evaluation_set(con, settings, prompt_name)
    pool = approved_logs(con, prompt_name=prompt_name, exclude=list(eval_set.log_ids))
    selection = Selection(prompt_name=prompt_name, label_hash=label_hash(con, prompt_name),
                          n_approved=len(pool), n_eval_set=len(eval_set.log_ids))
    ids = pool.log_id.tolist()
    worst, members = worst_slice_members(con, ids)
    selection.worst_slices = worst
    texts = (pool.input + "\n" + pool.output).tolist()
    picks = mmr_select(
        texts, k=settings.few_shot_k, lam=settings.few_shot_lambda,
        reference=traffic_texts(con, prompt_name),
        groups=[members.get(i, []) for i in ids], group_order=worst,
    )
    covered: list[str] = []
    for p in picks:
        row = pool.iloc[p.index]
        context = row.context if isinstance(row.context, str) else None
        selection.examples.append(registry.Example(row.log_id, row.input, row.output, context))
        selection.reasons.append(p.reason)
        slices = members.get(row.log_id, [])
        selection.slices.append(slices)
        covered.extend(s for s in slices if s not in covered)
    selection.covered_slices = covered
    selection.picks = picks
    return selection


def prompt_names(con: duckdb.DuckDBPyConnection, settings: Settings) -> tuple[list[str], dict, list[str]]:
    """Return the prompt names to refresh (those with a base template), the templates,
    and the problems met (unusable templates, logged prompt names without a template)."""
    templates, problems = registry.load_templates(settings)
    logged = [r[0] for r in con.execute(
        "SELECT DISTINCT prompt_name FROM logs WHERE prompt_name IS NOT NULL ORDER BY 1").fetchall()]
    missing = [n for n in logged if n not in templates]
    if missing:
        problems.append(
            f"no template in {registry.templates_dir(settings)} for the logged prompt names "
            f"{', '.join(missing)}: their prompts are not refreshed"
        )
    return sorted(templates), templates, problems


def refresh_few_shot(con: duckdb.DuckDBPyConnection, settings: Settings) -> FewShotReport:
    """Choose the examples of every prompt name with a template and replace them in
    ``few_shot_examples``; returns what was chosen."""
    names, _, problems = prompt_names(con, settings)
    report = FewShotReport(problems=problems, prompt_names=names)
    now = dt.datetime.now(dt.timezone.utc)
    rows = []
    for name in names:
        sel = select_examples(con, settings, name)
        report.selections[name] = sel
        for rank, (ex, why, sl, p) in enumerate(zip(sel.examples, sel.reasons, sel.slices, sel.picks), 1):
            rows.append((name, rank, ex.log_id, why, sl, p.relevance, p.max_similarity, p.mmr, sel.label_hash, now))
    con.execute("BEGIN TRANSACTION")
    try:
        con.execute("DELETE FROM few_shot_examples")
        if rows:
            con.executemany(
                """INSERT INTO few_shot_examples (prompt_name, rank, log_id, reason, worst_slices, relevance,
                   max_similarity, mmr, label_hash, selected_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)""",
                rows,
            )
        con.execute("COMMIT")
    except Exception:
        con.execute("ROLLBACK")
        raise
    return report


# ---------------------------------------------------------------------------------------
# Candidates
# ---------------------------------------------------------------------------------------


@dataclass
class CandidateReport:
    """The candidate of each prompt name (or why there is none) and the champions made."""

    candidates: dict[str, registry.PromptVersion] = field(default_factory=dict)
    new: list[str] = field(default_factory=list)
    unchanged: dict[str, str] = field(default_factory=dict)
    first_champions: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def markdown(self) -> str:
        lines = ["| prompt | candidate | new | examples | label hash | note |", "|---|---|---|---|---|---|"]
        for name, row in sorted(self.candidates.items()):
            lines.append(f"| {name} | {row.version} | {name in self.new} | {len(row.few_shot_ids)} "
                         f"| {row.label_hash} | {row.reason} |")
        for name, why in sorted(self.unchanged.items()):
            lines.append(f"| {name} | - | - | - | - | {why} |")
        return "\n".join(lines)


def render_candidates(con: duckdb.DuckDBPyConnection, settings: Settings) -> CandidateReport:
    """Render each template with its ``few_shot_examples`` and register it as a candidate.

    A template without a champion first gets one (rendered without examples). No
    candidate is made when there are no examples, or when the rendering is the
    champion's text already. Returns the candidates by prompt name.
    """
    names, templates, problems = prompt_names(con, settings)
    report = CandidateReport(problems=problems)
    report.first_champions = [r.name for r in registry.ensure_champions(con, settings, templates)]
    for name in names:
        rows = con.execute(
            """SELECT f.log_id, l.input, l.output, l.context, f.label_hash FROM few_shot_examples f
               JOIN logs l ON l.log_id = f.log_id WHERE f.prompt_name = ? ORDER BY f.rank""",
            [name],
        ).fetchall()
        if not rows:
            report.unchanged[name] = "no approved examples yet"
            continue
        examples = [registry.Example(r[0], r[1], r[2], r[3]) for r in rows]
        text = registry.render(templates[name].text, examples)
        current = registry.champion(con, name)
        if current is not None and current.version == registry.version_of(text):
            report.unchanged[name] = f"the champion {current.version} has these examples already"
            continue
        row, new = registry.register(
            con, settings, name=name, text=text, few_shot_ids=[e.log_id for e in examples],
            label_hash=rows[0][4], template_hash=templates[name].hash,
            reason=f"{len(examples)} approved examples (MMR over TF-IDF, worst slices first)",
        )
        report.candidates[name] = row
        if new:
            report.new.append(name)
    return report
