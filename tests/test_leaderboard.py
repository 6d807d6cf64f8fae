import os
import re
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest

from ssl_bench.curve import main as curve_main
from ssl_bench.errors import UserError
from ssl_bench.leaderboard import COLUMNS, append_rows, check_writable, format_summary, main, read
from ssl_bench.report import render_markdown
from ssl_bench.stats import summarize


def _row(run, task, k, acc, seed=0):
    return {"run_id": run, "task": task, "dataset": "d", "backbone": "b",
            "protocol": "conv3_linear", "labels_per_class": k, "seed": seed, "test_acc": acc}


def test_append_keeps_columns_and_replaces_same_key(tmp_path):
    path = tmp_path / "lb.csv"
    append_rows(path, [_row("r1", "rotation", 20, 50.0), _row("r1", "rotation", 100, 60.0)])
    append_rows(path, [_row("r2", "random", 20, 40.0)])
    append_rows(path, [_row("r1", "rotation", 20, 51.0)])  # rewritten result, same key
    table = read(path)
    assert list(table.columns[:len(COLUMNS)]) == COLUMNS
    assert len(table) == 3
    assert table.loc[(table.run_id == "r1") & (table.labels_per_class == 20), "test_acc"].item() == 51.0


def test_summary_mean_std_and_best(tmp_path):
    rows = [_row(f"a{s}", "rotation", 20, acc, s) for s, acc in enumerate([50.0, 52.0, 54.0])]
    rows += [_row(f"b{s}", "random", 20, acc, s) for s, acc in enumerate([40.0, 41.0, 42.0])]
    stats = summarize(pd.DataFrame(rows)).set_index("task")
    assert stats.loc["rotation", "mean"] == pytest.approx(52.0)
    assert stats.loc["rotation", "std"] == pytest.approx(2.0)
    assert stats.loc["rotation", "n"] == 3
    assert stats.loc["rotation", "ci95"] == pytest.approx(4.303 * 2.0 / 3 ** 0.5, rel=1e-3)
    assert bool(stats.loc["rotation", "best"]) and not bool(stats.loc["random", "best"])
    text = format_summary(pd.DataFrame(rows))
    assert "52.00 ± 2.00 (3) *" in text and "41.00 ± 1.00 (3)" in text


def test_cli_prints_summary_or_explains(tmp_path, capsys):
    assert main(["--path", str(tmp_path / "none.csv")]) == 2
    assert "no leaderboard" in capsys.readouterr().err
    append_rows(tmp_path / "lb.csv", [_row("r", "rotation", 20, 50.0)])
    assert main(["--path", str(tmp_path / "lb.csv")]) == 0
    assert "rotation" in capsys.readouterr().out


# --- hand-edited files: every fault is one clear message, and nothing is written back ------

def _board(tmp_path: Path) -> Path:
    """A leaderboard as `append_rows` writes it: a header (line 1) and rows on lines 2-4."""
    path = tmp_path / "lb.csv"
    append_rows(path, [_row("r1", "rotation", 20, 50.0), _row("r1", "rotation", 100, 60.0),
                       _row("r2", "random", 20, 40.0)])
    return path


def _set(lines: list[str], line: int, column: str, value: str) -> None:
    """Put `value` in `column` of `line` (1-based; the written values hold no commas)."""
    fields = lines[line - 1].split(",")
    fields[COLUMNS.index(column)] = value
    lines[line - 1] = ",".join(fields)


def _edit(fn: Callable[[list[str]], None]) -> Callable[[bytes], bytes]:
    def edit(data: bytes) -> bytes:
        lines = data.decode().split("\n")
        fn(lines)
        return "\n".join(lines).encode()
    return edit


def _drop_column(column: str) -> Callable[[bytes], bytes]:
    j = COLUMNS.index(column)
    return _edit(lambda ls: ls.__setitem__(slice(None), [
        ",".join(f for i, f in enumerate(x.split(",")) if i != j) if x else x for x in ls]))


N = len(COLUMNS)  # fields of a whole row: the expected counts follow the schema as it grows
FAULTS = [
    # a quote opened and never closed; one closed two lines later (the lines become one value)
    pytest.param(_edit(lambda ls: _set(ls, 3, "task", '"rotation')), ["line 3", "quote"], id="torn-quote"),
    pytest.param(_edit(lambda ls: (_set(ls, 2, "task", '"rotation'), _set(ls, 4, "dataset", 'd"'))),
                 ["line 2", f"{N - 1} fields", "runs on to line 4"], id="quote-closed-lines-later"),
    pytest.param(_edit(lambda ls: _set(ls, 3, "task", "rota,tion")),
                 ["line 3", f"{N + 1} fields", f"has {N}"], id="extra-field"),
    pytest.param(_edit(lambda ls: ls.__setitem__(3, ls[3] + ",extra")), ["line 4", f"{N + 1} fields"],
                 id="extra-field-at-end"),
    pytest.param(_edit(lambda ls: ls.__setitem__(2, ls[2].replace(",rotation,", ",", 1))),
                 ["line 3", f"{N - 1} fields"], id="missing-field"),
    pytest.param(_edit(lambda ls: _set(ls, 4, "labels_per_class", "twenty")),
                 ["line 4", "column labels_per_class", "'twenty'"], id="text-in-K"),
    pytest.param(_edit(lambda ls: _set(ls, 2, "labels_per_class", "2.5")),
                 ["line 2", "column labels_per_class", "'2.5'", "whole number"], id="fraction-in-K"),
    pytest.param(_edit(lambda ls: _set(ls, 3, "test_acc", "n/a")),
                 ["line 3", "column test_acc", "'n/a'"], id="text-in-test_acc"),
    pytest.param(_edit(lambda ls: (_set(ls, 2, "test_acc", "fifty"), _set(ls, 4, "test_acc", "523"))),
                 ["line 2", "column test_acc", "'fifty'", "also bad: line 4 test_acc"],
                 id="two-bad-test_acc"),
    pytest.param(_edit(lambda ls: _set(ls, 3, "seed", "one")), ["line 3", "column seed", "'one'"],
                 id="text-in-seed"),
    pytest.param(_edit(lambda ls: _set(ls, 2, "run_id", "")), ["line 2", "column run_id", "empty"],
                 id="empty-key"),
    pytest.param(_edit(lambda ls: _set(ls, 3, "labels_per_class", " ")),
                 ["line 3", "column labels_per_class", "empty"], id="blank-K"),
    pytest.param(_drop_column("test_acc"), ["line 1", "test_acc are missing"], id="missing-test_acc"),
    pytest.param(_drop_column("run_id"), ["line 1", "run_id are missing"], id="missing-run_id"),
    pytest.param(lambda data: b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", ["line 1", "not UTF-8"], id="binary"),
    pytest.param(lambda data: data.replace(b"random", b"rand\xf3m"), ["line 4", "not UTF-8"],
                 id="latin-1-byte"),
    pytest.param(lambda data: data.replace(b"random", b"ran\0dom"), ["line 4", "NUL"], id="nul-byte"),
]


@pytest.mark.parametrize("fault, fragments", FAULTS)
def test_a_damaged_leaderboard_is_one_message_and_stays_as_it_was(tmp_path, capsys, fault, fragments):
    path = _board(tmp_path)
    path.write_bytes(fault(path.read_bytes()))
    before = path.read_bytes()
    with pytest.raises(UserError) as caught:
        read(path)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(str(path))
    for fragment in [*fragments, "move it aside"]:
        assert fragment in message, (fragment, message)
    with pytest.raises(UserError, match=re.escape(str(path))):
        append_rows(path, [_row("r3", "jigsaw", 20, 45.0)])
    assert path.read_bytes() == before
    assert main(["--path", str(path), "--no-report"]) == 2
    err = capsys.readouterr().err
    assert err == f"ssl-bench-leaderboard: error: {message}\n"
    assert curve_main(["--path", str(path)]) == 2
    assert capsys.readouterr().err == f"ssl-bench-curve: error: {message}\n"


@pytest.mark.parametrize("where", ["lb.csv", "nested/lb.csv"])
def test_a_folder_at_the_leaderboard_path_is_refused(tmp_path, capsys, where):
    path = tmp_path / where
    path.mkdir(parents=True)
    for action in (lambda: read(path), lambda: append_rows(path, [_row("r", "rotation", 20, 50.0)]),
                   lambda: check_writable(path)):
        with pytest.raises(UserError, match="is a folder"):
            action()
    assert list(path.iterdir()) == []
    assert main(["--path", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"ssl-bench-leaderboard: error: {path} is a folder")


def test_a_quoted_value_with_line_breaks_and_empty_cells_survive_an_append(tmp_path):
    path = tmp_path / "lb.csv"
    odd = 'rotation, "quoted"\nand multi-line'
    append_rows(path, [{**_row("r1", odd, 20, 50.0), "seed": None, "dataset": None},
                       {"run_id": "r2", "protocol": "conv3_linear", "labels_per_class": 5}])
    append_rows(path, [_row("r3", "random", 20, 40.0)])
    table = read(path)
    assert table["task"].tolist()[:1] == [odd] and table["run_id"].tolist() == ["r1", "r2", "r3"]
    assert table["seed"].isna().tolist() == [True, True, False]
    assert table["test_acc"].isna().tolist() == [False, True, False]


def test_what_a_writer_never_writes_but_a_person_might_is_read(tmp_path):
    path = _board(tmp_path)
    data = path.read_bytes()
    variants = [b"\xef\xbb\xbf" + data,  # a spreadsheet's byte-order mark
                data.replace(b"\n", b"\r\n"),  # Windows line ends
                data.replace(b"\n", b"\n\n"),  # blank lines
                data.replace(b",20,", b",20.0,")]  # K written as a float
    for variant in variants:
        path.write_bytes(variant)
        table = read(path)
        assert table["labels_per_class"].tolist() == [20, 100, 20]
        assert table["test_acc"].tolist() == [50.0, 60.0, 40.0]


def test_rows_with_a_duplicated_key_count_once_and_are_kept(tmp_path):
    first, second = tmp_path / "a.csv", tmp_path / "b.csv"
    append_rows(first, [_row("r1", "rotation", 20, 50.0), _row("r2", "random", 20, 40.0)])
    append_rows(second, [_row("r1", "rotation", 20, 60.0)])
    merged = tmp_path / "lb.csv"  # two leaderboards pasted together by hand
    merged.write_bytes(first.read_bytes() + second.read_bytes().split(b"\n", 1)[1])
    table = read(merged)
    assert len(table) == 3
    stats = summarize(table).set_index("task")
    assert stats.loc["rotation", "n"] == 1 and stats.loc["rotation", "mean"] == 60.0  # the last one
    note = "1 row(s) share their (run_id, protocol, labels_per_class) with a later row"
    assert note in format_summary(table) and note in render_markdown(table)
    assert "Runs: 2 (2 result rows)" in render_markdown(table)
    # an append leaves both alone, unless it replaces that key
    append_rows(merged, [_row("r3", "jigsaw", 20, 45.0)])
    assert read(merged)["test_acc"].tolist() == [50.0, 40.0, 60.0, 45.0]
    append_rows(merged, [_row("r1", "rotation", 20, 55.0)])
    assert sorted(read(merged)["test_acc"].tolist()) == [40.0, 45.0, 55.0]
    assert note not in format_summary(read(merged))


def test_old_files_without_the_at_chance_column_still_read_and_append(tmp_path):
    path = tmp_path / "lb.csv"
    append_rows(path, [_row("r1", "rotation", 20, 50.0)])
    old = pd.read_csv(path).drop(columns=["at_chance"])
    old.to_csv(path, index=False)
    assert not summarize(read(path))["at_chance"].any()
    append_rows(path, [{**_row("r2", "random", 20, 11.0), "at_chance": "accuracy"}])
    table = read(path)
    assert list(table.columns) == COLUMNS and table["at_chance"].isna().tolist() == [True, False]
    stats = summarize(table).set_index("task")
    assert stats.loc["random", "at_chance"] and not stats.loc["rotation", "at_chance"]
    assert "11.00 ± 0.00 (1) !" in format_summary(table) and "50.00 ± 0.00 (1) *\n" in format_summary(table)


# --- check_writable: found before any work -----------------------------------------------

def test_check_writable_accepts_a_new_or_a_good_leaderboard_and_leaves_nothing(tmp_path):
    check_writable(tmp_path / "new" / "lb.csv")
    path = _board(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    check_writable(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # no temporary file left


def test_check_writable_refuses_a_folder_it_cannot_write(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(UserError, match="cannot create the leaderboard's folder"):
        check_writable(blocker / "lb.csv")  # a folder under a file: fails for root too
    if os.geteuid() == 0:
        pytest.skip("root writes into read-only folders: only the case above applies")
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(UserError, match="cannot replace files in the leaderboard's folder"):
            check_writable(folder / "lb.csv")
    finally:
        folder.chmod(0o755)


def test_check_writable_refuses_a_lock_it_cannot_open_and_a_damaged_file(tmp_path):
    path = _board(tmp_path)
    lock = tmp_path / "lb.csv.lock"
    lock.unlink(missing_ok=True)
    lock.mkdir()
    with pytest.raises(UserError, match="lock file"):
        check_writable(path)
    lock.rmdir()
    path.write_bytes(path.read_bytes().replace(b",20,", b",twenty,", 1))
    with pytest.raises(UserError, match="line 2, column labels_per_class"):
        check_writable(path)
