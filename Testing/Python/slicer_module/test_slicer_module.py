"""The Slicer module, its panel, its packaging and the logic it drives, checked without Slicer.

The Slicer application cannot run here, so:
- the module file is compiled and its imports are read with ``ast``;
- the .ui file is read as XML and matched against the widgets the module uses
  and the fields of its parameter node;
- CMakeLists.txt is evaluated (its ``set`` and ``file(GLOB_RECURSE)``) against
  the tree, and the catalog JSON is validated against Slicer's schema;
- the module's Qt-free helpers (the background worker, its protocol, cancel,
  the import of results into new nodes) are taken out of the module file with
  ``ast`` and run here on the real MRML of slicer-core.
"""

from __future__ import annotations

import ast
import fnmatch
import json
import os
import py_compile
import re
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[3]
MODULE_FILE = REPO / "OsteoScreen" / "OsteoScreen.py"
UI_FILE = REPO / "Resources" / "UI" / "OsteoScreen.ui"
CMAKE_FILE = REPO / "CMakeLists.txt"
CATALOG_FILE = REPO / "OsteoScreen.json"
LAUNCHER = REPO / "Testing" / "PythonSlicer" / "launcher.py"  # behaves like PythonSlicer

# --------------------------------------------------------------------------- module file


def module_tree() -> ast.Module:
    return ast.parse(MODULE_FILE.read_text(), filename=str(MODULE_FILE))


def imported_modules(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            names.add(node.module)
    return names


# What Slicer's Python provides. `packaging` ships with Slicer's Python (slicer.packaging is built on it).
SLICER_PROVIDED = {"slicer", "qt", "ctk", "vtk", "SampleData", "numpy", "packaging"}


def test_the_module_file_compiles(tmp_path):
    py_compile.compile(str(MODULE_FILE), cfile=str(tmp_path / "OsteoScreen.pyc"), doraise=True)


def test_the_module_imports_only_what_slicer_provides_and_osteoscreenlib():
    bad = []
    for name in imported_modules(module_tree()):
        top = name.split(".")[0]
        if top in SLICER_PROVIDED or top == "OsteoScreenLib" or top in sys.stdlib_module_names:
            continue
        bad.append(name)
    assert not bad, f"OsteoScreen.py imports modules Slicer does not provide: {bad}"


def test_the_module_file_holds_the_gui_and_leaves_the_work_to_osteoscreenlib():
    """#23: well under the 1,117 lines it had; the pipeline, the models and array work are OsteoScreenLib's."""
    assert len(MODULE_FILE.read_text().splitlines()) < 950
    imported = imported_modules(module_tree())
    assert not {"numpy", "OsteoScreenLib.pipeline", "OsteoScreenLib.onnx_runner", "OsteoScreenLib.classifier",
                "OsteoScreenLib.segmenter_models"} & imported


def test_the_osteoscreenlib_names_the_module_uses_exist():
    """Every `from OsteoScreenLib.x import y` in the module resolves."""
    import importlib
    import importlib.util

    for tree in [module_tree()]:
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("OsteoScreenLib"):
                mod = importlib.import_module(node.module)
                for alias in node.names:  # a name of the module, or a submodule of the package
                    found = hasattr(mod, alias.name) or importlib.util.find_spec(f"{node.module}.{alias.name}")
                    assert found, f"{node.module}.{alias.name}"
    from OsteoScreenLib.logic import OsteoScreenLogic

    for method in ("load_ct", "load_segmentation", "segment", "save_segmentation", "classify", "labels_digest",
                   "tube_voltage", "result_to_table", "save_report", "compare_segmentations", "screen",
                   "comparison_to_table", "export_volume", "source_path", "import_segmentation",
                   "segmentation_warnings", "export_dicom", "add_to_dicom_database"):
        assert callable(getattr(OsteoScreenLogic, method)), method


# --------------------------------------------------------------------------- .ui and parameter node


def ui_widgets() -> dict[str, ET.Element]:
    root = ET.parse(UI_FILE).getroot()
    return {w.get("name"): w for w in root.iter("widget")}


def ui_class_bases() -> dict[str, str]:
    """Custom widget class -> the class it extends, as declared in the .ui."""
    root = ET.parse(UI_FILE).getroot()
    return {c.findtext("class"): c.findtext("extends") for c in root.iter("customwidget")}


def widget_class_chain(cls: str) -> list[str]:
    bases, chain = ui_class_bases(), [cls]
    while chain[-1] in bases:
        chain.append(bases[chain[-1]])
    return chain


def used_ui_names() -> dict[str, set[str]]:
    """``self.ui.X.attr`` in the module: widget name -> attributes used on it."""
    used: dict[str, set[str]] = {}
    for node in ast.walk(module_tree()):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and node.value.attr == "ui" and isinstance(node.value.value, ast.Name)
                and node.value.value.id in ("self", "widget")):
            used.setdefault(node.attr, set())
    for node in ast.walk(module_tree()):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute)
                and isinstance(node.value.value, ast.Attribute) and node.value.value.attr == "ui"):
            used.setdefault(node.value.attr, set()).add(node.attr)
    return used


# Which attributes need which widget class (a class or a subclass of it in the .ui).
ATTRIBUTE_NEEDS = {
    "click": "QAbstractButton", "clicked": "QAbstractButton", "connect": "QWidget",
    "setMRMLTableNode": "qMRMLTableView",
    "setSegmentationNode": "qMRMLSegmentEditorWidget", "segmentationNode": "qMRMLSegmentEditorWidget",
    "setSourceVolumeNode": "qMRMLSegmentEditorWidget", "sourceVolumeNode": "qMRMLSegmentEditorWidget",
    "setMRMLSegmentEditorNode": "qMRMLSegmentEditorWidget", "setActiveEffect": "qMRMLSegmentEditorWidget",
    "installKeyboardShortcuts": "qMRMLSegmentEditorWidget", "uninstallKeyboardShortcuts": "qMRMLSegmentEditorWidget",
    "setMRMLScene": "qMRMLWidget",
    "value": "QProgressBar", "text": "QLabel", "setTextInteractionFlags": "QLabel", "setStyleSheet": "QWidget",
    "setVisible": "QWidget", "enabled": "QWidget",
}
QT_BASES = {"QPushButton": "QAbstractButton", "QCheckBox": "QAbstractButton", "QAbstractButton": "QWidget",
            "QLabel": "QWidget", "QProgressBar": "QWidget", "QComboBox": "QWidget", "QTableView": "QWidget"}


def is_a(cls: str, wanted: str) -> bool:
    chain = widget_class_chain(cls)
    while chain[-1] in QT_BASES:
        chain.append(QT_BASES[chain[-1]])
    return wanted in chain or (wanted == "QWidget")


def test_every_widget_the_module_uses_is_in_the_ui_with_a_compatible_class():
    widgets = ui_widgets()
    used = used_ui_names()
    assert len(used) >= 10  # the bound widgets are checked by the parameter node test
    for name, attributes in used.items():
        assert name in widgets, f"self.ui.{name} is not in {UI_FILE.name}"
        cls = widgets[name].get("class")
        for attribute in attributes:
            wanted = ATTRIBUTE_NEEDS.get(attribute)
            assert wanted is None or is_a(cls, wanted), f"{name} ({cls}) has no {attribute} (needs {wanted})"
        if attributes & {"click"}:
            assert is_a(cls, "QAbstractButton"), f"{name} is clicked but is a {cls}"


def parameter_fields() -> dict[str, str]:
    """Fields of the @parameterNodeWrapper class: name -> annotation source."""
    for node in module_tree().body:
        if isinstance(node, ast.ClassDef) and any(
                isinstance(d, ast.Name) and d.id == "parameterNodeWrapper" for d in node.decorator_list):
            return {s.target.id: ast.unparse(s.annotation) for s in node.body if isinstance(s, ast.AnnAssign)}
    raise AssertionError("no @parameterNodeWrapper class in the module")


def bound_widgets() -> dict[str, ET.Element]:
    """SlicerParameterName -> the widget carrying it."""
    out = {}
    for w in ui_widgets().values():
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                assert prop.get("stdset") == "0", "SlicerParameterName must be a dynamic property (stdset=0)"
                out[prop.findtext("string")] = w
    return out


def connector_class_for(annotation: str) -> set[str]:
    """The widget classes that Slicer's GUI connectors accept for a field type (exact class match)."""
    if annotation.startswith("vtkMRML"):
        return {"qMRMLNodeComboBox", "qMRMLSubjectHierarchyTreeView"}
    return {
        "bool": {"QCheckBox", "QPushButton"},
        "int": {"QSpinBox", "QSlider", "QComboBox"},
        "float": {"QDoubleSpinBox", "ctkSliderWidget", "QComboBox"},
        "str": {"QLineEdit", "QTextEdit", "QComboBox"},
        "pathlib.Path": {"ctkPathLineEdit", "ctkDirectoryButton"},
        "ClassifierModel": {"QComboBox"},  # an enum.Enum
        "TubeVoltage": {"QComboBox"},  # an enum.Enum
        "ContrastPhase": {"QComboBox"},  # an enum.Enum
    }[annotation]


def test_every_parameter_node_field_is_bound_to_a_widget_that_can_show_it():
    fields, bound = parameter_fields(), bound_widgets()
    assert set(fields) == set(bound), (
        f"fields without a widget: {set(fields) - set(bound)}; widgets without a field: {set(bound) - set(fields)}")
    for name, annotation in fields.items():
        cls = bound[name].get("class")
        assert cls in connector_class_for(annotation), f"{name}: {annotation} cannot be shown by a {cls}"


def test_the_model_choice_offers_both_models_with_their_explanations():
    h = helpers()
    assert [m.value for m in h["ClassifierModel"]] == ["l1l2", "l1"]
    assert h["ClassifierModel"].label(h["ClassifierModel"].L1L2) == "Model 1: L1 + L2 fusion"
    assert h["ClassifierModel"].label(h["ClassifierModel"].L1) == "Model 2: L1 only"
    from OsteoScreenLib.registry import MODELS

    assert all(MODELS[m.value]["help"] for m in h["ClassifierModel"])


def test_the_tube_voltage_choice_offers_the_header_and_every_voltage_the_classifiers_know():
    from OsteoScreenLib.registry import TUBE_VOLTAGES_KVP

    h = helpers()
    values = [m.value for m in h["TubeVoltage"]]
    assert values[0] == "auto" and [int(v) for v in values[1:]] == list(TUBE_VOLTAGES_KVP)
    assert "DICOM" in h["TubeVoltage"].label(h["TubeVoltage"].AUTO)
    assert h["TubeVoltage"].label(h["TubeVoltage"].KV100) == "100 kVp"


def test_the_contrast_phase_choice_offers_unknown_and_every_phase_the_classifiers_know():
    from OsteoScreenLib.registry import CONTRAST_PHASES, contrast_phase

    h = helpers()
    values = [m.value for m in h["ContrastPhase"]]
    assert values[0] == "unknown" and values[1:] == list(CONTRAST_PHASES)
    assert all(contrast_phase(v) == v for v in values[1:]) and contrast_phase(values[0]) is None
    assert h["ContrastPhase"].label(h["ContrastPhase"].PORTAL) == "Portal venous"


def test_the_panel_says_it_is_not_a_diagnostic_device():
    text = " ".join((w.findtext("property/string") or "") for w in ui_widgets().values())
    assert "not a diagnostic device" in text and "synthetic" in text


def test_every_mrml_widget_gets_the_scene():
    root = ET.parse(UI_FILE).getroot()
    receivers = {c.findtext("receiver") for c in root.iter("connection") if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    for name, w in ui_widgets().items():
        if w.get("class", "").startswith("qMRML") and name != root.findtext("class"):
            assert name in receivers, f"{name} is not given the MRML scene"


# --------------------------------------------------------------------------- CMake and catalog


def cmake_commands(text: str) -> list[tuple[str, list[str]]]:
    """(command, arguments) of every command in a CMake file (comments stripped, quotes kept simple)."""
    text = re.sub(r'"[^"]*"|#[^\n]*', lambda m: m.group(0) if m.group(0).startswith('"') else "", text)
    out = []
    for m in re.finditer(r"([A-Za-z_]\w*)\s*\(((?:[^()]|\([^()]*\))*)\)", text):
        args = re.findall(r'"[^"]*"|[^\s"]+', m.group(2))
        out.append((m.group(1), [a.strip('"') for a in args]))
    return out


def cmake_evaluate(source_dir: Path, binary_dir: Path) -> dict[str, list[str]]:
    """Variables after the set() and file(GLOB_RECURSE) commands of CMakeLists.txt, globs run on the tree."""
    variables = {"CMAKE_CURRENT_SOURCE_DIR": [str(source_dir)], "CMAKE_CURRENT_BINARY_DIR": [str(binary_dir)]}

    def expand(arg: str) -> list[str]:
        m = re.fullmatch(r"\$\{(\w+)\}", arg)
        if m:
            return list(variables.get(m.group(1), []))
        return [re.sub(r"\$\{(\w+)\}", lambda mm: ";".join(variables.get(mm.group(1), [])), arg)]

    calls = {}
    for command, args in cmake_commands(CMAKE_FILE.read_text()):
        command = command.lower()
        if command == "set":
            variables[args[0]] = [v for a in args[1:] for v in expand(a)]
        elif command == "file" and args[0] in ("GLOB", "GLOB_RECURSE"):
            var, rest = args[1], args[2:]
            relative = None
            if rest and rest[0] == "RELATIVE":
                relative, rest = Path(expand(rest[1])[0]), rest[2:]
            patterns = [p for a in rest if a != "CONFIGURE_DEPENDS" for p in expand(a)]
            found = []
            for pattern in patterns:
                base = relative or source_dir
                directory, mask = os.path.split(pattern)
                root = base / directory
                walker = os.walk(root) if args[0] == "GLOB_RECURSE" else [(str(root), [], os.listdir(root) if root.is_dir() else [])]
                for folder, _, files in walker:
                    for f in files:
                        if fnmatch.fnmatch(f, mask):
                            path = Path(folder) / f
                            found.append(str(path.relative_to(relative)) if relative else str(path))
            variables[var] = sorted(found)
        elif command == "configure_file":
            calls.setdefault("configure_file", []).append([v for a in args for v in expand(a)])
        else:
            calls.setdefault(command, []).append([v for a in args for v in expand(a)])
    variables["__calls__"] = calls  # type: ignore[assignment]
    return variables


def keyword_values(args: list[str], keyword: str, keywords: set[str]) -> list[str]:
    values, on = [], False
    for a in args:
        if a in keywords:
            on = a == keyword
            continue
        if on:
            values.extend(a.split(";"))
    return values


BUILD_KEYWORDS = {"NAME", "SCRIPTS", "RESOURCES", "WITH_GENERIC_TESTS", "WITH_SUBDIR", "VERBOSE", "TARGET_NAME",
                  "DESTINATION_DIR", "INSTALL_DIR", "NO_INSTALL_SUBDIR", "SOURCE_DIR", "GLOBAL_TARGET"}


def packaged_files(tmp_path) -> dict[str, Path]:
    """Installed relative path (under qt-scripted-modules/) -> source file, as the CMake build copies them."""
    binary = tmp_path / "build"
    v = cmake_evaluate(REPO, binary)
    calls = v["__calls__"]
    copies = {Path(dst): Path(src) for src, dst, *_ in calls.get("configure_file", [])}
    out = {}
    build_calls = calls.get("slicermacrobuildscriptedmodule", []) + calls.get("ctkmacrocompilepythonscript", [])
    assert calls.get("slicermacrobuildscriptedmodule"), "no slicerMacroBuildScriptedModule() in CMakeLists.txt"
    for args in build_calls:
        for kind in ("SCRIPTS", "RESOURCES"):
            for item in keyword_values(args, kind, BUILD_KEYWORDS):
                if os.path.isabs(item):  # ctk: absolute paths are placed relative to the binary folder
                    rel = os.path.relpath(item, binary)
                    out[rel] = copies.get(Path(item), Path(item))
                else:
                    out[item] = REPO / item
    return out


def test_cmake_has_the_extension_metadata():
    text = CMAKE_FILE.read_text()
    for var in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert re.search(rf"set\({var}\s+\S", text), var
    assert 'set(EXTENSION_CATEGORY "Quantification")' in text
    assert "find_package(Slicer REQUIRED)" in text and "include(${Slicer_USE_FILE})" in text


def test_cmake_installs_the_module_at_the_top_and_every_file_it_needs_beside_it(tmp_path):
    files = packaged_files(tmp_path)
    assert files.get("OsteoScreen.py") == MODULE_FILE, "the module must be installed as qt-scripted-modules/OsteoScreen.py"
    # the whole OsteoScreenLib package, subpackages included
    lib = {str(p.relative_to(REPO)) for p in (REPO / "OsteoScreenLib").rglob("*.py") if "__pycache__" not in p.parts}
    missing = lib - set(files)
    assert not missing, f"CMake does not install: {sorted(missing)}"
    assert "OsteoScreenLib/phantom/__init__.py" in files
    # the panel, the icon and every bundled model file (weights and cards)
    needed = {"Resources/UI/OsteoScreen.ui", "Resources/Icons/OsteoScreen.png"}
    needed |= {str(p.relative_to(REPO)) for p in (REPO / "Resources" / "Models").rglob("*")
               if p.is_file() and p.suffix in (".onnx", ".json", ".md")}
    assert not needed - set(files), f"CMake does not install: {sorted(needed - set(files))}"
    for rel, src in files.items():
        assert src.is_file(), f"CMake lists {rel} but {src} does not exist"
    # every resource the module asks for by name is packaged
    for node in ast.walk(module_tree()):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "resourcePath" and node.args:
            arg = node.args[0]
            if isinstance(arg, ast.JoinedStr):
                arg_text = "".join(v.value if isinstance(v, ast.Constant) else "OsteoScreen" for v in arg.values)
            elif isinstance(arg, ast.Constant):
                arg_text = arg.value
            else:
                continue
            assert f"Resources/{arg_text}" in files, arg_text


def test_the_installed_layout_resolves_resources_and_the_library(tmp_path):
    """Lay the files out as CMake installs them; the module's path rules find everything."""
    install = tmp_path / "qt-scripted-modules"
    for rel, src in packaged_files(tmp_path).items():
        (install / rel).parent.mkdir(parents=True, exist_ok=True)
        (install / rel).write_bytes(src.read_bytes())
    h = helpers(module_file=install / "OsteoScreen.py")
    assert h["resourcePath"]("UI/OsteoScreen.ui") == str(install / "Resources" / "UI" / "OsteoScreen.ui")
    assert h["libraryParent"]() == str(install)
    # and the source layout: OsteoScreen/OsteoScreen.py beside Resources/ and OsteoScreenLib/
    s = helpers()
    assert Path(s["resourcePath"]("Icons/OsteoScreen.png")) == REPO / "Resources" / "Icons" / "OsteoScreen.png"
    assert s["libraryParent"]() == str(REPO)


# The schema of Slicer's extension catalog entries (Slicer/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json),
# its required fields and property types, kept here because nothing can be downloaded at test time.
CATALOG_SCHEMA = {
    "$id": "https://raw.githubusercontent.com/Slicer/Slicer/main/Schemas/slicer-extension-catalog-entry-schema-v1.0.2.json#",
    "required": ["$schema", "category", "scm_url"],
    "additionalProperties": False,
    "properties": {
        "$schema": {"type": "string"}, "category": {"type": "string"}, "scm_url": {"type": "string"},
        "scm_revision": {"type": "string"}, "scm_type": {"type": "string", "enum": ["git", "local"]},
        "build_dependencies": {"type": "array", "items": {"type": "string"}},
        "dicom_support_rule": {"type": "string"}, "build_subdirectory": {"type": "string"},
        "enabled": {"type": "boolean"}, "tier": {"type": "integer", "minimum": 1, "maximum": 5},
    },
}
JSON_TYPES = {"string": str, "array": list, "boolean": bool, "integer": int}


def test_the_catalog_entry_is_valid_against_the_schema():
    entry = json.loads(CATALOG_FILE.read_text())
    assert entry["$schema"] == CATALOG_SCHEMA["$id"]
    for key in CATALOG_SCHEMA["required"]:
        assert key in entry, key
    for key, value in entry.items():
        spec = CATALOG_SCHEMA["properties"].get(key)
        assert spec is not None, f"{key} is not allowed by the schema"
        assert isinstance(value, JSON_TYPES[spec["type"]]) and not (spec["type"] == "integer" and isinstance(value, bool)), key
        if "enum" in spec:
            assert value in spec["enum"], key
        if spec["type"] == "integer":
            assert spec["minimum"] <= value <= spec["maximum"], key
        if spec["type"] == "array":
            assert all(isinstance(i, str) for i in value), key


def test_readme_cmake_and_registry_state_the_same_minimum_slicer_version():
    from OsteoScreenLib.registry import MINIMUM_SLICER_VERSION

    wanted = "%d.%d" % MINIMUM_SLICER_VERSION
    v = cmake_evaluate(REPO, REPO / "build")
    assert v["OSTEOSCREEN_MINIMUM_SLICER_VERSION"] == [wanted]
    assert f"Needs 3D Slicer {wanted} or later" in (REPO / "README.md").read_text()


def test_the_catalog_agrees_with_cmake():
    entry = json.loads(CATALOG_FILE.read_text())
    v = cmake_evaluate(REPO, REPO / "build")
    depends = [d for d in v["EXTENSION_DEPENDS"] if d != "NA"]
    assert sorted(entry.get("build_dependencies", [])) == sorted(depends)
    assert entry["category"] == v["EXTENSION_CATEGORY"][0]
    assert v["EXTENSION_HOMEPAGE"][0].startswith(entry["scm_url"])


def test_the_icon_is_a_128_pixel_png():
    data = (REPO / "Resources" / "Icons" / "OsteoScreen.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (128, 128)


# --------------------------------------------------------------------------- the module's Qt-free helpers, run headless

HELPER_NAMES = {
    "MODULE_NAME", "MODULE_DIR", "SAMPLE_NAME", "SAMPLE_SEED", "moduleBaseFolders", "resourcePath", "libraryParent",
    "ensureLibraryImportable", "_choice", "ClassifierModel", "TubeVoltage", "ContrastPhase", "caseFile", "stopJob",
    "sampleUrlRule",
}


def helpers(module_file: Path = MODULE_FILE) -> dict:
    """The Qt-free top-level definitions of the module, executed with the real slicer-core ``slicer``."""
    tree = module_tree()
    body = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names = imported_modules(node)
            if all(n.split(".")[0] in sys.stdlib_module_names or n.startswith("OsteoScreenLib") for n in names):
                body.append(node)
        elif (isinstance(node, ast.Expr) and isinstance(node.value, ast.Call)
              and getattr(node.value.func, "id", None) in HELPER_NAMES):
            body.append(node)  # e.g. ensureLibraryImportable()
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.name in HELPER_NAMES:
            body.append(node)
        elif isinstance(node, ast.Assign) and all(isinstance(t, ast.Name) and t.id in HELPER_NAMES for t in node.targets):
            body.append(node)
    import slicer
    import vtk

    namespace = {"__file__": str(module_file), "__name__": "OsteoScreenHelpers", "slicer": slicer, "vtk": vtk}
    exec(compile(ast.Module(body=body, type_ignores=[]), str(MODULE_FILE), "exec"), namespace)
    missing = HELPER_NAMES - set(namespace)
    assert not missing, f"helpers missing from the module: {missing}"
    return namespace


@pytest.fixture(scope="module")
def h():
    return helpers()


@pytest.fixture
def a_small_ct(a_scene, tmp_path):
    """A small CT node (air, body, a bright block) read from a file, as Slicer would load one."""
    from conftest import a_ct_array, oblique_matrix
    from OsteoScreenLib.ct_io import write_volume
    from OsteoScreenLib.logic import OsteoScreenLogic
    from OsteoScreenLib.volume import Volume

    path = write_volume(Volume(a_ct_array(), oblique_matrix()), tmp_path / "small-ct.nrrd")
    logic = OsteoScreenLogic(a_scene)
    return logic, logic.load_ct(path)


def a_labelmap(ct_node, shift=0):
    from OsteoScreenLib.mrml_convert import volume_from_node

    ct = volume_from_node(ct_node)
    labels = np.zeros(ct.array.shape, np.uint8)
    labels[3:6, 6 + shift:12 + shift, 8:16] = 1  # L1
    labels[6:9, 6 + shift:12 + shift, 8:16] = 2  # L2
    return ct.with_array(labels)


def segment_names(node) -> list[str]:
    s = node.GetSegmentation()
    return sorted(s.GetNthSegment(i).GetName() for i in range(s.GetNumberOfSegments()))


def test_an_exported_ct_reads_back_identical_and_the_node_keeps_its_own_storage(a_small_ct, tmp_path):
    from OsteoScreenLib.ct_io import read_ct
    from OsteoScreenLib.mrml_convert import volume_from_node

    logic, ct = a_small_ct
    storage_before = ct.GetStorageNodeID()
    (tmp_path / "worker").mkdir()
    path = logic.export_volume(ct, tmp_path / "worker" / "ct.nrrd")
    assert ct.GetStorageNodeID() == storage_before
    back, original = read_ct(path), volume_from_node(ct)
    from conftest import assert_same_in_world

    assert_same_in_world(back, original)
    assert logic.source_path(ct).endswith("small-ct.nrrd")


def test_importing_a_worker_result_always_makes_a_new_uniquely_named_node(a_small_ct, tmp_path):
    from OsteoScreenLib.segmentation_nodes import segmentation_from_labelmap

    logic, ct = a_small_ct
    scene = ct.GetScene()
    made, _ = segmentation_from_labelmap(scene, a_labelmap(ct), ct)
    path = logic.save_segmentation(made, tmp_path / "segmentation.seg.nrrd")
    scene.RemoveNode(made)
    first = logic.import_segmentation(path, ct, "CT L1-L2", "model 1.0", ["L2 touches the edge"])
    # the reader edits the first one: L2 removed
    first.GetSegmentation().RemoveSegment(first.GetSegmentation().GetSegmentIdBySegmentName("L2"))
    second = logic.import_segmentation(path, ct, "CT L1-L2", "model 1.0", [])
    assert first is not second and first.GetName() != second.GetName()
    assert first.GetName().startswith("CT L1-L2") and second.GetName().startswith("CT L1-L2")
    assert segment_names(first) == ["L1"] and segment_names(second) == ["L1", "L2"]
    assert first.GetStorageNode() is None  # nothing points at the temporary file
    assert first.GetAttribute("OsteoScreen.Source") == "model 1.0"
    assert logic.segmentation_warnings(first) == ["L2 touches the edge"]
    assert first.GetNodeReferenceID(first.GetReferenceImageGeometryReferenceRole()) == ct.GetID()


def test_segmentations_from_label_maps_are_new_nodes_each_time(a_small_ct):
    """The logic's own rule, which Segment relies on: a new node, never a replaced one."""
    from OsteoScreenLib.segmentation_nodes import segmentation_from_labelmap

    logic, ct = a_small_ct
    scene = ct.GetScene()
    first, _ = segmentation_from_labelmap(scene, a_labelmap(ct), ct, name="CT L1-L2")
    second, _ = segmentation_from_labelmap(scene, a_labelmap(ct), ct, name="CT L1-L2")
    assert first is not second and first.GetName() != second.GetName()
    assert scene.GetNumberOfNodesByClass("vtkMRMLSegmentationNode") == 2


def run_worker(task, inputs, tmp_path, cancel_at_once=False, timeout_s=300):
    """The job as the panel starts it, through the PythonSlicer-like launcher."""
    from OsteoScreenLib.jobs import WorkerProcess

    work = tmp_path / f"job-{task}"
    work.mkdir()
    job = WorkerProcess(task, inputs, workDir=str(work), python=[sys.executable, str(LAUNCHER)])
    if cancel_at_once:
        job.cancel()
    job.wait(timeoutS=timeout_s)
    return job


def test_the_worker_compares_two_segmentations_like_the_logic(a_small_ct, tmp_path):
    from OsteoScreenLib.segmentation_nodes import segmentation_from_labelmap

    logic, ct = a_small_ct
    scene = ct.GetScene()
    ref, _ = segmentation_from_labelmap(scene, a_labelmap(ct), ct)
    pred, _ = segmentation_from_labelmap(scene, a_labelmap(ct, shift=1), ct)
    inputs = {"ct": logic.export_volume(ct, tmp_path / "ct.nrrd"),
              "reference": str(logic.save_segmentation(ref, tmp_path / "ref.seg.nrrd")),
              "compared": str(logic.save_segmentation(pred, tmp_path / "pred.seg.nrrd"))}
    job = run_worker("compare", inputs, tmp_path)
    assert job.error is None and not job.cancelled, "\n".join(job.log)
    rows = job.result["rows"]
    expected = logic.compare_segmentations(ref, pred, ct)
    assert [r["segment"] for r in rows] == ["L1", "L2"]
    for got, want in zip(rows, expected):
        assert got["dsc"] == pytest.approx(want["dsc"]) and got["hd95_mm"] == pytest.approx(want["hd95_mm"])
    assert 0 < rows[0]["dsc"] < 1
    assert job.progress > 0
    table = logic.comparison_to_table(rows)
    assert table.GetTable().GetNumberOfRows() == 2 and table.GetTable().GetNumberOfColumns() == 5
    from OsteoScreenLib.metrics import comparison_csv

    lines = comparison_csv(rows).splitlines()
    assert lines[0] == "segment,dsc,hd95_mm,reference_ml,prediction_ml" and lines[1].startswith("L1,")


def test_cancel_stops_the_worker_before_it_changes_anything(a_small_ct, tmp_path):
    logic, ct = a_small_ct
    inputs = {"ct": logic.export_volume(ct, tmp_path / "ct.nrrd")}
    start = time.monotonic()
    job = run_worker("segment", inputs, tmp_path, cancel_at_once=True)
    assert job.cancelled and job.result is None and job.error is None, "\n".join(job.log)
    assert time.monotonic() - start < 60
    assert not (Path(job.workDir) / "segmentation.seg.nrrd").exists()


def test_a_user_error_in_the_worker_is_one_short_message(tmp_path):
    bad = tmp_path / "not-a-ct.nrrd"
    bad.write_text("NRRD0004\ntype: short\n")  # truncated header
    job = run_worker("segment", {"ct": str(bad)}, tmp_path)
    assert job.result is None and not job.cancelled
    assert job.error and "\n" not in job.error and "Traceback" not in job.error


def test_the_worker_segments_when_the_model_is_bundled_else_says_what_is_missing(a_small_ct, tmp_path):
    from OsteoScreenLib.paths import models_dir

    logic, ct = a_small_ct
    job = run_worker("segment", {"ct": logic.export_volume(ct, tmp_path / "ct.nrrd")}, tmp_path, timeout_s=600)
    if (models_dir() / "segmentation" / "model_card.json").is_file():
        # a toy CT holds no spine: the model must say so in one line, or segment it into a new file
        assert job.result is not None or (job.error and "\n" not in job.error), "\n".join(job.log)
    else:
        assert job.error and "segmentation" in job.error and "not installed" in job.error, job.error


def test_classify_fills_only_a_table_it_made_and_save_report_refuses_edited_segments(a_chest_phantom, bundled_models,
                                                                                      tmp_path):
    import slicer

    from OsteoScreenLib.errors import OsteoScreenError
    from OsteoScreenLib.logic import OsteoScreenLogic

    _, folder = a_chest_phantom
    logic = OsteoScreenLogic(slicer.vtkMRMLScene())
    ct = logic.load_ct(folder / "ct.nii.gz")
    seg = logic.load_segmentation(folder / "labels.nii.gz", ct)
    digest = logic.labels_digest(seg, ct)
    result = logic.classify(ct, seg, "l1")
    users = logic.scene.AddNewNodeByClass("vtkMRMLTableNode", "my measurements")
    users.AddColumn().InsertNextValue("kept")
    ours = logic.result_to_table(result, users)
    assert ours is not users and users.GetTable().GetNumberOfRows() == 1  # the reader's table is untouched
    assert logic.result_to_table(result, ours) is ours and ours.GetTable().GetNumberOfRows() > 3
    assert (logic.save_report(result, ct, seg, tmp_path / "before", labels_digest=digest) / "report.png").is_file()
    segmentation = seg.GetSegmentation()
    segmentation.RemoveSegment(segmentation.GetSegmentIdBySegmentName("L2"))  # the reader edits after Classify
    with pytest.raises(OsteoScreenError, match="classify again"):
        logic.save_report(result, ct, seg, tmp_path / "after", labels_digest=digest)
    assert not (tmp_path / "after" / "result.json").exists()


def test_export_to_dicom_writes_seg_and_sr_of_the_current_segments_for_a_ct_read_from_dicom(bundled_models, tmp_path):
    """The logic behind *Export to DICOM* on slicer-core's MRML: a DICOM phantom with a crushed L1, loaded
    and classified as in Slicer; the SEG references the series and holds the node's segments, the SR
    carries the result with its fracture; so for a CT that Slicer's DICOM module loaded (files from its database);
    a CT from a NIfTI file, one without known files, and edited segments are refused."""
    import pydicom
    import slicer

    from OsteoScreenLib import registry
    from OsteoScreenLib.errors import OsteoScreenError
    from OsteoScreenLib.logic import OsteoScreenLogic
    from OsteoScreenLib.phantom import render_case, sample_parameters, write_case

    hd = pytest.importorskip("highdicom")
    params = sample_parameters(3, "chest-box")
    params["spine"]["fractures"] = [{"level": "L1", "type": "crush", "height_loss": 0.5}]
    case = render_case(params)
    folder = write_case(case, tmp_path / "case", fmt="dicom")
    logic = OsteoScreenLogic(slicer.vtkMRMLScene())
    ct = logic.load_ct(folder / "ct", display=False)
    seg = logic.load_segmentation(folder / "labels.nii.gz", ct)
    digest = logic.labels_digest(seg, ct)
    result = logic.classify(ct, seg, "l1l2")
    assert result.fractures["L1"].grade == 3
    written = logic.export_dicom(result, ct, seg, tmp_path / "export", labels_digest=digest)
    assert written == {"seg": tmp_path / "export" / "seg.dcm", "sr": tmp_path / "export" / "sr.dcm"}
    series = pydicom.dcmread(next((folder / "ct").iterdir()), stop_before_pixels=True).SeriesInstanceUID
    dicom_seg = hd.seg.segread(written["seg"])
    assert dicom_seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series
    assert [int(s.SegmentNumber) for s in dicom_seg.SegmentSequence] == [1, 2]
    voxels = {n: int((case.labels.array == n).sum()) for n in (1, 2)}
    frames = dicom_seg.pixel_array.reshape(int(dicom_seg.NumberOfFrames), -1)
    numbers = [int(f.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
               for f in dicom_seg.PerFrameFunctionalGroupsSequence]
    assert {n: int(sum(frames[i].sum() for i, m in enumerate(numbers) if m == n)) for n in (1, 2)} == voxels
    sr = pydicom.dcmread(written["sr"])
    assert sr.SeriesDescription.startswith("FRACTURE L1 Genant 3")
    report = hd.sr.srread(written["sr"])
    groups = report.content.get_volumetric_roi_measurement_groups()
    (l1,) = [g for g in groups if g.tracking_identifier.startswith("L1")]
    assert [e.value.value for e in l1.get_qualitative_evaluations() if e.name.value == "GENANT-GRADE"] == ["GENANT-3"]
    assert logic.add_to_dicom_database(tmp_path / "export") is False  # no DICOM database outside the application
    with pytest.raises(OsteoScreenError, match="already exists"):
        logic.export_dicom(result, ct, seg, tmp_path / "export")
    from OsteoScreenLib.ct_io import write_volume

    nifti = logic.load_ct(write_volume(case.ct, tmp_path / "ct.nii.gz"), display=False)
    with pytest.raises(OsteoScreenError, match="was not read from a DICOM series"):
        logic.export_dicom(result, nifti, seg, tmp_path / "other")
    # a CT as Slicer's DICOM module leaves it: no OsteoScreen source path, its slices' SOP Instance UIDs in
    # Slicer's attribute, their files known to the DICOM database (here a lookup of this series' files)
    files = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID: str(p) for p in (folder / "ct").iterdir()}
    ct.SetAttribute(registry.SOURCE_PATH_ATTRIBUTE, "")
    ct.SetAttribute(registry.SLICER_DICOM_UIDS_ATTRIBUTE, " ".join(files))
    written = logic.export_dicom(result, ct, seg, tmp_path / "from-database", file_for_instance=files.get)
    assert hd.seg.segread(written["seg"]).ReferencedSeriesSequence[0].SeriesInstanceUID == series
    with pytest.raises(OsteoScreenError, match="whose files are known"):  # outside the application: no database
        logic.export_dicom(result, ct, seg, tmp_path / "no-database")
    segmentation = seg.GetSegmentation()
    segmentation.RemoveSegment(segmentation.GetSegmentIdBySegmentName("L2"))  # the reader edits after Classify
    with pytest.raises(OsteoScreenError, match="classify again"):
        logic.export_dicom(result, ct, seg, tmp_path / "edited", labels_digest=digest, file_for_instance=files.get)
    assert not (tmp_path / "edited" / "seg.dcm").exists()


def widget_method(name: str) -> ast.FunctionDef:
    (widget,) = [n for n in module_tree().body if isinstance(n, ast.ClassDef) and n.name == "OsteoScreenWidget"]
    (method,) = [n for n in widget.body if isinstance(n, ast.FunctionDef) and n.name == name]
    return method


def calls_in_order(function: ast.FunctionDef) -> list[str]:
    calls = [n for n in ast.walk(function) if isinstance(n, ast.Call)]
    return [ast.unparse(n.func) for n in sorted(calls, key=lambda n: (n.lineno, n.col_offset))]


def test_closing_the_scene_ends_a_running_job_with_its_tree_before_the_scene_empties(h, tmp_path, monkeypatch):
    """The panel's wiring (read from the module) and what it does (run on a real scene and a real job
    through the launcher): StartCloseEvent -> _endJob -> the job forgotten, then stopJob."""
    import slicer

    from OsteoScreenLib.jobs import WorkerProcess

    setup = ast.unparse(widget_method("setup"))
    assert "self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)" in setup
    assert calls_in_order(widget_method("onSceneStartClose"))[0] == "self._endJob"
    end_job = ast.unparse(widget_method("_endJob"))
    assert end_job.index("job, self._job = (self._job, None)") < end_job.index("stopJob(job)")
    poll = ast.unparse(widget_method("_pollJob"))  # a forgotten job's result is never read
    assert poll.index("job = self._job") < poll.index("if job is None") < poll.index("self._onJobDone")

    pid_file = tmp_path / "child.pid"
    monkeypatch.setenv("STUCK_PID_FILE", str(pid_file))
    stuck = ["-c", "import os, time; open(os.environ['STUCK_PID_FILE'], 'w').write(str(os.getpid())); time.sleep(120)"]
    (tmp_path / "job").mkdir()
    panel = {"job": WorkerProcess("segment", {"ct": "unused"}, workDir=str(tmp_path / "job"),
                                  python=[sys.executable, str(LAUNCHER)] + stuck)}
    for _ in range(200):
        if pid_file.exists() and pid_file.read_text():
            break
        time.sleep(0.05)
    child, launcher = int(pid_file.read_text()), panel["job"].process.pid
    scene = slicer.vtkMRMLScene()
    seen_running = []

    def on_start_close(caller, event):
        job, panel["job"] = panel["job"], None
        seen_running.append(job.running)
        h["stopJob"](job)

    scene.AddObserver(scene.StartCloseEvent, on_start_close)
    scene.Clear(0)  # what File > Close Scene does
    assert seen_running == [True] and panel["job"] is None
    time.sleep(0.3)
    assert not (tmp_path / "job").exists()
    for pid in (child, launcher):
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            continue
        assert state == "Z", f"process {pid} still runs after the scene closed"


def test_sampledata_from_the_console_makes_the_phantom_before_reading_its_file(h, tmp_path):
    """``SampleData.downloadSample(name)`` skips ``customDownloader`` but passes the URI through the
    registered rewrite rules before it fetches it (SampleDataLogic.downloadFile, Slicer 5.10 and 5.12):
    the module's rule makes the phantom then, so a console call works before the background run ends."""
    import urllib.request

    folder = tmp_path / "cache" / "OsteoScreen" / "phantom-00007"
    uri = (folder / "ct.nrrd").as_uri()
    made = []

    def ensure():  # stands in for ensureSamplePhantom (generate_case/write_case, ~30 s)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "ct.nrrd").write_bytes(b"NRRD0004\n")
        made.append(True)

    rule = h["sampleUrlRule"](uri, ensure)
    other = "https://github.com/Slicer/SlicerTestingData/releases/download/SHA256/abc"
    assert rule(other) == other and not made  # other samples untouched, nothing generated for them
    with pytest.raises(OSError):
        urllib.request.urlretrieve(uri, tmp_path / "without-rule.nrrd")  # what failed before
    urllib.request.urlretrieve(rule(uri), tmp_path / "OsteoScreenChestPhantom.nrrd")  # as downloadFile does
    assert made == [True] and (tmp_path / "OsteoScreenChestPhantom.nrrd").read_bytes() == b"NRRD0004\n"
    registration = ast.unparse(next(n for n in module_tree().body
                                    if isinstance(n, ast.FunctionDef) and n.name == "registerSampleData"))
    assert "registerUrlRewriteRule(SAMPLE_NAME, sampleUrlRule(samplePhantomUri(), ensureSamplePhantom))" in registration
