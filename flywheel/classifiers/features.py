"""Feature transformers for the hallucination and relevance classifiers.

Every transformer takes a DataFrame (pandas or Polars) with the columns ``input``,
``output`` and (optionally) ``context``; a missing column or a missing value counts as
empty text. They are small scikit-learn estimators with keyword-only parameters so that a
pipeline can be assembled, cloned and cross-validated like any other.

The text work is done by the compiled kernels of :mod:`flywheel.classifiers.kernels`
(their docstring defines tokens, numbers, names and dates); a :class:`Batch` holds each
text column's bytes and tokens once, and every block reads them from there.
:mod:`flywheel.classifiers.fast` scores fitted pipelines from the same kernels.

- :class:`TermTfidf`: TF-IDF of the terms of one column: word n-grams, the output's novel
  words, or its capitalized words, with a vocabulary fitted on the training rows (sublinear
  tf, smoothed idf, l2-normalized rows, like scikit-learn's ``TfidfVectorizer`` with our
  tokenizer).
- :class:`GroundingFeatures`: how much of the output is supported by a reference text (the
  context, or the input when there is no context): token, bigram and trigram overlap, novel
  n-gram shares, numbers / capitalized names / dates in the output that the reference
  lacks, and length ratios.
- :class:`StyleFeatures`: hedging, refusal and first-person phrases, questions back to the
  user, negations and lengths.
- :class:`LogFeatures`: all of them at once, each text column tokenized once.
- :class:`TextColumn` / :func:`text_tfidf`: one column as a list of strings for scikit-learn's
  own vectorizers (the plain baseline of the quality benchmark uses them).
"""

from __future__ import annotations

import functools
import hashlib
import math
import re

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import scipy.sparse as sp
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from flywheel.classifiers import kernels

TEXT_COLUMNS = ("input", "output", "context")

# Bumped whenever a feature's definition changes: a model fitted by other feature code
# cannot be scored by this one (the registry refuses it with a message to retrain).
FEATURES_VERSION = 3

TOKEN_PATTERN = r"[a-z0-9]+(?:'[a-z]+)?"
_TOKEN = re.compile(TOKEN_PATTERN)
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
MONTHS = ("january february march april may june july august september october november december "
          "jan feb mar apr jun jul aug sep sept oct nov dec").split()
STOP_WORDS = sorted(ENGLISH_STOP_WORDS)

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
NEGATIONS = ("not", "no", "never", "none", "cannot", "nor", "don't", "doesn't", "didn't", "isn't", "aren't",
             "wasn't", "weren't", "can't", "couldn't", "won't", "wouldn't", "shouldn't", "haven't", "hasn't",
             "hadn't", "mustn't", "needn't", "ain't", "shan't", "mightn't")


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
    """The tokens of ``text`` as strings, as the kernels find them (ASCII lower-cased;
    the right single quote is an apostrophe)."""
    return _TOKEN.findall(text.replace("\u2019", "'").translate(_ASCII_LOWER))


def ngrams(toks: list[str], n: int) -> set[tuple[str, ...]]:
    """The set of ``n``-grams of a token list."""
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


class Texts:
    """One text column as the kernels take it: UTF-8 bytes and row offsets (``data``,
    ``offsets``: the Arrow buffers), and its tokens (``ptr``, ``hashes``, ``starts``,
    ``stops``, ``flags``, see :func:`kernels.tokenize`)."""

    def __init__(self, series: pl.Series):
        array = series.to_arrow()
        if not array.type.equals(pa.large_string()):
            array = array.cast(pa.large_string())
        _, offsets, data = array.buffers()
        self.rows = len(array)
        self.offsets = np.frombuffer(offsets, dtype=np.int64)[array.offset:array.offset + self.rows + 1]
        self.data = (np.frombuffer(data, dtype=np.uint8) if data is not None and data.size
                     else np.zeros(1, dtype=np.uint8))
        self.data.flags.writeable = False  # always read-only (Arrow's buffers are): one compiled variant
        self.ptr, self.hashes, self.starts, self.stops, self.flags = kernels.tokenize(
            self.data, self.offsets, *special_words())

    def arrays(self) -> tuple:
        """(data, offsets, ptr, hashes, starts, stops, flags): a text's arguments to the kernels."""
        return self.data, self.offsets, self.ptr, self.hashes, self.starts, self.stops, self.flags

    def nonblank(self) -> np.ndarray:
        """Whether each row holds anything but white space."""
        return kernels.nonblank(self.data, self.offsets)

    def text(self, start: int, stop: int) -> str:
        """The text of bytes ``start:stop``."""
        return bytes(self.data[start:stop]).decode("utf-8", errors="replace")


class Batch:
    """The rows of a frame as the features read them: each text column's :class:`Texts`,
    made once on first use."""

    def __init__(self, X):
        self.frame = X
        self.rows = _rows(X)
        self._texts: dict[str, Texts] = {}
        self._references: dict[tuple, tuple] = {}
        self._cache: dict[tuple, object] = {}

    def cached(self, key: tuple, compute):
        """``compute()``, once per batch and ``key`` (models that share features share
        the work)."""
        if key not in self._cache:
            self._cache[key] = compute()
        return self._cache[key]

    def texts(self, name: str) -> Texts:
        if name not in self._texts:
            self._texts[name] = Texts(text_series(self.frame, name))
        return self._texts[name]

    def reference(self, name: str, fallback: str | None) -> tuple[Texts, Texts, np.ndarray, np.ndarray]:
        """The reference of each row: column ``name``, or ``fallback`` where it is blank.
        Returns (A, B, use_a, present) as the kernels take it: the reference is A where
        ``use_a``, else B; ``present`` says whether column ``name`` is not blank."""
        key = (name, fallback)
        if key not in self._references:
            a = self.texts(name)
            present = a.nonblank()
            if fallback:
                self._references[key] = (a, self.texts(fallback), present, present)
            else:
                self._references[key] = (a, a, np.ones(self.rows, dtype=np.bool_), present)
        return self._references[key]


def batch_of(X) -> Batch:
    return X if isinstance(X, Batch) else Batch(X)


def _raw_hashes(texts: list[str]) -> list[np.ndarray]:
    """The token hashes of each text (no special-word flags needed)."""
    data = "".join(texts).encode()
    offsets = np.cumsum([0] + [len(t.encode()) for t in texts]).astype(np.int64)
    offsets.flags.writeable = False  # as in Texts: one compiled variant
    ptr, hashes, _, _, _ = kernels.tokenize(np.frombuffer(data or b" ", dtype=np.uint8), offsets,
                                            *kernels.lookup_table(np.zeros(0, np.uint64), np.zeros(0, np.int64)))
    return [hashes[ptr[i]:ptr[i + 1]] for i in range(len(texts))]


@functools.cache
def special_words() -> tuple[np.ndarray, np.ndarray]:
    """The :func:`kernels.lookup_table` of the words that :func:`kernels.tokenize`
    flags: stop words, months, first-person words, negations and the first words of
    the hedge and refusal phrases."""
    flags: dict[int, int] = {}
    for words, flag in ((STOP_WORDS, kernels.STOP), (MONTHS, kernels.MONTH), (FIRST_PERSON, kernels.FIRST_PERSON),
                        (NEGATIONS, kernels.NEGATION)):
        for word, hashes in zip(words, _raw_hashes(list(words))):
            if len(hashes) == 1:  # a stop word like "i.e." is no token of ours
                flags[int(hashes[0])] = flags.get(int(hashes[0]), 0) | flag
    for phrases, flag in ((HEDGES, kernels.HEDGE_START), (REFUSALS, kernels.REFUSAL_START)):
        for hashes in _raw_hashes(list(phrases)):
            flags[int(hashes[0])] = flags.get(int(hashes[0]), 0) | flag
    keys = np.fromiter(flags.keys(), dtype=np.uint64, count=len(flags))
    return kernels.lookup_table(keys, np.fromiter(flags.values(), dtype=np.int64, count=len(flags)))


@functools.cache
def _phrases(phrases: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray]:
    """Phrases as the style kernel matches them: (token hashes per phrase padded with
    zeros, lengths), longest phrase first."""
    lists = sorted(_raw_hashes(list(phrases)), key=len, reverse=True)
    padded = np.zeros((len(lists), max(len(x) for x in lists)), dtype=np.uint64)
    for i, x in enumerate(lists):
        padded[i, :len(x)] = x
    return padded, np.asarray([len(x) for x in lists], np.int64)


# --------------------------------------------------------------------------- regimes


def regime_ids(batch: Batch, regimes: str | None, values) -> np.ndarray:
    """The regime of each row of ``batch`` as an index into ``values`` (-1: none of them).
    ``regimes`` ``"context"``: ``values`` are ("context", "no_context"), whether the row has
    a context; ``"source"``: the row's ``source`` value."""
    ids = np.full(batch.rows, -1, dtype=np.int64)
    if not values or regimes is None:
        return ids
    if regimes == "context":
        present = batch.cached(("nonblank", "context"), lambda: batch.texts("context").nonblank())
        return np.where(present, 0, 1).astype(np.int64)
    if regimes == "source":
        frame = batch.frame
        if "source" not in (frame.columns if isinstance(frame, (pd.DataFrame, pl.DataFrame)) else _frame(frame).columns):
            return ids  # no sources: every row gets the shared weights
        mapping = {str(name): i for i, name in enumerate(values)}
        # once per batch and set of regimes (the models of both tasks share it)
        return batch.cached(("regimes", tuple(mapping)), lambda: text_series(frame, "source").replace_strict(
            mapping, default=-1, return_dtype=pl.Int64).to_numpy())
    raise ValueError(f"unknown regimes {regimes!r}: expected None, 'context' or 'source'")


def _regime_salts(values) -> np.ndarray:
    """A stable 64-bit salt per regime value, mixed into the terms of its rows."""
    return np.asarray([int.from_bytes(hashlib.blake2b(str(v).encode(), digest_size=8).digest(), "little")
                       for v in values], dtype=np.uint64)


# --------------------------------------------------------------------------- TF-IDF


class TermTfidf(BaseEstimator, TransformerMixin):
    """TF-IDF of the terms of one text column.

    ``kind`` says what the terms are: ``words`` (word n-grams of column ``name``),
    ``names`` (capitalized words of the column, case kept: a bag of names) or ``novel``
    (the distinct words of the column absent from column ``reference``, or from
    ``fallback`` where the reference is blank: what the answer adds).

    ``fit`` keeps the terms found in at least ``min_df`` training rows (the
    ``max_features`` most frequent), with smoothed idf ``ln((1+n)/(1+df)) + 1``;
    ``transform`` returns a CSR matrix of sublinear tf (1 + ln count) times idf, each row
    scaled to unit l2 norm (all-zero rows stay zero), like scikit-learn's
    ``TfidfVectorizer(sublinear_tf=True)`` with our tokenizer. Terms are matched by their
    64-bit hashes (``vocabulary_hashes_``); ``vocabulary_`` holds them as text (n-grams'
    tokens joined by a space) for people.
    """

    def __init__(self, *, name: str = "output", ngram_range: tuple[int, int] = (1, 2), min_df: int = 2,
                 max_features: int | None = 200_000, kind: str = "words", reference: str = "input",
                 fallback: str | None = None, regimes: str | None = None, regime_values: tuple = ()):
        self.name = name
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.max_features = max_features
        self.kind = kind
        self.reference = reference
        self.fallback = fallback
        self.regimes = regimes
        self.regime_values = regime_values

    def _ngram_range(self) -> tuple[int, int]:
        return tuple(self.ngram_range) if self.kind in ("words", "regime_words") else (1, 1)

    def terms(self, batch: Batch) -> tuple[np.ndarray, ...]:
        """Each row's terms (with repeats): (ptr, hashes, a, b), where (a, b) locate each
        term for :meth:`_term_text`: its first token and size in tokens, or (``names``)
        its byte span."""
        texts = batch.texts(self.name)
        if self.kind == "words":
            low, high = self._ngram_range()
            return kernels.gram_terms(texts.ptr, texts.hashes, low, high)
        if self.kind == "novel":
            a, b, use_a, _ = batch.reference(self.reference, self.fallback)
            return kernels.novel_terms(texts.ptr, texts.hashes, a.ptr, a.hashes, b.ptr, b.hashes, use_a)
        if self.kind == "names":
            return kernels.name_terms(texts.data, texts.offsets)
        if self.kind == "regime_words":
            # the word n-grams of rows in a regime, each salted with the regime: the same
            # n-gram is another term in another regime (rows in none have no terms)
            low, high = self._ngram_range()
            ptr, terms, a, b = kernels.gram_terms(texts.ptr, texts.hashes, low, high)
            ids = regime_ids(batch, self.regimes, self.regime_values)
            row = np.repeat(ids, np.diff(ptr))
            keep = row >= 0
            salts = _regime_salts(self.regime_values)
            terms = terms[keep] * kernels.MULT + salts[row[keep]]
            kept = np.zeros(len(ptr), np.int64)
            np.cumsum(np.where(ids >= 0, np.diff(ptr), 0), out=kept[1:])
            return kept, terms, a[keep], b[keep]
        raise ValueError(f"unknown kind {self.kind!r}: expected words, regime_words, names or novel")

    def _term_text(self, texts: Texts, a: int, b: int) -> str:
        if self.kind == "names":
            return texts.text(a, b)
        return " ".join(tokens(texts.text(int(texts.starts[a]), int(texts.stops[a + b - 1]))))

    def fit(self, X, y=None):
        batch = batch_of(X)
        ptr, terms, a, b = self.terms(batch)
        distinct, where = kernels.distinct_per_row(ptr, terms)
        values, first, df = np.unique(distinct, return_index=True, return_counts=True)
        keep = df >= self.min_df
        values, first, df = values[keep], first[keep], df[keep]
        order = np.lexsort((values, -df))  # most frequent first, ties by hash
        if self.max_features:
            order = order[:self.max_features]
        order = order[np.argsort(values[order])]
        self.vocabulary_hashes_ = values[order]
        texts = batch.texts(self.name)
        at = where[first[order]]
        self.vocabulary_ = [self._term_text(texts, int(a[i]), int(b[i])) for i in at]
        self.idf_ = (np.log((1.0 + batch.rows) / (1.0 + df[order].astype(np.float64))) + 1.0).astype(np.float32)
        self.features_version_ = FEATURES_VERSION
        return self

    def get_feature_names_out(self, input_features=None):
        return np.asarray([f"{self.name}:{t}" for t in self.vocabulary_], dtype=object)

    def lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """The vocabulary as a :func:`kernels.lookup_table` (made once, not saved)."""
        table = self.__dict__.get("_lookup")
        if table is None:
            table = self.__dict__["_lookup"] = kernels.lookup_table(
                self.vocabulary_hashes_, np.arange(len(self.vocabulary_hashes_), dtype=np.int64))
        return table

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_lookup", None)
        return state

    def frequencies(self, batch: Batch, table: tuple[np.ndarray, np.ndarray] | None = None,
                    width: int | None = None) -> sp.csr_matrix:
        """The sublinear frequencies (1 + ln count) of the vocabulary's terms in each row
        (a CSR matrix without duplicates; its indices are not sorted). ``table`` (a
        :func:`kernels.lookup_table` of ``width`` columns) replaces the vocabulary's own."""
        slots, values = table or self.lookup()
        if self.kind == "words":  # n-grams counted as they are made (no term arrays)
            texts = batch.texts(self.name)
            low, high = self._ngram_range()
            indptr, indices, tf = kernels.count_grams(texts.ptr, texts.hashes, low, high, slots, values)
        else:
            ptr, terms, _, _ = self.terms(batch)
            indptr, indices, tf = kernels.count_terms(ptr, terms, slots, values)
        return sp.csr_matrix((tf, indices, indptr), shape=(batch.rows, width or len(self.vocabulary_hashes_)))

    def transform(self, X) -> sp.csr_matrix:
        tfidf = self.frequencies(batch_of(X))
        tfidf.data *= self.idf_[tfidf.indices]
        norms = np.sqrt(np.asarray(tfidf.multiply(tfidf).sum(axis=1)).ravel())
        norms[norms == 0] = 1.0
        tfidf.data /= np.repeat(norms, np.diff(tfidf.indptr))
        return tfidf.astype(np.float32)


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


class GroundingFeatures(BaseEstimator, TransformerMixin):
    """How well the output is supported by a reference text.

    The reference is column ``reference`` (default ``context``), or column ``fallback``
    (default ``input``) for rows where the reference is blank. Features per row (see
    :attr:`feature_names`): overlap of unigrams, content words (not stop words), bigrams
    and trigrams of the output with the reference, the reverse coverage of the reference's
    content words, counts and indicators of numbers, capitalized names and dates in the
    output absent from the reference, log lengths and their ratio, whether the output's
    tokens are copied from the reference in a row, and whether a reference was present.

    Per sentence of the output (long answers and summaries, where one unsupported sentence
    hides among supported ones): the least share of a sentence's content words found in
    the reference, how many sentences (and what share) have less than half of them there,
    the least and the mean share found in the sentence's best-matching reference sentence,
    the share of sentences holding a number, name or date that the reference lacks, and
    negation flips: sentences whose content words are mostly in one reference sentence but
    only one of the two is negated ("X is not Y" against "X is Y").
    """

    feature_names = (
        "unigram_overlap", "content_overlap", "bigram_overlap", "trigram_overlap",
        "novel_bigram_share", "novel_trigram_share", "reference_coverage",
        "novel_numbers", "has_novel_number", "novel_names", "has_novel_name", "novel_name_share",
        "novel_dates", "has_novel_date", "log_output_tokens", "log_reference_tokens",
        "length_ratio", "copied", "has_reference",
        # per sentence of the output (content words: its tokens that are not stop words)
        "least_sentence_support", "weak_sentences", "weak_sentence_share", "least_best_sentence_support",
        "mean_best_sentence_support", "novel_entity_sentence_share", "negation_flips", "has_negation_flip",
    )

    def __init__(self, *, reference: str = "context", fallback: str | None = "input"):
        self.reference = reference
        self.fallback = fallback

    def fit(self, X, y=None):
        return self

    def get_feature_names_out(self, input_features=None):
        return np.asarray([f"grounding_{n}" for n in self.feature_names], dtype=object)

    def transform(self, X) -> np.ndarray:
        return grounding_matrix(batch_of(X), reference=self.reference, fallback=self.fallback)


def grounding_matrix(batch: Batch, *, reference: str = "context", fallback: str | None = "input") -> np.ndarray:
    """The :attr:`GroundingFeatures.feature_names` of the output of each row of ``batch``
    against its reference (column ``reference``, or ``fallback`` where that is blank), as
    an (n, 27) float64 array."""
    return groundings(batch, [(reference, fallback)])[0]


def groundings(batch: Batch, references: list[tuple[str, str | None]]) -> list[np.ndarray]:
    """The grounding blocks of the output against each reference (a column and its
    fallback), worked out in one pass of the kernel (the output's side once) and kept in
    the batch for the next model that asks."""
    missing = list(dict.fromkeys(ref for ref in references if ("grounding", *ref) not in batch._cache))
    for start in range(0, len(missing), 2):  # the kernel takes one or two references
        pair = missing[start:start + 2]
        sides = []
        for name, fallback in pair:
            a, b, use_a, present = batch.reference(name, fallback)
            sides.append((a.arrays(), b.arrays(), use_a, present))
        block = kernels.grounding(batch.texts("output").arrays(), sides)
        width = len(GroundingFeatures.feature_names)
        for i, ref in enumerate(pair):
            batch._cache[("grounding", *ref)] = block[:, i * width:(i + 1) * width]
    return [batch._cache[("grounding", *ref)] for ref in references]


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
        return style_matrix(batch_of(X).texts(self.name))


def style_matrix(texts: Texts) -> np.ndarray:
    """The :attr:`StyleFeatures.feature_names` of each row of ``texts``, as an (n, 14)
    float64 array. Phrases match whole tokens, longest first, without overlaps."""
    return kernels.style(texts.data, texts.offsets, texts.ptr, texts.hashes, texts.starts, texts.flags,
                         *_phrases(HEDGES), *_phrases(REFUSALS))


# --------------------------------------------------------------------------- all at once


class LogFeatures(BaseEstimator, TransformerMixin):
    """Every feature of a log in one pass: each text column is tokenized once.

    Blocks, stacked as one CSR matrix (:class:`TermTfidf` for the bags of terms): word
    n-gram TF-IDF of the output and of the input; with ``novel_words`` the words of the
    output absent from its reference (the context, or the input for rows without one);
    with ``names`` the capitalized words of the output; grounding of the output in the
    reference (:func:`grounding_matrix`; with ``has_context`` and ``query_grounding`` a
    second block grounds it in the input); and the output's style (:func:`style_matrix`).
    The dense blocks are standardized with means and scales fitted on the training rows,
    then multiplied by ``dense_weight`` (their weight against the unit-norm TF-IDF rows
    under the classifier's L2 penalty).

    ``regimes`` gives traffic of different kinds its own weights for the dense features:
    the standardized dense block is repeated once per regime, zero outside the regime's
    rows, beside the shared block. The linear model then learns a global weight per
    feature plus a per-regime correction that its L2 penalty pulls towards zero, so a
    regime with few labels falls back to the global weights. ``"context"``: two regimes,
    rows with a context and rows without; ``"source"``: each value of the ``source`` column
    with at least ``min_regime_rows`` training rows, when there are two such sources or more
    (other and unknown sources, and frames without a ``source`` column, get the global
    weights only); ``None``: no regimes. With ``regime_words`` the output's word n-grams
    are repeated per regime too (a TF-IDF block of n-grams salted with the row's regime).
    """

    def __init__(self, *, has_context: bool = True, ngram_range: tuple[int, int] = (1, 2), min_df: int = 2,
                 max_features: int | None = 200_000, input_words: bool = True, novel_words: bool = True,
                 names: bool = True, query_grounding: bool = False, dense_weight: float = 1.0,
                 regimes: str | None = None, min_regime_rows: int = 200, regime_words: bool = False):
        self.has_context = has_context
        self.ngram_range = ngram_range
        self.min_df = min_df
        self.max_features = max_features
        self.input_words = input_words
        self.novel_words = novel_words
        self.names = names
        self.query_grounding = query_grounding
        self.dense_weight = dense_weight
        self.regimes = regimes
        self.min_regime_rows = min_regime_rows
        self.regime_words = regime_words

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
        if self.regime_words and self.regimes_:
            out.append(TermTfidf(name="output", kind="regime_words", regimes=self.regimes,
                                 regime_values=tuple(self.regimes_), **common))
        return out

    def references(self) -> list[tuple[str, str | None]]:
        """What the output is grounded in: (column, fallback for blank rows) per block."""
        if not self.has_context:
            return [("input", None)]
        return [("context", "input")] + ([("input", None)] if self.query_grounding else [])

    def dense(self, batch: Batch) -> np.ndarray:
        """The raw (unscaled) grounding and style features of each row."""
        blocks = groundings(batch, self.references())
        blocks.append(batch.cached(("style", "output"), lambda: style_matrix(batch.texts("output"))))
        return np.hstack(blocks)

    def dense_parts(self, batch: Batch) -> tuple[np.ndarray, np.ndarray]:
        """The standardized grounding and style features times ``dense_weight`` (float64)
        and each row's regime (an index into ``regimes_``, -1: none)."""
        dense = self.scaler_.transform(self.dense(batch)) * self.dense_weight
        return dense, regime_ids(batch, self.regimes, getattr(self, "regimes_", None) or [])

    def dense_block(self, batch: Batch) -> np.ndarray:
        """The dense columns of :meth:`transform` (float64): :meth:`dense_parts`' features,
        then the same once per regime, zero outside it."""
        dense, ids = self.dense_parts(batch)
        regimes = getattr(self, "regimes_", None) or []
        if not regimes:
            return dense
        return np.hstack([dense] + [dense * (ids == i)[:, None] for i in range(len(regimes))])

    def _fit_regimes(self, batch: Batch) -> list[str]:
        if self.regimes is None:
            return []
        if self.regimes == "context":
            return ["context", "no_context"]
        if self.regimes == "source":
            counts = text_series(batch.frame, "source").value_counts()
            names = counts.filter(counts.get_column("count") >= self.min_regime_rows).get_column("source")
            names = sorted(str(n) for n in names.to_list() if n)
            return names if len(names) >= 2 else []  # one source: the shared weights are its own
        raise ValueError(f"unknown regimes {self.regimes!r}: expected None, 'context' or 'source'")

    def fit(self, X, y=None):
        batch = batch_of(X)
        self.regimes_ = self._fit_regimes(batch)
        self.vectorizers_ = [v.fit(batch) for v in self._vectorizers()]
        self.scaler_ = StandardScaler().fit(self.dense(batch))
        self.features_version_ = FEATURES_VERSION
        return self

    def get_feature_names_out(self, input_features=None):
        names = [f"{v.kind}:{n}" for v in self.vectorizers_ for n in v.get_feature_names_out()]
        names += [f"grounding_{n}" for n in GroundingFeatures.feature_names]
        if self.has_context and self.query_grounding:
            names += [f"query_grounding_{n}" for n in GroundingFeatures.feature_names]
        names += [f"style_{n}" for n in StyleFeatures.feature_names]
        dense = names[len(names) - self.scaler_.n_features_in_:]
        for regime in getattr(self, "regimes_", None) or []:
            names += [f"{regime}|{n}" for n in dense]
        return np.asarray(names, dtype=object)

    def transform(self, X) -> sp.csr_matrix:
        batch = batch_of(X)
        blocks = [v.transform(batch) for v in self.vectorizers_]
        blocks.append(sp.csr_matrix(self.dense_block(batch).astype(np.float32)))
        return sp.hstack(blocks, format="csr")
