"""The generic YAML <-> frozen dataclass loader, on hand-built dataclasses."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytest
import yaml

from wildreid.config import (
    InvalidValue,
    dump_config,
    from_dict,
    load_config,
    parse_override,
    to_dict,
)
from wildreid.errors import ConfigError


@dataclass(frozen=True)
class Optim:
    lr: float = 0.1
    name: Literal["adamw", "sgd"] = "adamw"
    steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise InvalidValue("lr", f"must be > 0, got {self.lr}")


@dataclass(frozen=True)
class Term:
    name: str
    weight: float = 1.0
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Data:
    metadata: Path
    split_column: str | None = None
    size: tuple[int, int] | None = None
    skip: bool = False

    def __post_init__(self) -> None:
        if self.split_column == "":
            raise ConfigError("split_column is empty")


@dataclass(frozen=True)
class Root:
    data: Data
    optim: Optim = field(default_factory=Optim)
    terms: tuple[Term, ...] = (Term("a"),)
    seed: int = 0
    note: str | None = None


def _raw() -> dict[str, Any]:
    return {"data": {"metadata": "m.csv"}}


def test_builds_nested_dataclasses_with_defaults() -> None:
    config = load_config(
        {
            "data": {"metadata": "x/m.csv", "size": [224, 160], "split_column": "md_split"},
            "optim": {"lr": 1, "steps": [3, 5]},
            "terms": [{"name": "t", "weight": 2, "params": {"margin": 0.3}}],
        },
        Root,
    )
    assert config == Root(
        data=Data(metadata=Path("x/m.csv"), split_column="md_split", size=(224, 160)),
        optim=Optim(lr=1.0, steps=(3, 5)),
        terms=(Term("t", 2.0, {"margin": 0.3}),),
    )
    assert isinstance(config.optim.lr, float) and isinstance(config.terms, tuple)


def test_the_caller_mapping_is_not_modified() -> None:
    raw = _raw()
    load_config(raw, Root, overrides=["optim.lr=0.5", "data.skip=true"])
    assert raw == {"data": {"metadata": "m.csv"}}


def test_unknown_key_names_the_full_path_and_suggests() -> None:
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.lrr'.*did you mean 'optim\.lr'"):
        load_config({**_raw(), "optim": {"lrr": 0.1}}, Root)
    with pytest.raises(ConfigError, match=r"unknown key 'terms\.0\.wieght'.*'terms\.0\.weight'"):
        load_config({**_raw(), "terms": [{"name": "a", "wieght": 1}]}, Root)
    with pytest.raises(ConfigError, match=r"unknown key 'dat'.*did you mean 'data'"):
        load_config({"dat": {}}, Root)


def test_missing_required_key() -> None:
    with pytest.raises(ConfigError, match=r"missing key 'data\.metadata'"):
        load_config({"data": {}}, Root)
    with pytest.raises(ConfigError, match=r"missing key 'data'"):
        load_config({}, Root)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"seed": True}, r"seed: expected an integer, got True"),
        ({"seed": 1.5}, r"seed: expected an integer"),
        ({"optim": {"lr": "fast"}}, r"optim\.lr: expected a number, got 'fast'"),
        ({"optim": {"name": "adam"}}, r"optim\.name: 'adam' is not one of 'adamw', 'sgd'.*'adamw'"),
        ({"optim": {"steps": [1, "x"]}}, r"optim\.steps\.1: expected an integer"),
        ({"optim": {"steps": 3}}, r"optim\.steps: expected a list"),
        ({"data": {"metadata": "m", "size": [1, 2, 3]}}, r"data\.size: expected a list of 2"),
        ({"data": {"metadata": "m", "skip": "yes please"}}, r"data\.skip: expected true or false"),
        ({"data": {"metadata": "m", "split_column": 2024}}, r"split_column: expected .*quote it"),
        ({"terms": "a"}, r"terms: expected a list"),
        ({"terms": [{"name": "a", "params": [1]}]}, r"terms\.0\.params: expected a mapping"),
        ({"optim": 3}, r"optim: expected a mapping"),
    ],
)
def test_type_errors_name_the_key(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config({**_raw(), **raw}, Root)


def test_dataclass_validation_errors_get_the_path() -> None:
    with pytest.raises(InvalidValue, match=r"^optim\.lr: must be > 0, got -1\.0$") as info:
        load_config({**_raw(), "optim": {"lr": -1}}, Root)
    assert info.value.key == "optim.lr"
    with pytest.raises(ConfigError, match=r"^data: split_column is empty$"):
        load_config({"data": {"metadata": "m", "split_column": ""}}, Root)


def test_float_strings_from_pyyaml_are_numbers() -> None:
    # PyYAML (YAML 1.1) reads 3e-4 as a string: a float field accepts it.
    assert yaml.safe_load("lr: 3e-4") == {"lr": "3e-4"}
    config = load_config({**_raw(), "optim": yaml.safe_load("lr: 3e-4")}, Root)
    assert config.optim.lr == pytest.approx(3e-4)


def test_overrides_use_yaml_scalars_and_item_indices() -> None:
    config = load_config(
        _raw(),
        Root,
        overrides=[
            "optim.lr=3e-4",
            "data.split_column=md_split",
            "data.size=[32, 48]",
            "terms.0.params={margin: 0.2}",
            "terms.0.weight=0.5",
            "note=null",
            "seed=7",
        ],
    )
    assert config.optim.lr == pytest.approx(3e-4)
    assert config.data.split_column == "md_split"
    assert config.data.size == (32, 48)
    assert config.terms == (Term("a", 0.5, {"margin": 0.2}),)
    assert config.seed == 7 and config.note is None


def test_override_of_a_mapping_entry() -> None:
    config = load_config(
        {**_raw(), "terms": [{"name": "t", "params": {"a": 1}}]},
        Root,
        overrides=["terms.0.params.b=x"],
    )
    assert dict(config.terms[0].params) == {"a": 1, "b": "x"}


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("optim.lrr=1", r"unknown key 'optim\.lrr'; did you mean 'optim\.lr'"),
        ("optim", r"must look like key\.path=value"),
        ("optim..lr=1", r"must look like key\.path=value"),
        ("terms.3.weight=1", r"terms\.3: 'terms' is a list of 1 item"),
        ("seed.x=1", r"seed\.x: 'seed' is a single value"),
        ("optim.lr=[1", r"not valid YAML"),
        ("optim.lr=-2", r"optim\.lr: must be > 0"),
    ],
)
def test_bad_overrides(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(_raw(), Root, overrides=[override])


def test_parse_override() -> None:
    assert parse_override("a.b=3e-4") == (("a", "b"), "3e-4")
    assert parse_override("a=1.5") == (("a",), 1.5)
    assert parse_override("a=x=y") == (("a",), "x=y")
    assert parse_override("a=") == (("a",), "")


def test_dump_round_trips(tmp_path: Path) -> None:
    config = load_config(
        {**_raw(), "optim": {"lr": 1e-5, "steps": [2]}, "terms": [{"name": "t", "params": {}}]},
        Root,
    )
    text = dump_config(config)
    assert text.index("data:") < text.index("optim:") < text.index("terms:")
    file = tmp_path / "c.yaml"
    file.write_text(text)
    assert load_config(file, Root) == config
    assert to_dict(config)["data"] == {
        "metadata": "m.csv",
        "split_column": None,
        "size": None,
        "skip": False,
    }


def test_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "missing.yaml", Root)
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [1,")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad, Root)
    bad.write_text("- 1\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(bad, Root)
    bad.write_text("data: {metadata: m}\noptim: {lrr: 1}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'optim\.lrr'.*\(in .*bad\.yaml\)"):
        load_config(bad, Root)


def test_from_dict_rejects_non_dataclasses() -> None:
    with pytest.raises(TypeError):
        from_dict({}, dict)
