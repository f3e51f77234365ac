import pytest

from wildreid.errors import ConfigError, UnknownComponentError
from wildreid.registry import Registry


def test_registry_lookup_and_names() -> None:
    registry: Registry[int] = Registry("split kind")
    registry.add("closed", 1)

    @registry.register("open")
    def _open() -> None: ...

    assert registry.get("closed") == 1
    assert registry.names() == ["closed", "open"]
    assert "open" in registry
    assert len(registry) == 2


def test_registry_duplicate_name_is_an_error() -> None:
    registry: Registry[int] = Registry("model")
    registry.add("a", 1)
    with pytest.raises(ConfigError, match="model 'a' is already registered"):
        registry.add("a", 2)


def test_registry_unknown_name_suggests_close_names() -> None:
    registry: Registry[int] = Registry("split kind")
    for name in ("closed", "open", "disjoint"):
        registry.add(name, 0)
    with pytest.raises(UnknownComponentError, match="did you mean 'closed'") as info:
        registry.get("closd")
    assert "known: closed, disjoint, open" in str(info.value)
