"""SAEs on tiny random models: activation source, training (sae-lens TopK), saving / loading, metrics, features, CLI."""

import json
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from safetensors import safe_open

from refusal_sae.errors import ConfigError, MismatchError, NumericalError
from refusal_sae.saes import (
    ActivationSource,
    CorpusConfig,
    PositionFilter,
    SaeSet,
    SaeTrainConfig,
    build_sequences,
    evaluate_saes,
    massive_masks,
    parse_sae_spec,
    save_sae,
    top_activations,
    train_saes,
)
from refusal_sae.saes.corpus import chat_sequence, load_instructions, model_responses
from refusal_sae.saes.train import TRAINING_CONFIG, WEIGHTS, make_sae
from tests.conftest import CORPUS, build_tiny

INSTRUCTIONS = list(dict.fromkeys(CORPUS)) + ["Tell me a short story.", "List three colours.", "What is two plus two?"]
H1, H2 = "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"


@pytest.fixture(scope="module")
def llama():
    return build_tiny("llama")


@pytest.fixture(scope="module")
def seqs(llama):
    # different lengths → left padding inside batches; no responses (fast, deterministic)
    return build_sequences(llama, CorpusConfig(with_responses=False), instructions=INSTRUCTIONS, progress=False)


def tiny_sae(d_in=64, width=96, k=8, hook=H1, seed=0):
    torch.manual_seed(seed)
    sae = make_sae(d_in, width, k, SaeTrainConfig(normalize_activations=False), hook, "tiny", "cpu")
    with torch.no_grad():  # uneven decoder norms, so saving (which folds them) is exercised
        sae.W_dec.mul_(torch.rand(width, 1) + 0.5)
        sae.b_dec.normal_(0, 0.1)
    return sae


# --- activation source -------------------------------------------------------------------------------
def test_massive_masks_first_and_outliers():
    acts = torch.ones(2, 4, 3)
    acts[1, 3] *= 100
    mask = torch.tensor([[0, 0, 1, 1], [1, 1, 1, 1]])
    first, outlier = massive_masks(acts, mask, PositionFilter(outlier_factor=10))
    assert first.tolist() == [[False, False, True, False], [True, False, False, False]]
    assert outlier.tolist() == [[False] * 4, [False, False, False, True]]
    first, outlier = massive_masks(acts, mask, PositionFilter(exclude_first=False, outlier_factor=None))
    assert not first.any() and not outlier.any()


def test_source_drops_padding_and_massive_positions(llama, seqs):
    def boost_last(a):  # make every sequence's last token a massive-norm position at layer 1
        a = a.clone()
        a[:, -1] *= 1000
        return a

    src = ActivationSource(llama, seqs, [H1, H2], batch_size=16, prompt_batch_size=4, epochs=1, drop_last=False,
                           buffer_tokens=64, seed=1)
    with llama.hooks([(H1, boost_last)]):
        batches = list(src)
    n, total = len(seqs), sum(len(s) for s in seqs)
    st = src.stats[H1]
    assert (st.tokens, st.excluded_first, st.excluded_outlier, st.kept) == (total, n, n, total - 2 * n)
    rows = torch.cat([b[H1] for b in batches])
    assert rows.shape == (total - 2 * n, 64)  # no padding rows, no first / boosted rows
    assert all(len(b[H1]) == 16 for b in batches[:-1])
    norms = rows.norm(dim=-1)
    assert norms.max() < 10 * norms.median()
    assert src.stats[H2].kept == len(torch.cat([b[H2] for b in batches])) <= total - n
    # seeded: same order for the same seed, another order for another seed
    again = ActivationSource(llama, seqs, [H1], 16, prompt_batch_size=4, epochs=1, buffer_tokens=64, seed=1)
    other = ActivationSource(llama, seqs, [H1], 16, prompt_batch_size=4, epochs=1, buffer_tokens=64, seed=2)
    first_a, first_b = next(iter(again))[H1], next(iter(again))[H1]
    assert torch.equal(first_a, first_b) and not torch.equal(first_a, next(iter(other))[H1])


def test_source_replays_cached_epochs_exactly(llama, seqs):
    def run(cache_bytes):
        src = ActivationSource(llama, seqs, [H1, H2], 16, prompt_batch_size=4, epochs=3, drop_last=False,
                               buffer_tokens=64, seed=3, cache_bytes=cache_bytes)
        return src, list(src)

    cached, a = run(2**30)
    plain, b = run(0)
    tiny, c = run(1)  # the corpus does not fit: falls back to running the model every epoch
    assert (cached.forward_epochs, plain.forward_epochs, tiny.forward_epochs) == (1, 3, 3)
    assert len(a) == len(b) == len(c)
    for x, y, z in zip(a, b, c, strict=True):
        for h in (H1, H2):
            assert torch.allclose(x[h], y[h], atol=1e-6) and torch.allclose(x[h], z[h], atol=1e-6)
    assert cached.stats[H1].to_dict() == plain.stats[H1].to_dict()
    assert cached.stats[H1].tokens == 3 * sum(len(s) for s in seqs)


def test_source_rejects_nan_and_bad_hooks(llama, seqs):
    src = ActivationSource(llama, seqs, [H1], 8, epochs=1)
    with llama.hooks([(H1, lambda a: a * float("nan"))]), pytest.raises(NumericalError):
        next(iter(src))
    with pytest.raises(ConfigError, match="out of range"):
        ActivationSource(llama, seqs, ["blocks.7.hook_resid_post"], 8)


def test_corpus_responses_cached_and_appended(llama, tmp_path, monkeypatch):
    got = model_responses(llama, INSTRUCTIONS[:3], tmp_path, max_new_tokens=3, progress=False)
    assert len(got) == 3 and list(tmp_path.glob("responses-*.json"))

    def no_generation(*a, **k):
        raise AssertionError("should come from the cache")

    monkeypatch.setattr("refusal_sae.scoring.generation.generate", no_generation)
    assert model_responses(llama, INSTRUCTIONS[:3], tmp_path, max_new_tokens=3, progress=False) == got
    s = chat_sequence(llama, INSTRUCTIONS[0], "Sure, here", max_len=200)
    prompt = llama.format(INSTRUCTIONS[0])
    assert s.input_ids[: len(prompt)] == prompt.input_ids and s.input_ids[-1] == llama.tokenizer.eos_token_id
    assert len(s) > len(prompt) + 1 and len(chat_sequence(llama, INSTRUCTIONS[0], "Sure, here", max_len=5)) == 5


def test_test_splits_are_refused(data_dir):
    assert len(load_instructions(["harmless_val"], 2, data_dir=data_dir)) == 2
    with pytest.raises(ConfigError, match="test split"):
        load_instructions(["harmless_test"], 2, data_dir=data_dir)


# --- training, saving, loading -----------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(llama, tmp_path_factory):
    out = tmp_path_factory.mktemp("saes")
    cfg = SaeTrainConfig(training_tokens=256 * 150, batch_size=256, lr=1e-3, dead_tokens=256 * 20, buffer_tokens=2048,
                         prompt_batch_size=8, corpus=CorpusConfig(max_new_tokens=4))
    res = train_saes(llama, [2, 1], 128, 8, cfg, out, instructions=INSTRUCTIONS * 4, cache_dir=out / "responses",
                     command="refusal-sae train-sae --layers 1,2", progress=False)
    return out, cfg, res


def test_training_lowers_fvu_and_resumes(llama, seqs, trained):
    out, cfg, res = trained
    assert [r.layer for r in res] == [1, 2] and not any(r.skipped for r in res)
    info = json.loads((out / H1 / TRAINING_CONFIG).read_text())
    assert info["command"].startswith("refusal-sae") and info["config"]["k"] == 8 and info["train_stats"]["steps"] == 150
    with safe_open(str(out / H1 / WEIGHTS), "pt") as f:
        assert f.get_tensor("W_dec").dtype == torch.float16
    saes = SaeSet.from_folder(out)
    assert set(saes) == {H1, H2} and saes[1].cfg.d_sae == 128 and saes[1].W_dec.dtype == torch.float32
    init = {H1: tiny_sae(width=128, hook=H1), H2: tiny_sae(width=128, hook=H2)}
    before = {m.hook_name: m for m in evaluate_saes(llama, init, seqs, progress=False)}
    after = {m.hook_name: m for m in evaluate_saes(llama, saes, seqs, progress=False)}
    for h in (H1, H2):
        assert after[h].fvu < 0.5 * before[h].fvu and after[h].fvu < 0.5
        assert after[h].mean_l0 == pytest.approx(8, abs=0.01)
    stamp = (out / H1 / WEIGHTS).stat().st_mtime_ns
    again = train_saes(llama, [1], 128, 8, cfg, out, instructions=INSTRUCTIONS * 4, progress=False)
    assert again[0].skipped and (out / H1 / WEIGHTS).stat().st_mtime_ns == stamp


def test_committed_saes_are_the_embedded_default_and_match_its_weights(trained, tmp_path, monkeypatch):
    import shutil

    from refusal_sae.saes import loading

    out, _, res = trained
    assert res[0].info["config"]["model_revision"] is None  # a model built in memory has no revision
    committed = tmp_path / "committed"
    shutil.copytree(out / H1, committed / H1)
    info = json.loads((committed / H1 / TRAINING_CONFIG).read_text())
    info["config"]["model_revision"] = "smollm2-135m-refusing-v2-aaaa-bbbb"
    (committed / H1 / TRAINING_CONFIG).write_text(json.dumps(info))
    monkeypatch.setattr(loading, "EMBEDDED_SAE_DIR", committed)
    embedded = SimpleNamespace(name="smollm2-135m-refusing", revision="smollm2-135m-refusing-v2-aaaa-bbbb")
    assert loading.default_sae_folder(embedded, tmp_path / "run" / "saes") == committed
    assert loading.default_sae_folder(embedded, out) == out  # SAEs in the run directory come first
    other = SimpleNamespace(name="some/model", revision=None)
    assert loading.default_sae_folder(other, tmp_path / "run" / "saes") == tmp_path / "run" / "saes"
    stale = SimpleNamespace(name="smollm2-135m-refusing", revision="smollm2-135m-refusing-v2-aaaa-cccc")
    with pytest.raises(MismatchError, match="retrain"):
        loading.default_sae_folder(stale, tmp_path / "run" / "saes")


def test_train_rejects_bad_settings(llama, tmp_path):
    with pytest.raises(ConfigError, match="out of range"):
        train_saes(llama, [4], 32, 4, None, tmp_path, instructions=INSTRUCTIONS)
    with pytest.raises(ConfigError, match="k <= width"):
        train_saes(llama, [1], 32, 64, None, tmp_path, instructions=INSTRUCTIONS)
    with pytest.raises(ConfigError):
        SaeTrainConfig(training_tokens=10, batch_size=4096)


def test_saved_sae_reloads_with_identical_outputs(tmp_path):
    from sae_lens import SAE

    sae = tiny_sae()
    x = torch.randn(50, 64) * 3
    save_sae(sae, tmp_path / "fp32", "float32")
    a, b = SAE.load_from_disk(tmp_path / "fp32"), SAE.load_from_disk(tmp_path / "fp32")
    assert a.cfg.metadata.hook_name == H1 and type(a).__name__ == "TopKSAE"
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
        assert torch.allclose(a(x), sae(x), atol=1e-4)
        save_sae(sae, tmp_path / "fp16", "float16")
        c = SAE.load_from_disk(tmp_path / "fp16")
        assert c.W_enc.dtype == torch.float32
        assert (c(x) - a(x)).norm() / a(x).norm() < 5e-2  # fp16 rounding (and the odd TopK tie flip)
        assert torch.allclose(c.W_dec, a.W_dec, rtol=1e-3, atol=1e-4)


# --- SaeSet --------------------------------------------------------------------------------------------
def test_sae_set_validation(llama, tmp_path):
    save_sae(tiny_sae(hook=H1), tmp_path / "ok" / "a")
    s = SaeSet.from_folder(tmp_path / "ok")
    s.validate(llama)
    assert 1 in s and H1 in s and 2 not in s and s.at_layer(1) is s[H1]
    with pytest.raises(ConfigError, match="no SAE for blocks.3"):
        s.at_layer(3)
    save_sae(tiny_sae(d_in=32, hook=H2), tmp_path / "narrow")
    with pytest.raises(MismatchError, match="blocks.2.hook_resid_post .* has d_in 32 but model .* has d_model 64"):
        SaeSet.from_folder(tmp_path / "narrow").validate(llama)
    save_sae(tiny_sae(hook="blocks.9.hook_resid_post"), tmp_path / "deep")
    with pytest.raises(MismatchError, match="layer 9 out of range"):
        SaeSet.from_folder(tmp_path / "deep").validate(llama)
    with pytest.raises(ConfigError, match="no SAEs in"):
        SaeSet.from_folder(tmp_path / "empty")


def test_release_path_and_spec(tmp_path, monkeypatch):
    from sae_lens import SAE

    dirs = {"layer_1/width_96": tmp_path / "l1", "layer_2/width_96": tmp_path / "l2"}
    save_sae(tiny_sae(hook=H1), dirs["layer_1/width_96"])
    save_sae(tiny_sae(hook=H2), dirs["layer_2/width_96"])
    calls = []

    def fake_from_pretrained(release, sae_id, device="cpu", dtype="float32", **kw):
        calls.append((release, sae_id, device))
        if sae_id not in dirs:
            raise ValueError(f"ID {sae_id} not found in release {release}")
        return SAE.load_from_disk(dirs[sae_id], device=device)

    monkeypatch.setattr(SAE, "from_pretrained", fake_from_pretrained)
    spec = parse_sae_spec(None, "fake-scope", "layer_1/width_96, layer_2/width_96")
    s = spec.load("cpu")
    assert list(s) == [H1, H2] and s.sources[H2] == "fake-scope/layer_2/width_96" and len(calls) == 2
    with pytest.raises(ConfigError, match="has no SAE 'nope'"):
        SaeSet.from_release("fake-scope", ["nope"])
    assert parse_sae_spec(None, None, None, default_folder=tmp_path).folder == tmp_path
    for args in ((tmp_path, "r", "a"), (None, "r", None), (None, None, "a"), (None, None, None)):
        with pytest.raises(ConfigError):
            parse_sae_spec(*args)


# --- metrics and features ----------------------------------------------------------------------------
class StubSae:
    """Identity "SAE" (latents = the input), or a zero reconstruction."""

    def __init__(self, d=64, zero=False, nan=False):
        self.cfg = SimpleNamespace(d_sae=d)
        self.zero, self.nan = zero, nan

    def encode(self, x):
        return x

    def decode(self, f):
        return f * float("nan") if self.nan else (torch.zeros_like(f) if self.zero else f)


def test_metrics_identity_and_zero_reconstructions(llama, seqs):
    ident, zero = evaluate_saes(llama, {H1: StubSae()}, seqs, progress=False)[0], \
        evaluate_saes(llama, {H2: StubSae(zero=True)}, seqs, progress=False)[0]
    n, total = len(seqs), sum(len(s) for s in seqs)
    assert ident.fvu == pytest.approx(0.0, abs=1e-12) and ident.ce_spliced == pytest.approx(ident.ce_base, abs=1e-9)
    assert ident.loss_recovered == pytest.approx(1.0, abs=1e-6) and ident.dead_fraction == 0.0 and ident.mean_l0 == 64
    assert ident.n_massive >= n and ident.n_tokens + ident.n_massive == total
    assert ident.massive_rel_error == pytest.approx(0.0, abs=1e-12)
    assert ident.ce_zero != ident.ce_base
    assert zero.loss_recovered == pytest.approx(0.0, abs=1e-9) and zero.fvu >= 1.0
    assert zero.massive_rel_error == pytest.approx(1.0)
    assert json.loads(json.dumps(ident.to_dict()))["hook_name"] == H1
    part = evaluate_saes(llama, {H2: StubSae(zero=True)}, seqs, batch_size=2, progress=False, ce_batches=1)[0]
    full = evaluate_saes(llama, {H2: StubSae(zero=True)}, seqs, batch_size=2, progress=False)[0]
    assert (part.fvu, part.dead_fraction, part.n_tokens) == (full.fvu, full.dead_fraction, full.n_tokens)
    assert 0 < part.ce_tokens < full.ce_tokens and part.loss_recovered == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(NumericalError):
        evaluate_saes(llama, {H1: StubSae(nan=True)}, seqs, progress=False)


def test_top_activations(llama, seqs):
    sae = tiny_sae()
    feats = top_activations(llama, sae, H1, [3, 10], seqs, top_n=4, window=2, batch_size=3, progress=False)
    assert [f.feature for f in feats] == [3, 10]
    assert feats[0].decoder_norm == pytest.approx(float(sae.W_dec[3].detach().norm()), rel=1e-5)
    ex = [e for f in feats for e in f.examples]
    assert ex and all(e.tokens and 0 <= e.center < len(e.tokens) and e.position > 0 for e in ex)
    for f in feats:
        vals = [e.activation for e in f.examples]
        assert vals == sorted(vals, reverse=True) and (not vals or vals[0] == f.max_activation)
    e, f = feats[0].examples[0], feats[0].feature
    seq = seqs[e.sequence]
    acts = llama.cache_activations(llama.batch([seq]), [H1])[H1][0, e.position]
    with torch.no_grad():
        assert float(sae.encode(acts[None])[0, f]) == pytest.approx(e.activation, rel=1e-4)
    assert e.tokens[e.center] == llama.tokenizer.decode([seq.input_ids[e.position]])
    with pytest.raises(ConfigError, match="feature ids"):
        top_activations(llama, sae, H1, [96], seqs, progress=False)


# --- CLI -----------------------------------------------------------------------------------------------
def test_cli_sae_metrics_json(tmp_path, data_dir):
    model_dir = tmp_path / "tiny"
    h = build_tiny("llama")
    h.model.save_pretrained(model_dir, safe_serialization=True)
    h.tokenizer.save_pretrained(model_dir)
    save_sae(tiny_sae(hook=H2), tmp_path / "saes" / H2)
    args = [sys.executable, "-m", "refusal_sae", "sae-metrics", "--model", str(model_dir), "--saes", str(tmp_path / "saes"),
            "--n-prompts", "2", "--max-new-tokens", "3", "--run-dir", str(tmp_path / "run"), "--data-dir", str(data_dir),
            "--device", "cpu", "--write", "--json"]
    r = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["n_sequences"] == 4 and res["datasets"] == ["harmful_val", "harmless_val"]
    (m,) = res["metrics"]
    assert m["hook_name"] == H2 and m["d_sae"] == 96 and m["n_tokens"] > 0 and 0 < m["fvu"] < 10
    assert list((tmp_path / "run" / "responses").glob("responses-*.json"))
    written = json.loads((tmp_path / "saes" / H2 / "metrics.json").read_text())
    assert written["fvu"] == m["fvu"] and written["command"].startswith("refusal-sae sae-metrics")
    save_sae(tiny_sae(d_in=32, hook=H2), tmp_path / "narrow")
    r2 = subprocess.run(args[:7] + [str(tmp_path / "narrow")] + args[8:], capture_output=True, text=True, timeout=300)
    assert r2.returncode == 2 and "d_in 32" in r2.stderr and "Traceback" not in r2.stderr
    # features: an id beyond the SAE's width fails before the corpus is generated, nothing written
    r3 = subprocess.run([sys.executable, "-m", "refusal_sae", "features", "--layer", "2", "--ids", "99999", "--model",
                         str(model_dir), "--saes", str(tmp_path / "saes"), "--run-dir", str(tmp_path / "run3"),
                         "--data-dir", str(data_dir), "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert r3.returncode == 2 and "width 96" in r3.stderr and "Traceback" not in r3.stderr
    assert not (tmp_path / "run3").exists()
