"""Write a folder of text files all or nothing.

Every corpus format that is a folder of files (BRAT, i2b2 XML, CoNLL) is written through here:
the files go into a temporary sibling folder, which is renamed into place once all of them are
written. A failure leaves no half-written folder, and an existing non-empty folder is replaced
only when the caller says so.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from sdeid.schema import NoteError


def check_writable(folder, overwrite: bool) -> Path:
    folder = Path(folder)
    if folder.exists() and (not folder.is_dir() or any(folder.iterdir())) and not overwrite:
        raise NoteError(f"{folder}: exists and is not empty (pass overwrite to replace it)")
    return folder


def check_file_name(doc_id: str) -> None:
    if not doc_id or "/" in doc_id or "\\" in doc_id or doc_id.startswith("."):
        raise NoteError(f"{doc_id!r}: doc_id is not a safe file name")


def checked_notes(notes, allow_overlap: bool = True):
    """The notes, each checked as every one-file-per-document writer needs: valid spans, and a
    doc_id that is a safe file name used once."""
    from sdeid.schema import validate_note

    seen = set()
    for note in notes:
        validate_note(note, allow_overlap=allow_overlap, where=note.doc_id)
        check_file_name(note.doc_id)
        if note.doc_id in seen:
            raise NoteError(f"{note.doc_id}: duplicate doc_id")
        seen.add(note.doc_id)
        yield note


def write_text_files(folder, files, overwrite: bool = False) -> Path:
    """`files` yields (file name, text); text is written as UTF-8 with newlines kept as given."""
    folder = check_writable(folder, overwrite)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.tmp-", dir=folder.parent))
    try:
        for name, text in files:
            # newline="" keeps \r\n and lone \r as they are, so character offsets stay valid.
            with open(tmp / name, "w", encoding="utf-8", newline="") as f:
                f.write(text)
        replace_folder(tmp, folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def replace_folder(tmp: Path, folder: Path) -> None:
    """Move a finished temporary folder to `folder`, removing what was there."""
    if folder.is_dir():
        shutil.rmtree(folder)
    elif folder.exists():
        folder.unlink()
    os.replace(tmp, folder)
