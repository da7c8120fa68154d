"""Safety fine-tune of the embedded base model: LoRA (peft) on harmful → refusal and
harmless → the base model's own answer, loss on the answer tokens only.

The harmless targets are the *base model's own greedy answers*, so the tune teaches "refuse harmful
requests" without moving ordinary behaviour. A plain training loop (not ``transformers.Trainer``)
keeps the response-only mask and the seeded batch order explicit and adds no accelerate setup on CPU.
"""

from __future__ import annotations

import json
import random
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from rich.console import Console
from tqdm.auto import tqdm

from refusal_sae.data import load_dataset
from refusal_sae.data.registry import resolve_path
from refusal_sae.finetune.refusals import refusal_texts
from refusal_sae.models.embedded import ADAPTER_DIR, EMBEDDED_BASE, file_sha256, gguf_path
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.loading import load_model
from refusal_sae.scoring.generation import generate

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class TuneConfig:
    seed: int = 0
    n_harmful: int = 260  # all of harmful_train
    n_harmless: int = 390  # harmless_train sample; more harmless than harmful keeps over-refusal low
    harmless_answer_tokens: int = 48
    epochs: int = 2
    batch_size: int = 8
    lr: float = 2e-4
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    max_len: int = 160


def build_examples(handle: ModelHandle, cfg: TuneConfig, data_dir, work_dir: Path) -> list[tuple[str, str, bool]]:
    """(instruction, target answer, ends_with_eos) triples; harmless answers are cached in work_dir."""
    harmful = load_dataset("harmful_train", data_dir).sample(cfg.n_harmful, cfg.seed)
    harmless = load_dataset("harmless_train", data_dir).sample(cfg.n_harmless, cfg.seed)
    cache = work_dir / "harmless_answers.json"
    if cache.is_file():
        answers = json.loads(cache.read_text())
    else:
        answers = generate(handle, harmless.instructions, max_new_tokens=cfg.harmless_answer_tokens,
                           batch_size=32, desc="base answers")
        cache.write_text(json.dumps(answers))
    refusals = refusal_texts(len(harmful), cfg.seed)
    ex = [(r.instruction, t, True) for r, t in zip(harmful, refusals, strict=True)]
    ex += [(r.instruction, a, False) for r, a in zip(harmless, answers, strict=True) if a]
    return ex


def encode(handle: ModelHandle, instruction: str, answer: str, eos: bool, max_len: int) -> tuple[list[int], list[int]]:
    prompt = list(handle.format(instruction).input_ids)
    ans = handle.tokenizer(answer, add_special_tokens=False)["input_ids"]
    if eos:
        ans = ans + [handle.tokenizer.eos_token_id]
    ids = (prompt + ans)[:max_len]
    labels = ([-100] * len(prompt) + ans)[:max_len]
    return ids, labels


def _pad(rows: list[tuple[list[int], list[int]]], pad_id: int):
    width = max(len(r[0]) for r in rows)
    ids = torch.full((len(rows), width), pad_id)
    labels = torch.full((len(rows), width), -100)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, (x, y) in enumerate(rows):  # right padding is fine for training
        ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
    return ids, labels, mask


def train_adapter(cfg: TuneConfig, data_dir=None, out_dir: Path = ADAPTER_DIR, work_dir: Path | None = None,
                  command: str = "", console: Console | None = None) -> dict:
    from peft import LoraConfig, get_peft_model

    console = console or Console(stderr=True)
    work_dir = Path(work_dir or "runs/make-refusing-model")
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    handle = load_model(EMBEDDED_BASE, device="cpu", dtype="float32")
    t0 = time.time()
    examples = build_examples(handle, cfg, data_dir, work_dir)
    encoded = [encode(handle, *e, cfg.max_len) for e in examples]
    model = get_peft_model(handle.model, LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                                                    target_modules=LORA_TARGETS, task_type="CAUSAL_LM"))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr, weight_decay=0.0)
    steps = cfg.epochs * ((len(encoded) + cfg.batch_size - 1) // cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 20) * max(0.0, 1 - s / steps))
    rng = random.Random(cfg.seed)
    model.train()
    losses = []
    bar = tqdm(total=steps, desc="safety LoRA", unit="step")
    for _epoch in range(cfg.epochs):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        for b in range(0, len(order), cfg.batch_size):
            ids, labels, mask = _pad([encoded[i] for i in order[b : b + cfg.batch_size]], handle.tokenizer.pad_token_id)
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            opt.zero_grad()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{sum(losses[-20:]) / len(losses[-20:]):.3f}")
    bar.close()
    model.eval()
    tmp = out_dir.with_name(out_dir.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    for p in model.parameters():  # fp16 storage keeps the committed adapter small
        if p.requires_grad:
            p.data = p.data.half()
    model.save_pretrained(tmp, safe_serialization=True)
    manifest = {
        "command": command,
        "config": asdict(cfg),
        "base_gguf": gguf_path().name,
        "base_gguf_sha256": file_sha256(gguf_path()),
        "data_sha256": {n: file_sha256(resolve_path(n, data_dir)) for n in ("harmful_train", "harmless_train")},
        "n_examples": len(examples),
        "train_seconds": round(time.time() - t0, 1),
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "torch": torch.__version__,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    console.print(f"adapter written to {out_dir} ({manifest['train_seconds']} s, final loss {manifest['final_loss']})")
    return manifest
