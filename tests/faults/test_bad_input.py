"""Bad input across the system: corpora (BRAT, Parquet), configs, model folders and run folders.

Each case breaks one thing and runs the real CLI (in this process: every case fails before any
Ray or model work starts). Each must give exit 2 and one `sdeid: error:` line naming what and
where, no traceback, no output folder created, and nothing already in a folder changed.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import toy_notes
from fault_log import record

from sdeid.brat import write_brat
from sdeid.cli import main
from sdeid.parquet_io import write_notes_parquet
from sdeid.shard_store import ShardStore

SMOKE = str(Path(__file__).resolve().parents[2] / "configs" / "smoke.yaml")


def _brat(tmp, breaker):
    folder = write_brat(toy_notes(), tmp / "corpus")
    breaker(folder)
    return ["data", "stats", folder], None


def _ann(text):
    return lambda f: (f / "toy-0-1.ann").write_text(text, encoding="utf-8")


def _parquet(tmp, breaker):
    path = tmp / "notes.parquet"
    write_notes_parquet(toy_notes(), str(path))
    breaker(path)
    return ["data", "stats", path], None


def _span_past_end(path):
    recs = pq.read_table(path).to_pylist()
    recs[1]["spans"][0]["end"] = 10_000
    pq.write_table(pa.Table.from_pylist(recs, schema=pq.read_schema(path)), path)


def _drop_column(path):
    pq.write_table(pq.read_table(path).drop_columns(["text"]), path)


I2B2 = (
    '<?xml version="1.0" encoding="UTF-8" ?>\n<deIdi2b2>\n<TEXT><![CDATA[Visto el 3/5/2018.]]>'
    '</TEXT>\n<TAGS>\n<DATE id="P0" start="9" end="17" text="3/5/2018" TYPE="DATE" comment="" />'
    "\n</TAGS>\n</deIdi2b2>\n"
)


def _file(tmp, name, text):
    (tmp / "corpus").mkdir()
    (tmp / "corpus" / name).write_text(text, encoding="utf-8")
    return ["data", "stats", tmp / "corpus"], None


def _bad_label_map(ctx, tmp):
    folder = write_brat(toy_notes(), tmp / "corpus")
    (tmp / "map.yaml").write_text("labels: [DATE]\nmap:\n  FECHAS: DAY\n")
    return ["data", "stats", folder, "--label-map", tmp / "map.yaml"], None


def _config(tmp, command, cfg, extra=()):
    path = tmp / "cfg.yaml"
    path.write_text(cfg if isinstance(cfg, str) else json.dumps(cfg))
    out = tmp / "out"
    return [*command, "--config", path, "--out", out, *extra], out


def _ner_cfg(ctx, **over):
    cfg = dict(train=str(ctx["train"]), base_model=str(ctx["tiny_bert"]), epochs=1)
    cfg.update(over)
    return cfg


def _gen_cfg(ctx, **over):
    cfg = dict(model=str(ctx["llama"]), prompts_from=str(ctx["train"]), samples_per_prompt=1)
    cfg.update(over)
    return cfg


def _ann_cfg(ctx, **over):
    cfg = dict(notes=str(ctx["notes"]), model=str(ctx["ner"]))
    cfg.update(over)
    return cfg


def _model_without(ctx, tmp, name):
    model = tmp / "ner"
    shutil.copytree(ctx["ner"], model)
    (model / "model" / name).unlink()
    return model


def _other_plan(ctx, tmp):
    """A generate folder with a finished shard of another plan (5 notes where this plan has 3)."""
    out = tmp / "out"
    notes = toy_notes(copies=2)[:5]
    ShardStore(out / "shards").write(0, notes)
    return ["generate", "--config", _write(tmp, _gen_cfg(ctx)), "--out", out], out


def _write(tmp, cfg):
    path = tmp / "cfg.yaml"
    path.write_text(json.dumps(cfg))
    return path


# (case, kind, build(ctx, tmp) -> (argv, out folder or None), expected text in the message)
CASES = [
    ("BRAT: offsets past the end of the text", "corpus",
     lambda c, t: _brat(t, _ann("T1\tTERRITORIO 40 500\tValencia\n")), "toy-0-1.ann:1"),
    ("BRAT: surface string does not match its offsets", "corpus",
     lambda c, t: _brat(t, _ann("T1\tTERRITORIO 41 49\tSevilla\n")), "toy-0-1.ann:1"),
    ("BRAT: a line that is no standoff", "corpus",
     lambda c, t: _brat(t, _ann("T1\tTERRITORIO 41 49\tValencia\nX1\tsomething\n")),
     "toy-0-1.ann:2"),
    ("BRAT: discontinuous span whose surface does not match", "corpus",
     lambda c, t: _brat(t, _ann("T1\tTERRITORIO 41 44;45 49\tVal cia\n")), "toy-0-1.ann:1"),
    ("BRAT: start not before end", "corpus",
     lambda c, t: _brat(t, _ann("T1\tTERRITORIO 49 41\t\n")), "toy-0-1.ann:1"),
    ("BRAT: overlapping spans", "corpus",
     lambda c, t: _brat(t, _ann("T1\tTERRITORIO 41 49\tValencia\nT2\tPAIS 44 49\tencia\n")),
     "toy-0-1"),
    ("BRAT: bytes that are not UTF-8", "corpus",
     lambda c, t: _brat(t, lambda f: (f / "toy-0-0.txt").write_bytes("Línea".encode("latin-1"))),
     "toy-0-0.txt"),
    ("BRAT: .txt without its .ann", "corpus",
     lambda c, t: _brat(t, lambda f: (f / "toy-0-0.ann").unlink()), "toy-0-0"),
    ("BRAT: .ann without its .txt", "corpus",
     lambda c, t: _brat(t, lambda f: (f / "toy-0-0.txt").unlink()), "toy-0-0"),
    ("BRAT: empty folder", "corpus",
     lambda c, t: _brat(t, lambda f: [p.unlink() for p in f.iterdir()]), "corpus"),
    ("Parquet: a span past the end of its note", "corpus",
     lambda c, t: _parquet(t, _span_past_end), "toy-0-1"),
    ("Parquet: not a Parquet file", "corpus",
     lambda c, t: _parquet(t, lambda p: p.write_bytes(b"PAR1 not parquet")), "notes.parquet"),
    ("Parquet: the text column missing", "corpus",
     lambda c, t: _parquet(t, _drop_column), "text"),
    ("i2b2 XML: a tag past the end of the text", "corpus",
     lambda c, t: _file(t, "r1.xml", I2B2.replace('end="17"', 'end="900"')), "r1.xml: <DATE id=P0>"),
    ("i2b2 XML: not well-formed", "corpus",
     lambda c, t: _file(t, "r1.xml", I2B2.replace("</TAGS>", "</TAG>")), "r1.xml:6"),
    ("CoNLL: a tag that is not BIO", "corpus",
     lambda c, t: _file(t, "d.conll", "Ana\tB-NAME\nGil\tE-NAME\n"), "d.conll:2"),
    ("corpus: a folder holding two formats", "corpus",
     lambda c, t: _brat(t, lambda f: (f / "r1.xml").write_text(I2B2)), "use --from"),
    ("label map: a label mapped outside its label set", "config", _bad_label_map,
     "map: FECHAS: 'DAY' is not in labels"),
    ("config: unknown key", "config",
     lambda c, t: _config(t, ["ner", "train"], _ner_cfg(c, epoch=3)), "unknown key(s) ['epoch']"),
    ("config: wrong type", "config",
     lambda c, t: _config(t, ["ner", "train"], _ner_cfg(c, epochs="three")), "epochs"),
    ("config: impossible value (top_p 1.5)", "config",
     lambda c, t: _config(t, ["generate"], _gen_cfg(c, top_p=1.5)), "top_p"),
    ("config: impossible value (0 samples per prompt)", "config",
     lambda c, t: _config(t, ["generate"], _gen_cfg(c, samples_per_prompt=0)),
     "samples_per_prompt"),
    ("config: YAML syntax error", "config",
     lambda c, t: _config(t, ["ner", "train"], "train: x\n  epochs: [1\n"), "cfg.yaml"),
    ("config: unknown pipeline section", "config",
     lambda c, t: _config(t, ["run"], Path(SMOKE).read_text() + "anotator:\n  epochs: 1\n"),
     "anotator"),
    ("config: --set of an unknown key", "config",
     lambda c, t: (["run", "--config", SMOKE, "--out", t / "out", "--set", "generate.top_k=5",
                    "--dry-run"], t / "out"), "top_k"),
    ("model: annotator folder without config.json", "model",
     lambda c, t: _config(t, ["annotate"], _ann_cfg(c, model=str(_model_without(c, t, "config.json")))),
     "config.json"),
    ("model: encoder without a token-classification head as annotator", "model",
     lambda c, t: _config(t, ["annotate"], _ann_cfg(c, model=str(c["tiny_bert"]))),
     "not a token classifier"),
    ("model: encoder as the generator", "model",
     lambda c, t: _config(t, ["generate"], _gen_cfg(c, model=str(c["tiny_bert"]))), "tiny_bert"),
    ("model: encoder as the base for adaptation", "model",
     lambda c, t: _config(t, ["adapt"], dict(corpus=str(c["train"]), dev=str(c["train"]),
                                             base_model=str(c["tiny_bert"]))), "tiny_bert"),
    ("model: causal LM as the NER base model", "model",
     lambda c, t: _config(t, ["ner", "train"], _ner_cfg(c, base_model=str(c["llama"]))), "base"),
    ("run folder: a generate folder made with another plan", "run folder", _other_plan,
     "made with another plan"),
    ("run folder: annotate input without finished shards", "run folder",
     lambda c, t: _config(t, ["annotate"], _ann_cfg(c, notes=str(t))), "no completed note shards"),
    ("run folder: --only a stage whose upstream is missing", "run folder",
     lambda c, t: (["run", "--config", SMOKE, "--out", t / "out", "--only", "synthetic_ner"],
                   t / "out"), "upstream"),
]  # fmt: skip


@pytest.fixture(scope="module")
def ctx(annotator, tiny_bert, generator, tmp_path_factory):
    train = write_brat(toy_notes(copies=2), tmp_path_factory.mktemp("bad") / "train")
    return dict(
        tiny_bert=tiny_bert,
        ner=annotator / "ner",
        notes=annotator / "notes",
        llama=generator[1],
        train=train,
    )


def _digest(folder):
    if folder is None or not Path(folder).exists():
        return None
    h = hashlib.sha256()
    for p in sorted(Path(folder).rglob("*")):
        h.update(str(p.relative_to(folder)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_there_are_at_least_twenty_cases():
    assert len(CASES) >= 20 and {k for _, k, _, _ in CASES} == {
        "corpus",
        "config",
        "model",
        "run folder",
    }


@pytest.mark.parametrize("case,kind,build,expect", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_named(case, kind, build, expect, ctx, tmp_path, capsys):
    argv, out = build(ctx, tmp_path)
    existed, before = out is not None and Path(out).exists(), _digest(out)
    capsys.readouterr()
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("sdeid: error: ")]
    assert code == 2, err[-2000:]
    assert len(lines) == 1 and "Traceback" not in err, err[-2000:]
    assert expect in lines[0], lines[0]
    if out is not None:
        assert Path(out).exists() == existed, f"{out} was created by a refused command"
        assert _digest(out) == before, f"{out} changed"
    message = lines[0].removeprefix("sdeid: error: ").replace(str(tmp_path), "$TMP")
    record(case, 0, 0, f"exit 2 `{message}`")
