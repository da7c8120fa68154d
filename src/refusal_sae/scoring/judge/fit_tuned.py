"""Fit the default (tuned) judge: the encoder's lower layers run once over every training pair, then its top
``tuned_layers`` layers and a three-way head are trained on those states (AdamW, one-cycle schedule, weighted
cross-entropy), so a fit costs one frozen pass plus a few epochs over two layers: ≈ 15 min on 2 CPU cores.

Training data: the public sets' ``train`` split by instruction (binary labels) and the project's ``dev`` labels
(three-way, weighted by ``project_weight``); never a ``val`` or ``test`` split. Running the top layers by hand
(``BertLayer`` modules on cached states) is what lets the fit skip the lower layers; the shipped judge runs the whole
encoder with the tuned weights in place (:class:`~refusal_sae.scoring.judge.tuned.TunedJudge`), and a test checks
the two paths agree.
"""

from __future__ import annotations

import copy
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from refusal_sae.errors import DataError
from refusal_sae.runs import config_hash
from refusal_sae.scoring.judge.base import JUDGEMENTS
from refusal_sae.scoring.judge.encoder import AnswerEncoder, pool
from refusal_sae.scoring.judge.tuned import TunedMeta, weights_path


@dataclass(frozen=True)
class TunedFitConfig:
    tuned_layers: int = 2  # the encoder's top layers that are trained
    epochs: int = 3
    batch_size: int = 32
    lr: float = 5e-5  # peak learning rate of the tuned layers
    head_lr: float = 1e-3  # peak learning rate of the head
    weight_decay: float = 0.01
    project_weight: float = 20.0  # loss weight of a project (three-way) answer relative to a public one
    seed: int = 0
    max_tokens: int = 256
    instruction_tokens: int = 48
    tail_tokens: int = 32

    def __post_init__(self) -> None:
        if self.tuned_layers < 1 or self.epochs < 1 or self.batch_size < 1:
            raise DataError("tuned_layers, epochs and batch_size must be positive")


@dataclass
class _Cached:
    hidden: torch.Tensor  # [tokens, d] float16: the states after the frozen layers
    answer_mask: torch.Tensor  # [tokens] bool


@torch.no_grad()
def frozen_states(encoder: AnswerEncoder, instructions: Sequence[str], answers: Sequence[str], upto: int,
                  progress: Callable[[int, int], None] | None = None) -> list[_Cached]:
    """The states after the encoder's first ``upto`` layers for every pair (float16, padding dropped)."""
    out: list[_Cached | None] = [None] * len(answers)
    done = 0
    for idx, ids, mask, types, amask in encoder.batches(instructions, answers):
        o = encoder.model(input_ids=ids, attention_mask=mask, token_type_ids=types, output_hidden_states=True)
        h = o.hidden_states[upto].half()
        for j, i in enumerate(idx):
            n = int(mask[j].sum())
            out[i] = _Cached(h[j, :n].clone(), amask[j, :n].bool())
        done += len(idx)
        if progress is not None:
            progress(done, len(answers))
    return out  # type: ignore[return-value]


def _run_top(layers: torch.nn.ModuleList, head: torch.nn.Linear, items: Sequence[_Cached]) -> torch.Tensor:
    width = max(it.hidden.shape[0] for it in items)
    d = items[0].hidden.shape[1]
    h = torch.zeros(len(items), width, d)
    mask = torch.zeros(len(items), width)
    amask = torch.zeros(len(items), width)
    for j, it in enumerate(items):
        n = it.hidden.shape[0]
        h[j, :n], mask[j, :n], amask[j, :n] = it.hidden.float(), 1, it.answer_mask.float()
    additive = (1 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
    for layer in layers:
        o = layer(h, attention_mask=additive)
        h = o[0] if isinstance(o, tuple) else o
    return head(pool(h, amask))


def _batches(order: Sequence[int], lengths: Sequence[int], size: int, rng) -> list[list[int]]:
    """Shuffled batches of similar length: chunks of 20 batches sorted by length, then the batches shuffled."""
    batches = []
    for k in range(0, len(order), size * 20):
        chunk = sorted(order[k: k + size * 20], key=lambda i: lengths[i])
        batches += [chunk[j: j + size] for j in range(0, len(chunk), size)]
    rng.shuffle(batches)
    return batches


def fit_tuned(answers: Sequence, weights: Sequence[float], config: TunedFitConfig = TunedFitConfig(),
              encoder_dir: str | Path | None = None, log: Callable[[str], None] = print) -> tuple[TunedMeta, dict]:
    """Train on labelled ``answers`` (``prompt``, ``answer``, ``label``) with per-answer loss ``weights``; returns
    the metadata and the state to save (the tuned layers under the encoder's names, and the head)."""
    import numpy as np

    if not answers:
        raise DataError("no labelled answers to fit on")
    classes = sorted(JUDGEMENTS)
    y = torch.tensor([classes.index(a.label) for a in answers])
    w = torch.tensor(list(weights), dtype=torch.float32)
    torch.manual_seed(config.seed)
    encoder = AnswerEncoder(encoder_dir, "cpu", config.max_tokens, config.instruction_tokens, config.tail_tokens)
    n_layers = encoder.model.config.num_hidden_layers
    first = n_layers - config.tuned_layers
    if first < 0:
        raise DataError(f"tuned_layers {config.tuned_layers} exceeds the encoder's {n_layers} layers")
    t0 = time.perf_counter()
    step = max(len(answers) // 10, 1)
    cached = frozen_states(encoder, [a.prompt for a in answers], [a.answer for a in answers], first,
                           lambda d, n: log(f"  frozen layers: {d}/{n} answers") if d % step < encoder.batch_size else None)
    log(f"frozen pass over {len(answers)} answers: {time.perf_counter() - t0:.0f} s")
    layers = torch.nn.ModuleList(copy.deepcopy(encoder.model.encoder.layer[i]) for i in range(first, n_layers)).train()
    head = torch.nn.Linear(2 * encoder.model.config.hidden_size, len(classes))
    opt = torch.optim.AdamW([{"params": layers.parameters(), "lr": config.lr},
                             {"params": head.parameters(), "lr": config.head_lr}], weight_decay=config.weight_decay)
    per_epoch = (len(answers) + config.batch_size - 1) // config.batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[config.lr, config.head_lr], pct_start=0.1,
                                                total_steps=config.epochs * per_epoch)
    rng = np.random.default_rng(config.seed)
    lengths = [c.hidden.shape[0] for c in cached]
    for epoch in range(config.epochs):
        total, seen = 0.0, 0
        for batch in _batches(list(rng.permutation(len(answers))), lengths, config.batch_size, rng):
            logits = _run_top(layers, head, [cached[i] for i in batch])
            wb = w[batch]
            loss = (torch.nn.functional.cross_entropy(logits, y[batch], reduction="none") * wb).sum() / wb.sum()
            loss.backward()
            opt.step()
            opt.zero_grad()
            sched.step()
            total, seen = total + float(loss.detach()) * len(batch), seen + len(batch)
        log(f"epoch {epoch + 1}/{config.epochs}: mean loss {total / seen:.4f} ({time.perf_counter() - t0:.0f} s)")
    state = {f"encoder.layer.{first + k}.{name}": p.detach().half().contiguous()
             for k, layer in enumerate(layers) for name, p in layer.state_dict().items()}
    state |= {"head.weight": head.weight.detach().half().contiguous(), "head.bias": head.bias.detach().half().contiguous()}
    meta = TunedMeta(classes, list(range(first, n_layers)), config.max_tokens, config.instruction_tokens,
                     config.tail_tokens, {"config": asdict(config), "n": len(answers),
                                          "labels": dict(Counter(a.label for a in answers)),
                                          "answers_hash": config_hash({"a": [[a.id, a.answer, a.label] for a in answers]}),
                                          "seconds": round(time.perf_counter() - t0, 1)})
    return meta, state


def save_tuned(meta: TunedMeta, state: dict, path: str | Path) -> Path:
    """``path`` (.json) and its .safetensors beside it."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = weights_path(path).with_suffix(".part")
    save_file(state, str(tmp))
    tmp.replace(weights_path(path))
    meta.save(path)
    return path


def training_answers(data_dir=None, labels_dir=None, project_weight: float = 20.0) -> tuple[list, list[float]]:
    """The public ``train`` split and the project's ``dev`` labels, with their loss weights."""
    from refusal_sae.scoring.judge.public import load_public_labels
    from refusal_sae.scoring.labels import load_labelled

    public = load_public_labels("train", data_dir=data_dir)
    project = load_labelled("dev", data_dir, labels_dir)
    return public + project, [1.0] * len(public) + [project_weight] * len(project)
