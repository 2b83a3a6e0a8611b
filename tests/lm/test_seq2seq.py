"""The seq2seq machinery end to end: a tiny translator trains on the demo phrasebook (loss falls),
beam search decodes what it learnt, checkpoints reload and resume; MarianMT directories load
through the same interface; the summarizer trains and respects its word cap."""

import io
import json
import pickle
import shutil
import sys
import warnings

import pytest
import torch

from lm.errors import CheckpointError, LMError, MissingDependencyError, UnsafeCheckpointError
from lm.seq2seq import Seq2Seq, load_summarizer, train_shared_bpe, train_summarizer
from lm.seq2seq_data import read_pairs
from lm.translator import (
    TranslatorSet,
    evaluate_translation,
    train_translator,
    write_translation_report,
)
from tests.lm.conftest import REPO

PHRASEBOOK = REPO / "assistant" / "demo" / "translation" / "phrasebook.tsv"
EVAL_TSV = REPO / "assistant" / "demo" / "eval" / "translate.tsv"
STEPS = 200


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny en->de translator trained on the 73 phrasebook rows (a few seconds)."""
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("s2s") / "translator-en-de"
    calls = []
    result = train_translator(
        [PHRASEBOOK],
        "en",
        "de",
        out,
        preset="tiny",
        steps=STEPS,
        val=[PHRASEBOOK],
        learning_rate=5e-3,
        eval_interval=100,
        on_progress=lambda done, total, info: calls.append((done, total, info)),
        show_progress=False,
    )
    return out, result, calls


@pytest.fixture(scope="module")
def model(run):
    return Seq2Seq.from_dir(run[0])


def test_training_loss_falls_and_writes_checkpoints(run):
    out, r, calls = run
    assert r.step == STEPS and r.pairs == 73
    train = [v for _, v in r.history["train"]]
    assert sum(train[-20:]) / 20 < 0.6 * sum(train[:5]) / 5
    vals = [v for _, v in r.history["val"]]
    assert len(vals) == 2 and vals[1] < vals[0] < train[0]
    for sub in ("best", "last"):
        for f in ("model.safetensors", "tokenizer.json", "config.json", "llmos.json"):
            assert (out / sub / f).is_file()
    assert (out / "last" / "training_state.safetensors").is_file()
    assert not (out / "best" / "training_state.json").exists()
    manifest = json.loads((out / "best" / "llmos.json").read_text())
    assert manifest["kind"] == "translator" and (manifest["src"], manifest["tgt"]) == ("en", "de")
    assert (out / "loss_curve.png").read_bytes()[:4] == b"\x89PNG"
    assert [c[0] for c in calls] == list(range(1, STEPS + 1)) and calls[-1][1] == STEPS
    assert {"loss", "val_loss", "lr", "epoch"} <= set(calls[-1][2])


def test_beam_search_translates_what_it_learnt(model):
    assert (model.src, model.tgt, model.task, model.name) == (
        "en",
        "de",
        "translate",
        "translator-en-de",
    )
    pairs = read_pairs([PHRASEBOOK], "en", "de")
    beam = model.generate([a for a, _ in pairs], beam_size=4)
    assert sum(o == ref for o, (_, ref) in zip(beam, pairs, strict=True)) >= 5
    greedy = model.generate([a for a, _ in pairs[:5]], beam_size=1)
    assert all(isinstance(g, str) and g for g in greedy)
    # batched == one at a time, in order; empty input gives empty output
    one_by_one = [model.generate([a])[0] for a, _ in pairs[:5]]
    assert model.generate([a for a, _ in pairs[:5]]) == one_by_one
    assert model.generate(["", "Hello!"])[0] == ""
    with pytest.raises(LMError, match="beam size"):
        model.generate(["Hello!"], beam_size=0)


def test_stream_yields_the_translation_in_words(model):
    pieces = list(model.stream("Good morning.", beam_size=4))
    assert len(pieces) >= 1
    assert "".join(pieces).strip() == model.generate(["Good morning."], beam_size=4)[0]


def test_checkpoint_reloads_and_resume_continues(run, model, tmp_path):
    out, r, _ = run
    again = Seq2Seq.from_dir(out / "best")
    texts = ["Hello!", "Thank you.", "Where is my order?"]
    assert again.generate(texts) == model.generate(texts)
    copy = tmp_path / "translator-en-de"
    shutil.copytree(out, copy)
    r2 = train_translator(
        [PHRASEBOOK],
        "en",
        "de",
        copy,
        preset="tiny",
        steps=STEPS + 20,
        val=[PHRASEBOOK],
        resume=True,
        show_progress=False,
    )
    assert r2.step == STEPS + 20
    assert r2.history["train"][:STEPS] == r.history["train"]
    with pytest.raises(LMError, match="pairs changed"):
        train_translator(
            [EVAL_TSV], "en", "de", copy, steps=STEPS + 30, resume=True, show_progress=False
        )
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_translator(
            [PHRASEBOOK], "en", "de", tmp_path / "new", steps=5, resume=True, show_progress=False
        )


def test_translator_set_discovers_and_streams(run, tmp_path):
    models = tmp_path / "models"
    shutil.copytree(run[0], models / "translator-en-de")
    (models / "lm").mkdir()
    ts = TranslatorSet(models)
    assert ts.pairs() == [("en", "de")]
    assert ts.supports("en", "de") and ts.supports("EN", "de") and not ts.supports("de", "en")
    assert ts.name("en", "de") == "translator-en-de"
    streamed = "".join(ts.stream("Good evening.", src="en", tgt="de")).strip()
    assert streamed == ts.translate(["Good evening."], "en", "de")[0]
    with pytest.raises(LMError, match="llmos train translator"):
        ts.translate(["x"], "de", "fr")
    assert TranslatorSet(tmp_path / "absent").pairs() == []


def test_evaluate_translation_writes_reports(model, tmp_path):
    result = evaluate_translation(model, [EVAL_TSV], src="en", tgt="de", beam_size=2)
    assert result["sentences"] == 30 and len(result["outputs"]) == 30
    for key in ("bleu", "chrf", "bleu_lc_13a"):
        assert 0.0 <= result[key] <= 100.0
    assert result["chrf"] > 0.0
    md, js = write_translation_report(result, tmp_path / "reports")
    assert "BLEU (sacrebleu, detokenized, cased)" in md.read_text()
    assert json.loads(js.read_text())["sentences"] == 30


def test_bad_training_options(tmp_path):
    with pytest.raises(LMError, match="two different languages"):
        train_translator([PHRASEBOOK], "en", "en", tmp_path / "o", steps=2, show_progress=False)
    with pytest.raises(LMError, match="budget"):
        train_translator([PHRASEBOOK], "en", "de", tmp_path / "o", show_progress=False)
    with pytest.raises(LMError, match="unknown preset"):
        train_translator(
            [PHRASEBOOK], "en", "de", tmp_path / "o", preset="huge", steps=2, show_progress=False
        )
    assert not (tmp_path / "o").exists()


# -- MarianMT directories -------------------------------------------------------------------


def _tiny_marian(path, tok):
    """A randomly initialised Marian model saved the way a downloaded MarianMT dir is."""
    from transformers import GenerationConfig, MarianConfig, MarianMTModel

    torch.manual_seed(0)
    cfg = MarianConfig(
        vocab_size=len(tok),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        max_position_embeddings=128,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        decoder_start_token_id=tok.pad_token_id,
        forced_eos_token_id=tok.eos_token_id,
    )
    m = MarianMTModel(cfg)
    m.generation_config = GenerationConfig(
        decoder_start_token_id=tok.pad_token_id,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bad_words_ids=[[tok.pad_token_id]],
        num_beams=4,
        max_length=128,
    )
    m.save_pretrained(str(path))
    return m


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    pairs = read_pairs([PHRASEBOOK], "en", "de")
    tok = train_shared_bpe([t for p in pairs for t in p], vocab_size=400, model_max_length=128)
    d = tmp_path_factory.mktemp("hub") / "opus-mt-en-de"
    _tiny_marian(d, tok)
    tok.save_pretrained(str(d))
    return d


def test_marian_directory_loads_through_the_same_interface(marian_dir, tmp_path):
    assert not (marian_dir / "llmos.json").exists()
    m = Seq2Seq.from_dir(marian_dir)
    assert (m.src, m.tgt, m.task, m.name) == ("en", "de", "translate", "opus-mt-en-de")
    outs = m.generate(["Hello!", "Where is my order?"], beam_size=3, max_new_tokens=8)
    assert len(outs) == 2 and all(isinstance(o, str) for o in outs)
    assert outs == m.generate(["Hello!", "Where is my order?"], beam_size=3, max_new_tokens=8)
    # A downloaded model renamed into a project is served by TranslatorSet.
    shutil.copytree(marian_dir, tmp_path / "models" / "translator-en-fr")
    ts = TranslatorSet(tmp_path / "models")
    assert ts.supports("en", "fr")
    assert isinstance("".join(ts.stream("Hello!", src="en", tgt="fr")), str)


def _train_spm(lines):
    """A tiny unigram SentencePiece model, serialised as a downloaded ``*.spm`` file is."""
    import sentencepiece as spm

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=buf,
        vocab_size=120,
        hard_vocab_limit=False,  # a hundred lines may not hold 120 pieces
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    return buf.getvalue()


def _marian_vocab(*spm_blobs):
    """vocab.json as the OPUS-MT conversion writes it: ``</s>`` 0, ``<unk>`` 1, the pieces of
    both SentencePiece models (one shared embedding), ``<pad>`` last."""
    import sentencepiece as spm

    vocab = {"</s>": 0, "<unk>": 1}
    for blob in spm_blobs:
        sp = spm.SentencePieceProcessor(model_proto=blob)
        for i in range(sp.get_piece_size()):
            if not (sp.is_control(i) or sp.is_unknown(i)):
                vocab.setdefault(sp.id_to_piece(i), len(vocab))
    vocab["<pad>"] = len(vocab)
    return vocab


@pytest.fixture(scope="module")
def spm_marian_dir(tmp_path_factory):
    """A MarianMT directory laid out like Helsinki-NLP/opus-mt-en-de: real SentencePiece
    source/target models, vocab.json, tokenizer_config.json and random safetensors weights."""
    from transformers import MarianTokenizer

    torch.set_num_threads(1)
    pairs = read_pairs([PHRASEBOOK, EVAL_TSV], "en", "de")
    src, tgt = _train_spm([a for a, _ in pairs]), _train_spm([b for _, b in pairs])
    d = tmp_path_factory.mktemp("hub-spm") / "opus-mt-en-de"
    d.mkdir()
    (d / "source.spm").write_bytes(src)
    (d / "target.spm").write_bytes(tgt)
    (d / "vocab.json").write_text(json.dumps(_marian_vocab(src, tgt), ensure_ascii=False))
    (d / "tokenizer_config.json").write_text(json.dumps({"source_lang": "en", "target_lang": "de"}))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Recommended: pip install sacremoses")
        _tiny_marian(d, MarianTokenizer.from_pretrained(str(d), local_files_only=True))
    return d


def test_sentencepiece_marian_directory_loads_and_translates(spm_marian_dir, tmp_path):
    from transformers import MarianTokenizer

    assert not (spm_marian_dir / "tokenizer.json").exists()
    m = Seq2Seq.from_dir(spm_marian_dir)
    assert isinstance(m.tokenizer, MarianTokenizer)
    assert (m.src, m.tgt, m.name) == ("en", "de", "opus-mt-en-de")
    vocab = json.loads((spm_marian_dir / "vocab.json").read_text())
    assert (m.tokenizer.pad_token_id, m.tokenizer.eos_token_id) == (vocab["<pad>"], 0)
    assert m.model.config.vocab_size == len(vocab)
    # The source side goes through the real SentencePiece model: pieces, </s>, and back.
    ids = m.tokenizer(["Where is my order?"])["input_ids"][0]
    assert ids[-1] == 0 and len(ids) > 2 and vocab["<unk>"] not in ids
    assert m.tokenizer.decode(ids, skip_special_tokens=True) == "Where is my order?"
    texts = ["Hello!", "", "Where is my order?"]
    outs = m.generate(texts, beam_size=3, max_new_tokens=8)
    assert len(outs) == 3 and outs[1] == "" and all(isinstance(o, str) for o in outs)
    assert [outs[0], outs[2]] == [
        m.generate([t, ""], beam_size=3, max_new_tokens=8)[0] for t in (texts[0], texts[2])
    ]
    # Dropped into a project's models/ as translator-en-de, TranslatorSet finds and serves it.
    shutil.copytree(spm_marian_dir, tmp_path / "models" / "translator-en-de")
    ts = TranslatorSet(tmp_path / "models", beam_size=2)
    assert ts.pairs() == [("en", "de")]
    (out,) = ts.translate(["Good morning."], "en", "de")
    assert isinstance(out, str) and isinstance(ts.model("en", "de").tokenizer, MarianTokenizer)
    assert "".join(ts.stream("Good morning.", src="en", tgt="de")).strip() == out.strip()


def test_translator_set_finds_a_hub_named_marian_dir(spm_marian_dir, tmp_path):
    shutil.copytree(spm_marian_dir, tmp_path / "models" / "opus-mt-en-de")
    ts = TranslatorSet(tmp_path / "models")
    assert ts.pairs() == [("en", "de")] and ts.name("en", "de") == "opus-mt-en-de"


def test_sentencepiece_marian_all_empty_input(spm_marian_dir):
    assert Seq2Seq.from_dir(spm_marian_dir).generate(["", "  "]) == ["", ""]


class _Trap:
    """Unpickling this creates a file: proof that a weight file was (unsafely) unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_sentencepiece_marian_weights_load_only_from_safetensors(spm_marian_dir, tmp_path):
    marker = tmp_path / "unpickled"
    trap = pickle.dumps({"model.shared.weight": _Trap(marker)})
    # the trap is live: what unpickling it would call does create the file (nothing here is
    # ever unpickled; the pickle ban covers the tests too)
    fn, args = _Trap(tmp_path / "control").__reduce__()
    fn(*args).close()
    assert (tmp_path / "control").exists() and b"_Trap" not in trap and b"open" in trap
    # pytorch_model.bin only (an older hub snapshot): refused before anything is read.
    pickled = tmp_path / "pickled" / "opus-mt-en-de"
    shutil.copytree(spm_marian_dir, pickled)
    (pickled / "model.safetensors").unlink()
    (pickled / "pytorch_model.bin").write_bytes(trap)
    with pytest.raises(UnsafeCheckpointError, match=r"pickle.*pytorch_model\.bin") as e:
        Seq2Seq.from_dir(pickled)
    assert "\n" not in str(e.value) and not marker.exists()
    # Both files (today's hub snapshots): the safetensors weights load, the pickle is ignored.
    both = tmp_path / "both" / "opus-mt-en-de"
    shutil.copytree(spm_marian_dir, both)
    (both / "pytorch_model.bin").write_bytes(trap)
    m = Seq2Seq.from_dir(both)
    assert isinstance(m.generate(["Hello!"], beam_size=1, max_new_tokens=4)[0], str)
    assert not marker.exists()


def test_marian_sentencepiece_dir_without_sentencepiece(marian_dir, tmp_path, monkeypatch):
    # None in sys.modules makes `import sentencepiece` raise ImportError, as if not installed.
    monkeypatch.setitem(sys.modules, "sentencepiece", None)
    d = tmp_path / "opus-mt-en-de"
    d.mkdir()
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(marian_dir / f, d / f)
    for f in ("source.spm", "target.spm"):
        (d / f).write_bytes(b"\x00spm")
    (d / "vocab.json").write_text("{}")
    with pytest.raises(MissingDependencyError, match="pip install sentencepiece") as e:
        Seq2Seq.from_dir(d)
    assert "\n" not in str(e.value)


def test_broken_sentencepiece_files_are_one_line_errors(marian_dir, tmp_path):
    d = tmp_path / "opus-mt-en-de"
    d.mkdir()
    for f in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(marian_dir / f, d / f)
    for f in ("source.spm", "target.spm"):
        (d / f).write_bytes(b"\x00spm")
    (d / "vocab.json").write_text(json.dumps({"</s>": 0, "<unk>": 1, "<pad>": 2}))
    with pytest.raises(CheckpointError, match="cannot load the Marian tokenizer") as e:
        Seq2Seq.from_dir(d)
    assert "\n" not in str(e.value)


def test_broken_and_unsafe_model_dirs(marian_dir, tmp_path):
    bad = tmp_path / "mismatch"
    shutil.copytree(marian_dir, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["d_model"] = 48
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError) as e:
        Seq2Seq.from_dir(bad)
    assert "\n" not in str(e.value)
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    shutil.copy(marian_dir / "config.json", unsafe / "config.json")
    (unsafe / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        Seq2Seq.from_dir(unsafe)
    causal = tmp_path / "causal"
    causal.mkdir()
    (causal / "config.json").write_text(json.dumps({"model_type": "llama"}))
    shutil.copy(marian_dir / "model.safetensors", causal / "model.safetensors")
    with pytest.raises(CheckpointError, match="not an encoder-decoder"):
        Seq2Seq.from_dir(causal)
    with pytest.raises(CheckpointError, match="not found"):
        Seq2Seq.from_dir(tmp_path / "nothing")


# -- abstractive summarizer -----------------------------------------------------------------


def test_summarizer_trains_and_caps_words(tmp_path):
    torch.set_num_threads(1)
    names = ["Amy", "Bob", "Cleo", "Dan", "Eve", "Finn"]
    days = ["Monday", "Tuesday", "Friday"]
    rows = []
    for i in range(30):
        n, d = names[i % 6], days[i % 3]
        doc = f"{n}: hi, is order {i} on its way? Agent: yes, order {i} ships on {d}. {n}: thanks!"
        rows.append(json.dumps({"dialogue": doc, "summary": f"{n}'s order {i} ships on {d}."}))
    data = tmp_path / "pairs.jsonl"
    data.write_text("\n".join(rows) + "\n")
    out = tmp_path / "summarizer"
    r = train_summarizer([data], out, preset="tiny", steps=40, show_progress=False)
    assert r.step == 40
    assert r.history["val"][-1][1] < r.history["train"][0][1]
    s = load_summarizer(out)
    assert s.name == "summarizer" and s.model.task == "summarize"
    assert json.loads((out / "best" / "llmos.json").read_text())["kind"] == "summarizer"
    text = "Amy: hi, is order 3 on its way? Agent: yes, order 3 ships on Monday. Amy: thanks!"
    capped = s.summarize(text, max_words=3)
    assert 1 <= len(capped.split()) <= 3
    assert isinstance(s.summarize(text), str)
