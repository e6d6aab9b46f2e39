"""The application protocol of the quality benchmark (benchmarks/quality_app.py): the
shared data sets landed as one app's logs and labels."""

from __future__ import annotations

import numpy as np

from benchmarks.quality_app import INSTRUCTION, SOURCES, app_frame, held_out, land
from flywheel import store
from flywheel.annotations import import_inbox
from flywheel.ingest.loader import ingest_day
from tests.conftest import rows, shared_data


def test_app_frame_has_five_sources_and_holds_back_whole_groups():
    frame = app_frame(shared_data("."))
    assert set(frame["source"]) == set(SOURCES)
    assert frame["log_id"].is_unique
    instruct = frame[frame["source"] == "begin_instruct"]
    assert (instruct["input"] == INSTRUCTION).all()  # one constant instruction, the turn in the context
    begin = frame[frame["source"] == "begin_wow"]
    assert all(turn in context for turn, context in zip(begin["input"], instruct["context"]))
    held = held_out(frame["group"])
    assert 0.25 < held.mean() < 0.35
    sides = frame.assign(held=held).groupby("group")["held"].nunique()
    assert sides.max() == 1  # a query, question or passage sits on one side only
    # both BEGIN sources hold back the same passages (no twin of a test row in training)
    both = frame.assign(held=held)
    by_passage = both[both["source"].str.startswith("begin")].groupby("group")["held"].nunique()
    assert by_passage.max() == 1
    assert not np.array_equal(held, held_out(frame["group"], seed=1))  # the seed moves the split


def test_landed_app_is_ingested_as_five_sources_with_the_labels_of_the_kept_rows(settings):
    frame = app_frame(shared_data("."))
    # a small slice: the first 30 groups of each source
    first = frame.groupby("source")["group"].transform(lambda g: g.isin(g.drop_duplicates().head(30)))
    small = frame[first.to_numpy()].reset_index(drop=True)
    held = held_out(small["group"])
    assert held.any() and not held.all()
    landed = land(settings.home, small, held)
    assert landed == {"logs": len(small), "labels": int((~held).sum()), "held_out": int(held.sum())}
    with store.connection(settings) as con:
        ingest_day(con, settings, "2025-06-02")
        import_inbox(con, settings.replace(inbox_settle_seconds=0))
    sources = dict(rows(settings, "SELECT source, count(*) FROM logs GROUP BY source"))
    expected = small[small["output"].str.strip() != ""].groupby("source").size().to_dict()  # blank outputs: rejected
    assert sources == expected and len(sources) == 5
    labelled = {log_id for (log_id,) in rows(settings, "SELECT log_id FROM annotations")}
    assert labelled and labelled <= set(small.loc[~held, "log_id"])
    assert not labelled & set(small.loc[held, "log_id"])
    tasks = dict(rows(settings, "SELECT a.label, count(DISTINCT l.source) FROM annotations a JOIN logs l USING (log_id) "
                                "GROUP BY a.label"))
    assert tasks == {"hallucination": 4, "relevance": 1}
