"""Encoder fine-tuning for the router (assistant/router_finetune.py), on the real MiniLM, on CPU.

Tiny sets (3 intents x 4 examples) and a few steps keep each test to seconds.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from assistant.errors import RouterError
from assistant.router import Example, IntentRouter, fingerprint
from assistant.router_finetune import (
    ENCODER_FILE,
    EncoderWeightsError,
    FinetunedEncoder,
    FinetuneSettings,
    finetune_encoder,
)

TEXTS = {
    "lost_card": ["my card is lost", "i lost my card", "i can't find my card", "card missing"],
    "exchange": ["what is the exchange rate", "rate for euros", "dollar to pound rate", "fx rate"],
    "top_up": ["top up failed", "my top-up did not work", "could not add money", "topping up"],
}
SMALL = {"epochs": 2, "batch_size": 8, "lr": 5e-5}


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _data() -> tuple[list[str], list[str]]:
    texts = [t for ts in TEXTS.values() for t in ts]
    labels = [i for i, ts in TEXTS.items() for _ in ts]
    return texts, labels


def _examples() -> list[Example]:
    return [
        Example(i, "qa" if i != "top_up" else "smalltalk", t) for t, i in zip(*_data(), strict=True)
    ]


def test_finetune_loss_falls_reloads_identically_and_leaves_base_alone(embedder, tmp_path):
    texts, labels = _data()
    base = embedder.load()
    stock = embedder.encode(["a sentence that only this test embeds"])
    enc, stats = finetune_encoder(
        base, texts, labels, FinetuneSettings(epochs=3, batch_size=8), device="cpu"
    )
    assert stats["steps"] == stats["planned_steps"] > 2 and stats["stopped"] == "done"
    first, last = stats["losses"][0], np.mean(stats["losses"][-2:])
    assert last < first, stats["losses"]
    # the contrastive objective did something: same-intent vectors are closer than before
    X0, X1 = embedder.encode(texts), enc.encode(texts)
    same = np.equal.outer(labels, labels) & ~np.eye(len(texts), dtype=bool)
    assert (X1 @ X1.T)[same].mean() - (X1 @ X1.T)[~same].mean() > (X0 @ X0.T)[same].mean() - (
        X0 @ X0.T
    )[~same].mean()
    # saved as safetensors (no pickle) and reloaded into identical embeddings
    digest = enc.save(tmp_path / ENCODER_FILE)
    from safetensors import safe_open

    with safe_open(str(tmp_path / ENCODER_FILE), framework="pt") as f:
        assert len(list(f.keys())) == len(base.state_dict())
    again = FinetunedEncoder.load(base, tmp_path / ENCODER_FILE, digest, device="cpu")
    np.testing.assert_array_equal(again.encode(texts), X1)
    # the stock encoder (used by knowledge retrieval) is untouched
    fresh = base.encode(["a sentence that only this test embeds"], normalize_embeddings=True)
    np.testing.assert_allclose(fresh, stock, atol=1e-6)


def test_finetune_is_deterministic_for_a_seed(embedder):
    texts, labels = _data()
    s = FinetuneSettings(epochs=1, batch_size=8, seed=3)
    a, _ = finetune_encoder(embedder.load(), texts, labels, s, device="cpu", show_progress=False)
    b, _ = finetune_encoder(embedder.load(), texts, labels, s, device="cpu", show_progress=False)
    np.testing.assert_array_equal(a.encode(texts[:3]), b.encode(texts[:3]))


def test_pair_budget_and_cosine_loss(embedder):
    texts, labels = _data()
    s = FinetuneSettings(epochs=5, batch_size=4, loss="cosine", pairs=8)
    _, stats = finetune_encoder(embedder.load(), texts, labels, s, device="cpu")
    assert stats["steps"] == 2 and stats["stopped"] == "pair budget"


def test_bad_settings_and_data_fail_clearly(embedder, tmp_path):
    with pytest.raises(ValueError, match="unknown fine-tuning loss"):
        FinetuneSettings(loss="triplet")
    with pytest.raises(ValueError, match="unknown fine-tuning settings: bogus"):
        FinetuneSettings.from_dict({"bogus": 1})
    with pytest.raises(RouterError, match="invalid router fine-tuning settings"):
        IntentRouter(embedder, tmp_path, finetune={"epochs": 0})
    with pytest.raises(ValueError, match="two examples"):
        finetune_encoder(embedder.load(), ["a", "b"], ["x", "y"], device="cpu")


def test_router_with_finetuned_encoder_saves_reuses_and_embeds_with_it(embedder, tmp_path):
    ex = _examples()
    r = IntentRouter(embedder, tmp_path, finetune=SMALL)
    assert r.ensure_trained(ex)
    assert r.train_stats is not None and r.train_stats["finetune"]["steps"] > 0
    doc = json.loads((tmp_path / "router.json").read_text())
    assert doc["encoder"]["file"] == ENCODER_FILE and (tmp_path / ENCODER_FILE).is_file()
    assert r.fingerprint != fingerprint(ex, {})  # settings enter the fingerprint
    text = "i have lost my bank card"
    ranked, sim = r.classify(text)
    assert ranked[0][0] == "lost_card"
    # the head sees [stock, fine-tuned] / sqrt(2): the second half is the fine-tuned encoder's
    v, stock = r._encode([text]) * np.sqrt(2), embedder.encode([text])
    assert v.shape == (1, 768) and abs(float(np.linalg.norm(v)) - np.sqrt(2)) < 1e-4
    np.testing.assert_allclose(v[:, :384], stock, atol=1e-5)
    assert not np.allclose(v[:, 384:], stock, atol=1e-4)

    r2 = IntentRouter(embedder, tmp_path, finetune=SMALL)
    assert r2.ensure_trained(ex) is False  # same examples, same settings: loaded, not retrained
    ranked2, sim2 = r2.classify(text)
    assert ranked2 == ranked and sim2 == sim
    # a plain load() of a fine-tuned router also uses its encoder
    r3 = IntentRouter(embedder, tmp_path)
    assert r3.load() and r3.encoder is not None and r3.classify(text) == (ranked, sim)
    # changed examples retrain
    assert IntentRouter(embedder, tmp_path, finetune=SMALL).ensure_trained(
        [*ex, Example("exchange", "qa", "how many euros for a pound")]
    )


def test_default_path_is_unchanged_when_the_flag_is_off(embedder, tmp_path):
    ex = _examples()
    r = IntentRouter(embedder, tmp_path, finetune=SMALL)
    r.ensure_trained(ex)
    assert (tmp_path / ENCODER_FILE).is_file()
    frozen = IntentRouter(embedder, tmp_path)  # the default: no fine-tuning
    assert frozen.ensure_trained(ex)  # the fine-tuned router does not match: retrained frozen
    assert frozen.encoder is None and frozen.fingerprint == fingerprint(ex, {})
    assert "encoder" not in json.loads((tmp_path / "router.json").read_text())
    assert not (tmp_path / ENCODER_FILE).exists()  # no stale 90 MB file left behind
    text = "rate for dollars"
    np.testing.assert_array_equal(frozen._encode([text]), embedder.encode([text]))


@pytest.mark.parametrize("damage", ["garbage", "missing"])
def test_damaged_encoder_weights_are_retrained_not_trusted(embedder, tmp_path, damage):
    ex = _examples()
    IntentRouter(embedder, tmp_path, finetune=SMALL).ensure_trained(ex)
    path = tmp_path / ENCODER_FILE
    if damage == "garbage":
        path.write_bytes(b"\x00not safetensors at all" * 10)
    else:
        path.unlink()
    r = IntentRouter(embedder, tmp_path, finetune=SMALL)
    assert r.ensure_trained(ex) is True  # retrained, not crashed
    assert r.encoder is not None
    doc = json.loads((tmp_path / "router.json").read_text())
    assert FinetunedEncoder.load(embedder.load(), path, doc["encoder"]["sha256"]).dim == 384


def test_encoder_load_errors_name_the_problem(embedder, tmp_path):
    from safetensors.torch import save_file

    base = embedder.load()
    path = tmp_path / ENCODER_FILE
    with pytest.raises(EncoderWeightsError, match="cannot read"):
        FinetunedEncoder.load(base, path)
    path.write_bytes(b"junk")
    with pytest.raises(EncoderWeightsError, match="damaged"):
        FinetunedEncoder.load(base, path, sha256="0" * 64)
    with pytest.raises(EncoderWeightsError, match="not valid safetensors"):
        FinetunedEncoder.load(base, path)
    save_file({"w": torch.zeros(2, 2)}, str(path))
    with pytest.raises(EncoderWeightsError, match="does not match the base model"):
        FinetunedEncoder.load(base, path)
    state = {k: v.clone() for k, v in base.state_dict().items()}
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key] = torch.full_like(state[key], float("nan"))
    save_file(state, str(path))
    with pytest.raises(EncoderWeightsError, match="not finite"):
        FinetunedEncoder.load(base, path)


def test_config_router_section():
    from assistant.config import BotConfig

    assert BotConfig().router.finetune_settings() is None
    cfg = BotConfig.model_validate({"router": {"finetune_encoder": True, "finetune_pairs": 640}})
    settings = FinetuneSettings.from_dict(cfg.router.finetune_settings())
    assert settings.pairs == 640 and settings.epochs == 10 and settings.concat


def test_cli_train_router_finetune(project_dir, router_fits):
    import yaml
    from typer.testing import CliRunner

    from assistant.cli import app

    cfg_path = project_dir / "llmos.yaml"
    cfg = yaml.safe_load(cfg_path.read_text()) or {}
    cfg.setdefault("router", {})["finetune_pairs"] = 64  # two steps of 32: a smoke, not a fit
    cfg_path.write_text(yaml.safe_dump(cfg))
    r = CliRunner().invoke(app, ["train", "router", "--project", str(project_dir), "--finetune"])
    assert r.exit_code == 0, r.output
    # one fit, fine-tuned: the frozen router of llmos.yaml is not trained first
    assert router_fits == [{"selftrain": False, "finetune": True}]
    assert "Encoder fine-tuned: 2 steps on " in r.output
    assert "router.finetune_encoder is off" in r.output
    router_dir = project_dir / "models" / "router"
    doc = json.loads((router_dir / "router.json").read_text())
    assert doc["encoder"]["settings"]["pairs"] == 64 and (router_dir / ENCODER_FILE).is_file()


def test_router_on_the_finetuned_vector_alone(embedder, tmp_path):
    r = IntentRouter(embedder, tmp_path, finetune={**SMALL, "concat": False})
    r.ensure_trained(_examples())
    text = "my top up did not go through"
    v = r._encode([text])
    assert v.shape == (1, 384) and not np.allclose(v, embedder.encode([text]), atol=1e-4)
    again = IntentRouter(embedder, tmp_path)
    assert again.load() and again.classify(text) == r.classify(text)
