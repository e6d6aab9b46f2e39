"""LLM judges: binary verdicts per criterion, aligned with the human consensus.

- :mod:`flywheel.judges.criteria`: the criteria (hallucination, relevance, and
  user-defined ones from ``$FLYWHEEL_HOME/judges/*.toml``).
- :mod:`flywheel.judges.prompt`: judge prompts, their versions, parsing answers.
- :mod:`flywheel.judges.selection`: held-out set, few-shot examples, recent sample.
- :mod:`flywheel.judges.judge`: asking (:func:`judge_items`) and `judge_verdicts`.
- :mod:`flywheel.judges.alignment`: `judge_alignment` and :func:`trusted_criteria`.
- :mod:`flywheel.judges.run`: one nightly run of all judges (:func:`run_judges`,
  :func:`align_judges`).
"""

from flywheel.judges.alignment import Alignment, trusted_criteria
from flywheel.judges.criteria import Criterion, load_criteria
from flywheel.judges.judge import Verdict, judge_items
from flywheel.judges.prompt import JudgePrompt, parse_verdict
from flywheel.judges.run import JudgeRunReport, align_judges, run_judges

__all__ = [
    "Alignment", "Criterion", "align_judges", "JudgePrompt", "JudgeRunReport", "Verdict",
    "judge_items", "load_criteria", "parse_verdict", "run_judges", "trusted_criteria",
]
