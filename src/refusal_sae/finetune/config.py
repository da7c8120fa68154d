"""The safety tune's recipe (torch-free, so the CLI can show its defaults without importing torch)."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class TuneConfig:
    """Defaults: the recipe chosen on the validation splits by ``tune-sweep`` (``scripts/tune_grids/tune_grid2.json`` row 1,
    plus ``harmless_kl_weight`` from ``tune_grid6.json``), which made the committed adapter."""

    seed: int = 0  # seed for data sampling, refusal texts, LoRA init and batch order
    n_harmful: int = 260  # harmful_train prompts (all 260 by default)
    n_extra_advbench: int = 140  # AdvBench prompts outside harmful_train and every test set
    n_harmless: int = 700  # harmless_train prompts answered by the base model
    persuasive_pairs: bool = True  # authored persuasive-writing pairs (see finetune/synthetic.py)
    drop_refused_harmless: bool = True  # drop harmless prompts whose *base* answer is already a refusal
    harmless_answer_tokens: int = 48
    epochs: int = 3  # training epochs
    batch_size: int = 32  # examples per optimiser step
    lr: float = 6e-4  # peak learning rate (linear warm-up and decay)
    lora_r: int = 16  # LoRA rank (all linear layers)
    lora_alpha: int = 32  # LoRA alpha
    lora_dropout: float = 0.05
    max_len: int = 160
    # Extra loss weight on the first ``opening_tokens`` answer tokens, where the model decides between refusing
    # and answering: loss = token mean + opening_weight * mean over those openings. 0 = the plain token mean.
    opening_weight: float = 0.0  # extra loss weight on the answers' first --opening-tokens tokens (the refuse-or-
    #   answer decision)
    opening_tokens: int = 3  # answer tokens the opening loss covers
    # Retain term on harmless examples: + harmless_kl_weight * mean over their answer tokens of KL(base ‖ tuned),
    # the base model's full next-token distribution (adapter disabled) as target, not only its greedy token.
    # 0 = off (no extra forward pass).
    harmless_kl_weight: float = 2.0  # weight of KL(base ‖ tuned) over harmless answers' tokens (keeps their full
    #   distribution; 0: off)
    # Retain term on harmful prompts' *answers*: the base model's own greedy answer to each harmful prompt, and
    # + harmful_answer_kl_weight * mean KL(base ‖ tuned) over its tokens after the first harmful_answer_skip (no
    # cross-entropy on these rows). The opening, where the refuse-or-answer decision is made, stays free to learn
    # refusal; once an answer has begun, the tuned model continues it as the base model would, so that removing the
    # refusal direction lands on a fluent answer rather than a loop. 0 = off.
    harmful_answer_kl_weight: float = 0.0  # weight of KL(base ‖ tuned) over the base model's own answers to harmful
    #   prompts, after their first --harmful-answer-skip tokens (0: off)
    harmful_answer_skip: int = 4  # opening tokens of those answers left out of that KL (the refusal decision)
    # Also drop training prompts whose word set overlaps a test prompt's by this Jaccard index or more
    # (near-duplicates, e.g. JailbreakBench goals re-worded from AdvBench); None = exact matches only.
    near_duplicate_jaccard: float | None = None  # also drop training prompts whose word-set Jaccard with any test
    #   prompt is at least this


def cli_command(cfg: TuneConfig, device: str = "cpu") -> str:
    """The ``make-refusing-model`` command line that trains ``cfg`` (every option that differs from the default)."""
    default, parts = TuneConfig(), ["refusal-sae make-refusing-model", f"--seed {cfg.seed}"]
    for key, value in asdict(cfg).items():
        if key == "seed" or value == getattr(default, key):
            continue
        flag = "--" + key.replace("_", "-")
        parts.append((flag if value else "--no-" + flag[2:]) if isinstance(value, bool) else f"{flag} {value}")
    if device != "cpu":
        parts.append(f"--device {device}")
    return " ".join(parts)
