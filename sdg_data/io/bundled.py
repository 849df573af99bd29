"""The recipes and launch files that ship with sdg, found by name from any working folder.

A ``--config`` (or ``--accelerate-config``) value is a path when a file is there, and wins; otherwise it is a
bundled file's name: ``generate_sdg30k``, ``gemini``, ``zero2_1x8``, or, where two kinds share a name, the
qualified ``sft/smoke``, ``detect/local``. The repository paths the docs once used (``train/recipes/sft/x.yaml``)
resolve too, from anywhere. The files are found beside the installed packages (a wheel ships them as package
data; a checkout has them in place), without importing any stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


ROOT = Path(__file__).resolve().parents[2]  # the folder that holds sdg_data/, distill/, train/, annotation/

# (kind, folder under ROOT, the commands that take it): the kind qualifies a name (``sft/smoke``)
FOLDERS: tuple[tuple[str, str, str], ...] = (
    ("core", "sdg_data/recipes", "generate, build, eval, reward (by the file's name)"),
    ("distill", "distill/recipes", "sdg distill --config"),
    ("annotate", "annotation/recipes", "sdg annotate ... --config"),
    ("sft", "train/recipes/sft", "sdg train sft --config"),
    ("grpo", "train/recipes/grpo", "sdg train grpo --config"),
    ("boxflow", "train/recipes/boxflow", "sdg train boxflow --config"),
    ("detect", "train/recipes/detect", "sdg detect --config"),
    ("refine", "train/recipes/refine", "sdg refine --config"),
    ("launch", "train/launch", "sdg train ... --accelerate-config"),
)


@dataclass(frozen=True)
class Bundled:
    kind: str
    name: str
    path: Path

    @property
    def qualified(self) -> str:
        return f"{self.kind}/{self.name}"

    def summary(self) -> str:
        """What the recipe is for: the first sentence of its leading comment (which may run over several lines)."""
        words: list[str] = []
        try:
            for line in self.path.read_text(encoding="utf-8").splitlines():
                if not line.startswith("#"):
                    break
                words += line.lstrip("# ").split()
        except OSError:
            return ""
        text = " ".join(words)
        cut = text.find(". ")
        return text if cut < 0 else text[: cut + 1]


def bundled() -> list[Bundled]:
    """Every bundled recipe and launch file, in the order of :data:`FOLDERS`, then by name."""
    out = []
    for kind, folder, _ in FOLDERS:
        for p in sorted((ROOT / folder).glob("*.yaml")):
            out.append(Bundled(kind, p.stem, p))
    return out


class RecipeError(ValueError):
    """A --config value that is neither a file nor a bundled name; the message lists what there is."""


def resolve(value: str | Path, kinds: tuple[str, ...] = (), flag: str = "--config") -> Path:
    """The file ``value`` names: a path that exists (it wins; so does ``NAME.yaml`` in the working folder for a
    bare ``NAME``), a bundled name (``kinds`` are searched first, so ``sdg train sft --config smoke`` means
    ``sft/smoke``), a qualified name (``sft/smoke``), or a repository path of a bundled file
    (``train/recipes/sft/smoke.yaml``) from any folder. RecipeError otherwise, and for a bundled recipe of another
    kind (a distill recipe given to build)."""
    text = str(value)
    p = Path(text).expanduser()
    if p.is_file():
        return p
    for local in (Path(text + ".yaml"), Path(text + ".yml")):
        if "/" not in text and local.is_file():
            return local
    repo = ROOT / text
    if repo.is_file() and any(repo.parent == ROOT / folder for _, folder, _ in FOLDERS):
        return repo
    name = text.removesuffix(".yaml").removesuffix(".yml")
    everything = bundled()
    exact = [b for b in everything if b.qualified == name]
    if exact:
        return exact[0].path
    same = [b for b in everything if b.name == name]
    mine = [b for b in same if b.kind in kinds]
    pick = mine if mine else same
    if len(pick) == 1:
        if kinds and pick[0].kind not in kinds:
            used = next(u for k, _, u in FOLDERS if k == pick[0].kind)
            raise RecipeError(f"{flag} {text}: that bundled file is a {pick[0].kind} recipe ({used}), not one for "
                              "this command (sdg recipes lists them)")  # fmt: skip
        return pick[0].path
    if len(pick) > 1:
        both = ", ".join(b.qualified for b in pick)
        raise RecipeError(f"{flag} {text}: several bundled files have that name ({both}); give one of those")
    if "/" in text or text.endswith((".yaml", ".yml")):
        raise RecipeError(f"{flag} {text}: no such file (and no bundled recipe of that name; sdg recipes lists them)")
    names = [b.name for b in everything if b.kind in kinds] or [b.qualified for b in everything]
    raise RecipeError(f"{flag} {text}: no such file and no bundled recipe of that name (bundled for this command: "
                      f"{', '.join(names)}; sdg recipes lists them all)")  # fmt: skip


def find(name: str) -> Bundled:
    """One bundled file by name (as :func:`resolve` reads it), for ``sdg recipes show``."""
    path = resolve(name) if not Path(name).is_file() else None
    if path is None:
        raise RecipeError(f"{name}: that is a file here, not a bundled recipe (sdg recipes lists them)")
    for b in bundled():
        if b.path == path:
            return b
    raise RecipeError(f"{name}: not a bundled recipe (sdg recipes lists them)")
