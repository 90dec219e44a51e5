"""Every corpus format behind one reader and one writer.

    brat     a folder of NAME.txt + NAME.ann (sdeid.brat)
    i2b2     a folder of NAME.xml in the i2b2/n2c2 2014 layout, or one file (sdeid.i2b2)
    conll    a folder of NAME.conll, or one file (sdeid.conll)
    parquet  note shards: a .parquet file, a folder of them, or a URI (sdeid.parquet_io)
    hf       a Hugging Face dataset folder written by `Dataset.save_to_disk`

`read_corpus` tells the format from what the path holds unless it is given, applies a label
map when there is one, and checks the labels of the whole corpus at once.
"""

from __future__ import annotations

from pathlib import Path

from sdeid.schema import NoteError

FORMATS = ("brat", "i2b2", "conll", "parquet", "hf")


def detect_format(path: str) -> str:
    from sdeid.conll import SUFFIXES

    if "://" in path:
        return "parquet"
    p = Path(path)
    if p.is_file():
        by_suffix = {".parquet": "parquet", ".xml": "i2b2", **dict.fromkeys(SUFFIXES, "conll")}
        if p.suffix in by_suffix:
            return by_suffix[p.suffix]
        raise NoteError(f"{path}: cannot tell the corpus format from {p.suffix!r}; use --from")
    if not p.is_dir():
        raise NoteError(f"{path}: not found")
    names = [f.name for f in p.iterdir() if not f.name.startswith(".")]
    if "state.json" in names and "dataset_info.json" in names:
        return "hf"
    found = {
        fmt
        for fmt, suffixes in (
            ("parquet", (".parquet",)),
            ("i2b2", (".xml",)),
            ("conll", SUFFIXES),
            ("brat", (".ann", ".txt")),
        )
        if any(n.endswith(suffixes) for n in names)
    }
    if (p / "_done").is_dir():
        found = {"parquet"}  # a stage's shard folder
    if len(found) == 1:
        return found.pop()
    if not found:
        raise NoteError(
            f"{path}: no .ann/.txt, .xml, .conll or .parquet files (empty corpus folder)"
        )
    raise NoteError(f"{path}: holds files of several formats ({sorted(found)}); use --from")


def read_corpus(
    path: str,
    labels=None,
    allow_overlap: bool = False,
    *,
    fmt: str | None = None,
    label_map=None,
    discontinuous: str = "split",
) -> list:
    """The notes of `path`, labels mapped (a LabelMap or its YAML path) and then checked against
    `labels` (by default the map's labels; no check without either)."""
    from sdeid.label_map import apply_label_map, check_labels, load_label_map

    path = str(path)
    fmt = fmt or detect_format(path)
    notes = _read(path, fmt, allow_overlap, discontinuous)
    if label_map is not None:
        if isinstance(label_map, str | Path):
            label_map = load_label_map(label_map)
        notes = apply_label_map(notes, label_map)
        labels = label_map.labels if labels is None else labels
    if labels is not None:
        check_labels(notes, labels, path)
    return notes


def _read(path: str, fmt: str, allow_overlap: bool, discontinuous: str) -> list:
    if fmt == "brat":
        from sdeid.brat import read_brat

        return read_brat(path, None, allow_overlap, discontinuous)
    if fmt == "i2b2":
        from sdeid.i2b2 import read_i2b2

        return read_i2b2(path, allow_overlap)
    if fmt == "conll":
        from sdeid.conll import read_conll

        return read_conll(path)
    if fmt == "parquet":
        from sdeid.parquet_io import read_notes_parquet

        if "://" not in path and (Path(path) / "_done").is_dir():
            from sdeid.shard_store import ShardStore

            ShardStore(Path(path)).verify_all()  # refuse damaged or unfinished shards
        return read_notes_parquet(path, None, allow_overlap)
    if fmt == "hf":
        return read_hf(path, allow_overlap)
    raise NoteError(f"{path}: unknown corpus format {fmt!r}; known: {', '.join(FORMATS)}")


def write_corpus(notes, out, fmt: str, overwrite: bool = False) -> Path:
    """Write notes in `fmt`, all or nothing. Parquet goes to one file when `out` ends in
    .parquet, else to OUT/notes.parquet in a new folder."""
    from sdeid.text_folder import check_writable

    out = Path(out)
    if fmt == "brat":
        from sdeid.brat import write_brat

        return write_brat(notes, out, overwrite)
    if fmt == "i2b2":
        from sdeid.i2b2 import write_i2b2

        return write_i2b2(notes, out, overwrite)
    if fmt == "conll":
        from sdeid.conll import write_conll

        return write_conll(notes, out, overwrite)
    if fmt == "parquet":
        from sdeid.parquet_io import write_notes_parquet

        if out.suffix == ".parquet":
            if out.exists() and not overwrite:
                raise NoteError(f"{out}: exists (pass overwrite to replace it)")
            return Path(write_notes_parquet(notes, str(out)))
        check_writable(out, overwrite)
        return _in_new_folder(
            out, lambda tmp: write_notes_parquet(notes, str(tmp / "notes.parquet"))
        )
    if fmt == "hf":
        check_writable(out, overwrite)
        return write_hf(notes, out)
    raise NoteError(f"{out}: unknown corpus format {fmt!r}; known: {', '.join(FORMATS)}")


def read_hf(path: str, allow_overlap: bool = False) -> list:
    import datasets

    from sdeid.parquet_io import table_to_notes

    try:
        ds = datasets.load_from_disk(path)
    except Exception as e:  # datasets raises several types for a folder it cannot read
        raise NoteError(
            f"{path}: not a readable Hugging Face dataset ({type(e).__name__})"
        ) from None
    if isinstance(ds, datasets.DatasetDict):
        raise NoteError(f"{path}: a DatasetDict ({list(ds)}); point at one split's folder")
    return table_to_notes(ds.data.table, where=path, allow_overlap=allow_overlap)


def write_hf(notes, out: Path) -> Path:
    import datasets

    from sdeid.parquet_io import notes_to_hf_dataset
    from sdeid.schema import validate_note

    for note in notes:
        validate_note(note, allow_overlap=True)
    datasets.disable_progress_bars()  # one bar per save would flood a job's log
    dataset = notes_to_hf_dataset(notes)
    return _in_new_folder(out, lambda tmp: dataset.save_to_disk(str(tmp)))


def _in_new_folder(out: Path, write) -> Path:
    """Run `write(tmp)` into a temporary sibling folder, then move it to `out`."""
    import shutil
    import tempfile

    from sdeid.text_folder import replace_folder

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write(tmp)
        replace_folder(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out
