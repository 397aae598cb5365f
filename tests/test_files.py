"""zsad._files: atomic writes, JSON without NaN, and distinct output names."""

from __future__ import annotations

import json

import pytest

from zsad._files import atomic_path, safe_filename, unique_names, write_json, write_name_map, write_text


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_json_writer_refuses_nan(tmp_path):
    with pytest.raises(ValueError):
        write_json(tmp_path / "a.json", {"score": float("nan")})
    assert not (tmp_path / "a.json").exists()


def test_names_that_sanitise_alike_stay_distinct():
    keys = ["a b", "a_b", "A B", "金属 板", "金属_板", "screw", "a/b", "CON"]
    names = unique_names(keys)
    assert len({n.casefold() for n in names}) == len(keys)  # distinct on case-insensitive file systems too
    assert names[5] == "screw" and names[7] == "_CON"  # unique names stay readable; device names are avoided
    assert unique_names(list(reversed(keys))) == list(reversed(names))  # independent of the order
    assert all("/" not in n and n == n.strip(".") and n == safe_filename(n) for n in names)
    assert unique_names(["x", "x"]) == ["x", "x"]  # one key, one name


def test_long_names_are_cut_but_stay_distinct():
    keys = ["a" * 300 + "1", "a" * 300 + "2"]
    names = unique_names(keys)
    assert names[0] != names[1] and all(len(n.encode()) < 200 for n in names)


def test_name_map_says_which_input_each_name_is(tmp_path):
    keys = ["a b", "a_b"]
    names = unique_names(keys)
    path = write_name_map(tmp_path / "names.json", names, keys)
    assert json.loads(path.read_text(encoding="utf-8")) == dict(zip(names, keys))
