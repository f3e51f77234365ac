"""Meta-tests: the public API is exactly ``__all__`` and importing it is cheap."""

import inspect
import subprocess
import sys

import wildreid


def test_public_names_equal_all() -> None:
    eager = {
        name
        for name, value in vars(wildreid).items()
        if not name.startswith("_") and not inspect.ismodule(value) and name != "annotations"
    }
    lazy = set(wildreid._LAZY)
    assert (eager | lazy | {"__version__"}) == set(wildreid.__all__)
    for name in wildreid.__all__:
        assert getattr(wildreid, name) is not None, name
    assert set(wildreid.__all__) <= set(dir(wildreid))


def test_import_does_not_load_heavy_modules() -> None:
    code = (
        "import sys, wildreid; "
        "print(sorted({'torch', 'timm', 'faiss', 'matplotlib'} & set(sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"
