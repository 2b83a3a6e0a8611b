from pathlib import Path

import pytest

from assistant.config import BotConfig, load_config, load_intents
from assistant.errors import ConfigError


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_when_missing(tmp_path):
    assert load_config(tmp_path / "llmos.yaml") == BotConfig()
    assert load_intents(tmp_path / "intents.yaml") == {}


def test_valid_config(tmp_path):
    p = write(tmp_path, "llmos.yaml", "name: Shop Bot\nrouter:\n  confidence_threshold: 0.6\n")
    cfg = load_config(p)
    assert cfg.name == "Shop Bot"
    assert cfg.router.confidence_threshold == 0.6


def test_invalid_yaml_names_file_and_line(tmp_path):
    p = write(tmp_path, "llmos.yaml", "name: x\nrouter:\n  confidence_threshold: [1,\n")
    with pytest.raises(ConfigError, match=r"^llmos.yaml line \d+: invalid YAML"):
        load_config(p)


def test_wrong_type_names_line_and_field(tmp_path):
    p = write(tmp_path, "llmos.yaml", "name: x\nrouter:\n  confidence_threshold: high\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(err.value).startswith("llmos.yaml line 3: router.confidence_threshold:")


def test_unknown_field_is_reported(tmp_path):
    p = write(tmp_path, "llmos.yaml", "name: x\nroutr:\n  a: 1\n")
    with pytest.raises(ConfigError, match=r"llmos.yaml line 2: routr: unknown field"):
        load_config(p)


def test_out_of_range(tmp_path):
    p = write(tmp_path, "llmos.yaml", "router:\n  confidence_threshold: 7\n")
    with pytest.raises(ConfigError, match=r"line 2: router\.confidence_threshold"):
        load_config(p)


def test_not_a_mapping_and_binary(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(write(tmp_path, "llmos.yaml", "- a\n- b\n"))
    b = tmp_path / "bin.yaml"
    b.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match="not valid UTF-8"):
        load_config(b)


def test_intents_valid_and_invalid(tmp_path):
    ok = write(
        tmp_path,
        "intents.yaml",
        "intents:\n  greet:\n    skill: smalltalk\n    examples: [hi, hello]\n",
    )
    assert load_intents(ok)["greet"].examples == ["hi", "hello"]
    bad = write(tmp_path, "i2.yaml", "intents:\n  greet:\n    skill: smalltalk\n    examples: []\n")
    with pytest.raises(ConfigError, match=r"i2.yaml line 4: intents.greet.examples"):
        load_intents(bad)
    missing = write(tmp_path, "i3.yaml", "intents:\n  greet:\n    examples: [hi]\n")
    with pytest.raises(ConfigError, match=r"i3.yaml line 2: intents.greet.skill: Field required"):
        load_intents(missing)
    blank = write(
        tmp_path, "i4.yaml", "intents:\n  greet:\n    skill: smalltalk\n    examples: [hi, '  ']\n"
    )
    with pytest.raises(ConfigError, match="examples"):
        load_intents(blank)


def test_demo_config_is_valid():
    from assistant.project import DEMO_ROOT

    cfg = load_config(DEMO_ROOT / "llmos.yaml")
    intents = load_intents(DEMO_ROOT / "intents.yaml")
    assert cfg.name
    assert len(intents) >= 10


def test_knowledge_index_settings(tmp_path):
    cfg = load_config(
        write(tmp_path, "llmos.yaml", "knowledge:\n  index: hnsw\n  ef_search: 200\n")
    )
    assert cfg.knowledge.index_options() == {
        "index_kind": "hnsw",
        "hnsw_threshold": 20_000,
        "ef_search": 200,
    }
    assert BotConfig().knowledge.index_options()["ef_search"] is None  # "auto"
    with pytest.raises(ConfigError, match=r"line 2: knowledge\.index"):
        load_config(write(tmp_path, "llmos.yaml", "knowledge:\n  index: ivf\n"))
    with pytest.raises(ConfigError, match=r"line 2: knowledge\.ef_search"):
        load_config(write(tmp_path, "llmos.yaml", "knowledge:\n  ef_search: 0\n"))


def test_sessions_retention_defaults_and_values(tmp_path):
    assert load_config(tmp_path / "llmos.yaml").sessions.retention_days is None
    p = write(tmp_path, "llmos.yaml", "sessions:\n  retention_days: 30\n  sweep_interval_s: 600\n")
    cfg = load_config(p).sessions
    assert (cfg.retention_days, cfg.retention_s, cfg.sweep_interval_s) == (30, 30 * 86400, 600)
    assert (
        load_config(
            write(tmp_path, "b.yaml", "sessions:\n  retention_days: null\n")
        ).sessions.retention_s
        is None
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("0", "Input should be greater than 0"),
        ("-2", "Input should be greater than 0"),
        ("yes", "Input should be a valid number"),  # YAML true: not 1 day
        ('"30"', "Input should be a valid number"),
        ("forever", "Input should be a valid number"),
        (".inf", "Input should be less than or equal to 36500"),
    ],
)
def test_sessions_retention_invalid_is_one_line(tmp_path, value, message):
    p = write(tmp_path, "llmos.yaml", f"name: x\nsessions:\n  retention_days: {value}\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    text = str(err.value)
    assert "\n" not in text
    assert text.startswith("llmos.yaml line 3: sessions.retention_days: ")
    assert message in text


def test_scaffold_has_a_commented_retention_line(tmp_path):
    import yaml

    from assistant.scaffold import LLMOS_YAML

    line = next(ln for ln in LLMOS_YAML.splitlines() if "retention_days" in ln)
    assert line.startswith("# sessions:")
    enabled = LLMOS_YAML.replace(line, line[2:])
    assert BotConfig.model_validate(yaml.safe_load(enabled)).sessions.retention_days == 30
    assert BotConfig.model_validate(yaml.safe_load(LLMOS_YAML)).sessions.retention_days is None
