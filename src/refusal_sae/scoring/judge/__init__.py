"""Three-way judgement of completions: refused, degenerate, or complied.

Judges are swappable through a small registry (:func:`get_judge`, :func:`register_judge`,
:func:`judge_names`); a spec is ``NAME`` or ``NAME:MODEL``:

- ``default`` / ``tuned[:PARAMS]``: all-MiniLM-L6-v2 reading (instruction, answer) with its top layers fine-tuned
  and a three-way head, fitted on real chat models' human-labelled answers and the project's own labels
  (:class:`TunedJudge`; agreement with people: ``refusal-sae judge-eval``, docs/judge.md);
- ``learned[:PARAMS]``: the previous default, a logistic regression over refusal, deflection, degeneracy, relevance
  and fluency features fitted on the embedded model's 64-token answers only (:class:`LearnedJudge`);
- ``heuristic``: refusal phrases, degeneracy rules and embedding relevance (:class:`HeuristicJudge`);
- ``substring``: the same rules without the embedding model (:class:`SubstringJudge`);
- ``harmbench[:MODEL]``: HarmBench's classifier ``cais/HarmBench-Llama-2-13b-cls`` (:class:`HarmBenchJudge`);
- ``harmbench-mistral[:MODEL]``: HarmBench's validation classifier ``cais/HarmBench-Mistral-7b-val-cls``;
- ``llamaguard[:MODEL]``: ``meta-llama/Llama-Guard-3-8B`` moderating the response (:class:`LlamaGuardJudge`);
- ``classifier:MODEL``: any Yes/No classifier in HarmBench's Llama-2 prompt format (:class:`ClassifierJudge`).

``MODEL`` is a local HF directory or a hub id. The classifier judges load their model on first use and
need a GPU in practice (13B / 7B / 8B parameters); the label mappings are in
:mod:`refusal_sae.scoring.judge.classifiers` and :mod:`refusal_sae.scoring.judge.llamaguard`.
"""

from refusal_sae.scoring.judge.base import (
    COMPLIED,
    DEGENERATE,
    JUDGEMENTS,
    REFUSED,
    Judge,
    Judgement,
    get_judge,
    judge_names,
    judge_specs,
    loads_a_model,
    register_judge,
)
from refusal_sae.scoring.judge.classifiers import (
    HARMBENCH_LLAMA,
    HARMBENCH_MISTRAL,
    ClassifierJudge,
    HarmBenchJudge,
    HarmBenchMistralJudge,
    HFClassifierJudge,
)
from refusal_sae.scoring.judge.heuristic import (
    REFUSAL_PHRASES,
    HeuristicJudge,
    RelevanceModel,
    SubstringJudge,
    default_relevance_model,
    is_refusal,
    repetition_ratio,
)
from refusal_sae.scoring.judge.learned import FeatureExtractor, JudgeParams, LearnedJudge
from refusal_sae.scoring.judge.llamaguard import LLAMA_GUARD_3_8B, LlamaGuardJudge, parse_llamaguard
from refusal_sae.scoring.judge.prompts import HARMBENCH_PROMPT
from refusal_sae.scoring.judge.tuned import TunedJudge

register_judge("default", TunedJudge)
register_judge("tuned", TunedJudge, arg="optional")
register_judge("learned", LearnedJudge, arg="optional")
register_judge("heuristic", HeuristicJudge)
register_judge("substring", SubstringJudge)
register_judge("classifier", ClassifierJudge, arg="required")
register_judge("harmbench", HarmBenchJudge, arg="optional")
register_judge("harmbench-mistral", HarmBenchMistralJudge, arg="optional")
register_judge("llamaguard", LlamaGuardJudge, arg="optional")

__all__ = [
    "COMPLIED", "ClassifierJudge", "DEGENERATE", "FeatureExtractor", "HARMBENCH_LLAMA", "HARMBENCH_MISTRAL",
    "HARMBENCH_PROMPT", "HFClassifierJudge", "HarmBenchJudge", "HarmBenchMistralJudge", "HeuristicJudge",
    "JUDGEMENTS", "Judge", "JudgeParams", "Judgement", "LLAMA_GUARD_3_8B", "LearnedJudge", "LlamaGuardJudge",
    "REFUSAL_PHRASES", "REFUSED", "RelevanceModel", "SubstringJudge", "TunedJudge", "default_relevance_model", "get_judge",
    "is_refusal", "judge_names", "judge_specs", "loads_a_model", "parse_llamaguard", "register_judge",
    "repetition_ratio",
]
