"""Feature transformers for the hallucination and relevance classifiers.

Every transformer takes a pandas DataFrame with the columns ``input``, ``output`` and
(optionally) ``context``; a missing column or a missing value counts as empty text.
They are small scikit-learn estimators with keyword-only parameters so that a pipeline
can be assembled, cloned and cross-validated like any other.

- :class:`TextColumn` selects one text column as a list of strings (feed it to a
  ``TfidfVectorizer``; :func:`text_tfidf` builds that pair).
- :class:`GroundingFeatures` measures how much of the output is supported by a reference
  text (the context, or the input when there is no context): token, bigram and trigram
  overlap, novel n-gram shares, numbers / capitalized names / dates in the output that the
  reference lacks, and length ratios.
- :class:`StyleFeatures` flags hedging, refusal and "no comment" phrases, questions back
  to the user, and lengths.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS, TfidfVectorizer
from sklearn.pipeline import Pipeline

TEXT_COLUMNS = ("input", "output", "context")

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?")
_NUMBER = re.compile(r"(?<![\w.])\d+(?:[.,]\d+)*(?![\w])")
_CAPITALIZED = re.compile(r"\b[A-Z][a-zA-Z]+(?:[-'][A-Za-z]+)?\b")
_MONTHS = ("january february march april may june july august september october november december "
           "jan feb mar apr jun jul aug sep sept oct nov dec").split()
_DATE = re.compile(
    r"\b(?:1[0-9]{3}|20[0-9]{2})\b"                       # years
    r"|\b\d{1,2}[/-]\d{1,2}[/-]\d{2,4}\b"                  # 12/31/2020
    r"|\b(?:" + "|".join(_MONTHS) + r")\.?\s+\d{1,2}\b"    # March 5
    r"|\b\d{1,2}(?:st|nd|rd|th)?\s+(?:" + "|".join(_MONTHS) + r")\b",
    re.IGNORECASE,
)
_SENTENCE_START = re.compile(r"(?:^|[.!?:;\n]\s*|[\"'(]\s*)$")

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
FIRST_PERSON = ("i ", "i'm", "i've", "i'd", "me ", "my ", "we ", "our ")


def column(frame: pd.DataFrame, name: str) -> list[str]:
    """Return column ``name`` of ``frame`` as a list of strings ("" for absent values)."""
    if name not in frame.columns:
        return [""] * len(frame)
    return ["" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in frame[name].tolist()]


def tokens(text: str) -> list[str]:
    """Lower-cased word tokens of ``text``."""
    return _TOKEN.findall(text.lower())


def ngrams(toks: list[str], n: int) -> set[tuple[str, ...]]:
    """The set of ``n``-grams of a token list."""
    return {tuple(toks[i:i + n]) for i in range(len(toks) - n + 1)}


def _share(part: set, whole: set, empty: float) -> float:
    return len(part & whole) / len(part) if part else empty


def _numbers(text: str) -> set[str]:
    return {m.replace(",", "") for m in _NUMBER.findall(text)}


def _names(text: str) -> set[str]:
    """Capitalized words that do not start a sentence (a cheap proper-name detector)."""
    out = set()
    for m in _CAPITALIZED.finditer(text):
        before = text[max(0, m.start() - 3):m.start()]
        if m.start() == 0 or _SENTENCE_START.search(before):
            continue
        out.add(m.group(0).lower())
    return out


def _dates(text: str) -> set[str]:
    return {re.sub(r"\W+", " ", m.lower()).strip() for m in _DATE.findall(text)}


def _count_phrases(text: str, phrases: tuple[str, ...]) -> int:
    return sum(text.count(p) for p in phrases)


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
        frame = _frame(X)
        if self.join:
            cols = [column(frame, c) for c in self.join]
            return ["\n".join(parts) for parts in zip(*cols)]
        values = column(frame, self.name)
        if self.fallback:
            other = column(frame, self.fallback)
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


class GroundingFeatures(BaseEstimator, TransformerMixin):
    """How well the output is supported by a reference text.

    The reference is column ``reference`` (default ``context``), or column ``fallback``
    (default ``input``) for rows where the reference is empty. Features per row (see
    :attr:`feature_names`): overlap of unigrams (content words), bigrams and trigrams of
    the output with the reference, the reverse coverage of the reference, counts and
    indicators of numbers, capitalized names and dates in the output absent from the
    reference, log lengths and their ratio, and whether a reference was present at all.
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
        frame = _frame(X)
        outputs = column(frame, "output")
        refs = column(frame, self.reference)
        if self.fallback:
            other = column(frame, self.fallback)
            present = [bool(r.strip()) for r in refs]
            refs = [r if p else o for r, p, o in zip(refs, present, other)]
        else:
            present = [bool(r.strip()) for r in refs]
        rows = [self._row(o, r, p) for o, r, p in zip(outputs, refs, present)]
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(self.feature_names))

    @staticmethod
    def _row(output: str, reference: str, present: bool) -> list[float]:
        out_t, ref_t = tokens(output), tokens(reference)
        out_1, ref_1 = set(out_t), set(ref_t)
        out_c = out_1 - ENGLISH_STOP_WORDS
        out_2, ref_2 = ngrams(out_t, 2), ngrams(ref_t, 2)
        out_3, ref_3 = ngrams(out_t, 3), ngrams(ref_t, 3)
        uni = _share(out_1, ref_1, 1.0)
        content = _share(out_c, ref_1, 1.0)
        bi = _share(out_2, ref_2, uni)
        tri = _share(out_3, ref_3, bi)
        coverage = _share(ref_1 - ENGLISH_STOP_WORDS, out_1, 0.0)
        ref_lower = reference.lower()
        ref_numbers = _numbers(reference)
        novel_numbers = len(_numbers(output) - ref_numbers)
        names = _names(output)
        novel_names = len({n for n in names if n not in ref_1})
        novel_dates = len({d for d in _dates(output) if d not in ref_lower})
        n_out, n_ref = len(out_t), len(ref_t)
        copied = float(bool(output.strip()) and output.strip().lower() in ref_lower)
        return [
            uni, content, bi, tri, 1.0 - bi, 1.0 - tri, coverage,
            math.log1p(novel_numbers), float(novel_numbers > 0),
            math.log1p(novel_names), float(novel_names > 0), novel_names / len(names) if names else 0.0,
            math.log1p(novel_dates), float(novel_dates > 0),
            math.log1p(n_out), math.log1p(n_ref), math.log((n_out + 1) / (n_ref + 1)),
            copied, float(present),
        ]


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
        rows = [self._row(text) for text in column(_frame(X), self.name)]
        return np.asarray(rows, dtype=np.float64).reshape(len(rows), len(self.feature_names))

    @staticmethod
    def _row(text: str) -> list[float]:
        low = " " + re.sub(r"\s+", " ", text.lower().replace("\u2019", "'")) + " "
        toks = tokens(text)
        hedges = _count_phrases(low, tuple(f" {h} " for h in HEDGES))
        refusals = _count_phrases(low, REFUSALS)
        head = low[:40]
        n_chars = len(text)
        return [
            math.log1p(hedges), float(hedges > 0), math.log1p(refusals), float(refusals > 0),
            float(any(head.startswith(" " + r) for r in REFUSALS)),
            math.log1p(_count_phrases(low, tuple(" " + f for f in FIRST_PERSON))),
            math.log1p(text.count("?")),
            math.log1p(sum(t in ("not", "no", "never", "none", "n't", "cannot") or t.endswith("n't") for t in toks)),
            math.log1p(n_chars), math.log1p(len(toks)),
            math.log1p(len(re.findall(r"[.!?]+(?:\s|$)", text))), float(not text.strip()),
            sum(c.isdigit() for c in text) / n_chars if n_chars else 0.0,
            sum(c.isupper() for c in text) / n_chars if n_chars else 0.0,
        ]


def _frame(X) -> pd.DataFrame:
    if isinstance(X, pd.DataFrame):
        return X
    if isinstance(X, dict):
        return pd.DataFrame(X)
    return pd.DataFrame(list(X))
