"""Config loading: every error names the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlsteward.config.models import get_model_config, load_all_model_configs, load_model_config
from mlsteward.errors import ConfigError

MINIMAL = """\
name: {name}
task: binary_classification
source: {{path: data.csv, entity: id}}
label: y
features: [a, b]
"""


def write(tmp_path: Path, text: str, name: str = "m") -> Path:
    p = tmp_path / f"{name}.yaml"
    p.write_text(text)
    return p


def test_shipped_configs_load() -> None:
    cfgs = load_all_model_configs()
    assert "heart_disease" in cfgs
    hd = cfgs["heart_disease"]
    assert hd.feature_service_name == "heart_disease"
    assert {s.column for s in hd.sensitive_attributes} == {"sex", "age"}


def test_minimal_config_gets_documented_defaults(tmp_path: Path) -> None:
    cfg = load_model_config(write(tmp_path, MINIMAL.format(name="m")))
    assert cfg.tuning.max_evals == 30 and cfg.tuning.seed == 42
    assert (cfg.split.train, cfg.split.validation, cfg.split.test) == (0.7, 0.15, 0.15)
    assert cfg.contract.max_bad_row_share == 0.05
    assert cfg.timestamp_column == "event_timestamp"  # assigned at ingestion when absent
    assert "max_depth" in cfg.tuning.search_space


def test_a_config_rewritten_at_once_is_read_anew(tmp_path: Path) -> None:
    """Parsed configs are kept by their text: a rewrite of the same size within the clock's
    granularity still gives the new values, and a broken rewrite still fails."""
    path = write(tmp_path, MINIMAL.format(name="m") + "tuning: {max_evals: 11}\n")
    assert load_model_config(path).tuning.max_evals == 11
    assert load_model_config(path) is load_model_config(path)
    path.write_text(MINIMAL.format(name="m") + "tuning: {max_evals: 12}\n")
    assert load_model_config(path).tuning.max_evals == 12
    path.write_text(MINIMAL.format(name="m") + "tuning: {max_evals: -1}\n")
    with pytest.raises(ConfigError, match="max_evals"):
        load_model_config(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: m\ntask: binary_classification\n", "source: Field required"),
        (MINIMAL.format(name="m") + "bogus_key: 1\n", "bogus_key: Extra inputs are not permitted"),
        (MINIMAL.format(name="m").replace("binary_classification", "clustering"), "task:"),
        (
            MINIMAL.format(name="m") + "split: {train: 0.8, validation: 0.3, test: 0.1}\n",
            "split: split fractions must sum to 1",
        ),
        (
            MINIMAL.format(name="m") + "sensitive_attributes: [{column: a, dtype: int}]\n",
            "'a' is a feature: its rules",
        ),
        (MINIMAL.format(name="m").replace("[a, b]", "[a, a]"), "duplicated column(s) ['a']"),
        (MINIMAL.format(name="m").replace("[a, b]", "[a, y]"), "also the entity, label"),
        (
            MINIMAL.format(name="m")
            + "tuning: {search_space: {eta: {dist: loguniform, low: 0, high: 1}}}\n",
            "tuning.search_space.eta: dist 'loguniform' needs low > 0",
        ),
        ("name: m\n  task: [unclosed\n", "not valid YAML at line"),
        ("- just\n- a list\n", "must be a YAML mapping"),
        (MINIMAL.format(name="other"), "must match the file name"),
    ],
)
def test_invalid_configs_name_file_key_and_problem(
    tmp_path: Path, text: str, expected: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_model_config(path)
    assert str(path) in str(err.value)
    assert expected in str(err.value)


def test_unknown_model_lists_known_ones(tmp_path: Path) -> None:
    write(tmp_path, MINIMAL.format(name="known"), name="known")
    with pytest.raises(ConfigError, match=r"unknown model 'nope'.*known"):
        get_model_config("nope", tmp_path)


@pytest.mark.parametrize(
    "name", ["../outside/m", "/abs/m", "sub/m", "M", "1m", "m-x", "m.yaml", "", "m" * 64]
)
def test_a_name_that_is_not_a_model_name_is_never_a_path(tmp_path: Path, name: str) -> None:
    """``../outside/m`` names a valid model file outside the config directory: refused all
    the same, before any file is read."""
    models = tmp_path / "models"
    models.mkdir()
    (tmp_path / "outside").mkdir()
    assert get_model_config("m", write(tmp_path / "outside", MINIMAL.format(name="m")).parent)
    with pytest.raises(ConfigError, match="is not a model name: it must be lower_snake_case"):
        get_model_config(name, models)


def test_per_model_state_paths_refuse_a_path_as_name(mlsteward_home: Path) -> None:
    from mlsteward.config import settings
    from mlsteward.data.state import current_snapshot

    per_model = [
        settings.snapshots_dir,
        settings.predictions_dir,
        settings.quarantine_dir,
        settings.reproductions_dir,
        settings.training_sets_dir,
        current_snapshot,
    ]
    for where in per_model:
        with pytest.raises(ConfigError, match="is not a model name"):
            where("../escaped")
    assert not (mlsteward_home.parent / "escaped").exists()
    assert settings.predictions_dir("a_model_63_" + "x" * 52).is_dir()


def test_artifact_pictures_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    from mlsteward.config.settings import artifact_pictures

    for value, expected in (
        ("", True),
        ("true", True),
        ("Yes", True),
        ("0", False),
        ("off", False),
    ):
        monkeypatch.setenv("MLSTEWARD_ARTIFACT_PICTURES", value)
        assert artifact_pictures() is expected
    monkeypatch.setenv("MLSTEWARD_ARTIFACT_PICTURES", "sometimes")
    with pytest.raises(ConfigError, match="MLSTEWARD_ARTIFACT_PICTURES='sometimes'"):
        artifact_pictures()
