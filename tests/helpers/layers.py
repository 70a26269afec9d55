"""The import contract of DESIGN.md ("Layers", "Checks"), checked statically.

Every module under ``<src>/terramask`` is parsed (never imported). An import is any of:
``import terramask.x``, ``from terramask.x import y``, relative imports, and string
imports: ``importlib.import_module("terramask.x")``, ``find_spec("terramask.x")``,
``terramask.core.lazy.require("pkg", ...)`` (or a ``lazy_import("...")``), ``__import__``,
and the module paths listed in a ``SUBCOMMANDS = {...}`` table (``cli/main``). Imports
inside functions and under ``if TYPE_CHECKING:`` count like any other.

A *unit* is a layer (``core``, ``io``, ``models``, ``eval``, ``pipelines``, ``cli``,
``web``) or one of its sub-packages (``models.sam``, ``pipelines.amg`` …); ``terramask``
itself (``__version__``) may be imported by anyone, and ``terramask/__main__`` belongs to
the CLI. :func:`check_tree` returns each broken rule as a :class:`Violation`, printed as
``file:line imports X (layer A -> layer B)``.
"""

from __future__ import annotations

import ast
import sys
from dataclasses import dataclass
from pathlib import Path

LAYERS = ("core", "io", "models", "eval", "pipelines", "web", "cli")

# layer -> what it may import from other layers (a layer, or one module of it)
LAYER_DEPS: dict[str, tuple[str, ...]] = {
    "core": (),
    "io": ("core",),
    # io.atomic (stdlib only) keeps the embedding cache's writes atomic like every output
    "models": ("core", "io.atomic"),
    # eval takes readers as arguments instead of importing io
    "eval": ("core",),
    "pipelines": ("core", "io", "models", "eval"),
    "web": ("core", "io", "models", "eval", "pipelines"),
    # `terramask serve` starts the web app; nothing imports the CLI
    "cli": ("core", "io", "models", "eval", "pipelines", "web"),
}

# models: the families are sub-packages; only the factory picks one, and ONNX exports SAM and SAM 2
MODEL_FAMILIES = ("sam", "sam2", "onnx", "openvino", "classic")
FAMILY_FACTORY = "models.resolve"
FAMILY_DEPS: dict[str, tuple[str, ...]] = {"sam": (), "sam2": (), "classic": (), "onnx": ("sam", "sam2"),
                                         "openvino": ("onnx",)}

# pipelines: later stages build on earlier ones, never the other way round
PIPELINE_DEPS: dict[str, tuple[str, ...]] = {
    "prompted": (),
    "amg": (),
    "scene": ("amg", "prompted"),
    "batch": ("scene", "amg"),
    # find-similar and text prompts over scenes: the scene pipeline with a classed segmenter
    "find": ("scene", "amg", "prompted"),
    "evaluate": ("prompted", "amg", "scene", "find"),
    # fine-tuning measures before/after with evaluate's click protocol
    "finetune": ("evaluate",),
}

# third-party packages confined to layers (anything else is free outside core)
CORE_THIRD_PARTY = ("numpy", "affine")
CONFINED: dict[str, tuple[str, ...]] = {
    "torch": ("models",),
    "torchvision": ("models",),
    "onnx": ("models",),
    "onnxruntime": ("models",),
    "openvino": ("models",),
    "segment_anything": ("models",),
    "sam2": ("models",),
    "mobile_sam": ("models",),
    "timm": ("models",),
    "click": ("cli",),
    # `terramask serve` checks the web extra is installed (with the install hint) before starting it
    "fastapi": ("web", "cli"),
    "starlette": ("web",),
    "uvicorn": ("web", "cli"),
    "pydantic": ("web",),
}

_STRING_IMPORTERS = ("import_module", "find_spec", "require", "lazy_import", "__import__")


@dataclass(frozen=True)
class Violation:
    file: str
    line: int
    target: str
    source_unit: str
    target_unit: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line} imports {self.target} (layer {self.source_unit} -> layer {self.target_unit})"


@dataclass(frozen=True)
class _Import:
    line: int
    module: str  # absolute dotted name


def module_name(path: Path, src: Path) -> str:
    """``src/terramask/io/scene.py`` -> ``terramask.io.scene``; packages name their folder."""
    parts = list(path.relative_to(src).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def find_imports(tree: ast.AST, module: str, is_package: bool, known: set[str]) -> list[_Import]:
    """Every import of the module ``module`` (AST ``tree``), with absolute names.

    ``known`` is the set of terramask module names, so ``from terramask.io import atomic``
    is recorded as ``terramask.io.atomic``.
    """
    package = module if is_package else module.rpartition(".")[0]
    found: list[_Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [_Import(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(_Import(node.lineno, sub if sub in known else base))
        elif isinstance(node, ast.Call) and _callee(node) in _STRING_IMPORTERS:
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                found.append(_Import(node.lineno, node.args[0].value))
        elif isinstance(node, (ast.Assign, ast.AnnAssign)) and _assigns_subcommands(node):
            assert node.value is not None
            for const in ast.walk(node.value):
                if isinstance(const, ast.Constant) and isinstance(const.value, str) and const.value in known:
                    found.append(_Import(const.lineno, const.value))
    return found


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def _callee(call: ast.Call) -> str | None:
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _assigns_subcommands(node: ast.Assign | ast.AnnAssign) -> bool:
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]
    return any(isinstance(t, ast.Name) and t.id == "SUBCOMMANDS" for t in targets)


def unit_of(module: str, packages: set[str]) -> str:
    """``terramask.models.sam.backend`` -> ``models.sam``; ``terramask.io.scene`` -> ``io``;
    ``terramask.__main__`` -> ``cli``; ``terramask`` -> ``terramask``."""
    parts = module.split(".")[1:]
    if not parts:
        return "terramask"
    if parts[0] == "__main__":
        return "cli"
    if len(parts) >= 2 and f"terramask.{parts[0]}.{parts[1]}" in packages:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def allowed(source: str, target: str, source_module: str) -> bool:
    """Whether unit ``source`` (module ``source_module``) may import terramask module
    ``target`` (dotted name below ``terramask.``, e.g. ``io.atomic``) of unit ``target_unit``."""
    src_layer, tgt_layer = source.split(".")[0], target.split(".")[0]
    if tgt_layer == "terramask" or target == "":
        return True
    if src_layer != tgt_layer:
        if not any(target == dep or target.startswith(dep + ".") for dep in LAYER_DEPS.get(src_layer, ())):
            return False
        # pipelines reach models only through the protocol, never a family's own code
        return not (src_layer == "pipelines" and tgt_layer == "models" and _family(target) is not None)
    if src_layer == "models":
        return _models_allowed(source, target, source_module)
    if src_layer == "pipelines":
        return _pipelines_allowed(source, target)
    return True


def _family(target: str) -> str | None:
    parts = target.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "models" and parts[1] in MODEL_FAMILIES else None


def _models_allowed(source: str, target: str, source_module: str) -> bool:
    src_family, tgt_family = _family(source), _family(target)
    if tgt_family is None or tgt_family == src_family:
        return True
    if src_family is None:
        return source_module == f"terramask.{FAMILY_FACTORY}"
    return tgt_family in FAMILY_DEPS.get(src_family, ())


def _pipelines_allowed(source: str, target: str) -> bool:
    src_sub, tgt_sub = source.partition(".")[2], target.split(".")[1] if "." in target else ""
    if not src_sub or not tgt_sub or src_sub == tgt_sub or tgt_sub not in PIPELINE_DEPS:
        return True
    return tgt_sub in PIPELINE_DEPS.get(src_sub, ())


def _third_party_ok(layer: str, top: str) -> bool:
    if top in sys.stdlib_module_names or top == "__future__":
        return True
    if layer == "core":
        return top in CORE_THIRD_PARTY
    return layer in CONFINED.get(top, (layer,))


def check_tree(src: Path) -> list[Violation]:
    """Every import under ``src/terramask`` that breaks the contract, in file order."""
    files = sorted((src / "terramask").rglob("*.py"))
    known = {module_name(f, src) for f in files}
    packages = {module_name(f, src) for f in files if f.name == "__init__.py"}
    violations: list[Violation] = []
    for path in files:
        module = module_name(path, src)
        source = unit_of(module, packages)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        rel = str(path.relative_to(src.parent) if src.parent in path.parents else path)
        for imp in find_imports(tree, module, path.name == "__init__.py", known):
            top = imp.module.split(".")[0]
            if top != "terramask":
                if not _third_party_ok(source.split(".")[0], top):
                    violations.append(Violation(rel, imp.line, imp.module, source, f"third-party {top}"))
                continue
            target = imp.module.removeprefix("terramask").removeprefix(".")
            if not allowed(source, target, module):
                violations.append(Violation(rel, imp.line, imp.module, source, unit_of(imp.module, packages)))
    return violations
