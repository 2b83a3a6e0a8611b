import json

import pytest
import torch

from lm.checkpoint import MANIFEST, is_complete
from lm.data import encode_chat
from lm.errors import CheckpointError, LMError
from lm.finetune import FinetuneConfig, finetune
from lm.train import resolve_dtype


def _cfg(**kw):
    base = dict(steps=6, batch_size=4, eval_interval=3, learning_rate=3e-3, warmup_steps=1)
    base.update(kw)
    return FinetuneConfig(**base)


def test_loss_only_on_assistant_tokens(tiny_generator):
    tok = tiny_generator.tokenizer
    msgs = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "Bye"},
        {"role": "assistant", "content": "Goodbye."},
    ]
    ids, labels = encode_chat(tok, msgs, 512)
    assert len(ids) == len(labels)
    trained = tok.decode([i for i, lab in zip(ids, labels, strict=True) if lab != -100])
    assert trained.replace("<|end|>", "").replace("<|endoftext|>", "") == "Hello!\nGoodbye.\n"
    full = tok.apply_chat_template(msgs, tokenize=False)
    assert tok.decode(ids).startswith(full.strip())


@pytest.mark.parametrize("dtype", ["auto", "fp32"])
def test_full_finetune_lowers_loss(tmp_path, tiny_run, chat_file, dtype):
    torch.set_num_threads(1)
    r = finetune(
        tiny_run[0],
        chat_file,
        tmp_path,
        _cfg(steps=10, eval_interval=5, learning_rate=1e-2, dtype=dtype),
        show_progress=False,
    )
    assert r.step == 10 and r.merged_dir is None
    assert r.dtype == resolve_dtype(dtype, torch.device("cpu"))
    assert r.history["val"][-1][1] < r.history["train"][0][1]
    manifest = json.loads((tmp_path / "best" / MANIFEST).read_text())
    assert manifest["kind"] == "lm-sft"
    assert (tmp_path / "loss_curve.png").is_file()


def test_lora_finetune_merge_and_resume(tmp_path, tiny_run, chat_file):
    from lm.generate import Generator

    torch.set_num_threads(1)
    out = tmp_path / "lora"

    def interrupt(done, total, info):
        if done == 3:
            raise KeyboardInterrupt

    with pytest.raises(LMError, match="resume"):
        finetune(
            tiny_run[0],
            chat_file,
            out,
            _cfg(),
            lora=True,
            on_progress=interrupt,
            show_progress=False,
        )
    assert is_complete(out / "last") and (out / "last" / "adapter_model.safetensors").is_file()
    assert not (out / "last" / "model.safetensors").exists()  # only the adapter is saved
    r = finetune(None, chat_file, out, _cfg(), resume=True, merge=True, show_progress=False)
    assert r.step == 6 and r.merged_dir == out / "merged"
    # A finished run has nothing left to train: resuming it without --merge says so.
    with pytest.raises(LMError, match=r"already trained its 6 steps.*larger --steps"):
        finetune(None, chat_file, out, _cfg(), resume=True, show_progress=False)
    total = sum(p.numel() for p in Generator.from_dir(out / "merged").model.parameters())
    assert r.trainable_parameters < total / 5
    merged = Generator.from_dir(out / "merged")
    adapter = Generator.from_dir(out / "best")
    msgs = [{"role": "user", "content": "Where is order 3?"}]
    assert merged.generate(msgs, max_new_tokens=8, temperature=0) == adapter.generate(
        msgs, max_new_tokens=8, temperature=0
    )
    base = Generator.from_dir(tiny_run[0])
    ids = torch.tensor([merged.encode_prompt(msgs)])
    with torch.inference_mode():
        assert not torch.allclose(
            merged.model(input_ids=ids).logits, base.model(input_ids=ids).logits
        )


def test_lora_adapter_for_another_base_is_refused(tmp_path, tiny_run, chat_file, corpus_file):
    from lm.generate import Generator
    from lm.train import train_lm
    from tests.lm.conftest import tiny_config

    out = tmp_path / "lora"
    finetune(
        tiny_run[0], chat_file, out, _cfg(steps=2, eval_interval=2), lora=True, show_progress=False
    )
    other = train_lm(
        [corpus_file], tmp_path / "other", tiny_config(steps=1, seed=9), show_progress=False
    )
    manifest = json.loads((out / "best" / MANIFEST).read_text())
    manifest["base_dir"] = str(other.best_dir)  # point the adapter at a different model
    (out / "best" / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="another base model"):
        Generator.from_dir(out / "best")


def test_merge_needs_lora(tmp_path, tiny_run, chat_file):
    with pytest.raises(LMError, match="--lora"):
        finetune(tiny_run[0], chat_file, tmp_path, _cfg(), merge=True, show_progress=False)
    with pytest.raises(LMError, match="dtype must be"):
        finetune(tiny_run[0], chat_file, tmp_path, _cfg(dtype="fp16"), show_progress=False)
    assert not (tmp_path / "last").exists()
