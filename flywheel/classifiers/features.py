"""Feature transformers for the hallucination and relevance classifiers.

Every transformer takes a DataFrame (pandas or Polars) with the columns ``input``,
``output`` and (optionally) ``context``; a missing column or a missing value counts as
empty text. They are small scikit-learn estimators with keyword-only parameters so that a
pipeline can be assembled, cloned and cross-validated like any other.

The work is vectorized with Polars (Rust regexes and list set operations over whole
columns, no Python loop per row); :mod:`flywheel.classifiers.fast` evaluates fitted
pipelines on top of these functions for scoring (the same features, shared between
tasks and between repeated values):

- :class:`TermTfidf`: word uni- and bigram TF-IDF of one column, with a vocabulary fitted
  on the training rows (sublinear tf, smoothed idf, l2-normalized rows, like scikit-learn's
  ``TfidfVectorizer`` but tokenized and counted by Polars).
- :class:`GroundingFeatures`: how much of the output is supported by a reference text (the
  context, or the input when there is no context): token, bigram and trigram overlap, novel
  n-gram shares, numbers / capitalized names / dates in the output that the reference
  lacks, and length ratios.
- :class:`StyleFeatures`: hedging, refusal and "no comment" phrases, questions back to the
  user, negations and lengths.
- :class:`TextColumn` / :func:`text_tfidf`: one column as a list of strings for scikit-learn's
  own vectorizers (the plain baseline of the quality benchmark uses them).
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import polars as pl
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

TEXT_COLUMNS = ("input", "output", "context")

TOKEN_PATTERN = r"[a-z0-9]+(?:'[a-z]+)?"
_TOKEN = re.compile(TOKEN_PATTERN)
_NUMBER = r"\d+(?:[.,]\d+)*"
_CAPITALIZED = r"\b[A-Z][a-zA-Z]+(?:[-'][A-Za-z]+)?\b"
_STARTER = r"(?:^|[.!?:;\n])\s*[\"'(]?\s*[A-Z][a-zA-Z]+(?:[-'][A-Za-z]+)?"
_MONTHS = ("january february march april may june july august september october november december "
           "jan feb mar apr jun jul aug sep sept oct nov dec").split()
_MONTH_ALT = "|".join(_MONTHS)
_DATE = (
    r"(?i)\b(?:1[0-9]{3}|20[0-9]{2})\b"                          # years
    r"|\b\d{1,2}[/-]\d{1,2}[/-]\d{2,4}\b"                        # 12/31/2020
    r"|\b(?:" + _MONTH_ALT + r")\.?\s+\d{1,2}\b"                 # March 5
    r"|\b\d{1,2}(?:st|nd|rd|th)?\s+(?:" + _MONTH_ALT + r")\b"    # 5th March
)
STOP_WORDS = sorted(ENGLISH_STOP_WORDS)
_SEED = 20261122
_STOP_HASHES = pl.Series(STOP_WORDS).hash(_SEED).to_list()
_MULT = 0x9E3779B97F4A7C15

HEDGES = (
    "i think", "i believe", "i guess", "probably", "possibly", "perhaps", "maybe", "might",
    "may be", "could be", "it is possible", "it's possible", "likely", "unlikely", "not sure",
    "i'm not sure", "i am not sure", "it depends", "depends on", "generally", "typically",
    "usually", "often", "some people", "it seems", "seems", "appears", "reportedly",
    "supposedly", "allegedly", "approximately", "about", "around", "roughly", "estimated",
)
REFUSALS = (
    "i have no comment", "no comment", "i don't know", "i do not know", "i'm sorry", "i am sorry",
    "as an ai", "as a language model", "i cannot", "i can't", "i can not", "i'm unable",
    "i am unable", "i'm not able", "i am not able", "unable to", "not possible to", "cannot provide",
    "can't provide", "i don't have", "i do not have", "no information", "not enough information",
    "there is no", "there are no", "nothing", "no one", "nobody", "it is not possible",
    "i apologize", "unknown", "there is no way",
)
FIRST_PERSON = ("i", "i'm", "i've", "i'd", "me", "my", "we", "our")
NEGATIONS = ("not", "no", "never", "none", "cannot")


def _alternation(phrases) -> str:
    return "|".join(re.escape(p) for p in sorted(set(phrases), key=len, reverse=True))


_HEDGE_RE = r"\b(?:" + _alternation(HEDGES) + r")\b"
_REFUSAL_RE = _alternation(REFUSALS)
_REFUSAL_START_RE = r"^\s*(?:" + _REFUSAL_RE + ")"
_NEGATION_RE = r"\b(?:" + _alternation(NEGATIONS) + r")\b|n't\b"
_FIRST_PERSON_RE = r"(?:^|\s)(?:" + _alternation(FIRST_PERSON) + r")\b"


# --------------------------------------------------------------------------- input frames


def column(frame, name: str) -> list[str]:
    """Return column ``name`` of ``frame`` as a list of strings ("" for absent values)."""
    return text_series(frame, name).to_list()


def text_series(frame, name: str) -> pl.Series:
    """Return column ``name`` of a pandas or Polars frame as a Polars string Series with
    missing values (and a missing column) as ""."""
    if isinstance(frame, pl.DataFrame):
        if name not in frame.columns:
            return pl.Series(name, [""] * frame.height, dtype=pl.String)
        series = frame.get_column(name)
    else:
        frame = _frame(frame)
        if name not in frame.columns:
            return pl.Series(name, [""] * len(frame), dtype=pl.String)
        values = frame[name]
        try:
            series = pl.from_pandas(values)
        except (TypeError, ValueError, pl.exceptions.PolarsError):
            series = pl.Series(name, [None if _missing(v) else str(v) for v in values.tolist()])
    if series.dtype.is_float():
        series = series.fill_nan(None)
    if series.dtype != pl.String:
        series = series.cast(pl.String, strict=False)
    return series.fill_null("")


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value))


def _frame(X) -> pd.DataFrame | pl.DataFrame:
    if isinstance(X, (pd.DataFrame, pl.DataFrame)):
        return X
    if isinstance(X, dict):
        return pd.DataFrame(X)
    return pd.DataFrame(list(X))


def _rows(X) -> int:
    return X.height if isinstance(X, pl.DataFrame) else len(_frame(X))


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens of ``text`` (the tokenizer of every feature here)."""
    return _TOKEN.findall(text.lower())


def ngrams(toks: list[str], n: int) -> set[tuple[str, ...]]:
    """The set of ``n``-grams of a token list."""
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def _token_lists(text: pl.Expr) -> pl.Expr:
    return text.str.to_lowercase().str.extract_all(TOKEN_PATTERN).fill_null([])


def token_hashes(text: pl.Expr) -> pl.Expr:
    """The tokens of a string expression as a list of 64-bit hashes, in order."""
    return _token_lists(text).list.eval(pl.element().hash(_SEED))


def name_hashes(text: pl.Expr) -> pl.Expr:
    """The capitalized words of a string expression (case kept) as a list of hashes."""
    return text.str.extract_all(_CAPITALIZED).fill_null([]).list.eval(pl.element().hash(_SEED))


def _combine(hashes: pl.Expr, longest: int) -> pl.Expr:
    """Fold a list of token hashes (of at most ``longest`` tokens) into one n-gram hash,
    the way :func:`term_hashes` combines neighbours."""
    n = hashes.list.len()
    combined = hashes.list.get(0, null_on_oob=True)
    for k in range(1, longest):
        combined = (pl.when(n > k).then(combined * pl.lit(_MULT, pl.UInt64) + hashes.list.get(k, null_on_oob=True))
                    .otherwise(combined))
    return combined


def term_hashes(hashes: pl.Expr, ngram_range: tuple[int, int]) -> pl.Expr:
    """All n-gram hashes (n in ``ngram_range``, with repeats) of a list-of-token-hashes
    expression: the unigram hash is the token hash, an n-gram is ``((h1*M + h2)*M + h3)...``."""
    low, high = ngram_range
    parts = [_gram_hashes(hashes, n) for n in range(low, high + 1)]
    return parts[0] if len(parts) == 1 else pl.concat_list(parts)


def _grams(toks: pl.Expr, n: int) -> pl.Expr:
    """The list of ``n``-grams (joined by spaces) of a list-of-tokens expression."""
    if n == 1:
        return toks
    gram = pl.element()
    for k in range(1, n):
        gram = gram + " " + pl.element().shift(-k)
    return toks.list.eval(gram).list.drop_nulls()


# --------------------------------------------------------------------------- TF-IDF


class TermTfidf(BaseEstimator, TransformerMixin):
    """TF-IDF of the terms of one text column, counted by Polars.

    ``kind`` says what the terms are: ``words`` (lower-cased word n-grams of column
    ``name``), ``names`` (capitalized words of the column, case kept: a bag of names) or
    ``novel`` (the distinct lower-cased words of the column absent from column
    ``reference``, or from ``fallback`` where the reference is empty: what the answer adds).

    ``fit`` keeps the terms found in at least ``min_df`` training rows (the
    ``max_features`` most frequent), with smoothed idf ``ln((1+n)/(1+df)) + 1``;
    ``transform`` returns a CSR matrix of sublinear tf (1 + ln count) times idf, each row
    scaled to unit l2 norm (all-zero rows stay zero), like scikit-learn's
    ``TfidfVectorizer(sublinear_tf=True)`` with our tokenizer. The vocabulary is kept as
    text; at transform time terms are matched as 64-bit hashes of their tokens.
    """

    def __init__(self, *, name: str = "output", ngram_range: tuple[int, int] = (1, 2), min_df: int = 2,
                 max_features: int | None = 200_000, kind: str = "words", reference: str = "input",
                 fallback: str | None = None):
        self.name = name
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.max_features = max_features
        self.kind = kind
        self.reference = reference
        self.fallback = fallback

    def _ngram_range(self) -> tuple[int, int]:
        return self.ngram_range if self.kind == "words" else (1, 1)

    def _reference(self, X) -> pl.Series:
        ref = text_series(X, self.reference)
        if self.fallback:
            other = text_series(X, self.fallback)
            ref = pl.select(pl.when(ref.str.strip_chars() != "").then(ref).otherwise(other)).to_series()
        return ref

    def _string_lists(self, X) -> pl.Series:
        text = pl.col("t")
        frame = pl.DataFrame({"t": text_series(X, self.name)})
        if self.kind == "words":
            return frame.select(_token_lists(text)).to_series()
        if self.kind == "names":
            return frame.select(text.str.extract_all(_CAPITALIZED).fill_null([])).to_series()
        if self.kind == "novel":
            frame = frame.with_columns(r=self._reference(X))
            return frame.select(_token_lists(text).list.set_difference(_token_lists(pl.col("r")))).to_series()
        raise ValueError(f"unknown kind {self.kind!r}: expected words, names or novel")

    def hash_lists(self, X) -> pl.Series:
        """The rows' terms as lists of token hashes (what :meth:`transform_hashes` takes)."""
        text = pl.col("t")
        frame = pl.DataFrame({"t": text_series(X, self.name)})
        if self.kind == "words":
            return frame.select(token_hashes(text)).to_series()
        if self.kind == "names":
            return frame.select(name_hashes(text)).to_series()
        frame = frame.with_columns(r=self._reference(X))
        return frame.select(token_hashes(text).list.set_difference(token_hashes(pl.col("r")))).to_series()

    def fit(self, X, y=None):
        toks = pl.DataFrame({"toks": self._string_lists(X)})
        low, high = self._ngram_range()
        terms = pl.concat([toks.select(_grams(pl.col("toks"), n).alias("term")).with_row_index("row")
                           .explode("term") for n in range(low, high + 1)]).drop_nulls("term")
        df = (terms.unique().group_by("term").len()
              .filter(pl.col("len") >= self.min_df)
              .sort(["len", "term"], descending=[True, False]))
        if self.max_features:
            df = df.head(self.max_features)
        df = df.sort("term")
        self.vocabulary_ = df.get_column("term").to_list()
        counts = df.get_column("len").to_numpy().astype(np.float64)
        self.idf_ = (np.log((1.0 + _rows(X)) / (1.0 + counts)) + 1.0).astype(np.float32)
        return self

    def get_feature_names_out(self, input_features=None):
        return np.asarray([f"{self.name}:{t}" for t in self.vocabulary_], dtype=object)

    def transform(self, X) -> sp.csr_matrix:
        return self.transform_hashes(self.hash_lists(X))

    def vocabulary_hashes(self) -> pl.DataFrame:
        """The vocabulary as (hash, col): each term's hash as :meth:`hash_lists` and
        :func:`term_hashes` compute it, and its column."""
        terms = pl.DataFrame({"term": self.vocabulary_, "col": np.arange(len(self.vocabulary_), dtype=np.uint32)},
                             schema={"term": pl.String, "col": pl.UInt32})
        if self.kind == "names":
            return terms.select(pl.col("term").hash(_SEED).alias("hash"), "col")
        return terms.select(
            _combine(token_hashes(pl.col("term")), self._ngram_range()[1]).alias("hash"), "col"
        ).drop_nulls("hash")

    def transform_hashes(self, hashes: pl.Series) -> sp.csr_matrix:
        """The TF-IDF matrix of rows given as lists of token hashes (:func:`token_hashes`)."""
        n_rows, width = hashes.len(), len(self.vocabulary_)
        if not width or not n_rows:
            return sp.csr_matrix((n_rows, width), dtype=np.float32)
        hits = (pl.DataFrame({"h": hashes})
                .select(term_hashes(pl.col("h"), self._ngram_range()).alias("hash"))
                .with_row_index("row").explode("hash")
                .join(self.vocabulary_hashes(), on="hash", how="inner"))
        rows = hits.get_column("row").to_numpy()
        cols = hits.get_column("col").to_numpy()
        counts = sp.csr_matrix((np.ones(len(rows), dtype=np.float32), (rows, cols)), shape=(n_rows, width))
        counts.sum_duplicates()
        counts.data = (1.0 + np.log(counts.data)) * self.idf_[counts.indices]
        norms = np.sqrt(np.asarray(counts.multiply(counts).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        counts.data /= np.repeat(norms, np.diff(counts.indptr)).astype(np.float32)
        return counts


class TextColumn(BaseEstimator, TransformerMixin):
    """Select one text column of a DataFrame as a list of strings.

    With ``fallback`` set, rows whose column is empty take the fallback column instead;
    with ``join`` set, the named columns are joined by a newline instead.
    """

    def __init__(self, *, name: str = "output", fallback: str | None = None, join: tuple[str, ...] | None = None):
        self.name = name
        self.fallback = fallback
        self.join = join

    def fit(self, X, y=None):
        return self

    def transform(self, X) -> list[str]:
        if self.join:
            cols = [column(X, c) for c in self.join]
            return ["\n".join(parts) for parts in zip(*cols)]
        values = column(X, self.name)
        if self.fallback:
            other = column(X, self.fallback)
            values = [v if v.strip() else o for v, o in zip(values, other)]
        return values


def text_tfidf(*, name: str = "output", analyzer: str = "word", ngram_range=(1, 2), min_df: int = 2,
               max_features: int | None = 200_000, sublinear_tf: bool = True,
               join: tuple[str, ...] | None = None) -> Pipeline:
    """A TF-IDF of one text column (or of several joined): ``TextColumn`` + ``TfidfVectorizer``."""
    return Pipeline([
        ("select", TextColumn(name=name, join=join)),
        ("tfidf", TfidfVectorizer(analyzer=analyzer, ngram_range=ngram_range, min_df=min_df,
                                  max_features=max_features, sublinear_tf=sublinear_tf,
                                  lowercase=True, dtype=np.float32)),
    ])


# --------------------------------------------------------------------------- grounding


def _gram_hashes(hashes: pl.Expr, n: int) -> pl.Expr:
    """The ``n``-gram hashes (with repeats, in order) of a list of token hashes: slices of
    the list shifted against each other and combined element-wise, ``(h1*M + h2)*M + h3``."""
    if n == 1:
        return hashes
    width = (hashes.list.len().cast(pl.Int64) - (n - 1)).clip(0)
    combined = hashes.list.slice(0, width)
    for k in range(1, n):
        combined = combined * pl.lit(_MULT, pl.UInt64) + hashes.list.slice(k, width)
    return combined


def _hash_grams(hashes: pl.Expr, n: int) -> pl.Expr:
    """The distinct ``n``-grams of a list of token hashes, each as one combined hash."""
    return _gram_hashes(hashes, n).list.unique()


def _share(part: pl.Expr, whole: pl.Expr, empty: float | pl.Expr) -> pl.Expr:
    """|part ∩ whole| / |part| of two list expressions, ``empty`` when part is empty."""
    n = part.list.len()
    return pl.when(n > 0).then(part.list.set_intersection(whole).list.len() / n).otherwise(empty)


def _dates(text: pl.Expr) -> pl.Expr:
    """The distinct dates of a string expression, lower-cased with runs of non-word
    characters as one space."""
    return (text.str.extract_all(_DATE)
            .list.eval(pl.element().str.to_lowercase().str.replace_all(r"\W+", " ").str.strip_chars())
            .list.unique())


def _names(text: pl.Expr) -> pl.Expr:
    """Capitalized words that do not start a sentence (a cheap proper-name detector), as
    a list of hashes of the lower-cased words. A word that starts a sentence somewhere in
    the text does not count anywhere in it."""
    words = text.str.extract_all(_CAPITALIZED)
    starters = text.str.extract_all(_STARTER).list.eval(pl.element().str.extract(_CAPITALIZED, 0))
    return (words.list.set_difference(starters)
            .list.eval(pl.element().str.to_lowercase().hash(_SEED)))


class GroundingFeatures(BaseEstimator, TransformerMixin):
    """How well the output is supported by a reference text.

    The reference is column ``reference`` (default ``context``), or column ``fallback``
    (default ``input``) for rows where the reference is empty. Features per row (see
    :attr:`feature_names`): overlap of unigrams (content words), bigrams and trigrams of
    the output with the reference, the reverse coverage of the reference, counts and
    indicators of numbers, capitalized names and dates in the output absent from the
    reference, log lengths and their ratio, whether the output is copied from the
    reference, and whether a reference was present at all.
    """

    feature_names = (
        "unigram_overlap", "content_overlap", "bigram_overlap", "trigram_overlap",
        "novel_bigram_share", "novel_trigram_share", "reference_coverage",
        "novel_numbers", "has_novel_number", "novel_names", "has_novel_name", "novel_name_share",
        "novel_dates", "has_novel_date", "log_output_tokens", "log_reference_tokens",
        "length_ratio", "copied", "has_reference",
    )

    def __init__(self, *, reference: str = "context", fallback: str | None = "input"):
        self.reference = reference
        self.fallback = fallback

    def fit(self, X, y=None):
        return self

    def get_feature_names_out(self, input_features=None):
        return np.asarray([f"grounding_{n}" for n in self.feature_names], dtype=object)

    def transform(self, X) -> np.ndarray:
        output = text_series(X, "output")
        ref = text_series(X, self.reference)
        present = ref.str.strip_chars() != ""
        if self.fallback:
            ref = pl.select(pl.when(present).then(ref).otherwise(text_series(X, self.fallback))).to_series()
        frame = pl.DataFrame({"out": output, "ref": ref, "present": present})
        return grounding_matrix(frame)


def grounding_matrix(frame: pl.DataFrame) -> np.ndarray:
    """The :attr:`GroundingFeatures.feature_names` of a frame with string columns ``out``
    and ``ref`` and boolean ``present`` (and optionally their :func:`token_hashes` as
    ``out_t`` and ``ref_t``), as a float64 array (one row per frame row).

    Tokens are compared as 64-bit hashes and n-grams as combined hashes (integer list set
    operations instead of string ones); the hashes never leave one call, so they need not
    be stable across library versions. The work is split into what depends on the output
    only (:func:`grounding_output_side`), on the reference only
    (:func:`grounding_reference_side`) and on both (:func:`grounding_from_sides`), so that
    a caller can compute each side once per distinct text.
    """
    out_t = pl.col("out_t") if "out_t" in frame.columns else token_hashes(pl.col("out"))
    ref_t = pl.col("ref_t") if "ref_t" in frame.columns else token_hashes(pl.col("ref"))
    tokens = frame.select("out", "ref", "present", out_t.alias("out_t"), ref_t.alias("ref_t"))
    return grounding_from_sides(grounding_output_side(tokens), grounding_reference_side(tokens),
                                tokens.get_column("present"))


_CONTENT = pl.element().filter(~pl.element().is_in(_STOP_HASHES))


def grounding_output_side(frame: pl.DataFrame) -> pl.DataFrame:
    """What grounding needs of the output alone, from the columns ``out`` and ``out_t``:
    its lower-cased text, numbers, names, dates, distinct tokens and content words,
    distinct bigram and trigram hashes, and counts."""
    out, ot = pl.col("out"), pl.col("out_t")
    side = frame.select(
        out.str.to_lowercase().str.strip_chars().alias("out_low"),
        out.str.replace_all(r"(\d),(\d)", "$1$2").str.extract_all(_NUMBER).alias("out_num"),
        _names(out).alias("names"),
        _dates(out).alias("out_dates"),
        ot.list.unique().alias("o1"),
        _hash_grams(ot, 2).alias("o2"), _hash_grams(ot, 3).alias("o3"),
        ot.list.len().alias("n_out"),
    )
    return side.with_columns(pl.col("o1").list.eval(_CONTENT).alias("oc"))


def grounding_reference_side(frame: pl.DataFrame) -> pl.DataFrame:
    """What grounding needs of the reference alone, from the columns ``ref`` and
    ``ref_t``: its text (lower-cased too), numbers, tokens, bigram and trigram hashes
    (not necessarily distinct), distinct content words and token count."""
    ref, rt = pl.col("ref"), pl.col("ref_t")
    return frame.select(
        ref, ref.str.to_lowercase().alias("ref_low"),
        ref.str.replace_all(r"(\d),(\d)", "$1$2").str.extract_all(_NUMBER).alias("ref_num"),
        rt, _gram_hashes(rt, 2).alias("r2"), _gram_hashes(rt, 3).alias("r3"),
        rt.list.eval(_CONTENT).list.n_unique().alias("n_rc"),
        rt.list.len().alias("n_ref"),
    )


def grounding_from_sides(out_side: pl.DataFrame, ref_side: pl.DataFrame, present: pl.Series) -> np.ndarray:
    """The grounding features of rows given the :func:`grounding_output_side` and the
    :func:`grounding_reference_side` of each row (equal heights) and whether a reference
    was present."""
    frame = pl.concat([out_side, ref_side], how="horizontal").with_columns(present=present)
    # dates of the reference only for the (few) rows whose output has any
    with_dates = frame.get_column("out_dates").list.len() > 0
    novel_dates = np.zeros(frame.height, dtype=np.int64)
    if with_dates.any():
        some = frame.filter(with_dates).select(pl.col("out_dates"), _dates(pl.col("ref")).alias("ref_dates"))
        novel_dates[np.flatnonzero(with_dates.to_numpy())] = some.select(
            pl.col("out_dates").list.set_difference("ref_dates").list.len()).to_series().to_numpy()
    rt = pl.col("ref_t")
    # The reference's lists need not be distinct (set_intersection yields a set), and
    # |distinct content words of the reference that the output has| = |oc ∩ reference|.
    step = frame.select(
        pl.col("o1").list.set_intersection(rt).list.len().alias("uni_hits"),
        pl.col("o1").list.len().alias("n_o1"),
        pl.col("oc").list.set_intersection(rt).list.len().alias("content_hits"),
        pl.col("oc").list.len().alias("n_oc"),
        "o2", "r2", "o3", "r3", "n_rc", "n_out", "n_ref",
        pl.col("out_num").list.set_difference("ref_num").list.len().alias("novel_numbers"),
        pl.col("names").list.set_difference(rt).list.len().alias("novel_names"),
        pl.col("names").list.len().alias("n_names"),
        pl.Series("novel_dates", novel_dates),
        ((pl.col("out_low") != "")
         & pl.col("ref_low").str.contains(pl.col("out_low"), literal=True)).cast(pl.Float64).alias("copied"),
        pl.col("present").cast(pl.Float64).alias("has_reference"),
    )
    uni = pl.when(pl.col("n_o1") > 0).then(pl.col("uni_hits") / pl.col("n_o1")).otherwise(1.0)
    bi = _share(pl.col("o2"), pl.col("r2"), uni)
    tri = _share(pl.col("o3"), pl.col("r3"), bi)
    n_out, n_ref = pl.col("n_out").cast(pl.Float64), pl.col("n_ref").cast(pl.Float64)
    novel_numbers, novel_names, novel_dates = pl.col("novel_numbers"), pl.col("novel_names"), pl.col("novel_dates")
    result = step.select(
        uni.alias("unigram_overlap"),
        pl.when(pl.col("n_oc") > 0).then(pl.col("content_hits") / pl.col("n_oc")).otherwise(1.0)
        .alias("content_overlap"),
        bi.alias("bigram_overlap"), tri.alias("trigram_overlap"),
        (1.0 - bi).alias("novel_bigram_share"), (1.0 - tri).alias("novel_trigram_share"),
        pl.when(pl.col("n_rc") > 0).then(pl.col("content_hits") / pl.col("n_rc")).otherwise(0.0)
        .alias("reference_coverage"),
        novel_numbers.cast(pl.Float64).log1p().alias("novel_numbers"),
        (novel_numbers > 0).cast(pl.Float64).alias("has_novel_number"),
        novel_names.cast(pl.Float64).log1p().alias("novel_names"),
        (novel_names > 0).cast(pl.Float64).alias("has_novel_name"),
        pl.when(pl.col("n_names") > 0).then(novel_names / pl.col("n_names")).otherwise(0.0).alias("novel_name_share"),
        novel_dates.cast(pl.Float64).log1p().alias("novel_dates"),
        (novel_dates > 0).cast(pl.Float64).alias("has_novel_date"),
        n_out.log1p().alias("log_output_tokens"), n_ref.log1p().alias("log_reference_tokens"),
        ((n_out + 1) / (n_ref + 1)).log().alias("length_ratio"),
        "copied", "has_reference",
    )
    return result.select(GroundingFeatures.feature_names).cast(pl.Float64).to_numpy().reshape(
        frame.height, len(GroundingFeatures.feature_names))


# --------------------------------------------------------------------------- style


class StyleFeatures(BaseEstimator, TransformerMixin):
    """Hedging, refusal and first-person phrases, questions back, and lengths of the output."""

    feature_names = (
        "hedges", "has_hedge", "refusals", "has_refusal", "starts_with_refusal", "first_person",
        "question_marks", "negations", "log_chars", "log_tokens", "log_sentences", "empty",
        "digit_share", "upper_share",
    )

    def __init__(self, *, name: str = "output"):
        self.name = name

    def fit(self, X, y=None):
        return self

    def get_feature_names_out(self, input_features=None):
        return np.asarray([f"style_{n}" for n in self.feature_names], dtype=object)

    def transform(self, X) -> np.ndarray:
        return style_matrix(text_series(X, self.name))


def style_matrix(text: pl.Series) -> np.ndarray:
    """The :attr:`StyleFeatures.feature_names` of a string Series, as a float64 array."""
    t = pl.col("t")
    low = t.str.to_lowercase().str.replace_all("\u2019", "'", literal=True).str.replace_all(r"\s+", " ")
    frame = pl.DataFrame({"t": text}).select(
        low.alias("low"), t.str.len_chars().cast(pl.Float64).alias("chars"),
        t.str.count_matches(r"\?").cast(pl.Float64).alias("questions"),
        t.str.count_matches(r"[.!?]+(?:\s|$)").cast(pl.Float64).alias("sentences"),
        t.str.count_matches(r"\d").cast(pl.Float64).alias("digits"),
        t.str.count_matches(r"[A-Z]").cast(pl.Float64).alias("uppers"),
        (t.str.strip_chars() == "").cast(pl.Float64).alias("empty"),
    )
    low = pl.col("low")
    hedges = low.str.count_matches(_HEDGE_RE).cast(pl.Float64)
    refusals = low.str.count_matches(_REFUSAL_RE).cast(pl.Float64)
    negations = low.str.count_matches(_NEGATION_RE).cast(pl.Float64)
    chars = pl.col("chars")
    result = frame.select(
        hedges.log1p().alias("hedges"), (hedges > 0).cast(pl.Float64).alias("has_hedge"),
        refusals.log1p().alias("refusals"), (refusals > 0).cast(pl.Float64).alias("has_refusal"),
        low.str.slice(0, 40).str.contains(_REFUSAL_START_RE).cast(pl.Float64).alias("starts_with_refusal"),
        low.str.count_matches(_FIRST_PERSON_RE).cast(pl.Float64).log1p().alias("first_person"),
        pl.col("questions").log1p().alias("question_marks"),
        negations.log1p().alias("negations"),
        chars.log1p().alias("log_chars"),
        low.str.count_matches(TOKEN_PATTERN).cast(pl.Float64).log1p().alias("log_tokens"),
        pl.col("sentences").log1p().alias("log_sentences"), "empty",
        pl.when(chars > 0).then(pl.col("digits") / chars).otherwise(0.0).alias("digit_share"),
        pl.when(chars > 0).then(pl.col("uppers") / chars).otherwise(0.0).alias("upper_share"),
    )
    return result.cast(pl.Float64).fill_null(0.0).to_numpy().reshape(text.len(), len(StyleFeatures.feature_names))


# --------------------------------------------------------------------------- all at once


class LogFeatures(BaseEstimator, TransformerMixin):
    """Every feature of a log in one pass: each text column is tokenized once.

    Blocks, stacked as one CSR matrix (:class:`TermTfidf` for the bags of terms): word
    n-gram TF-IDF of the output and of the input; with ``novel_words`` the words of the
    output absent from its reference (the context, or the input for rows without one);
    with ``names`` the capitalized words of the output; grounding of the output in the
    reference (:func:`grounding_matrix`; with ``has_context`` and ``query_grounding`` a
    second block grounds it in the input); and the output's style (:func:`style_matrix`). The dense blocks are
    standardized with means and scales fitted on the training rows, then multiplied by
    ``dense_weight`` (their weight against the unit-norm TF-IDF rows under the
    classifier's L2 penalty).
    """

    def __init__(self, *, has_context: bool = True, ngram_range: tuple[int, int] = (1, 2), min_df: int = 2,
                 max_features: int | None = 200_000, input_words: bool = True, novel_words: bool = True,
                 names: bool = True, query_grounding: bool = False, dense_weight: float = 1.0):
        self.has_context = has_context
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.max_features = max_features
        self.input_words = input_words
        self.novel_words = novel_words
        self.names = names
        self.query_grounding = query_grounding
        self.dense_weight = dense_weight

    def _vectorizers(self) -> list[TermTfidf]:
        common = {"ngram_range": self.ngram_range, "min_df": self.min_df, "max_features": self.max_features}
        out = [TermTfidf(name="output", **common)]
        if self.input_words:
            out.append(TermTfidf(name="input", **common))
        if self.novel_words:
            out.append(TermTfidf(name="output", kind="novel", reference="context" if self.has_context else "input",
                                 fallback="input" if self.has_context else None, **common))
        if self.names:
            out.append(TermTfidf(name="output", kind="names", **common))
        return out

    def _prepare(self, X, *, tokens: dict[str, pl.Series] | None = None) -> pl.DataFrame:
        """The text columns and their token hashes; ``ref`` is the context, or the input
        where the context is empty (or always, without ``has_context``). ``tokens`` may
        give the token hashes of some columns (``out``, ``inp``, ``ctx``) already."""
        columns = {"out": text_series(X, "output"), "inp": text_series(X, "input")}
        if self.has_context:
            columns["ctx"] = text_series(X, "context")
        tokens = tokens or {}
        frame = pl.DataFrame(columns).with_columns(
            [tokens[c].alias(c + "_t") if c in tokens else token_hashes(pl.col(c)).alias(c + "_t") for c in columns])
        context = "ctx" if self.has_context else "inp"
        frame = frame.with_columns(present=pl.col(context).str.strip_chars() != "")
        if frame.get_column("present").all():  # no fallback needed: no copy of the lists
            return frame.with_columns(ref=pl.col(context), ref_t=pl.col(context + "_t"))
        present = pl.col("present")
        return frame.with_columns(
            pl.when(present).then(pl.col(context)).otherwise(pl.col("inp")).alias("ref"),
            pl.when(present).then(pl.col(context + "_t")).otherwise(pl.col("inp_t")).alias("ref_t"),
        )

    def _dense(self, prepared: pl.DataFrame, *, style: np.ndarray | None = None) -> np.ndarray:
        """The raw (unscaled) grounding and style features; ``style`` may give the style
        block already."""
        blocks = [grounding_matrix(prepared.select("out", "out_t", "ref", "ref_t", "present"))]
        if self.has_context and self.query_grounding:
            query = prepared.select(pl.col("out"), pl.col("out_t"), pl.col("inp").alias("ref"),
                                    pl.col("inp_t").alias("ref_t"),
                                    (pl.col("inp").str.strip_chars() != "").alias("present"))
            blocks.append(grounding_matrix(query))
        blocks.append(style_matrix(prepared.get_column("out")) if style is None else style)
        return np.hstack(blocks)

    def _hash_lists(self, vectorizer: TermTfidf, prepared: pl.DataFrame) -> pl.Series:
        if vectorizer.kind == "words":
            return prepared.get_column({"output": "out_t", "input": "inp_t"}[vectorizer.name])
        if vectorizer.kind == "novel":
            return prepared.select(pl.col("out_t").list.set_difference(pl.col("ref_t"))).to_series()
        return prepared.select(name_hashes(pl.col("out"))).to_series()

    def fit(self, X, y=None):
        self.vectorizers_ = [v.fit(X) for v in self._vectorizers()]
        dense = self._dense(self._prepare(X))
        self.scaler_ = StandardScaler().fit(dense)
        return self

    def get_feature_names_out(self, input_features=None):
        names = [f"{v.kind}:{n}" for v in self.vectorizers_ for n in v.get_feature_names_out()]
        names += [f"grounding_{n}" for n in GroundingFeatures.feature_names]
        if self.has_context and self.query_grounding:
            names += [f"query_grounding_{n}" for n in GroundingFeatures.feature_names]
        names += [f"style_{n}" for n in StyleFeatures.feature_names]
        return np.asarray(names, dtype=object)

    def shared_key(self) -> tuple:
        """What :meth:`precompute` depends on: models whose features have the same key can
        share one precomputation of a batch (their vocabularies and scalers may differ)."""
        return (self.has_context, self.query_grounding)

    def precompute(self, X) -> dict:
        """The fitted-state-free work of :meth:`transform`: the tokenized columns and the
        raw dense features."""
        prepared = self._prepare(X)
        return {"prepared": prepared, "dense": self._dense(prepared)}

    def transform_precomputed(self, pre: dict) -> sp.csr_matrix:
        """:meth:`transform` from the result of :meth:`precompute`."""
        prepared = pre["prepared"]
        blocks = [v.transform_hashes(self._hash_lists(v, prepared)) for v in self.vectorizers_]
        dense = (self.scaler_.transform(pre["dense"]) * self.dense_weight).astype(np.float32)
        blocks.append(sp.csr_matrix(dense))
        return sp.hstack(blocks, format="csr")

    def transform(self, X) -> sp.csr_matrix:
        return self.transform_precomputed(self.precompute(X))
