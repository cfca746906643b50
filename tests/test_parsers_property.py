"""Property tests of the parsers that read what users write: configs (YAML and ``--set``),
CSV manifests, and label values. Whatever the input, each either succeeds or raises the
error it documents (ConfigError, DataError) - never another exception."""

from __future__ import annotations

import csv
import io
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from conftest import tiny_raw
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mtlkit import ConfigError, DataError
from mtlkit.components.host import PluginHost
from mtlkit.components.resolve import resolve_components
from mtlkit.config.loading import apply_override, load_config, parse_path, read_yaml
from mtlkit.config.schema import RunConfig
from mtlkit.data.labels import MISSING, as_number, canonical
from mtlkit.data.samples import SampleSet
from mtlkit.plugins.manifest import ManifestOptions, manifest_source

FAST = settings(
    max_examples=150,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.fixture(scope="module")
def host() -> PluginHost:
    return PluginHost()


# --- configs ---------------------------------------------------------------------------------


def known_paths(node: Any, prefix: str = "") -> list[str]:
    """Every YAML path in a config: ``data``, ``data.source``, ``heads[2].min_nodes``, ..."""
    paths = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            paths += known_paths(value, f"{prefix}.{key}" if prefix else key)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            paths += known_paths(value, f"{prefix}[{index}]")
    return paths


# Keys a config may hold that the tiny config leaves at their defaults.
EXTRA_PATHS = [
    "data.duplicates",
    "data.duplicates.method",
    "data.duplicates.hash_size",
    "data.exclude",
    "data.cache_dir",
    "data.split.file",
    "data.split.folds",
    "evaluation.external",
    "heads[2].dropout",
    "heads[2].loss",
    "backbone.pretrained",
    "training.amp",
    "training.state_every",
    "training.threads",
    "constraints[1]",
]
PATHS = sorted(set(known_paths(tiny_raw())) | set(EXTRA_PATHS))

SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(),
    st.text(max_size=10),
    st.sampled_from(
        ["", ".", "/", "..", "~", "bm", "alnm", "mean.auc", "timm", "synthetic", "manifest",
         "runs/{name}", "{", "-1", "1e400", "cuda:0", "box", "/etc/hostname", "images/*.png"]
    ),
)  # fmt: skip
KEYS = st.one_of(
    st.sampled_from(["type", "name", "path", "model", "weights", "pairs", "bm", "epochs"]),
    st.text(max_size=6),
    st.integers(-3, 3),
    st.none(),
    st.booleans(),
)
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=4),
    max_leaves=10,
)


def set_at(raw: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` to ``value``, making missing mappings on the way (as ``--set`` does)."""
    *parents, last = parse_path(path)
    node: Any = raw
    for part in parents:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    if isinstance(last, int) and last >= len(node):
        node.append(value)
    else:
        node[last] = value


def load_and_resolve(source: Any, host: PluginHost, overrides: tuple[str, ...] = ()) -> None:
    """Load and resolve a config; a ConfigError must name each problem with a message."""
    try:
        config = load_config(source, list(overrides))
        assert isinstance(config, RunConfig)
        resolve_components(config, host)
    except ConfigError as exc:
        assert exc.problems
        for path, message in exc.problems:
            assert isinstance(path, str) and isinstance(message, str) and message.strip()
        assert str(exc).startswith("invalid configuration")


@FAST
@given(changes=st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=3))
def test_any_value_at_any_known_key_loads_or_is_a_config_error(host, changes):
    raw = tiny_raw()
    for path, value in changes:
        try:
            set_at(raw, path, value)
        except (AttributeError, KeyError, IndexError, TypeError):
            pass  # an earlier change replaced a parent of this path by a scalar
    load_and_resolve(raw, host)


@FAST
@given(raw=st.dictionaries(st.one_of(st.sampled_from(list(tiny_raw())), KEYS), VALUES))
def test_any_top_level_mapping_loads_or_is_a_config_error(host, raw):
    load_and_resolve(raw, host)


@FAST
@given(sections=st.lists(st.sampled_from(list(tiny_raw())), min_size=1, unique=True))
def test_a_config_without_some_sections_loads_or_is_a_config_error(host, sections):
    load_and_resolve({k: v for k, v in tiny_raw().items() if k not in sections}, host)


# YAML text built from the pieces that make parsers fail: tags, anchors, flow collections,
# directives, odd indentation and quoting.
YAML_PIECES = st.sampled_from(
    ["\n", "  ", "\t", ": ", "- ", "? ", ",", "[", "]", "{", "}", "'", '"', "#", "&a ", "*a",
     "<<: ", "!!int ", "!!float ", "!!bool ", "!!timestamp ", "!!binary ", "!!set ",
     "!!omap ", "!!python/object:os.system ", "!!str ", "!custom ", "%YAML 1.1\n", "---\n",
     "...\n", "|\n", ">\n", "~", "null", "2024-13-45", "0x1F", "1e400", ".nan", "\\", "\x00",
     "\ufeff", "é", "name", "seed", "heads"]
)  # fmt: skip
YAML_TEXT = st.lists(st.one_of(YAML_PIECES, st.text(max_size=4)), max_size=24).map("".join)


@FAST
@given(text=YAML_TEXT)
def test_read_yaml_of_any_text_is_a_value_or_a_config_error(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        read_yaml(path)
    except ConfigError as exc:
        ((where, message),) = exc.problems
        assert where == "" and message and exc.source == str(path)


@FAST
@given(data=st.binary(max_size=60))
def test_read_yaml_of_any_bytes_is_a_value_or_a_config_error(tmp_path, data):
    path = tmp_path / "config.yaml"
    path.write_bytes(data)
    try:
        read_yaml(path)
    except ConfigError as exc:
        assert exc.problems and exc.source == str(path)


@FAST
@given(text=YAML_TEXT)
def test_load_config_of_any_yaml_file_is_a_config_or_a_config_error(tmp_path, host, text):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    load_and_resolve(path, host)


TAGGED = ["!!int", "!!float", "!!int _", "!!bool maybe", "!!timestamp x", "seed: !!int\n"]


@pytest.mark.parametrize(
    "text",
    [
        pytest.param(
            t,
        )
        for t in TAGGED
    ],
)
def test_a_tagged_scalar_that_cannot_be_built_is_a_config_error(tmp_path, text):
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match="YAML"):
        read_yaml(path)
    with pytest.raises(ConfigError, match="cannot parse override value"):
        apply_override({}, f"seed={text}")


PATH_TEXT = st.lists(
    st.one_of(
        st.sampled_from(PATHS),
        st.sampled_from([".", "[", "]", "[0]", "[9]", "[-1]", "=", " ", "..", "x"]),
        st.text(max_size=3),
    ),
    min_size=1,
    max_size=4,
).map("".join)


@FAST
@given(path=PATH_TEXT, value=st.one_of(YAML_TEXT, VALUES.map(yaml.safe_dump)))
def test_any_override_is_applied_or_is_a_config_error(host, path, value):
    raw = tiny_raw()
    item = f"{path}={value}"
    try:
        apply_override(raw, item)
    except ConfigError as exc:
        assert exc.problems and all(isinstance(m, str) and m for _, m in exc.problems)
    load_and_resolve(tiny_raw(), host, (item,))


# --- manifests -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory) -> Path:
    """Real files a manifest may name: two images, a mask, a sub-folder, a non-image."""
    folder = tmp_path_factory.mktemp("property") / "data"
    (folder / "sub").mkdir(parents=True)
    Image.new("L", (8, 6), 100).save(folder / "a.png")
    Image.new("RGB", (8, 6), (1, 2, 3)).save(folder / "sub" / "b.png")
    Image.new("L", (8, 6), 255).save(folder / "mask.png")
    (folder / "notes.png").write_text("not an image")
    (folder.parent / "outside.png").write_bytes((folder / "a.png").read_bytes())
    return folder


COLUMNS = ["image", "patient_id", "mask", "x0", "y0", "x1", "y1", "bm", "alnm_count"]
ODD_CELLS = ["", " ", "nan", '"', '""', ",", "a,b", "\n", "\r\n", "\r", "\x0c", "\u2028", "é",
             "\ufeff", "\x00", "=1+1"]  # fmt: skip
GOOD_FILES = st.sampled_from(
    ["a.png", "sub/b.png", "./a.png", "sub/../a.png", " a.png ", "notes.png"]
)
FILE_CELLS = st.one_of(
    GOOD_FILES,
    GOOD_FILES,  # twice: half of the cells name a real file
    st.sampled_from(["mask.png", "notes.png", "sub", "manifest.csv", "../outside.png",
                     "missing.png", "/etc/hostname", "a.png/x", "~/a.png", "x" * 300,
                     "a\x00.png", *ODD_CELLS]),
    st.text(max_size=6),
)  # fmt: skip
NUMBER_CELLS = st.one_of(
    st.integers(-3, 12).map(str),
    st.integers(0, 12).map(str),
    st.sampled_from(["2.5", "1e400", "-0", "0x4", "1_0", "inf", "NaN", "3.0", *ODD_CELLS]),
    st.text(max_size=4),
)
CELLS = st.one_of(
    st.sampled_from(["0", "1", "-1", "2.5", "benign", "malignant", "p1", "p2", *ODD_CELLS]),
    st.text(max_size=8),
)
CELLS_OF = {"image": FILE_CELLS, "mask": FILE_CELLS, "x0": NUMBER_CELLS, "y0": NUMBER_CELLS}
CELLS_OF |= {"x1": NUMBER_CELLS, "y1": NUMBER_CELLS, "alnm_count": NUMBER_CELLS}
MOSTLY_GOOD = {"image": GOOD_FILES, "mask": st.sampled_from(["", "mask.png", "notes.png"])}
MOSTLY_GOOD |= {c: st.integers(0, 3).map(str) for c in ("x0", "y0", "alnm_count")}
MOSTLY_GOOD |= {c: st.integers(4, 8).map(str) for c in ("x1", "y1")}
HEADERS = st.one_of(
    # mostly the real columns, image first, in any order and subset
    st.lists(st.sampled_from(COLUMNS[1:]), unique=True).map(lambda c: ["image", *c]),
    st.lists(st.sampled_from(COLUMNS), unique=True),
    # and anything: repeated, empty, unicode or quoting column names
    st.lists(st.one_of(st.sampled_from(COLUMNS + ODD_CELLS), st.text(max_size=5)), max_size=7),
)


@st.composite
def csv_bytes(draw) -> bytes:
    """CSV-ish bytes: well quoted or naively joined UTF-8 (most often, so that rows are read),
    UTF-8 with a BOM or CRLF, Latin-1, UTF-16, or random bytes."""
    style = draw(st.sampled_from(["csv"] * 4 + ["joined", "bom", "crlf", "latin-1", "utf-16"]))
    if draw(st.integers(0, 19)) == 0:
        return draw(st.binary(max_size=80))
    header = draw(HEADERS)
    cells = CELLS_OF if draw(st.booleans()) else MOSTLY_GOOD  # so that some sets are read
    rows = []
    for _ in range(draw(st.integers(0, 5))):
        row = [draw(cells.get(column, CELLS)) for column in header]
        if draw(st.integers(0, 9)) == 0:  # a ragged row: cells missing or in excess
            row = row[: draw(st.integers(0, len(row)))] + draw(st.lists(CELLS, max_size=2))
        rows.append(row)
    if style == "joined":
        text = "\n".join(",".join(cells) for cells in [header, *rows])
    else:
        buffer = io.StringIO()
        csv.writer(buffer, lineterminator="\r\n" if style == "crlf" else "\n").writerows(
            [header, *rows]
        )
        text = buffer.getvalue()
    encoding = {"bom": "utf-8-sig", "latin-1": "latin-1", "utf-16": "utf-16"}.get(style, "utf-8")
    return text.encode(encoding, errors="replace")


OPTIONS = st.fixed_dictionaries(
    {},
    optional={
        "patient_column": st.none() | st.sampled_from(COLUMNS),
        "mask_column": st.none() | st.sampled_from(COLUMNS),
        "box_columns": st.lists(st.sampled_from(COLUMNS), min_size=4, max_size=4),
        "allow_outside_root": st.booleans(),
    },
)


@FAST
@given(data=csv_bytes(), options=OPTIONS)
def test_any_manifest_is_a_sample_set_or_a_data_error(image_folder, data, options):
    path = image_folder / "manifest.csv"
    path.write_bytes(data)
    sample_set = None
    try:
        sample_set = manifest_source(ManifestOptions(path=str(path), **options))
    except DataError as exc:
        assert str(exc).strip()
        return
    assert isinstance(sample_set, SampleSet)
    for sample in sample_set.samples:
        # every file a sample names exists inside the folder (unless allowed outside)
        for file in sample.files:
            assert Path(file).is_file()
            assert options.get("allow_outside_root") or Path(file).is_relative_to(
                image_folder.resolve()
            )
        loads = zip((sample.image, sample.mask), sample.files, (np.uint8, bool), strict=False)
        for load, file, dtype in loads:
            try:
                pixels = load()
            except DataError as exc:
                assert str(file) in str(exc)  # names the file it could not read
            else:
                assert pixels.ndim == 2 and pixels.dtype == dtype


@pytest.mark.parametrize(
    "cell",
    [
        pytest.param(
            cell,
            id=name,
        )
        for name, cell in [("nul-byte", "a\x00.png"), ("name-too-long", "x" * 300 + ".png")]
    ],
)
def test_an_impossible_path_is_a_data_error(tmp_path, cell):
    (tmp_path / "m.csv").write_text(f"image,bm\n{cell},benign\n", encoding="utf-8")
    with pytest.raises(DataError, match="row 2: image"):
        manifest_source(ManifestOptions(path=str(tmp_path / "m.csv")))


# Cell text without line breaks of any kind (see test_line_breaks_inside_a_quoted_cell);
# leading and trailing blanks are stripped by the parser, so values are generated stripped.
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
CELL_TEXT = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters=LINE_BREAKS + "\x00"),
    max_size=8,
).map(str.strip)
FILE_NAME = st.text(
    st.characters(
        whitelist_categories=("L", "N", "Zs", "Pd", "Po"),
        blacklist_characters="/\\" + LINE_BREAKS,
    ),
    min_size=1,
    max_size=12,
).filter(lambda n: n == n.strip() and n not in (".", "..") and len(n.encode()) < 200)


@st.composite
def manifests(draw):
    """A valid manifest: distinct image files, patients, labels and boxes."""
    names = draw(st.lists(FILE_NAME, min_size=1, max_size=5, unique=True))
    rows = []
    for name in names:
        box = draw(st.lists(st.integers(-3, 40), min_size=4, max_size=4))
        rows.append(
            {
                "image": name + ".png",
                "patient_id": draw(CELL_TEXT),
                "x0": str(box[0]),
                "y0": str(box[1]),
                "x1": str(box[2]),
                "y1": str(box[3]),
                "bm": draw(CELL_TEXT),
                "note": draw(CELL_TEXT),
            }
        )
    return rows


@FAST
@given(rows=manifests())
def test_a_written_manifest_reads_back_exactly(tmp_path_factory, rows):
    folder = tmp_path_factory.mktemp("roundtrip")
    pixels = Image.new("L", (32, 32), 7)
    for row in rows:
        pixels.save(folder / row["image"], format="PNG")
    with (folder / "manifest.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    bad = []
    for number, row in enumerate(rows, start=2):
        x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        if not (0 <= x0 < x1 and 0 <= y0 < y1):
            bad.append(f"row {number}: box ({x0}, {y0}, {x1}, {y1})")
    try:
        sample_set = manifest_source(ManifestOptions(path=str(folder / "manifest.csv")))
    except DataError as exc:
        assert bad, str(exc)
        for problem in bad:
            assert problem in str(exc)
        return
    finally:
        shutil.rmtree(folder)
    assert not bad
    assert [s.image_id for s in sample_set.samples] == [r["image"] for r in rows]
    assert [s.patient_id for s in sample_set.samples] == [
        r["patient_id"] or r["image"] for r in rows
    ]
    assert [s.box for s in sample_set.samples] == [
        tuple(int(r[k]) for k in ("x0", "y0", "x1", "y1")) for r in rows
    ]
    assert [s.labels for s in sample_set.samples] == [
        {"bm": r["bm"], "note": r["note"]} for r in rows
    ]
    assert [s.origin for s in sample_set.samples] == [
        f"manifest.csv row {n}" for n in range(2, len(rows) + 2)
    ]


@pytest.mark.parametrize(
    "line_break",
    [
        pytest.param(
            c,
            id="+".join(f"U+{ord(x):04X}" for x in c),
        )
        for c in ["\n", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"]
    ],
)
def test_line_breaks_inside_a_quoted_cell(tmp_path, line_break):
    Image.new("L", (8, 6)).save(tmp_path / "a.png")
    Image.new("L", (8, 6)).save(tmp_path / "b.png")
    with (tmp_path / "m.csv").open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(
            [["image", "note"], ["a.png", f"x{line_break}y"], ["b.png", "z"]]
        )
    sample_set = manifest_source(ManifestOptions(path=str(tmp_path / "m.csv")))
    assert [s.labels["note"] for s in sample_set.samples] == [f"x{line_break}y", "z"]


# --- label values ----------------------------------------------------------------------------

NUMPY_SCALARS = st.one_of(
    st.floats(width=32).map(np.float32),
    st.floats().map(np.float64),
    st.integers(-(2**63), 2**63 - 1).map(np.int64),
    st.integers(0, 255).map(np.uint8),
    st.booleans().map(np.bool_),
    st.text(max_size=5).map(np.str_),
)
LABEL_VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**300), 10**300),
    st.floats(),
    st.text(),
    st.sampled_from(sorted(MISSING) + ["NaN", " NA ", "1.0", "+1", "1e400", "-0", "inf", "1_0"]),
    st.binary(max_size=8),
    NUMPY_SCALARS,
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=500, deadline=None, derandomize=True)
@given(value=LABEL_VALUES)
def test_label_readers_never_raise_and_canonical_is_idempotent(value):
    number = as_number(value)
    assert number is None or (isinstance(number, float) and math.isfinite(number))
    text = canonical(value)
    assert text is None or isinstance(text, str)
    if text is not None:
        assert canonical(text) == text
        assert text == text.strip() and text not in MISSING


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(
            big,
            id=name,
        )
        for name, big in [("1e400", 10**400), ("-1e400", -(10**400))]
    ],
)
def test_label_readers_accept_integers_beyond_float_range(value):
    assert as_number(value) is None
    assert canonical(value) is not None


def test_canonical_examples():
    assert [canonical(v) for v in (1, 1.0, "1", True, " 1.0 ", np.int64(1))] == ["1"] * 6
    assert [canonical(v) for v in ("", None, math.nan, "NaN", " n/a ")] == [None] * 5
    assert canonical(" Benign ") == "benign"
    assert as_number("2.5") == 2.5 and as_number("1e400") is None and as_number("x") is None
