"""i2b2/n2c2 de-identification XML (the 2014 challenge's layout) <-> notes.

One NAME.xml per document:

    <?xml version="1.0" encoding="UTF-8" ?>
    <deIdi2b2>
    <TEXT><![CDATA[...the note...]]></TEXT>
    <TAGS>
    <DATE id="P0" start="16" end="26" text="2067-05-03" TYPE="DATE" comment="" />
    <NAME id="P1" start="31" end="45" text="Wilma Hargrove" TYPE="PATIENT" comment="" />
    </TAGS>
    </deIdi2b2>

Offsets count characters of the CDATA text as an XML parser returns it, from the character
after `<![CDATA[`, which is how the challenge counts them. A span's label is its TYPE (PATIENT,
DOCTOR, HOSPITAL, ...); the element name is the TYPE's category, which the writer derives (a
label that is no i2b2 type is written under a PHI element). An XML parser turns every carriage
return into a line feed, so a text holding one is refused by the writer rather than changed.
"""

from __future__ import annotations

import re
from pathlib import Path

from sdeid.schema import Note, NoteError, Span, validate_note
from sdeid.text_folder import check_writable, checked_notes, write_text_files

# The 2014 challenge's PHI types by category (Stubbs & Uzuner 2015).
CATEGORIES = {
    "NAME": ("PATIENT", "DOCTOR", "USERNAME"),
    "PROFESSION": ("PROFESSION",),
    "LOCATION": (
        "ROOM",
        "DEPARTMENT",
        "HOSPITAL",
        "ORGANIZATION",
        "STREET",
        "CITY",
        "STATE",
        "COUNTRY",
        "ZIP",
        "LOCATION-OTHER",
        "OTHER",
    ),
    "AGE": ("AGE",),
    "DATE": ("DATE",),
    "CONTACT": ("PHONE", "FAX", "EMAIL", "URL", "IPADDR"),
    "ID": (
        "SSN",
        "MEDICALRECORD",
        "HEALTHPLAN",
        "ACCOUNT",
        "LICENSE",
        "VEHICLE",
        "DEVICE",
        "BIOID",
        "IDNUM",
    ),
}
CATEGORY_OF = {t: c for c, types in CATEGORIES.items() for t in types}
HEAD = '<?xml version="1.0" encoding="UTF-8" ?>\n<deIdi2b2>\n<TEXT><![CDATA['
# Characters XML 1.0 cannot carry at all (a carriage return it carries only as a line feed).
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\r\ud800-\udfff\ufffe\uffff]")


def read_i2b2(path, allow_overlap: bool = False) -> list[Note]:
    """A folder of NAME.xml files (sorted by name), or one file."""
    path = Path(path)
    if path.is_file():
        return [read_i2b2_document(path, allow_overlap)]
    files = sorted(path.glob("*.xml")) if path.is_dir() else []
    if not files:
        raise NoteError(f"{path}: no .xml files (i2b2 corpus folder expected)")
    return [read_i2b2_document(f, allow_overlap) for f in files]


def read_i2b2_document(path, allow_overlap: bool = False) -> Note:
    import xml.etree.ElementTree as ET

    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        raise NoteError(f"{path}:{e.position[0]}: not well-formed XML ({e})") from None
    text_el = root.find("TEXT")
    if text_el is None:
        raise NoteError(f"{path}: no <TEXT> element (an i2b2 document is <deIdi2b2><TEXT>)")
    text = text_el.text or ""
    spans = []
    tags = root.find("TAGS")
    for i, tag in enumerate(tags if tags is not None else []):
        where = f"{path}: <{tag.tag} id={tag.get('id', '?')}> (tag {i + 1})"
        try:
            start, end = int(tag.get("start")), int(tag.get("end"))
        except (TypeError, ValueError):
            raise NoteError(f"{where}: start and end must be integers") from None
        label = tag.get("TYPE")
        if not label:
            raise NoteError(f"{where}: no TYPE attribute")
        if not 0 <= start < end <= len(text):
            raise NoteError(
                f"{where}: offsets [{start}, {end}) are not inside the text "
                f"({len(text)} characters)"
            )
        surface = tag.get("text")
        # XML reads a line break inside an attribute as a space: compare with that in mind.
        if surface is not None and surface != re.sub(r"[\t\n\r]", " ", text[start:end]):
            if surface != text[start:end]:
                raise NoteError(
                    f"{where}: text attribute ({len(surface)} characters) does not match "
                    f"the text at [{start}, {end})"
                )
        spans.append(Span(start, end, label))
    note = Note(path.stem, text, sorted(spans), source=str(path.parent), annotator="gold")
    validate_note(note, None, allow_overlap, where=str(path))
    return note


def i2b2_xml(note: Note) -> str:
    """One document in the challenge's layout."""
    bad = _NOT_XML.search(note.text)
    if bad:
        what = "a carriage return" if bad.group() == "\r" else f"U+{ord(bad.group()):04X}"
        raise NoteError(
            f"{note.doc_id}: offset {bad.start()}: i2b2 XML cannot carry {what} "
            "(an XML parser would change or refuse it)"
        )
    # "]]>" would end the CDATA section: split it over two sections (parsers join them).
    body = note.text.replace("]]>", "]]]]><![CDATA[>")
    lines = [HEAD + body + "]]></TEXT>\n<TAGS>\n"]
    for i, s in enumerate(sorted(note.spans)):
        element = CATEGORY_OF.get(s.label, s.label if s.label in CATEGORIES else "PHI")
        lines.append(
            f'<{element} id="P{i}" start="{s.start}" end="{s.end}" '
            f'text="{_attr(note.text[s.start : s.end])}" TYPE="{_attr(s.label)}" comment="" />\n'
        )
    lines.append("</TAGS>\n</deIdi2b2>\n")
    return "".join(lines)


def write_i2b2(notes, folder, overwrite: bool = False) -> Path:
    """NAME.xml per note, all or nothing (sdeid.text_folder)."""
    check_writable(folder, overwrite)
    files = [(f"{n.doc_id}.xml", i2b2_xml(n)) for n in checked_notes(notes)]
    return write_text_files(folder, files, overwrite)


def _attr(value: str) -> str:
    # Escaped so that a parser gives back exactly these characters (line breaks included).
    for raw, escaped in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ('"', "&quot;")):
        value = value.replace(raw, escaped)
    return value.replace("\t", "&#9;").replace("\n", "&#10;")
