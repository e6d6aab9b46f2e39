"""One run of the judges: refresh prompts, judge the held-out set and recent logs, align.

:func:`run_judges` (steps 1-3), for every criterion (built in and from ``$FLYWHEEL_HOME/judges``):

1. draws the held-out set and fresh few-shot examples from the consensus
   (:mod:`flywheel.judges.selection`) and records the resulting prompt version in
   `judge_prompts`;
2. judges the held-out items this version has not judged yet (all criteria first, so
   that a tight budget is spent on alignment before anything else);
3. judges up to ``FLYWHEEL_JUDGE_SAMPLE_SIZE`` recent unlabelled logs per criterion, so
   that judge and classifier can disagree on new traffic (the annotation queue picks
   those items up once the version is trusted);
4. (:func:`align_judges`) measures each version's agreement with people and writes
   `judge_alignment` (:mod:`flywheel.judges.alignment`).

Re-running with the same data asks nothing new: judged items are skipped and every
request is cached in `llm_calls`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import duckdb

from flywheel.judges.alignment import Alignment, measure, write_alignment
from flywheel.judges.criteria import load_criteria
from flywheel.judges.judge import ask, current_prompt, save_prompt, write_verdicts
from flywheel.judges.prompt import JudgePrompt
from flywheel.judges.selection import Item, holdout_items, judged_ids, recent_items
from flywheel.llm import LLMClient
from flywheel.settings import Settings


@dataclass
class JudgeRunReport:
    """What :func:`run_judges` did; plain values for asset metadata."""

    alignments: list[Alignment] = field(default_factory=list)
    judged: dict[str, dict[str, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    usage: dict = field(default_factory=dict)

    @property
    def verdicts_written(self) -> int:
        return sum(c.get("written", 0) for c in self.judged.values())

    def markdown(self) -> str:
        """Return the alignment table as markdown."""
        def num(value, digits=3):
            return "–" if value is None else f"{value:.{digits}f}"

        lines = [
            "| criterion | prompt version | n | pos / neg | kappa | TPR (tp/pos) | TNR (tn/neg) | parse failures | trusted |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for a in self.alignments:
            lines.append(
                f"| {a.criterion} | `{a.prompt_version}` | {a.n} | {a.n_pos} / {a.n_neg} | {num(a.kappa)} "
                f"| {num(a.tpr, 2)} ({a.tp}/{a.n_pos}) | {num(a.tnr, 2)} ({a.tn}/{a.n_neg}) "
                f"| {a.parse_failures} | {'yes' if a.trusted else 'no: ' + a.why} |"
            )
        return "\n".join(lines)

    def judged_markdown(self) -> str:
        """Return, per criterion, the prompt version and what was judged, as markdown."""
        keys = ["holdout_ok", "holdout_parse_error", "holdout_error", "holdout_budget",
                "recent_ok", "recent_parse_error", "recent_error", "recent_budget"]
        lines = [
            "| criterion | prompt version | held out | few-shot | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
            "|---|---|---:|---:|" + "---:|" * len(keys),
        ]
        for name, counts in self.judged.items():
            cells = " | ".join(str(counts.get(k, 0)) for k in keys)
            lines.append(f"| {name} | `{counts.get('version', '')}` | {counts.get('holdout', 0)} "
                         f"| {counts.get('few_shot', 0)} | {cells} |")
        return "\n".join(lines)

    def summary(self) -> dict:
        return {
            "trusted": sorted(a.criterion for a in self.alignments if a.trusted),
            "not_trusted": sorted(a.criterion for a in self.alignments if not a.trusted),
            "judged": self.judged,
            "llm_usage": self.usage,
            "problems": self.problems,
        }


def _count(verdicts) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in verdicts:
        counts[v.status] = counts.get(v.status, 0) + 1
    return counts


def _add(total: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value


def _plans(con, settings: Settings, *, model: str, loaded) -> list[tuple[JudgePrompt, list[Item]]]:
    plans = []
    for criterion in loaded.criteria.values():
        prompt = current_prompt(con, settings, criterion, model=model)
        holdout = holdout_items(con, label=criterion.label, size=settings.judge_holdout_size)
        plans.append((prompt, holdout))
    return plans


def run_judges(client: LLMClient, con: duckdb.DuckDBPyConnection, settings: Settings) -> JudgeRunReport:
    """Judge the held-out sets and recent logs with today's prompts; return what happened.

    Writes `judge_prompts` and `judge_verdicts` (steps 1-3 of the module doc).
    """
    loaded = load_criteria(settings)
    report = JudgeRunReport(problems=list(loaded.problems))
    plans = _plans(con, settings, model=client.model, loaded=loaded)
    for prompt, holdout in plans:
        save_prompt(con, prompt)
        report.judged[prompt.criterion.name] = {
            "version": prompt.version, "holdout": len(holdout), "few_shot": len(prompt.example_ids),
        }

    for prompt, holdout in plans:
        name = prompt.criterion.name
        done = judged_ids(con, criterion=name, prompt_version=prompt.version, log_ids=[i.log_id for i in holdout])
        todo = [i for i in holdout if i.log_id not in done]
        verdicts = ask(client, prompt, todo, purpose=f"judge:{name}:holdout")
        written = write_verdicts(con, criterion=name, verdicts=verdicts, holdout=True)
        _add(report.judged[name], {**{f"holdout_{k}": v for k, v in _count(verdicts).items()}, "written": written})

    for prompt, holdout in plans:
        name = prompt.criterion.name
        sample = recent_items(
            con, criterion=name, label=prompt.criterion.label, prompt_version=prompt.version,
            limit=settings.judge_sample_size, exclude={i.log_id for i in holdout},
        )
        verdicts = ask(client, prompt, sample, purpose=f"judge:{name}:recent")
        written = write_verdicts(con, criterion=name, verdicts=verdicts, holdout=False)
        _add(report.judged[name], {**{f"recent_{k}": v for k, v in _count(verdicts).items()}, "written": written})
    report.usage = client.usage()
    return report


def align_judges(con: duckdb.DuckDBPyConnection, settings: Settings, *, model: str) -> JudgeRunReport:
    """Measure today's prompt version of every criterion against people; return the rows.

    Writes one `judge_alignment` row per criterion (step 4 of the module doc). ``model``
    is the model the verdicts were asked of (part of the prompt version).
    """
    loaded = load_criteria(settings)
    report = JudgeRunReport(problems=list(loaded.problems))
    for prompt, holdout in _plans(con, settings, model=model, loaded=loaded):
        alignment = measure(
            con, settings, criterion=prompt.criterion.name, prompt_version=prompt.version,
            holdout=holdout, few_shot_ids=prompt.example_ids,
        )
        write_alignment(con, alignment)
        report.alignments.append(alignment)
    return report
