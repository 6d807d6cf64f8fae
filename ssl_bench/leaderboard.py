"""The CSV leaderboard: one row per (run, protocol, K), and the summary printed from it.

Rows are appended under a file lock by rewriting the file to a temporary name and renaming
it, so concurrent writers never interleave and a kill never leaves a torn file. A row with
the same (run_id, protocol, labels_per_class) as an existing one replaces it, so writing a
run's results twice cannot duplicate them.

People edit and merge leaderboards by hand, so what is read is verified (`read`): a file
that would be written back with rows lost, merged or changed is refused with a message
naming the line and the column, before anything is written. `check_writable` is the
pre-run check: it finds a leaderboard that could not be updated before any work is done.
"""

from __future__ import annotations

import argparse
import csv
import io
import math
import os
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock

from ssl_bench.errors import UserError
from ssl_bench.interrupts import interruptible
from ssl_bench.paths import argument_path
from ssl_bench.runlog import atomic_write_bytes
from ssl_bench.stats import CELL, KEY, duplicates_note, summarize

COLUMNS = [
    "run_id", "task", "dataset", "pretrain_dataset", "backbone", "protocol", "labels_per_class",
    "seed", "test_acc", "pretext_metric", "pretext_metric_name", "pretrain_seconds",
    "pretrain_reused", "pretrain_id", "eval_seconds", "eval_steps", "eval_samples",
    "eval_augment", "eval_budget_scale", "results_version", "pretrain_seed", "pretrain_epochs", "precision",
    "pretrain_precision", "profile", "git_sha", "machine",
    "started_at", "finished_at", "run_dir", "at_chance",
]
# what the summary, the report and the writers cannot do without; every other column is
# optional (older files lack some, and the readers fill them in)
REQUIRED = ["run_id", "task", "dataset", "backbone", "protocol", "labels_per_class", "seed", "test_acc"]
MAX_LISTED = 3  # problems named in one message after the first


def _bad(path: Path, where: str, what: str) -> UserError:
    """One line: which file, where in it, what is wrong, and the two ways out."""
    return UserError(f"{path}{where}: {what}; fix the file, or move it aside (e.g. `mv {path} {path}.bad`) "
                     "to start a new leaderboard")


def _not_a_folder(path: Path) -> None:
    if path.is_dir():
        raise UserError(f"{path} is a folder, not a leaderboard CSV; give the CSV's path "
                        "(leaderboard.path=... or --path), or move the folder aside")


def _text(path: Path) -> str | None:
    """The file's text (None when there is no leaderboard yet: no file, or an empty one)."""
    _not_a_folder(path)
    try:
        data = path.read_bytes()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as exc:
        raise UserError(f"cannot read the leaderboard {path} ({exc.strerror}); make it readable "
                        "or choose another leaderboard.path") from None
    if not data:
        return None
    try:
        text = data.decode("utf-8-sig")  # a spreadsheet may have added a byte-order mark
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise _bad(path, f" line {line}", f"byte {exc.start} (0x{data[exc.start]:02x}) is not UTF-8 "
                   "text: this is not a CSV file, or a damaged one") from None
    if "\0" in text:
        line = text[:text.index("\0")].count("\n") + 1
        raise _bad(path, f" line {line}", "it holds a NUL byte: binary data, not CSV text")
    return text


@dataclass
class _Records:
    """The CSV's records as text, with the line each starts on (1-based, as an editor counts)."""

    header: list[str]
    header_line: int
    lines: list[int]  # of each data record
    rows: list[list[str]]

    def column(self, name: str) -> pd.Series:
        """One column's cells exactly as written in the file."""
        j = self.header.index(name)
        return pd.Series([row[j] for row in self.rows], dtype=object)


def _records(path: Path, text: str) -> _Records:
    """The file's records, checked: each with as many fields as the header, every quote closed.

    pandas would accept a short line (its missing values become empty) and a line with an
    unclosed quote that a later quote closes (the lines in between become one value), and
    both would be written back changed; a wrong number of fields is what gives them away,
    so it is refused here, as is a header that names a column twice. A quoted value may
    hold a line break (the writer quotes it), so a record may span lines.
    """
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    found: _Records | None = None
    end = 0
    try:
        for fields in reader:
            start, end = end + 1, reader.line_num
            if not fields:  # a blank line: pandas skips it too
                continue
            if found is None:
                twice = sorted({name for name in fields if fields.count(name) > 1})
                if twice:
                    raise _bad(path, f" line {start} (the header)", f"it names {', '.join(twice)} twice")
                found = _Records(fields, start, [], [])
            elif len(fields) != len(found.header):
                spans = (f" (a quoted value runs on to line {end}: a quote (\") left open?)"
                         if end > start else "")
                raise _bad(path, f" line {start}", f"{len(fields)} fields, but the header (line "
                           f"{found.header_line}) has {len(found.header)}{spans}")
            else:
                found.lines.append(start)
                found.rows.append(fields)
    except csv.Error as exc:
        what = ("a quote (\") opened on this line is never closed" if "end of data" in str(exc)
                else f"not valid CSV ({exc})")
        raise _bad(path, f" line {end + 1}", what) from None
    if found is None:
        raise _bad(path, "", "it has no header line")
    return found


def _problem_text(problems: list[tuple[int, str, str]]) -> tuple[str, str]:
    """(where, what) of the first problem, with the others named briefly."""
    problems.sort()
    line, column, what = problems[0]
    more = [f"line {n} {c}" for n, c, _ in problems[1:1 + MAX_LISTED]]
    if len(problems) > 1 + MAX_LISTED:
        more.append(f"{len(problems) - 1 - MAX_LISTED} more")
    return f" line {line}, column {column}", what + (f" (also bad: {', '.join(more)})" if more else "")


NUMBER_KINDS = {"labels_per_class": "a whole number of labels per class (1 or more)",
                "seed": "a whole number", "test_acc": "an accuracy in percent (a number from 0 to 100)"}


def _wrong_numbers(column: str, numbers: pd.Series) -> pd.Series:
    """Which cells of a number column are not a number of its kind (NaN: not a number)."""
    if column == "test_acc":
        return ~numbers.between(0, 100)
    wrong = numbers.isna() | (numbers != numbers.round())
    return wrong | (numbers < 1) if column == "labels_per_class" else wrong


def _bad_cells(records: _Records) -> list[tuple[int, str, str]]:
    """(line, column, problem) of every empty key cell and of every cell of a number column
    that is not a number of its kind, quoted as the file has it.

    Other empty cells are kept: written back unchanged, they change nothing (a row without
    an accuracy is left out of the summary, as it always was).
    """
    problems = []
    for column in REQUIRED:
        cells = records.column(column)
        empty = cells.str.strip() == ""
        if column in KEY:
            problems += [(records.lines[i], column, "the value is empty") for i in np.flatnonzero(empty)]
        if column in NUMBER_KINDS:
            wrong = _wrong_numbers(column, pd.to_numeric(cells, errors="coerce")) & ~empty
            problems += [(records.lines[i], column, f"{cells.iloc[i]!r} is not {NUMBER_KINDS[column]}")
                         for i in np.flatnonzero(wrong)]
    return problems


def read(path: Path) -> pd.DataFrame:
    """The leaderboard as a DataFrame (empty, with the columns, if there is none yet).

    What is read is verified, because `append_rows` writes it back: a file that is not CSV
    text, a line with too many or too few fields, a quote left open, a missing required
    column, an empty key (run_id, protocol, labels_per_class) or text where a number belongs
    is a `UserError` that names the file, the line (1-based, the header is line 1) and the
    column. Nothing is dropped or repaired silently. Only an empty cell is a missing value
    (what `append_rows` writes for one): `n/a` in a number column is an error, not a gap.
    `labels_per_class` comes back as integers, `seed` too where every row has one.
    """
    path = Path(path)
    text = _text(path)
    if text is None:
        return pd.DataFrame(columns=COLUMNS)
    records = _records(path, text)
    missing = [c for c in REQUIRED if c not in records.header]
    if missing:
        raise _bad(path, f" line {records.header_line} (the header)", f"the column(s) {', '.join(missing)} "
                   f"are missing; a leaderboard needs {', '.join(REQUIRED)}")
    problems = _bad_cells(records)
    if problems:
        raise _bad(path, *_problem_text(problems))
    try:
        table = pd.read_csv(io.StringIO(text), keep_default_na=False, na_values=[""])
    except pd.errors.ParserError as exc:  # not expected once the records are checked
        raise _bad(path, "", f"pandas cannot read it ({' '.join(str(exc).split())})") from None
    if len(table) != len(records.rows):
        raise _bad(path, "", f"pandas reads {len(table)} rows where the CSV has {len(records.rows)}")
    for column in ("labels_per_class", "seed", "test_acc"):  # checked: only blank cells coerce (to empty)
        table[column] = pd.to_numeric(table[column], errors="coerce")
    for column in ("labels_per_class", "seed"):
        if table[column].notna().all():
            table[column] = table[column].round().astype("int64")
    return table


def _replace_in(folder: Path, name: str) -> None:
    """Create two files in `folder` and rename one over the other, as `append_rows` does."""
    made = []
    try:
        for _ in range(2):
            fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".check", dir=folder)
            os.close(fd)
            made.append(tmp)
        os.replace(made[0], made[1])
    finally:
        for tmp in made:
            Path(tmp).unlink(missing_ok=True)


def check_writable(path: Path) -> None:
    """Fail before any work, with a `UserError`, when rows could not be added to the
    leaderboard at `path`; otherwise the first finished row would be the one to find out.

    Checked: the path is not a folder; its folder exists (or is created) and a file in it
    can be created and renamed over another (how `append_rows` replaces the table); the
    lock file beside it can be opened; an existing leaderboard reads (`read`).
    """
    path = Path(path)
    _not_a_folder(path)
    folder, lock = path.parent, Path(f"{path}.lock")
    fix = "choose a writable leaderboard.path (or paths.runs_dir), or fix its permissions"
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the leaderboard's folder {folder} ({exc.strerror}); {fix}") from None
    try:
        _replace_in(folder, path.name)
    except OSError as exc:
        raise UserError(f"cannot replace files in the leaderboard's folder {folder} ({exc.strerror}), "
                        f"so {path} could not be updated; {fix}") from None
    try:
        os.close(os.open(lock, os.O_RDWR | os.O_CREAT, 0o666))
    except OSError as exc:
        raise UserError(f"cannot open the leaderboard's lock file {lock} ({exc.strerror}); {fix}") from None
    read(path)


def append_rows(path: Path, rows: Iterable[dict]) -> pd.DataFrame:
    """Add `rows` (replacing rows with the same key) and return the whole leaderboard.

    Safe with any number of concurrent writers, sweep workers or cluster jobs: the lock is an
    flock on `<path>.lock`, which the kernel releases if its holder dies, and the new table is
    renamed into place, so readers need no lock: they see the old file or the new one, whole.

    The file is read (and verified, see `read`) before anything is written: a file that does
    not read raises and stays as it was, byte for byte. Old rows are written back as they
    are, except those whose key a new row takes; rows that share a key with each other in
    the old file (e.g. two merged files) stay for their owner to resolve (the summary and
    the report count the last of them).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    new = pd.DataFrame(list(rows))
    missing = [c for c in KEY if c not in new.columns]
    if missing:
        raise ValueError(f"leaderboard rows lack key columns {missing}")
    new = new.drop_duplicates(subset=KEY, keep="last")
    with FileLock(str(path) + ".lock"):
        old = read(path)
        if not old.empty:
            old = old[~pd.MultiIndex.from_frame(old[KEY]).isin(pd.MultiIndex.from_frame(new[KEY]))]
        frames = [f for f in (old, new) if not f.empty]
        table = pd.concat(frames, ignore_index=True) if frames else new
        columns = COLUMNS + [c for c in table.columns if c not in COLUMNS]
        table = table.reindex(columns=columns)
        buf = io.StringIO()
        table.to_csv(buf, index=False)
        atomic_write_bytes(path, buf.getvalue().encode())
    return table


CHANCE_MARK = "!"


def _summary_cell(mean: float, std: float, n: int, best: bool, at_chance: bool) -> str:
    spread = 0.0 if math.isnan(std) else std
    return (f"{mean:.2f} ± {spread:.2f} ({n}){' *' if best else ''}"
            f"{' ' + CHANCE_MARK if at_chance else ''}")


def format_summary(table: pd.DataFrame) -> str:
    """A text table per (data set, backbone, protocol): tasks × K, `mean ± std (n)`, * = best,
    ! = a cell with a row at chance level; then a note on rows that share a key, if any."""
    stats = summarize(table)
    if stats.empty:
        return "the leaderboard is empty: run `ssl-bench` (or `make smoke`) first"
    blocks = []
    for (dataset, pretrained_on, backbone, protocol), part in stats.groupby(CELL[:4], dropna=False):
        cells = part.assign(cell=[_summary_cell(*values) for values in zip(
            part["mean"], part["std"], part["n"], part["best"], part["at_chance"])])
        grid = cells.pivot(index="task", columns="labels_per_class", values="cell").fillna("-")
        grid.columns = [f"K={k}" for k in grid.columns]
        source = dataset if pretrained_on == dataset else f"{pretrained_on} -> {dataset}"
        blocks.append(f"{source} / {backbone} / {protocol} — test accuracy % "
                      f"(mean ± std over seeds (n), * best per K)\n{grid.to_string()}")
    if stats["at_chance"].any():
        blocks.append(f"{CHANCE_MARK} = at chance level (the pretext metric or the accuracy of a row of "
                      "the cell): the network likely diverged or learnt nothing; the CSV's at_chance "
                      "column says which rows and why")
    note = duplicates_note(table)
    return "\n\n".join(blocks + ([note] if note else []))


def read_or_explain(path: Path, prog: str, how: str) -> pd.DataFrame | None:
    """The leaderboard for a command-line tool, or None after one `<prog>: error:` line on
    stderr (no file: `how` says what makes one; a damaged file: what `read` found)."""
    if not path.exists():
        message = f"no leaderboard at {path}; {how}"
    else:
        try:
            return read(path)
        except UserError as exc:
            message = str(exc)
    print(f"{prog}: error: {message}", file=sys.stderr)
    return None


@interruptible("ssl-bench-leaderboard")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="ssl-bench-leaderboard",
        description="Print the leaderboard summary and regenerate the report (LEADERBOARD.md, plots).")
    parser.add_argument("--path", type=argument_path, default="runs/leaderboard.csv", help="leaderboard CSV")
    parser.add_argument("--report-dir", type=argument_path, default=None,
                        help="where LEADERBOARD.md and the plots go (default: the CSV's folder)")
    parser.add_argument("--no-report", action="store_true", help="only print the summary")
    args = parser.parse_args(argv)
    path = Path(args.path)
    table = read_or_explain(path, "ssl-bench-leaderboard",
                            "run `ssl-bench` or `make smoke` first, or pass --path")
    if table is None:
        return 2
    print(format_summary(table))
    if not args.no_report:
        from ssl_bench.report import write_report  # matplotlib only when a report is wanted

        out_dir = Path(args.report_dir) if args.report_dir else path.parent
        for written in write_report(table, out_dir):
            print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
