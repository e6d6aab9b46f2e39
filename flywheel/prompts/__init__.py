"""Prompts: the registry of prompt versions, few-shot refresh from approved logs, and the
evaluation that promotes a candidate prompt only when it is significantly better.

See :mod:`flywheel.prompts.registry` (where prompts live, versions, lineage),
:mod:`flywheel.prompts.few_shot` (approved logs, MMR, candidates),
:mod:`flywheel.prompts.eval_set` (the fixed evaluation sets),
:mod:`flywheel.prompts.assertions` (the assertions file) and
:mod:`flywheel.prompts.evaluate` (replay, scores, paired tests, promotion).
"""

from flywheel.prompts.assertions import load_assertions
from flywheel.prompts.eval_set import EvalSet, evaluation_set
from flywheel.prompts.evaluate import EvalReport, Evaluation, evaluate_candidates, replay_messages, written_out_losers
from flywheel.prompts.few_shot import (
    CandidateReport,
    FewShotReport,
    approved_logs,
    mmr_select,
    refresh_few_shot,
    render_candidates,
)
from flywheel.prompts.registry import (
    FEW_SHOT_PLACE,
    Example,
    PromptError,
    PromptVersion,
    champion,
    load_templates,
    promote,
    register,
    render,
    version_of,
    write_template,
)

__all__ = [
    "FEW_SHOT_PLACE",
    "CandidateReport",
    "EvalReport",
    "EvalSet",
    "Evaluation",
    "Example",
    "FewShotReport",
    "PromptError",
    "PromptVersion",
    "approved_logs",
    "champion",
    "evaluate_candidates",
    "evaluation_set",
    "load_assertions",
    "load_templates",
    "mmr_select",
    "promote",
    "refresh_few_shot",
    "register",
    "render",
    "render_candidates",
    "replay_messages",
    "version_of",
    "write_template",
]
