"""The embedded default data set (pipelines/synthetic.py): determinism, reuse, LLaVA format, and every answer
re-derived from the recorded geometry by an independent reading of the questions."""

from __future__ import annotations

import ast
import json
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pipelines import synthetic
from pipelines.synthetic import SyntheticConfig, generate_synthetic_dataset

SUFFIX = "\nAnswer the question using a single word or phrase."
SMALL = SyntheticConfig(seed=7, train_images=24, test_images=12)
ROWS_REGIONS = (("topleft", "top", "topright"), ("left", "centre", "right"), ("bottomleft", "bottom", "bottomright"))
NUMBERS = {1: "one", 2: "two", 3: "three", 4: "four"}
# General facts the text-only rows may state, written out here rather than imported.
TEXT_FACTS = {
    **{f"Is {c} a colour or a shape?": "colour" for c in ("red", "green", "blue", "yellow", "purple", "orange")},
    **{f"Is a {s} a colour or a shape?": "shape" for s in ("circle", "square", "triangle", "star", "cross")},
    "How many sides does a triangle have?": "three",
    "How many sides does a square have?": "four",
    "How many points does a star have?": "five",
    "How many arms does a cross have?": "four",
    "Which colour do you get by mixing red and yellow?": "orange",
    "Which colour do you get by mixing blue and yellow?": "green",
    "Which colour do you get by mixing red and blue?": "purple",
}


def read_json(path: Path):
    return json.loads(path.read_text())


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def default_dataset(tmp_path_factory):
    return generate_synthetic_dataset(tmp_path_factory.mktemp("synthetic") / "default")


@pytest.fixture(scope="module")
def metadata(default_dataset) -> dict:
    return read_json(default_dataset.metadata_json)


# --- An independent reading of the questions: answer from the objects' pixel centres and the image size ---------

def _grid_cell(obj: dict, image: dict) -> tuple[int, int]:
    x, y = obj["centre"]
    return int(3 * y / image["height"]), int(3 * x / image["width"])


def _only(objects: list[dict], **wanted) -> dict:
    matches = [o for o in objects if all(o[k] == v for k, v in wanted.items())]
    assert len(matches) == 1, f"ambiguous or missing referent {wanted}: {len(matches)} matches"
    return matches[0]


def derive(question: str, image: dict) -> tuple[str, str]:
    """(question_type, answer) of a question about an image record of metadata.json."""
    objects = image["objects"]
    if m := re.fullmatch(r"What colour is the (\w+)\?", question):
        return "colour", _only(objects, shape=m[1])["colour"]
    if m := re.fullmatch(r"What shape is the (\w+) object\?", question):
        return "shape", _only(objects, colour=m[1])["shape"]
    if m := re.fullmatch(r"Is the (\w+) (\w+) left or right of the (\w+) (\w+)\?", question):
        a, b = _only(objects, colour=m[1], shape=m[2]), _only(objects, colour=m[3], shape=m[4])
        assert _grid_cell(a, image)[1] != _grid_cell(b, image)[1], "left/right asked within one column"
        return "left_right", "left" if a["centre"][0] < b["centre"][0] else "right"
    if m := re.fullmatch(r"Is the (\w+) (\w+) above or below the (\w+) (\w+)\?", question):
        a, b = _only(objects, colour=m[1], shape=m[2]), _only(objects, colour=m[3], shape=m[4])
        assert _grid_cell(a, image)[0] != _grid_cell(b, image)[0], "above/below asked within one row"
        return "above_below", "above" if a["centre"][1] < b["centre"][1] else "below"
    if m := re.fullmatch(r"In which part of the image is the (\w+) (\w+)\?", question):
        row, col = _grid_cell(_only(objects, colour=m[1], shape=m[2]), image)
        return "region", ROWS_REGIONS[row][col]
    if m := re.fullmatch(r"Is the (\w+) (\w+) in the centre or on the border\?", question):
        cell = _grid_cell(_only(objects, colour=m[1], shape=m[2]), image)
        return "centre_border", "centre" if cell == (1, 1) else "border"
    if question == "How many shapes are there?":
        return "count", NUMBERS[len(objects)]
    if m := re.fullmatch(r"How many (\w+) shapes are there\?", question):
        return "count", NUMBERS[sum(o["colour"] == m[1] for o in objects)]
    if m := re.fullmatch(r"How many (\w+) are there\?", question):
        shape = m[1][:-2] if m[1].endswith("sses") else m[1][:-1]
        return "count", NUMBERS[sum(o["shape"] == shape for o in objects)]
    raise AssertionError(f"unrecognised question {question!r}")


# --- Determinism and reuse -----------------------------------------------------------------------------------------

def test_same_config_gives_byte_identical_files(tmp_path):
    first = generate_synthetic_dataset(tmp_path / "a", SMALL)
    second = generate_synthetic_dataset(tmp_path / "b", SMALL)
    files_a, files_b = all_files(first.root), all_files(second.root)
    assert sorted(files_a) == sorted(files_b)
    assert len([name for name in files_a if name.endswith(".png")]) == 24 + 12
    assert files_a == files_b
    other = generate_synthetic_dataset(tmp_path / "c", replace(SMALL, seed=8))
    assert other.config_hash != first.config_hash
    assert all_files(other.root)["finetune.json"] != files_a["finetune.json"]


def test_more_images_leave_the_earlier_images_unchanged(tmp_path):
    small = generate_synthetic_dataset(tmp_path / "small", SMALL)
    larger = generate_synthetic_dataset(tmp_path / "larger", replace(SMALL, train_images=30))
    train_small = {k: v for k, v in read_json(small.metadata_json)["images"].items() if v["split"] == "train"}
    train_larger = read_json(larger.metadata_json)["images"]
    assert all(train_larger[name] == record for name, record in train_small.items())


def test_second_call_reuses_without_rewriting(tmp_path):
    first = generate_synthetic_dataset(tmp_path, SMALL)
    mtimes = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    again = generate_synthetic_dataset(tmp_path, SMALL)
    assert (first.reused, again.reused) == (False, True)
    assert replace(again, reused=False) == first
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == mtimes


def test_other_config_in_the_same_directory_regenerates_and_drops_stale_images(tmp_path):
    generate_synthetic_dataset(tmp_path, SMALL)
    smaller = generate_synthetic_dataset(tmp_path, replace(SMALL, train_images=20))
    assert not smaller.reused
    assert len(list((tmp_path / "images").glob("train_*.png"))) == 20
    assert all_files(tmp_path) == all_files(generate_synthetic_dataset(tmp_path / "fresh",
                                                                       replace(SMALL, train_images=20)).root)


def test_interrupted_or_damaged_data_set_is_regenerated(tmp_path, monkeypatch):
    generate_synthetic_dataset(tmp_path, SMALL)
    draws = 0

    def failing_draw(scene):
        nonlocal draws
        draws += 1
        if draws == 5:
            raise KeyboardInterrupt
        return original_draw(scene)

    original_draw = synthetic._draw_scene
    monkeypatch.setattr(synthetic, "_draw_scene", failing_draw)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic_dataset(tmp_path, replace(SMALL, seed=9))
    monkeypatch.undo()
    assert not (tmp_path / "metadata.json").exists()
    assert not generate_synthetic_dataset(tmp_path, SMALL).reused

    (tmp_path / "images" / "test_00003.png").unlink()
    assert not generate_synthetic_dataset(tmp_path, SMALL).reused
    (tmp_path / "test.jsonl").write_text("")
    assert not generate_synthetic_dataset(tmp_path, SMALL).reused
    assert generate_synthetic_dataset(tmp_path, SMALL).reused


def test_config_validation_reports_every_problem():
    with pytest.raises(ValueError) as error:
        SyntheticConfig(train_images=0, max_shapes=10, image_sizes=((300, 301),), text_only_fraction=1.0,
                        test_questions_per_image=6)
    message = str(error.value)
    for fragment in ("train_images", "max_shapes", "(300, 301)", "text_only_fraction", "test_questions_per_image"):
        assert fragment in message


def test_module_imports_neither_ray_nor_mlflow():
    tree = ast.parse(Path(synthetic.__file__).read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
    assert roots & {"ray", "mlflow", "torch"} == set()


# --- The default data set -------------------------------------------------------------------------------------------

def test_default_counts(default_dataset, metadata):
    pretrain, finetune = read_json(default_dataset.pretrain_json), read_json(default_dataset.finetune_json)
    test_rows = read_jsonl(default_dataset.test_jsonl)
    text_only = [row for row in finetune if "image" not in row]
    assert (len(pretrain), len(finetune), len(text_only), len(test_rows)) == (400, 444, 44, 300)
    assert metadata["counts"] == {"train_images": 400, "test_images": 100, "pretrain_rows": 400, "finetune_rows": 444,
                                  "finetune_image_rows": 400, "text_only_rows": 44, "test_questions": 300}
    dataset = default_dataset
    assert (dataset.train_images, dataset.test_images, dataset.test_questions) == (400, 100, 300)
    assert abs(len(text_only) / len(finetune) - 0.1) < 0.005
    assert Counter(row["image"] for row in test_rows) == {f"images/test_{i:05d}.png": 3 for i in range(100)}
    assert Counter(v["split"] for v in metadata["images"].values()) == {"train": 400, "test": 100}


def test_llava_training_rows_are_well_formed(default_dataset):
    files = ((default_dataset.pretrain_json, {1}), (default_dataset.finetune_json, {1, 2, 3, 4}))
    for name, rounds in files:
        for row in read_json(name):
            turns = row["conversations"]
            assert [t["from"] for t in turns] == ["human", "gpt"] * (len(turns) // 2), row["id"]
            assert len(turns) // 2 in rounds and len(turns) % 2 == 0
            has_image = "image" in row
            assert turns[0]["value"].startswith("<image>\n") == has_image, row["id"]
            assert sum(t["value"].count("<image>") for t in turns) == int(has_image), row["id"]
            if has_image and name == default_dataset.finetune_json:
                assert 2 <= len(turns) // 2 <= 4
    ids = [row["id"] for row in read_json(default_dataset.finetune_json)]
    assert len(set(ids)) == len(ids)


def test_every_image_exists_opens_and_matches_its_record(default_dataset, metadata):
    referenced = {row["image"] for row in read_json(default_dataset.pretrain_json)}
    referenced |= {row["image"] for row in read_json(default_dataset.finetune_json) if "image" in row}
    referenced |= {row["image"] for row in read_jsonl(default_dataset.test_jsonl)}
    assert referenced == set(metadata["images"])
    sizes = Counter()
    for name, record in metadata["images"].items():
        with Image.open(default_dataset.root / name) as image:
            assert image.format == "PNG" and image.mode == "RGB"
            assert image.size == (record["width"], record["height"])
        sizes[image.size] += 1
    assert set(sizes) == {(336, 336), (384, 288), (288, 384)}


def test_objects_sit_in_distinct_cells_without_overlap_and_are_drawn_where_recorded(default_dataset, metadata):
    palette = {name: tuple(rgb) for name, rgb in metadata["palette"].items()}
    shape_counts = Counter()
    for name, record in metadata["images"].items():
        objects, width, height = record["objects"], record["width"], record["height"]
        assert 1 <= len(objects) <= 4
        assert len({tuple(o["cell"]) for o in objects}) == len(objects)
        assert len({(o["colour"], o["shape"]) for o in objects}) == len(objects)
        pixels = np.asarray(Image.open(default_dataset.root / name))
        painted = np.zeros(pixels.shape[:2], dtype=bool)
        for obj in objects:
            shape_counts[obj["shape"]] += 1
            row, col = obj["cell"]
            x0, y0, x1, y1 = obj["bbox"]
            assert col * width // 3 <= x0 < x1 < (col + 1) * width // 3, (name, obj)
            assert row * height // 3 <= y0 < y1 < (row + 1) * height // 3, (name, obj)
            assert tuple(pixels[obj["centre"][1], obj["centre"][0]]) == palette[obj["colour"]], (name, obj)
            colour_mask = np.all(pixels == palette[obj["colour"]], axis=-1)
            inside = np.zeros_like(painted)
            inside[y0:y1 + 1, x0:x1 + 1] = True
            cell = np.zeros_like(painted)
            cell[row * height // 3:(row + 1) * height // 3, col * width // 3:(col + 1) * width // 3] = True
            assert not np.any(colour_mask & cell & ~inside), (name, obj)
            painted |= inside
        assert np.all(pixels[~painted] == record["background"]), name
    assert set(shape_counts) == {"circle", "square", "triangle", "star", "cross"}


def test_every_test_answer_is_rederived_from_geometry(default_dataset, metadata):
    answer_sets = {qtype: set(info["answers"]) for qtype, info in metadata["question_types"].items()
                   if qtype != "overall"}
    rows = read_jsonl(default_dataset.test_jsonl)
    assert [row["question_id"] for row in rows] == list(range(300))
    for row in rows:
        assert row["text"].endswith(SUFFIX) and "<image>" not in row["text"]
        question_type, answer = derive(row["text"].removesuffix(SUFFIX), metadata["images"][row["image"]])
        assert (row["question_type"], row["answer"]) == (question_type, answer), row
        assert re.fullmatch(r"[a-z]+", row["answer"]) and row["answer"] in answer_sets[question_type], row
    assert {row["question_type"] for row in rows} == set(answer_sets) == {
        "colour", "shape", "left_right", "above_below", "region", "centre_border", "count"}
    per_image = Counter((row["image"], row["question_type"]) for row in rows)
    assert max(per_image.values()) == 1


def test_every_finetune_answer_is_rederived(default_dataset, metadata):
    seen_types = Counter()
    for row in read_json(default_dataset.finetune_json):
        turns = row["conversations"]
        for human, gpt in zip(turns[0::2], turns[1::2]):
            question = human["value"].removeprefix("<image>\n")
            assert question.endswith(SUFFIX)
            question = question.removesuffix(SUFFIX)
            if "image" in row:
                question_type, answer = derive(question, metadata["images"][row["image"]])
                seen_types[question_type] += 1
            else:
                answer = TEXT_FACTS[question]
            assert gpt["value"] == answer, (row["id"], question)
    assert set(seen_types) == {"colour", "shape", "left_right", "above_below", "region", "centre_border", "count"}
    assert max(seen_types.values()) - min(seen_types.values()) <= 1


def test_pretrain_captions_list_every_shape_with_its_position(default_dataset, metadata):
    phrases = (("at the top left", "at the top", "at the top right"), ("on the left", "in the centre", "on the right"),
               ("at the bottom left", "at the bottom", "at the bottom right"))
    for row in read_json(default_dataset.pretrain_json):
        record = metadata["images"][row["image"]]
        expected = []
        for obj in sorted(record["objects"], key=lambda o: _grid_cell(o, record)):
            row_index, col = _grid_cell(obj, record)
            article = "an" if obj["colour"] == "orange" else "a"
            expected.append(f"{article} {obj['colour']} {obj['shape']} {phrases[row_index][col]}")
        caption = expected[0] if len(expected) == 1 else ", ".join(expected[:-1]) + " and " + expected[-1]
        assert row["conversations"][1]["value"] == caption + "."


def test_splits_are_disjoint(default_dataset, metadata):
    train_images = {row["image"] for row in read_json(default_dataset.pretrain_json)}
    assert train_images == {row["image"] for row in read_json(default_dataset.finetune_json) if "image" in row}
    test_images = {row["image"] for row in read_jsonl(default_dataset.test_jsonl)}
    assert train_images.isdisjoint(test_images)
    assert all(metadata["images"][name]["split"] == "test" for name in test_images)

    def content(record: dict) -> tuple:
        objects = sorted((o["colour"], o["shape"], tuple(o["cell"])) for o in record["objects"])
        return record["width"], record["height"], tuple(objects)

    train_scenes = {content(metadata["images"][name]) for name in train_images}
    assert not any(content(metadata["images"][name]) in train_scenes for name in test_images)
    pixels = {record["pixels_sha256"] for record in metadata["images"].values()}
    assert len(pixels) == 500


def test_chance_numbers(default_dataset, metadata):
    rows = read_jsonl(default_dataset.test_jsonl)
    numbers = metadata["question_types"]
    for qtype, info in numbers.items():
        if qtype == "overall":
            continue
        counts = Counter(row["answer"] for row in rows if row["question_type"] == qtype)
        assert info["uniform_chance"] == round(1 / len(info["answers"]), 6)
        assert info["majority_baseline"] == round(max(counts.values()) / sum(counts.values()), 6)
        assert info["questions"] == sum(counts.values())
    assert {q: numbers[q]["uniform_chance"] for q in numbers} == {
        "colour": 0.166667, "shape": 0.2, "left_right": 0.5, "above_below": 0.5, "region": 0.111111,
        "centre_border": 0.5, "count": 0.25, "overall": 0.317648}
    assert {q: numbers[q]["majority_baseline"] for q in numbers} == {
        "colour": 0.209302, "shape": 0.209302, "left_right": 0.511628, "above_below": 0.5, "region": 0.116279,
        "centre_border": 0.511628, "count": 0.302326, "overall": 0.336667}
    assert {q: numbers[q]["questions"] for q in numbers} == {
        "colour": 43, "shape": 43, "left_right": 43, "above_below": 42, "region": 43, "centre_border": 43,
        "count": 43, "overall": 300}
