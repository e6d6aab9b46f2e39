"""Topic slices: a TF-IDF topic model of the logs' texts, with ids that stay put.

*Fit* (:func:`fit_topic_model`): a deterministic sample of recent history (the logs with
the smallest ``hash(log_id)``, so that a later sample keeps most of an earlier one) is
tokenized by DuckDB, weighted with TF-IDF (sublinear tf, English stop words and numbers
left out) and clustered: spherical k-means by default (hard clusters of requests; k-means++
seeds, the best of 3), or NMF (``method = "nmf"`` in ``slices.toml``). Each topic is a unit
vector of term weights (centroid or NMF component). The number of topics is set in
``slices.toml`` or chosen automatically: the candidate with the best cosine silhouette of
the topic assignments on a subsample (the previous number is kept unless another one is
better by more than 0.02).

*Ids*: a refit maps its topics onto the previous model's ones with the Hungarian
algorithm on the cosine similarity of their term weights (over the union of both
vocabularies); a topic matched with similarity >= ``match_threshold`` keeps the old id,
any other gets a new id that was never used before. With the same number of topics the
refit also starts from the previous topic vectors, so the topics move little.

*Apply* (:func:`assign_topics`): in DuckDB, for the day's distinct texts: tokens are
joined to the model's term weights (``idf * topic vector``, the top 300 terms of each
topic), scores summed per topic with
``1 + ln(tf)``, and the best topic wins (ties: lowest id). A text without any known term
is topic ``-1`` ("no topic"). Python uses the same scoring on the fit sample.

*Storage*: ``$FLYWHEEL_HOME/models/topics/vNNNN/`` holds ``model.json`` (vocabulary,
ids, labels, parameters) and ``arrays.npz`` (idf and normalized components) — plain data,
no pickle; ``models/topics/CURRENT`` names the version in use. The tables ``topic_models``
and ``topics`` list the versions and each topic's label and top terms.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
from dataclasses import dataclass, field as dc_field
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
from scipy import sparse
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import kmeans_plusplus
from sklearn.decomposition import NMF, non_negative_factorization
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, CountVectorizer, TfidfTransformer
from sklearn.metrics import silhouette_score

from flywheel.settings import Settings
from flywheel.slicing.config import TopicConfig

TOKEN_PATTERN = r"[\pL\pN]{2,}"  # DuckDB (RE2) regex of a token, applied to lower(text)
STOP_WORDS = frozenset(ENGLISH_STOP_WORDS) | {"hi", "hello", "thanks", "thank", "please", "ok", "okay"}
NO_TOPIC = -1
NO_TOPIC_LABEL = "(no known terms)"
TERMS_PER_TOPIC = 300  # the term weights kept per topic for scoring
LABEL_TERMS = 4
SILHOUETTE_DOCS = 3000
AUTO_FIT_DOCS = 8000
MODEL_FILE = "model.json"
ARRAYS_FILE = "arrays.npz"


def text_sql(field_name: str, alias: str = "") -> str:
    """Return the SQL expression of the text a model reads from a `logs` row."""
    a = f"{alias}." if alias else ""
    if field_name == "both":
        return f"({a}input || ' ' || {a}output)"
    return f"{a}{field_name}"


def tokens_sql(expr: str) -> str:
    """Return the SQL of the token list of a text expression (lower case, 2+ letters/digits)."""
    return f"regexp_extract_all(lower({expr}), '{TOKEN_PATTERN}')"


def models_root(settings: Settings) -> Path:
    return settings.models_dir / "topics"


@dataclass
class TopicModel:
    """A fitted topic model: everything needed to apply it, as plain arrays and lists."""

    version: str
    vocabulary: list[str]
    idf: np.ndarray  # (V,)
    components: np.ndarray  # (k, V), rows L2-normalized
    topic_ids: list[int]
    labels: list[str]
    top_terms: list[list[str]]
    shares: list[float]
    field: str = "input"
    trained_through: str = ""
    fitted_at: str = ""
    n_docs: int = 0
    next_id: int = 0
    matched_from: list[int | None] = dc_field(default_factory=list)  # old id kept, or None
    selection: dict[str, float] = dc_field(default_factory=dict)  # k -> silhouette (auto)

    @property
    def n_topics(self) -> int:
        return len(self.topic_ids)

    def label_of(self, topic_id: int) -> str:
        if topic_id == NO_TOPIC:
            return NO_TOPIC_LABEL
        try:
            return self.labels[self.topic_ids.index(topic_id)]
        except ValueError:
            return f"topic {topic_id}"

    def term_weights(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Return (term index, topic id, weight) of the pruned scoring table."""
        terms, topics, weights = [], [], []
        for row, topic_id in enumerate(self.topic_ids):
            comp = self.components[row]
            keep = np.argsort(-comp, kind="stable")[:TERMS_PER_TOPIC]
            keep = keep[comp[keep] > 0]
            terms.append(keep)
            topics.append(np.full(len(keep), topic_id))
            weights.append(comp[keep] * self.idf[keep])
        return np.concatenate(terms), np.concatenate(topics), np.concatenate(weights)

    def scoring_matrix(self) -> sparse.csr_matrix:
        """Return the pruned (V, k) matrix of ``idf * component`` that assignment uses."""
        terms, topics, weights = self.term_weights()
        cols = np.array([self.topic_ids.index(t) for t in topics], dtype=int) if len(topics) else topics
        return sparse.csr_matrix((weights, (terms, cols)), shape=(len(self.vocabulary), self.n_topics))

    # -- storage ------------------------------------------------------------------------
    def save(self, root: Path) -> Path:
        folder = root / self.version
        folder.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(folder / ARRAYS_FILE, idf=self.idf, components=self.components.astype(np.float32))
        meta = {
            "version": self.version, "field": self.field, "trained_through": self.trained_through,
            "fitted_at": self.fitted_at, "n_docs": self.n_docs, "next_id": self.next_id,
            "topic_ids": self.topic_ids, "labels": self.labels, "top_terms": self.top_terms,
            "shares": self.shares, "matched_from": self.matched_from, "selection": self.selection,
            "token_pattern": TOKEN_PATTERN, "vocabulary": self.vocabulary,
        }
        (folder / MODEL_FILE).write_text(json.dumps(meta, indent=1), encoding="utf-8")
        pointer = root / "CURRENT"
        tmp = root / "CURRENT.tmp"
        tmp.write_text(self.version + "\n", encoding="utf-8")
        os.replace(tmp, pointer)
        return folder

    @classmethod
    def load(cls, folder: Path) -> "TopicModel":
        meta = json.loads((folder / MODEL_FILE).read_text(encoding="utf-8"))
        with np.load(folder / ARRAYS_FILE, allow_pickle=False) as arrays:
            idf = arrays["idf"].astype(np.float64)
            components = arrays["components"].astype(np.float64)
        return cls(
            version=meta["version"], vocabulary=meta["vocabulary"], idf=idf, components=components,
            topic_ids=meta["topic_ids"], labels=meta["labels"], top_terms=meta["top_terms"],
            shares=meta["shares"], field=meta["field"], trained_through=meta["trained_through"],
            fitted_at=meta["fitted_at"], n_docs=meta["n_docs"], next_id=meta["next_id"],
            matched_from=meta.get("matched_from", []), selection=meta.get("selection", {}),
        )


def current_model(settings: Settings) -> TopicModel | None:
    """Return the topic model in use, or None before the first fit."""
    root = models_root(settings)
    pointer = root / "CURRENT"
    if not pointer.exists():
        return None
    folder = root / pointer.read_text(encoding="utf-8").strip()
    return TopicModel.load(folder) if (folder / MODEL_FILE).exists() else None


def _next_version(root: Path) -> str:
    numbers = [int(p.name[1:]) for p in root.glob("v[0-9]*") if p.name[1:].isdigit()] if root.exists() else []
    return f"v{max(numbers, default=0) + 1:04d}"


# ---------------------------------------------------------------------------------------
# Fitting
# ---------------------------------------------------------------------------------------


def sample_documents(con: duckdb.DuckDBPyConnection, day: str, config: TopicConfig) -> list[list[str]]:
    """Return the token lists of the fit sample: logs of the ``history_days`` up to ``day``
    with the smallest ``hash(log_id)`` (deterministic, and stable as history grows)."""
    first = (dt.date.fromisoformat(day) - dt.timedelta(days=config.history_days - 1)).isoformat()
    rows = con.execute(
        f"""SELECT {tokens_sql('text')} FROM (
                SELECT {text_sql(config.field)} AS text FROM logs
                WHERE day BETWEEN ?::DATE AND ?::DATE
                ORDER BY hash(log_id), log_id LIMIT ?
            )""",
        [first, day, config.sample_size],
    ).fetchall()
    return [r[0] for r in rows]


def _analyzer(tokens: list[str]) -> list[str]:
    return [t for t in tokens if t not in STOP_WORDS and not t.isdigit()]


def _vectorize(docs: list[list[str]], config: TopicConfig):
    n = len(docs)
    vectorizer = CountVectorizer(
        analyzer=_analyzer,
        min_df=max(2, min(5, n // 1000 + 2)),
        max_df=0.5 if n >= 50 else 1.0,
        max_features=config.max_features,
        dtype=np.float64,
    )
    counts = vectorizer.fit_transform(docs)
    tfidf = TfidfTransformer(sublinear_tf=True)
    x = tfidf.fit_transform(counts)
    vocabulary = list(vectorizer.get_feature_names_out())
    return x, vocabulary, tfidf.idf_


def _nmf(x, k: int, init_h: np.ndarray | None = None, max_iter: int = 300) -> np.ndarray:
    """Return the (k, V) components of an NMF of ``x`` (warm-started from ``init_h``)."""
    if init_h is not None:
        w, _, _ = non_negative_factorization(x, H=init_h, n_components=k, update_H=False,
                                             init="custom", max_iter=100, random_state=0)
        model = NMF(n_components=k, init="custom", max_iter=max_iter, random_state=0)
        model.fit_transform(x, W=w, H=init_h.copy())
    else:
        model = NMF(n_components=k, init="nndsvda", max_iter=max_iter, random_state=0)
        model.fit_transform(x)
    return model.components_


def _kmeans(x, k: int, init: np.ndarray | None = None, n_init: int = 3, max_iter: int = 60) -> np.ndarray:
    """Return the (k, V) unit centroids of a spherical k-means of the unit rows of ``x``
    (Lloyd iterations on cosine similarity; k-means++ seeds, or ``init``)."""
    x = sparse.csr_matrix(x)
    n = x.shape[0]
    if init is not None:
        start = np.asarray(init, dtype=np.float64).copy()
        dead = ~start.any(axis=1)  # a previous topic none of whose terms are left
        if dead.any():
            seeds = kmeans_plusplus(x, k, random_state=0)[0]
            seeds = seeds.toarray() if sparse.issparse(seeds) else np.asarray(seeds)
            start[dead] = seeds[: int(dead.sum())]
        starts = [start]
    else:
        starts = [kmeans_plusplus(x, k, random_state=seed)[0] for seed in range(n_init)]
        starts = [s.toarray() if sparse.issparse(s) else np.asarray(s) for s in starts]
    best, best_score = None, -np.inf
    for start in starts:
        centroids = _normalize_rows(start)
        labels = None
        for _ in range(max_iter):
            sims = np.asarray(x @ centroids.T)
            new = np.argmax(sims, axis=1)
            if labels is not None and np.array_equal(new, labels):
                break
            labels = new
            onehot = sparse.csr_matrix((np.ones(n), (labels, np.arange(n))), shape=(k, n))
            sums = np.asarray((onehot @ x).todense())
            empty = np.asarray(onehot.sum(axis=1)).ravel() == 0
            sums[empty] = centroids[empty]  # an empty cluster keeps its centroid
            centroids = _normalize_rows(sums)
        score = float(np.asarray(x @ centroids.T).max(axis=1).sum())
        if score > best_score:
            best, best_score = centroids, score
    return best


def _factorize(x, k: int, method: str, init: np.ndarray | None = None, quick: bool = False) -> np.ndarray:
    """Return the (k, V) unit topic vectors of ``x`` by ``method`` (kmeans | nmf)."""
    if method == "nmf":
        return _normalize_rows(_nmf(x, k, init_h=init, max_iter=150 if quick else 300))
    return _kmeans(x, k, init=init, n_init=1 if quick else 3, max_iter=30 if quick else 60)


def _normalize_rows(h: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(h, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    return h / norms


def _assign(x, scoring: sparse.csr_matrix) -> np.ndarray:
    """Return the best topic column per row of ``x`` (-1 when no known term scores)."""
    scores = x @ scoring
    scores = scores.toarray() if sparse.issparse(scores) else np.asarray(scores)
    best = np.argmax(scores, axis=1)
    best[scores.max(axis=1) <= 0] = -1
    return best


def _pruned_scoring(components: np.ndarray) -> sparse.csr_matrix:
    """Return the (V, k) pruned components; ``tfidf @ it`` scores as the SQL does
    (``(1 + ln tf) * idf * component``, up to each document's norm)."""
    cols = []
    for row in components:
        keep = np.argsort(-row, kind="stable")[:TERMS_PER_TOPIC]
        keep = keep[row[keep] > 0]
        v = np.zeros_like(row)
        v[keep] = row[keep]
        cols.append(v)
    return sparse.csr_matrix(np.array(cols).T)


def _choose_k(x, config: TopicConfig, previous_k: int | None) -> tuple[int, dict[str, float]]:
    """Return the number of topics with the best silhouette (cosine) on a subsample."""
    n = x.shape[0]
    upper = min(config.max_topics, max(2, n // 20), x.shape[1] - 1)
    lower = min(config.min_topics, upper)
    candidates = {k for k in range(lower, upper + 1) if k == lower or k == upper or k % 2 == 0}
    if previous_k is not None and lower <= previous_k <= upper:
        candidates.add(previous_k)
    rows = x[: min(n, AUTO_FIT_DOCS)]  # the sample is already in random (hash) order
    sil_rows = rows[: SILHOUETTE_DOCS]
    scores: dict[str, float] = {}
    for k in sorted(candidates):
        components = _factorize(rows, k, config.method, quick=True)
        labels = _assign(sil_rows, _pruned_scoring(components))
        assigned = labels >= 0
        if len(set(labels[assigned])) < 2:
            continue
        scores[str(k)] = float(silhouette_score(sil_rows[assigned], labels[assigned], metric="cosine"))
    if not scores:
        return lower, scores
    best = max(scores, key=lambda key: (scores[key], -int(key)))
    # Hysteresis: keep the previous number of topics unless another one is clearly better.
    if previous_k is not None and str(previous_k) in scores and scores[best] - scores[str(previous_k)] < 0.02:
        return previous_k, scores
    return int(best), scores


def _labels(components: np.ndarray, vocabulary: list[str]) -> tuple[list[str], list[list[str]]]:
    """Return a readable label per topic and its top terms (weight x exclusivity)."""
    total = components.sum(axis=0)
    total[total == 0] = 1.0
    labels, tops = [], []
    for row in components:
        score = row * (row / total)
        order = [i for i in np.argsort(-score, kind="stable")[:12] if row[i] > 0]
        top = [vocabulary[i] for i in order]
        tops.append(top)
        labels.append(" / ".join(top[:LABEL_TERMS]) or "(empty topic)")
    return labels, tops


def _match(new: np.ndarray, new_vocab: list[str], old: TopicModel, threshold: float) -> list[int | None]:
    """Return, per new topic, the id of the old topic it continues (Hungarian), or None."""
    union = {t: i for i, t in enumerate(sorted(set(new_vocab) | set(old.vocabulary)))}
    a = np.zeros((new.shape[0], len(union)))
    a[:, [union[t] for t in new_vocab]] = new
    b = np.zeros((old.n_topics, len(union)))
    b[:, [union[t] for t in old.vocabulary]] = old.components
    sim = _normalize_rows(a) @ _normalize_rows(b).T
    rows, cols = linear_sum_assignment(sim, maximize=True)
    matched: list[int | None] = [None] * new.shape[0]
    for r, c in zip(rows, cols):
        if sim[r, c] >= threshold:
            matched[r] = old.topic_ids[c]
    return matched


def _warm_start(old: TopicModel, vocabulary: list[str], k: int, method: str) -> np.ndarray | None:
    """Return the previous topic vectors mapped onto a new vocabulary (the refit's start)."""
    if old.n_topics != k:
        return None
    index = {t: i for i, t in enumerate(old.vocabulary)}
    h = np.zeros((k, len(vocabulary)))
    for j, term in enumerate(vocabulary):
        i = index.get(term)
        if i is not None:
            h[:, j] = old.components[:, i]
    if not h.any():
        return None
    # A small floor lets terms that are new (or were zero) grow.
    return h + 1e-6 if method == "nmf" else h


def fit_topic_model(con: duckdb.DuckDBPyConnection, settings: Settings, day: str, config: TopicConfig,
                    previous: TopicModel | None = None) -> TopicModel | None:
    """Fit a topic model on the history up to ``day``, map its ids onto ``previous``,
    save it as the current version and return it (None when there is too little text)."""
    docs = sample_documents(con, day, config)
    if len(docs) < 20:
        return None
    try:
        x, vocabulary, idf = _vectorize(docs, config)
    except ValueError:  # no term is frequent enough and not too frequent
        return None
    if x.shape[1] < 4:
        return None
    selection: dict[str, float] = {}
    if config.n_topics == "auto":
        k, selection = _choose_k(x, config, previous.n_topics if previous else None)
    else:
        k = int(config.n_topics)
    k = max(2, min(k, x.shape[1] - 1, x.shape[0] - 1))
    init = _warm_start(previous, vocabulary, k, config.method) if previous else None
    components = _factorize(x, k, config.method, init=init)
    matched = _match(components, vocabulary, previous, config.match_threshold) if previous else [None] * k
    next_id = previous.next_id if previous else 0
    topic_ids = []
    for m in matched:
        if m is None:
            topic_ids.append(next_id)
            next_id += 1
        else:
            topic_ids.append(m)
    # Order topics by id so that files and tables read naturally.
    order = np.argsort(topic_ids, kind="stable")
    components = components[order]
    topic_ids = [topic_ids[i] for i in order]
    matched = [matched[i] for i in order]
    labels, tops = _labels(components, vocabulary)
    assigned = _assign(x, _pruned_scoring(components))
    shares = [float(np.mean(assigned == i)) for i in range(len(topic_ids))]
    root = models_root(settings)
    model = TopicModel(
        version=_next_version(root), vocabulary=vocabulary, idf=np.asarray(idf, dtype=np.float64),
        components=components, topic_ids=topic_ids, labels=labels, top_terms=tops, shares=shares,
        field=config.field, trained_through=day,
        fitted_at=dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        n_docs=len(docs), next_id=next_id, matched_from=matched, selection=selection,
    )
    model.save(root)
    return model


def needs_refit(model: TopicModel | None, day: str, config: TopicConfig) -> bool:
    """Return whether the model is missing or older than ``refit_every_days`` (and not
    already trained on a later day, as when an old partition is re-run)."""
    if model is None:
        return True
    if model.field != config.field:
        return True
    trained = dt.date.fromisoformat(model.trained_through)
    return (dt.date.fromisoformat(day) - trained).days >= config.refit_every_days


def ensure_model(con: duckdb.DuckDBPyConnection, settings: Settings, day: str, config: TopicConfig,
                 *, refit: bool | None = None) -> tuple[TopicModel | None, bool]:
    """Return (model to apply to ``day``, whether it was fitted now).

    ``refit``: True forces a refit, False never fits (unless no model exists), None
    follows ``refit_every_days``.
    """
    model = current_model(settings)
    fit = model is None or refit is True or (refit is None and needs_refit(model, day, config))
    if not fit:
        return model, False
    fitted = fit_topic_model(con, settings, day, config, previous=model)
    if fitted is None:
        return model, False
    return fitted, True


# ---------------------------------------------------------------------------------------
# Applying
# ---------------------------------------------------------------------------------------


def record_model(con: duckdb.DuckDBPyConnection, model: TopicModel, settings: Settings) -> None:
    """Write the model's rows of `topic_models` and `topics` (replacing them)."""
    con.execute("DELETE FROM topic_models WHERE version = ?", [model.version])
    con.execute("DELETE FROM topics WHERE model_version = ?", [model.version])
    con.execute(
        "INSERT INTO topic_models VALUES (?, ?::TIMESTAMPTZ, ?::DATE, ?, ?, ?)",
        [model.version, model.fitted_at, model.trained_through, model.n_docs, model.n_topics,
         str(models_root(settings) / model.version)],
    )
    con.executemany(
        "INSERT INTO topics VALUES (?, ?, ?, ?, ?, ?)",
        [[model.version, tid, label, top, share, m]
         for tid, label, top, share, m in zip(model.topic_ids, model.labels, model.top_terms,
                                               model.shares, model.matched_from or [None] * model.n_topics)],
    )


def assign_topics(con: duckdb.DuckDBPyConnection, day: str, model: TopicModel, target: str) -> None:
    """Create temp table ``target(log_id, topic)`` with the topic of every log of ``day``."""
    terms, topics, weights = model.term_weights()
    vocab = np.asarray(model.vocabulary, dtype=object)
    table = pa.table({
        "term": pa.array(vocab[terms].tolist(), pa.string()),
        "topic": pa.array(topics.astype(np.int32)),
        "weight": pa.array(weights.astype(np.float64)),
    })
    con.register("slice_topic_terms_view", table)
    try:
        con.execute("CREATE OR REPLACE TEMP TABLE slice_topic_terms AS SELECT * FROM slice_topic_terms_view")
    finally:
        con.unregister("slice_topic_terms_view")
    expr = text_sql(model.field)
    con.execute(
        f"""CREATE OR REPLACE TEMP TABLE {target} AS
        WITH texts AS (
            SELECT DISTINCT {expr} AS text FROM logs WHERE day = ?
        ),
        tokens AS (
            SELECT text, unnest({tokens_sql('text')}) AS term FROM texts
        ),
        tf AS (
            SELECT text, term, count(*) AS c FROM tokens GROUP BY ALL
        ),
        scores AS (
            SELECT tf.text, w.topic, sum((1 + ln(tf.c)) * w.weight) AS s
            FROM tf JOIN slice_topic_terms w USING (term)
            GROUP BY ALL
        ),
        best AS (
            SELECT text, arg_max(topic, {{'s': round(s, 9), 'neg': -topic}}) AS topic
            FROM scores
            GROUP BY text
        )
        SELECT l.log_id, coalesce(b.topic, {NO_TOPIC}) AS topic
        FROM logs l LEFT JOIN best b ON b.text = {text_sql(model.field, 'l')}
        WHERE l.day = ?""",
        [day, day],
    )


def assign_texts(model: TopicModel, texts: list[str]) -> list[int]:
    """Return the topic id of each text, scored in Python exactly as :func:`assign_topics`
    does in DuckDB (for tests and ad-hoc use; tokens use Python's ``\\w``)."""
    import re

    index = {t: i for i, t in enumerate(model.vocabulary)}
    scoring = model.scoring_matrix()
    out = []
    for text in texts:
        counts: dict[int, int] = {}
        for tok in re.findall(r"[^\W_]{2,}", text.lower()):
            i = index.get(tok)
            if i is not None:
                counts[i] = counts.get(i, 0) + 1
        if not counts:
            out.append(NO_TOPIC)
            continue
        vec = np.zeros(len(model.vocabulary))
        for i, c in counts.items():
            vec[i] = 1 + math.log(c)
        scores = scoring.T @ vec
        out.append(model.topic_ids[int(np.argmax(scores))] if scores.max() > 0 else NO_TOPIC)
    return out
