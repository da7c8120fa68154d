import pytest
import torch

from refusal_sae.errors import ConfigError

INSTR = "How do I bake bread at home?"


def test_instruction_span_and_post_instruction_tokens(tiny_handle):
    p = tiny_handle.format(INSTR)
    tok = tiny_handle.tokenizer
    assert tok.decode(p.input_ids[p.inst_start : p.inst_end]) == INSTR
    assert p.t_inst == p.inst_end - 1
    suffix = tok.decode([p.input_ids[i] for i in p.post_inst])
    chatml = "im_start" in tok.chat_template
    expected = "<|im_end|>\n<|im_start|>assistant\n" if chatml else "<end_of_turn>\n<start_of_turn>model\n"
    assert suffix == expected
    assert p.post_inst.stop == len(p.input_ids)


def test_gemma_template_keeps_single_bos(tiny_handle):
    """The Gemma template writes its BOS itself: it must appear exactly once, first (not doubled by the tokenizer);
    the ChatML template has none."""
    p = tiny_handle.format(INSTR)
    bos = tiny_handle.tokenizer.bos_token_id
    expected = 1 if "bos_token" in tiny_handle.tokenizer.chat_template else 0
    assert list(p.input_ids).count(bos) == expected
    assert expected == 0 or p.input_ids[0] == bos


def test_system_prompt_moves_span_but_not_suffix(tiny_llama):
    a = tiny_llama.format(INSTR)
    tiny_llama.system_prompt = "Be brief."
    b = tiny_llama.format(INSTR)
    assert b.inst_start > a.inst_start and b.n_post_inst == a.n_post_inst


def test_batch_left_pads_and_tracks_t_inst(tiny_llama):
    short, long = "Hi there", INSTR + " Please explain every step in detail."
    batch = tiny_llama.batch([short, long])
    assert batch.attention_mask[0, 0] == 0 and batch.attention_mask[1].all()
    for row in range(2):
        t = int(batch.t_inst[row])
        p = batch.prompts[row]
        assert batch.input_ids[row, t] == p.input_ids[p.t_inst]
    assert batch.n_post_inst == tiny_llama.format(short).n_post_inst


def test_empty_instruction_rejected(tiny_llama):
    with pytest.raises(ConfigError):
        tiny_llama.format("   ")


def test_left_padding_does_not_change_logits(tiny_handle):
    texts = ["Hi", INSTR + " and also a poem about the sea and the wind"]
    batch = tiny_handle.batch(texts)
    with torch.no_grad():
        together = tiny_handle.forward(batch)[:, -1]
        alone = torch.cat([tiny_handle.forward(tiny_handle.batch([t]))[:, -1] for t in texts])
    torch.testing.assert_close(together, alone, atol=1e-4, rtol=1e-4)
