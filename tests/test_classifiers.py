"""Classifier features and pipelines: hand-made examples and a demo-data training run."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from sklearn.base import clone
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import GroupShuffleSplit

from flywheel import store
from flywheel.classifiers import build_pipeline
from flywheel.classifiers.features import GroundingFeatures, StyleFeatures, TextColumn, text_tfidf
from flywheel.demo import DemoSpec, generate
from flywheel.ingest.loader import ingest_day
from flywheel.settings import load

G = {name: i for i, name in enumerate(GroundingFeatures.feature_names)}
S = {name: i for i, name in enumerate(StyleFeatures.feature_names)}

CONTEXT = "The Eiffel Tower in Paris was completed in 1889 and is 330 metres tall."


def grounding(rows: list[dict], **params) -> np.ndarray:
    return GroundingFeatures(**params).fit_transform(pd.DataFrame(rows))


def test_copied_response_has_full_overlap_and_nothing_novel():
    x = grounding([{"input": "How tall is it?", "output": CONTEXT, "context": CONTEXT}])[0]
    for name in ("unigram_overlap", "content_overlap", "bigram_overlap", "trigram_overlap", "copied", "has_reference"):
        assert x[G[name]] == 1.0, name
    for name in ("novel_bigram_share", "novel_trigram_share", "has_novel_number", "has_novel_name", "has_novel_date"):
        assert x[G[name]] == 0.0, name
    assert x[G["length_ratio"]] == pytest.approx(0.0)


def test_novel_number_name_and_date_are_flagged():
    rows = [
        {"input": "q", "output": "The Eiffel Tower is 330 metres tall.", "context": CONTEXT},
        {"input": "q", "output": "The Eiffel Tower is 450 metres tall.", "context": CONTEXT},
        {"input": "q", "output": "It was designed by Gustave Eiffel in Paris.", "context": CONTEXT},
        {"input": "q", "output": "The tower was finished on March 31, 1887.", "context": CONTEXT},
    ]
    x = grounding(rows)
    assert x[0, G["has_novel_number"]] == 0.0 and x[1, G["has_novel_number"]] == 1.0
    assert x[2, G["has_novel_name"]] == 1.0  # "Gustave" is not in the context ("Eiffel", "Paris" are)
    assert x[0, G["has_novel_name"]] == 0.0 and x[1, G["has_novel_name"]] == 0.0
    assert x[3, G["has_novel_date"]] == 1.0 and x[0, G["has_novel_date"]] == 0.0
    assert x[1, G["unigram_overlap"]] < 1.0 and x[1, G["novel_bigram_share"]] > 0.0


SUMMARY_CONTEXT = ("The council approved the new library in 2019. Construction cost 12 million euros. "
                   "The mayor, Anna Berg, opened it in May. The old library will not be demolished.")


def test_sentence_support_flags_the_one_unsupported_sentence_of_a_summary():
    """A summary whose sentences are all in the document against one with a sentence the
    document never says: the least supported sentence and the weak-sentence count tell them
    apart although most of the words of both are supported."""
    rows = [
        {"input": "Summarize the passage.", "context": SUMMARY_CONTEXT,
         "output": "The council approved the new library in 2019. The mayor opened it in May."},
        {"input": "Summarize the passage.", "context": SUMMARY_CONTEXT,
         "output": "The council approved the new library in 2019. Critics called the design ugly and wasteful."},
    ]
    x = grounding(rows)
    assert x[0, G["least_sentence_support"]] == 1.0 and x[0, G["weak_sentences"]] == 0.0
    assert x[0, G["least_best_sentence_support"]] == 1.0 and x[0, G["mean_best_sentence_support"]] == 1.0
    # "critics called design ugly wasteful": only "design"... none of them is in the document
    assert x[1, G["least_sentence_support"]] == 0.0
    assert x[1, G["weak_sentences"]] == pytest.approx(np.log1p(1)) and x[1, G["weak_sentence_share"]] == 0.5
    assert x[1, G["mean_best_sentence_support"]] == pytest.approx(0.5)


def test_a_number_name_or_date_absent_from_the_document_flags_its_sentence():
    rows = [
        {"input": "Summarize the passage.", "context": SUMMARY_CONTEXT,
         "output": "The library opened in May. Construction cost 12 million euros."},
        {"input": "Summarize the passage.", "context": SUMMARY_CONTEXT,
         "output": "The library opened in May. Construction cost 15 million euros."},  # number
        {"input": "Summarize the passage.", "context": SUMMARY_CONTEXT,
         "output": "The library opened in May. The mayor, Anna Lind, was there. It cost a lot."},  # name
        {"input": "Summarize the passage.", "context": SUMMARY_CONTEXT,
         "output": "The council approved the library in 2017."},  # date
    ]
    x = grounding(rows)
    share = x[:, G["novel_entity_sentence_share"]]
    assert share[0] == 0.0
    assert share[1] == 0.5 and x[1, G["has_novel_number"]] == 1.0
    assert share[2] == pytest.approx(1 / 3) and x[2, G["has_novel_name"]] == 1.0
    assert share[3] == 1.0 and x[3, G["has_novel_date"]] == 1.0


def test_a_negated_sentence_against_its_supporting_sentence_is_a_negation_flip():
    rows = [
        {"input": "q", "context": SUMMARY_CONTEXT, "output": "The old library will be demolished."},  # flip
        {"input": "q", "context": SUMMARY_CONTEXT, "output": "The old library will not be demolished."},
        {"input": "q", "context": SUMMARY_CONTEXT, "output": "The council never approved the new library."},  # flip
        {"input": "q", "context": SUMMARY_CONTEXT, "output": "The council approved the new library."},
        # negated, but its words are not in the document: unsupported, no flip
        {"input": "q", "context": SUMMARY_CONTEXT, "output": "Parking spaces are not available downtown."},
    ]
    x = grounding(rows)
    assert list(x[:, G["has_negation_flip"]]) == [1.0, 0.0, 1.0, 0.0, 0.0]
    assert x[0, G["negation_flips"]] == pytest.approx(np.log1p(1))
    assert x[0, G["least_sentence_support"]] == 1.0  # every content word is supported: only the flip tells


def test_sentence_features_of_a_sentence_break_inside_a_number_and_of_no_text():
    """3.5 and e-mail-like dots do not end a sentence; empty outputs and references give
    finite values."""
    x = grounding([
        {"input": "q", "context": "The rate rose to 3.5 percent.", "output": "The rate rose to 3.5 percent."},
        {"input": "", "context": "", "output": ""},
        {"input": "q", "context": "", "output": "Yes. Yes! No?"},
    ])
    assert np.isfinite(x).all()
    assert x[0, G["least_sentence_support"]] == 1.0 and x[0, G["novel_entity_sentence_share"]] == 0.0
    assert x[1, G["least_sentence_support"]] == 1.0 and x[1, G["weak_sentences"]] == 0.0


def test_grounding_falls_back_to_input_without_context():
    with_none = [{"input": "Name a prime number below 10.", "output": "Seven is a prime number.", "context": None}]
    no_column = [{"input": "Name a prime number below 10.", "output": "Seven is a prime number."}]
    a, b = grounding(with_none), grounding(no_column)
    np.testing.assert_array_equal(a, b)
    assert a[0, G["has_reference"]] == 0.0
    assert 0.0 < a[0, G["unigram_overlap"]] < 1.0
    assert np.isfinite(grounding([{"input": None, "output": None}])).all()


def test_style_flags_hedges_and_refusals():
    x = StyleFeatures().fit_transform(pd.DataFrame({"output": [
        "I have no comment.", "It might possibly be about 5 km.", "Paris is the capital of France.", None]}))
    assert x[0, S["has_refusal"]] == 1.0 and x[0, S["starts_with_refusal"]] == 1.0
    assert x[1, S["has_hedge"]] == 1.0 and x[1, S["has_refusal"]] == 0.0
    assert x[2, S["has_hedge"]] == 0.0 and x[2, S["has_refusal"]] == 0.0
    assert x[3, S["empty"]] == 1.0


def test_text_column_join_and_tfidf():
    frame = pd.DataFrame({"input": ["a question", "another"], "output": ["an answer", None]})
    assert TextColumn(join=("input", "output")).transform(frame) == ["a question\nan answer", "another\n"]
    assert TextColumn(name="context", fallback="input").transform(frame) == ["a question", "another"]
    assert text_tfidf(name="output", min_df=1).fit_transform(frame).shape[0] == 2


def test_unknown_task_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown task"):
        build_pipeline("toxicity", has_context=False)


def _synthetic(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    cities = ["Paris", "Rome", "Berlin", "Madrid", "Vienna", "Lisbon"]
    rows = []
    for i in range(n):
        city, year, height = cities[i % len(cities)], int(rng.integers(1800, 2000)), int(rng.integers(50, 500))
        context = f"The tower of {city} was built in {year} and is {height} metres tall."
        bad = i % 2 == 1
        output = (f"The {city} tower is {height + int(rng.integers(5, 90))} metres tall, built by Count Orlov in {year + 7}."
                  if bad else f"The tower of {city} is {height} metres tall and was built in {year}.")
        rows.append({"input": f"Tell me about the tower in {city}.", "output": output,
                     "context": context if i % 7 else None, "label": int(bad), "group": i // 2})
    return pd.DataFrame(rows)


@pytest.mark.parametrize("has_context", [True, False])
def test_pipeline_separates_synthetic_classes(has_context):
    train, test = _synthetic(240, 1), _synthetic(120, 2)
    model = build_pipeline("hallucination", has_context=has_context).fit(train, train["label"])
    p = model.predict_proba(test)[:, 1]
    assert ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(test["label"], p) > 0.9
    # clone-able (cross-validation needs it) and deterministic
    again = clone(model).fit(train, train["label"]).predict_proba(test)[:, 1]
    np.testing.assert_allclose(p, again)


@pytest.fixture(scope="module")
def demo_logs(tmp_path_factory) -> pd.DataFrame:
    settings = load({"FLYWHEEL_HOME": str(tmp_path_factory.mktemp("demo") / "home")})
    summary = generate(settings.home, DemoSpec(days=1, rows_per_day=800, seed=1, start=dt.date(2026, 3, 1)))
    day = summary.days[0].day
    with store.connection(settings) as con:
        ingest_day(con, settings, day)
        return con.execute(
            "SELECT l.log_id, l.input, l.output, l.context, t.hallucinated::INT AS label "
            "FROM logs l JOIN read_parquet(?) t USING (log_id) ORDER BY l.log_id",
            [str(settings.home / "demo" / f"truth-{day}.parquet")],
        ).df()


def test_pipeline_learns_demo_hallucinations(demo_logs):
    frame = demo_logs
    assert len(frame) > 500 and 10 < frame["label"].sum() < len(frame) - 10
    train_idx, test_idx = next(GroupShuffleSplit(n_splits=1, test_size=0.3, random_state=0)
                               .split(frame, groups=frame["input"]))
    train, test = frame.iloc[train_idx], frame.iloc[test_idx]
    model = build_pipeline("hallucination", has_context=True).fit(train, train["label"])
    p = model.predict_proba(test)[:, 1]
    assert ((p >= 0) & (p <= 1)).all()
    assert roc_auc_score(test["label"], p) > 0.8


def test_term_tfidf_matches_scikit_learn_with_the_same_tokenizer():
    from sklearn.feature_extraction.text import TfidfVectorizer

    from flywheel.classifiers.features import TOKEN_PATTERN, TermTfidf

    docs = ["The cat sat on the mat", "the cat ate the rat", "a dog and a cat", "dog dog dog sat", "",
            "zebra unknown words", "one", "it's the cat's mat"]
    for ngram_range in ((1, 1), (1, 2), (1, 3)):
        ours = TermTfidf(min_df=1, ngram_range=ngram_range).fit(pd.DataFrame({"output": docs}))
        theirs = TfidfVectorizer(ngram_range=ngram_range, sublinear_tf=True, token_pattern=TOKEN_PATTERN).fit(docs)
        assert sorted(ours.vocabulary_) == sorted(theirs.vocabulary_)
        columns = [theirs.vocabulary_[t] for t in ours.vocabulary_]
        np.testing.assert_allclose(ours.transform(pd.DataFrame({"output": docs})).toarray(),
                                   theirs.transform(docs).toarray()[:, columns], atol=1e-6)


def test_log_features_same_for_pandas_and_polars_and_bags_of_novel_words_and_names():
    import polars as pl

    from flywheel.classifiers.features import LogFeatures

    frame = pd.DataFrame({
        "input": ["Who built the Eiffel Tower?", "How tall is Big Ben?", "Hi"],
        "output": ["Gustave Eiffel built it in 1889.", "Big Ben is 96 metres tall, says London.", "Hello there"],
        "context": [None, "Big Ben is 96 metres tall.", ""],
    })
    features = LogFeatures(has_context=True, min_df=1).fit(frame)
    a = features.transform(frame).toarray()
    b = features.transform(pl.from_pandas(frame)).toarray()
    np.testing.assert_allclose(a, b)
    by_kind = {v.kind: v.vocabulary_ for v in features.vectorizers_}
    assert {"gustave", "1889"} <= set(by_kind["novel"]) and "eiffel" not in by_kind["novel"]  # eiffel is in the question
    assert {"Gustave", "Eiffel", "London"} <= set(by_kind["names"])
    assert a.shape[1] == len(features.get_feature_names_out())


def test_grounding_overlaps_equal_a_python_set_reference():
    """The Polars hash/list-set computation of the overlap features equals plain Python
    sets of token n-grams (content words: not in scikit-learn's English stop words)."""
    from flywheel.classifiers.features import STOP_WORDS, ngrams, tokens

    rows = [
        {"input": "q", "output": "The tower is 330 metres tall, the tower is old.", "context": CONTEXT},
        {"input": "q", "output": "Paris Paris Paris was completed in 1889.", "context": CONTEXT + " " + CONTEXT},
        {"input": "Who built it?", "output": "It is what it is.", "context": None},
        {"input": "q", "output": "Completed on March 31, 1889.", "context": "It opened on 31 March 1889."},
        {"input": "q", "output": "", "context": "the of and"},
        {"input": "q", "output": "Gustave Eiffel's firm built it in 1887", "context": "Eiffel's firm built it."},
    ]
    x = grounding(rows)
    stop = set(STOP_WORDS)

    def share(part, whole, empty):
        return len(part & whole) / len(part) if part else empty

    for i, row in enumerate(rows):
        ref = row["context"] if (row["context"] or "").strip() else row["input"]
        out_t, ref_t = tokens(row["output"]), tokens(ref)
        o1, r1 = set(out_t), set(ref_t)
        oc, rc = {t for t in o1 if t not in stop}, {t for t in r1 if t not in stop}
        uni = share(o1, r1, 1.0)
        bi = share(ngrams(out_t, 2), ngrams(ref_t, 2), uni)
        tri = share(ngrams(out_t, 3), ngrams(ref_t, 3), bi)
        expected = {"unigram_overlap": uni, "content_overlap": share(oc, r1, 1.0), "bigram_overlap": bi,
                    "trigram_overlap": tri, "novel_trigram_share": 1.0 - tri,
                    "reference_coverage": share(rc, o1, 0.0)}
        for name, value in expected.items():
            assert x[i, G[name]] == pytest.approx(value), (i, name)
    # dates of the reference are read only for rows whose output has dates
    assert [x[i, G["has_novel_date"]] for i in (0, 1, 2, 4, 5)] == [0.0, 0.0, 0.0, 0.0, 1.0]


UNICODE_TEXTS = [
    "Don\u2019t panic: it\u2019s 42, isn\u2019t it?", "Caf\u00e9 na\u00efve \u00c9MILE stra\u00dfe", "rock'n'roll it's9 O'Brien's",
    "\u212aelvin \u0130stanbul \U0001F600 emoji\U0001F600end", "3.14 1,000.5 v2 a1b2", "", "   \n\t ", "'quoted' -dash- x' y'",
    "UPPER lower MiXeD 2024-05-01 12/31/2020",
]


def test_kernel_tokens_are_the_python_tokens_on_any_text():
    """The compiled tokenizer cuts and normalizes text as the documented pattern does
    (features.tokens): same tokens in the same order, each hashed as the token alone."""
    import polars as pl

    from flywheel.classifiers.features import Texts, _raw_hashes, tokens

    rng = np.random.default_rng(5)
    alphabet = list("abcXYZ019 '\u2019-.,!?\n\u00e9\u00df") + ["\u212a", "\U0001F600"]
    texts = UNICODE_TEXTS + ["".join(rng.choice(alphabet, size=int(rng.integers(0, 40)))) for _ in range(300)]
    kernel = Texts(pl.Series(texts, dtype=pl.String))
    for i, text in enumerate(texts):
        expected = tokens(text)
        got = kernel.hashes[kernel.ptr[i]:kernel.ptr[i + 1]]
        assert len(got) == len(expected), (text, expected)
        assert [int(h) for h in got] == [int(x[0]) for x in _raw_hashes(expected)], text
    assert tokens("Don\u2019t STOP") == ["don't", "stop"]
    # texts of one-letter words hold more tokens than the first guess of room: a second pass
    short = Texts(pl.Series(["a b c d e f g h i j"] * 40 + ["x"], dtype=pl.String))
    assert np.diff(short.ptr).tolist() == [10] * 40 + [1]


def test_numbers_names_and_dates_as_documented():
    rows = [
        {"input": "q", "output": "It cost 1,000.5 euros.", "context": "The price was 1000.5 euros."},
        {"input": "q", "output": "Paris is big. Berlin too.", "context": "Cities."},
        {"input": "q", "output": "He met Anna in Rome.", "context": "He met anna in rome."},
        {"input": "q", "output": "Due 12/31/2020.", "context": "Due on 12/31/2020 at noon."},
        {"input": "q", "output": "On the 5th March.", "context": "On March 5."},
        {"input": "q", "output": "In 1999 and May 3.", "context": "In 1999 and may 3."},
    ]
    x = grounding(rows)
    assert x[0, G["has_novel_number"]] == 0.0  # commas between digits are dropped
    assert x[1, G["has_novel_name"]] == 0.0 and x[1, G["novel_name_share"]] == 0.0  # both start a sentence
    assert x[2, G["has_novel_name"]] == 0.0  # names match the reference's words in any case
    assert x[3, G["has_novel_date"]] == 0.0 and x[4, G["has_novel_date"]] == 1.0  # "5th march" is not "march 5"
    assert x[5, G["has_novel_date"]] == 0.0


def test_features_of_a_batch_do_not_depend_on_its_slicing():
    """Rows scored in chunks (Arrow slices with offsets) get the features they get whole."""
    import polars as pl

    from flywheel.classifiers.features import LogFeatures

    frame = pl.from_pandas(_synthetic(60, 4).drop(columns=["label", "group"]))
    features = LogFeatures(has_context=True, min_df=1).fit(frame)
    whole = features.transform(frame).toarray()
    parts = np.vstack([features.transform(frame.slice(a, 17)).toarray() for a in range(0, 60, 17)])
    np.testing.assert_allclose(parts, whole, rtol=0, atol=1e-6)
