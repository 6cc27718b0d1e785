"""Which Slicer, MRML and VTK names OsteoScreen calls, and where the oldest supported Slicer declares them.

    python Testing/slicer_api.py SLICER_SOURCE_DIR    # e.g. a checkout of Slicer at v5.10.0

writes ``Testing/Data/slicer-api-<version>.txt``: one line per name the module
(``OsteoScreen/OsteoScreen.py``) and ``OsteoScreenLib`` call on Slicer's or VTK's
objects, with the header (or Python file) of that Slicer version that declares
it, ``VTK`` for names of the installed VTK, ``Qt`` for widget methods that
Slicer's sources do not declare (Qt's own), or ``MISSING``. The check is by
name: it finds a call that the version lacks (a method added later or renamed),
not a name used on the wrong class. ``Testing/Python/slicer_module/test_slicer_api.py`` checks
that every name the code calls today is in the committed list, and none is missing.
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CODE = [REPO / "OsteoScreen" / "OsteoScreen.py", *sorted((REPO / "OsteoScreenLib").rglob("*.py"))]
NOT_SLICER = {"InferenceSession", "SessionOptions"}  # ONNX Runtime's, reached through onnx_runner._onnxruntime()
SLICER_MODULES = ("slicer", "slicer.util", "slicer.app", "SampleData.SampleDataLogic", "slicer.packaging")
MACROS = {  # vtk macro -> the methods it declares
    "vtkSetMacro": ("Set{}",), "vtkGetMacro": ("Get{}",), "vtkBooleanMacro": ("{}On", "{}Off"),
    "vtkSetStringMacro": ("Set{}",), "vtkGetStringMacro": ("Get{}",), "vtkSetObjectMacro": ("Set{}",),
    "vtkGetObjectMacro": ("Get{}",), "vtkSetVector3Macro": ("Set{}",), "vtkGetVector3Macro": ("Get{}",),
    "vtkSetClampMacro": ("Set{}",), "vtkGetNewMacro": ("Get{}",), "vtkSetEnumMacro": ("Set{}",),
}


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def used_names(files=CODE) -> set[str]:
    """C++-style method names called (``GetImageData``), Slicer/VTK classes (``slicer.vtkMRMLScene``),
    Slicer's Python and application API (``slicer.util.loadVolume``) and widget methods of the panel."""
    names = set()
    for path in files:
        tree = ast.parse(path.read_text(), filename=str(path))
        called = {id(n.func) for n in ast.walk(tree) if isinstance(n, ast.Call)}
        others = set()  # names bound to modules that are not Slicer's or VTK's (json, subprocess, pydicom ...)
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                module = (node.module or "") if isinstance(node, ast.ImportFrom) else ""
                for alias in node.names:
                    top = (module or alias.name).split(".")[0]
                    if top not in ("slicer", "vtk", "vtkmodules", "SampleData") and node.__dict__.get("level", 0) == 0:
                        others.add(alias.asname or alias.name.split(".")[0])
        widgets = {t.id for n in ast.walk(tree) if isinstance(n, ast.Assign) and re.fullmatch(r"self\.ui\.\w+", _dotted(n.value))
                   for t in n.targets if isinstance(t, ast.Name)}  # e.g. editor = self.ui.segmentEditorWidget
        for node in ast.walk(tree):
            if not isinstance(node, ast.Attribute):
                continue
            owner, attr = _dotted(node.value), node.attr
            if owner.split(".")[0] in others or owner.startswith("slicer.modules"):
                continue
            if owner == "slicer":
                if attr.startswith(("vtk", "q")):
                    names.add(f"slicer.{attr}")
            elif owner in SLICER_MODULES:
                names.add(f"{owner}.{attr}")
            elif owner == "vtk" and attr.startswith("vtk"):
                names.add(f"vtk.{attr}")
            elif (re.fullmatch(r"[A-Z][A-Za-z0-9]*[a-z][A-Za-z0-9]*", attr) and attr not in NOT_SLICER
                  and (id(node) in called or owner.startswith("slicer"))):
                names.add(attr)
            elif re.fullmatch(r"self\.ui\.\w+", owner) or owner in widgets:
                names.add(f"widget.{attr}")
    return names


def slicer_declarations(source: Path) -> dict[str, list[str]]:
    """Name -> the files of Slicer's sources that declare it: C++ methods, classes, events,
    Q_PROPERTYs and vtk macros of the headers; functions and classes of Slicer's Python."""
    found: dict[str, list[str]] = {}

    def add(name: str, rel: str) -> None:
        files = found.setdefault(name, [])
        if rel not in files:
            files.append(rel)

    for header in sorted(source.glob("**/*.h")):
        rel, text = str(header.relative_to(source)), header.read_text(errors="replace")
        names = re.findall(r"\b([A-Za-z_]\w*)\s*\(", text)
        names += re.findall(r"\bclass\s+(?:\w+_EXPORT\s+)?(\w+)", text)
        names += re.findall(r"Q_PROPERTY\([^)]*?\s(\w+)\s+READ", text)
        names += re.findall(r"\b([A-Z]\w*Event)\s*[=,]", text)  # event ids of an enum
        for macro, patterns in MACROS.items():
            names += [p.format(n) for n in re.findall(rf"\b{macro}\(\s*(\w+)", text) for p in patterns]
        for name in names:
            add(name, rel)
    for script in [*sorted((source / "Base" / "Python" / "slicer").glob("**/*.py")),
                   source / "Modules" / "Scripted" / "SampleData" / "SampleData.py"]:
        rel = str(script.relative_to(source))
        for name in re.findall(r"^\s*(?:def|class)\s+(\w+)", script.read_text(errors="replace"), re.M):
            add(name, rel)
    return found


def vtk_names() -> set[str]:
    import vtkmodules.all as all_vtk

    names = set()
    for class_name in dir(all_vtk):
        names.add(class_name)
        names.update(dir(getattr(all_vtk, class_name)))
    return names


def where(name: str, declared: dict[str, list[str]], vtk: set[str]) -> str:
    """Where a used name is declared: Slicer files (the first three), VTK, Qt, or MISSING."""
    short = name.rsplit(".", 1)[-1]
    if short in declared and not name.startswith("vtk."):
        files = declared[short]
        return " ".join(files[:3]) + (f" (+{len(files) - 3})" if len(files) > 3 else "")
    if short in vtk and not name.startswith("slicer"):
        return "VTK"
    if name.startswith("widget."):
        return "Qt"
    return "MISSING"


def main(argv: list[str]) -> int:
    source = Path(argv[0])
    cmake = (source / "CMakeLists.txt").read_text() if (source / "CMakeLists.txt").exists() else ""
    version = ".".join(re.findall(r'set\(Slicer_VERSION_(?:MAJOR|MINOR) "(\d+)"\)', cmake)) or argv[1]
    declared, vtk = slicer_declarations(source), vtk_names()
    rows = [f"{name}\t{where(name, declared, vtk)}" for name in sorted(used_names())]
    out = REPO / "Testing" / "Data" / f"slicer-api-{version}.txt"
    out.write_text(f"# names OsteoScreen calls, and where Slicer {version} declares them (Testing/slicer_api.py)\n"
                   + "\n".join(rows) + "\n")
    missing = [r for r in rows if r.endswith("\tMISSING")]
    print(f"wrote {out}: {len(rows)} names, {len(missing)} missing")
    for row in missing:
        print("  " + row)
    return 1 if missing else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
