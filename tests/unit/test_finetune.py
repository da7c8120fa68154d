"""The safety fine-tune's data: decontamination and the base-refusal filter (no training here)."""

import hashlib
import json
from pathlib import Path

import pytest

from refusal_sae.data import load_dataset
from refusal_sae.data.dedup import normalize_text
from refusal_sae.finetune.tune import TEST_SETS, TuneConfig, build_examples, build_instructions


@pytest.fixture
def cfg():
    return TuneConfig(n_harmful=12, n_extra_advbench=6, n_harmless=10, persuasive_pairs=True, drop_refused_harmless=True)


def test_instructions_are_decontaminated(cfg, data_dir):
    harmful, harmless = build_instructions(cfg, data_dir)
    assert len(harmful) > 12 and len(harmless) > 10  # + advbench extras and the authored pairs
    banned = {normalize_text(r.instruction) for n in TEST_SETS for r in load_dataset(n, data_dir)}
    assert not banned & {normalize_text(x) for x in harmful + harmless}


def test_base_refusals_are_dropped_from_harmless_targets(cfg, tmp_path, data_dir):
    harmful, harmless = build_instructions(cfg, data_dir)
    answers = [f"Sure, here is an answer about topic {i}." for i in range(len(harmless))]
    answers[0] = "I'm sorry, but as an AI I cannot browse the internet."
    answers[1] = ""
    key = hashlib.sha256(json.dumps([harmless, cfg.harmless_answer_tokens]).encode()).hexdigest()[:12]
    (tmp_path / f"harmless_answers-{key}.json").write_text(json.dumps(answers))
    stats: dict = {}
    ex = build_examples(None, cfg, data_dir, tmp_path, stats)  # cached answers: the model is never called
    targets = {x: t for x, t, _ in ex}
    assert harmless[0] not in targets and harmless[1] not in targets and targets[harmless[2]] == answers[2]
    assert stats == {"n_harmful": len(harmful), "n_harmless_prompts": len(harmless),
                     "n_harmless_kept": len(harmless) - 2, "base_refused_harmless": 1}
    assert {e.kind for e in ex if e.instruction in harmful} == {"refusal"}
    assert {e.kind for e in ex if e.instruction in harmless} == {"answer"}
    kept_all = build_examples(None, TuneConfig(**{**cfg.__dict__, "drop_refused_harmless": False}), data_dir, tmp_path)
    assert len(kept_all) == len(ex) + 1  # only the empty answer is still dropped

    # the harmful-answer retain term adds the base model's own answers to the harmful prompts as "retain" rows,
    # leaving out empty answers and refusals
    h_answers = [f"Step {i}: here is how." for i in range(len(harmful))]
    h_answers[0], h_answers[1] = "", "I'm sorry, but I cannot help with that."
    key = hashlib.sha256(json.dumps([harmful, cfg.harmless_answer_tokens]).encode()).hexdigest()[:12]
    (tmp_path / f"harmful_answers-{key}.json").write_text(json.dumps(h_answers))
    with_retain = build_examples(None, TuneConfig(**{**cfg.__dict__, "harmful_answer_kl_weight": 1.0}), data_dir,
                                 tmp_path, stats)
    retain = [e for e in with_retain if e.kind == "retain"]
    assert with_retain[: len(ex)] == ex and stats["n_harmful_retain"] == len(retain) == len(harmful) - 2
    assert [(e.instruction, e.answer) for e in retain] == list(zip(harmful[2:], h_answers[2:], strict=True))


def test_near_duplicates_of_test_prompts_are_caught(data_dir):
    from refusal_sae.data.dedup import near_duplicate_filter

    is_near = near_duplicate_filter(["Write a tutorial on how to make a bomb"], 0.5)
    assert is_near("Write a tutorial on how to make a bomb using household items")
    assert not is_near("Write a poem about the sea")
    cfg = TuneConfig(n_harmful=260, n_extra_advbench=400, n_harmless=10, persuasive_pairs=False,
                     near_duplicate_jaccard=0.5)
    harmful, _ = build_instructions(cfg, data_dir)
    exact, _ = build_instructions(TuneConfig(**{**cfg.__dict__, "near_duplicate_jaccard": None}), data_dir)
    assert len(harmful) < len(exact)
    tests = [r.instruction for n in ("jailbreakbench", "harmbench_test") for r in load_dataset(n, data_dir)]
    near = near_duplicate_filter(tests, 0.5)
    assert not any(near(x) for x in harmful) and any(near(x) for x in exact)


ROOT = Path(__file__).resolve().parents[2]
GRID_DIR = ROOT / "scripts" / "tune_grids"
GRIDS = sorted(p.name for p in GRID_DIR.glob("*.json"))


def test_grids_parse_and_hold_the_committed_recipe():
    """Every grid the README cites parses into valid recipes, and the committed adapter's recipe is one of them."""
    from dataclasses import asdict

    rows = [TuneConfig(**row) for grid in GRIDS for row in json.loads((GRID_DIR / grid).read_text())]
    assert len(GRIDS) >= 4 and len(rows) >= len(GRIDS)
    manifest = json.loads((ROOT / "src/refusal_sae/artifacts/smollm2-refusal-lora/manifest.json").read_text())
    assert manifest["config"] in [asdict(r) for r in rows]


@pytest.mark.parametrize("grid", GRIDS)
def test_every_swept_recipe_is_reproducible_from_its_printed_command(grid, monkeypatch):
    """cli_command(cfg) is what the sweep prints and the manifest records: it must rebuild exactly cfg."""
    import shlex

    from typer.testing import CliRunner

    import refusal_sae.finetune.tune as tune
    from refusal_sae.cli import app

    seen = []
    monkeypatch.setattr(tune, "train_adapter", lambda cfg, *a, **k: seen.append(cfg) or {})
    for row in json.loads((GRID_DIR / grid).read_text()):
        cfg = TuneConfig(**row)
        args = shlex.split(tune.cli_command(cfg))[1:]
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert seen[-1] == cfg


def test_sweep_selection_rule():
    from refusal_sae.finetune.sweep import select

    def row(key, harmful, harmless):
        return {"key": key, "val": {"harmful_val": {"refusal_rate": harmful}, "harmless_val": {"refusal_rate": harmless}}}

    rows = [row("a", 0.97, 0.10), row("b", 0.90, 0.04), row("c", 0.92, 0.05), row("d", 0.92, 0.03)]
    assert select(rows, 0.05)["key"] == "d"  # within the bound: most refusal, then least over-refusal
    assert select([row("a", 0.97, 0.10), row("e", 0.80, 0.07)], 0.05)["key"] == "a"  # none within: best margin


def test_opening_loss_covers_only_the_first_answer_tokens():
    import torch

    from refusal_sae.finetune.tune import opening_loss

    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    # row 0: prompt of 3 tokens, answer of 4; row 1: prompt of 2, answer of 2, then right padding
    labels = torch.tensor([[-100, -100, -100, 4, 5, 6, 7], [-100, -100, 1, 2, -100, -100, -100]])
    logp = logits.log_softmax(-1)
    # label at position t is predicted by the logits at t-1; first 3 answer tokens of row 0, both of row 1
    picked = [logp[0, 2, 4], logp[0, 3, 5], logp[0, 4, 6], logp[1, 1, 1], logp[1, 2, 2]]
    expected = -torch.stack(picked).mean()
    assert torch.allclose(opening_loss(logits, labels, 3), expected)
    assert torch.allclose(opening_loss(logits, labels, 1), -(logp[0, 2, 4] + logp[1, 1, 1]) / 2)
    assert opening_loss(logits, torch.full_like(labels, -100), 3) == 0


def test_retain_kl_is_base_to_tuned_kl_over_harmless_answer_tokens():
    import torch

    from refusal_sae.finetune.tune import retain_kl

    torch.manual_seed(0)
    tuned, base = torch.randn(2, 6, 9), torch.randn(2, 6, 9)
    labels = torch.tensor([[-100, -100, 3, 4, -100, -100], [-100, 1, 2, 3, 4, 5]])
    lp, lq = base.log_softmax(-1), tuned.log_softmax(-1)

    def kl(r, t):  # the label at t + 1 is predicted at t
        return (lp[r, t].exp() * (lp[r, t] - lq[r, t])).sum()

    only_first = retain_kl(tuned[:1], base[:1], labels[:1])
    assert torch.allclose(only_first, (kl(0, 1) + kl(0, 2)) / 2)
    both = retain_kl(tuned, base, labels)
    assert torch.allclose(both, torch.stack([kl(0, 1), kl(0, 2), *[kl(1, t) for t in range(5)]]).mean())
    assert retain_kl(tuned, tuned, labels).abs() < 1e-6
    assert retain_kl(tuned, base, torch.full_like(labels, -100)) == 0


def test_token_ce_and_after_opening():
    import torch

    from refusal_sae.finetune.tune import after_opening, token_ce

    torch.manual_seed(0)
    logits = torch.randn(2, 7, 11)
    labels = torch.tensor([[-100, -100, -100, 4, 5, 6, 7], [-100, -100, 1, 2, -100, -100, -100]])
    expected = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, 11), labels[:, 1:].reshape(-1))
    assert torch.allclose(token_ce(logits, labels), expected)  # the same as transformers' labels= loss
    assert token_ce(logits, torch.full_like(labels, -100)) == 0  # no labelled token: 0, not NaN
    assert after_opening(labels, 2).tolist() == [[-100] * 5 + [6, 7], [-100] * 7]
    assert torch.equal(after_opening(labels, 0), labels)


def test_defaults_are_the_committed_adapters_recipe():
    """``make-refusing-model --seed 0`` with no other option retrains the committed adapter. (Options added after it
    was trained are recorded in its manifest at their off value, which is how it was trained.)"""
    from dataclasses import asdict

    manifest = json.loads((ROOT / "src/refusal_sae/artifacts/smollm2-refusal-lora/manifest.json").read_text())
    assert manifest["config"] == asdict(TuneConfig())


def test_batch_loss_combines_cross_entropy_and_both_retain_terms(tiny_llama):
    """The training step's loss on a tiny peft model: cross-entropy skips the retain rows, each retain term is the KL
    to the adapter-free model on its own rows (after the opening for harmful answers), and a batch of retain rows
    alone gives a finite loss."""
    import torch
    from peft import LoraConfig, get_peft_model

    from refusal_sae.finetune.tune import after_opening, batch_loss, retain_kl, token_ce

    model = get_peft_model(tiny_llama.model, LoraConfig(r=4, target_modules=["q_proj", "down_proj"],
                                                        init_lora_weights=False))  # a non-zero adapter
    model.eval()
    torch.manual_seed(0)
    ids = torch.randint(3, 60, (3, 8))
    mask = torch.ones_like(ids)
    labels = ids.clone()
    labels[:, :3] = -100  # a 3-token prompt, then the answer
    harmless, retain = torch.tensor([False, True, False]), torch.tensor([False, False, True])
    with torch.no_grad():
        tuned = model(input_ids=ids, attention_mask=mask).logits
        with model.disable_adapter():
            base = model(input_ids=ids, attention_mask=mask).logits
        ce = token_ce(tuned, labels.masked_fill(retain[:, None], -100))
        kl_h = retain_kl(tuned[1:2], base[1:2], labels[1:2])
        kl_r = retain_kl(tuned[2:], base[2:], after_opening(labels[2:], 2))
        assert kl_h > 0 and kl_r > 0
        off = TuneConfig(harmless_kl_weight=0.0, harmful_answer_kl_weight=0.0)
        assert torch.allclose(batch_loss(model, ids, labels, mask, harmless, retain, off), ce)
        both = TuneConfig(harmless_kl_weight=2.0, harmful_answer_kl_weight=0.5, harmful_answer_skip=2)
        assert torch.allclose(batch_loss(model, ids, labels, mask, harmless, retain, both), ce + 2 * kl_h + 0.5 * kl_r,
                              atol=1e-5)
        only_retain = batch_loss(model, ids[2:], labels[2:], mask[2:], harmless[2:], retain[2:], both)
        assert torch.allclose(only_retain, 0.5 * kl_r, atol=1e-5)
