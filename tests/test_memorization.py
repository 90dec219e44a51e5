"""What the generator remembers: the attack figures on known scores, canaries made and planted,
exposure and membership inference on a tiny Llama that did (and did not) learn its notes, and
the audit and publish gate on a generator that wrote a canary secret verbatim."""

from __future__ import annotations

import json
import re

import pyarrow.parquet as pq
import pytest
from conftest import toy_notes

from sdeid.adapt import AdaptConfig
from sdeid.memorization import attacks, canaries
from sdeid.schema import Note
from sdeid.shard_store import ShardStore


def test_attack_figures_on_known_scores():
    assert attacks.auc([3, 4], [1, 2]) == 1.0
    assert attacks.auc([1, 2], [3, 4]) == 0.0
    assert attacks.auc([1, 2], [1, 2]) == 0.5  # ties count half
    assert attacks.auc([2, 0.5], [1, 0]) == 0.75
    non_members = [i / 100 for i in range(100)]  # 1 % FPR lets one through: threshold 0.98
    assert attacks.tpr_at_fpr([0.99, 1.5, 0.5], non_members, 0.01) == pytest.approx(2 / 3)
    top = attacks.exposure(5.0, [1, 2, 3])
    assert (top["rank"], top["candidates"], top["exposure"]) == (1, 4, 2.0)
    assert top["exposure_fit"] > 2.0  # 3.7 sd above the candidates' mean: past log2 R
    assert attacks.exposure(0.0, [1, 2, 3])["exposure"] == 0.0
    # The fitted exposure: 1 bit at the candidates' mean, finite far in the tail.
    assert attacks.exposure(2.0, [1, 2, 3])["exposure_fit"] == pytest.approx(1.0)
    assert attacks._normal_tail_bits(0.0) == pytest.approx(1.0)
    assert 1154 < attacks._normal_tail_bits(40.0) < 1165  # z^2 / 2 / ln 2 = 1154, and a log


FORMATS = {
    "name": r"[A-Z][a-z]+ [A-Z][a-z]+ [A-Z][a-z]+",
    "record": r"\d{8}",
    "date": r"\d\d/\d\d/\d{4}",
    "phone": r"6\d{8}",
}


def test_canaries_are_reproducible_distinct_and_planted_apart():
    made = canaries.make_canaries(2, (1, 4), seed=0)
    assert made == canaries.make_canaries(2, (1, 4), seed=0)
    assert made != canaries.make_canaries(2, (1, 4), seed=1)
    assert [c.repeats for c in made] == [1, 1, 4, 4]
    assert [c.kind for c in made] == ["name", "record", "date", "phone"]
    assert len({c.prefix for c in made}) == 4  # no two canaries compete for a secret
    for c in made:
        assert re.fullmatch(FORMATS[c.kind], c.secret)
        others = canaries.candidates(c, 50, seed=0)
        assert others[0] == c.secret and len(set(others)) == 50
        assert all(re.fullmatch(FORMATS[c.kind], s) for s in others)

    notes = toy_notes(copies=3)
    planted = canaries.plant(notes, made, seed=0)
    assert [n for n in planted if n.source != "canary"] == notes  # order kept
    copies = [i for i, n in enumerate(planted) if n.doc_id.startswith("canary-r4-0-")]
    assert len(copies) == 4 and copies != list(range(copies[0], copies[0] + 4))  # spread out
    note = next(n for n in planted if n.source == "canary")
    span = note.spans[0]
    assert span.label == "CANARY" and note.text[span.start : span.end] in {c.secret for c in made}


def _train(model, tokenizer, texts, steps):
    """Plain full-batch training: the tiny model learns these texts by heart."""
    import torch

    from sdeid.memorization import scoring

    ids = scoring.token_ids(tokenizer, texts)
    width = max(map(len, ids))
    batch = torch.tensor([s + [tokenizer.eos_token_id] * (width - len(s)) for s in ids])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in ids])
    labels = batch.masked_fill(mask == 0, -100)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=batch, attention_mask=mask, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def _sentences(n):
    """n distinct short clinical sentences."""
    import random

    rng = random.Random(0)
    why = ["dolor abdominal", "fiebre alta", "tos seca", "cefalea", "disnea", "mareo"]
    where = ["Madrid", "Sevilla", "Bilbao", "Valencia", "Murcia", "Oviedo"]
    out = set()
    while len(out) < n:
        age, w, c = rng.randint(20, 90), rng.choice(why), rng.choice(where)
        out.add(f"Paciente de {age} años que ingresa en {c} por {w} de {age % 9 + 2} días.")
    return sorted(out)


def test_exposure_and_membership_see_what_the_model_learned(tmp_path):
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from sdeid.causal_lm_init import build_llama
    from sdeid.memorization.job import canary_exposure, membership_figures, note_losses

    texts = _sentences(16)
    members, others = texts[::2], texts[1::2]
    planted = canaries.make_canaries(1, (16,), seed=0)
    base = build_llama(tmp_path / "base", texts, "tiny")  # its tokenizer never saw a canary
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(base)
    cfg = AdaptConfig(corpus="-", dev="-", base_model=str(base), canary_candidates=64)

    before = canary_exposure(model, tokenizer, planted, cfg)
    base_loss = note_losses(model, tokenizer, members + others, cfg.context_length)
    _train(model, tokenizer, members + [planted[0].text()] * 4, steps=120)
    after = canary_exposure(model, tokenizer, planted, cfg)
    assert after["per_canary"][0]["rank"] == 1 and after["max_exposure"] == 6.0  # log2 64
    assert before["max_exposure"] < after["max_exposure"]
    e16 = after["by_repeats"]["16"]
    assert (e16["canaries"], e16["median"], e16["max"]) == (1, 6.0, 6.0)
    assert e16["fit_max"] > 6.0  # the fit reads past the ceiling of 64 candidates

    loss = note_losses(model, tokenizer, members + others, cfg.context_length)
    k = len(members)
    figures = membership_figures(loss, k, base_loss)  # the untrained model as the reference
    assert figures["loss"]["auc"] > 0.9 and figures["loss"]["members"] == k
    assert figures["calibrated"]["auc"] > 0.9 and figures["calibrated"]["non_members"] == k
    assert figures["member_loss_median"] < figures["non_member_loss_median"]
    # A note longer than the context is scored in chunks: the same mean loss, near enough.
    long = " ".join(members)
    whole = note_losses(model, tokenizer, [long], 4096)[0]
    chunked = note_losses(model, tokenizer, [long], 32)[0]
    assert np.isfinite(chunked) and abs(chunked - whole) / whole < 0.5


@pytest.fixture
def leaky_generator(tmp_path):
    """An adapt folder with planted canaries and measured figures, and annotated shards where
    one note holds a canary secret verbatim."""
    from sdeid.brat import write_brat

    gen = tmp_path / "adapt"
    gen.mkdir()
    planted = canaries.make_canaries(1, (1, 4), seed=0)
    canaries.write(gen, planted)
    mem = {"canaries": {"max_exposure": 3.5, "by_repeats": {}}, "membership": {}}
    (gen / "memorization.json").write_text(json.dumps(mem))
    secret = planted[1].secret
    store = ShardStore(tmp_path / "syn" / "shards")
    store.write(0, [Note("syn-0", f"Paciente con NHC {secret} remitido.", [])])
    store.write(1, [Note("syn-1", "Paciente con dolor abdominal de tres dias.", [])])
    private = write_brat(toy_notes(), tmp_path / "private")
    return gen, tmp_path / "syn", private, secret


def test_a_generated_canary_secret_is_dropped_and_refuses_the_release(leaky_generator, tmp_path):
    from sdeid.audit import AuditConfig, run_audit
    from sdeid.release import GateConfig, GateFailed, publish

    gen, syn, private, secret = leaky_generator
    audit_dir = tmp_path / "run" / "stages" / "audit-x"
    cfg = AuditConfig(synthetic=str(syn), private=str(private), generator=str(gen))
    result = run_audit(cfg, audit_dir)
    before, after = result["before_filter"], result["after_filter"]
    assert before["canary_secrets_planted"] == 2 and before["canary_secrets_found"] == 1
    assert before["phi_leaked_by_label"] == {"CANARY": 1} and before["notes_flagged"] == 1
    assert after["canary_secrets_found"] == 0 and after["notes"] == 1
    assert result["memorization"]["canaries"]["max_exposure"] == 3.5
    kept = pq.read_table(audit_dir / "shards")
    assert kept["doc_id"].to_pylist() == ["syn-1"]
    assert not any(secret in t for t in kept["text"].to_pylist())
    rows = (audit_dir / "audit_notes" / "shard-00000.json").read_text()
    assert secret not in rows and '"label": "CANARY"' in rows

    run = tmp_path / "run"
    report = run / "stages" / "report-x"
    report.mkdir(parents=True)
    scores = {"strict_f1": 0.9, "token_f1": 0.9}
    (report / "report.json").write_text(
        json.dumps({"scores": {"gold": scores, "synthetic": scores}, "audit": result})
    )
    (run / "audit").symlink_to("stages/audit-x")
    (run / "report").symlink_to("stages/report-x")
    releases = tmp_path / "releases"
    with pytest.raises(GateFailed, match=r"canary_secrets_generated 1 \(needs <= 0\)"):
        publish(run, releases, GateConfig())
    assert not releases.exists() or not any(releases.iterdir())
    with pytest.raises(GateFailed, match=r"canary_exposure 3.5000 \(needs <= 2.0\)"):
        publish(run, releases, GateConfig(max_canary_secrets=1, max_exposure=2.0))

    # Let through, the release holds the audited notes only: no canary anywhere in it.
    published = publish(run, releases, GateConfig(max_canary_secrets=1))
    corpus = pq.read_table(published / "corpus")
    assert corpus["doc_id"].to_pylist() == ["syn-1"]
    for path in published.rglob("*"):
        if path.is_file():  # Parquet pages may be compressed: look in the rows
            text = str(pq.read_table(path).to_pylist()) if path.suffix == ".parquet" else None
            assert secret not in (text or path.read_text(errors="replace")), path


def test_adaptation_sample_is_the_annotators_and_zero_means_the_base(lm_corpus, tmp_path):
    """data_fraction picks the notes `ner train`'s train_fraction picks (the paper varies both
    together); 0 adapts nothing, and the memorization figures are the base model's."""
    import dataclasses
    import subprocess
    import sys

    from conftest import ROOT

    from sdeid.adapt import adapted_on
    from sdeid.ner_data import note_role
    from sdeid.ner_train import NerTrainConfig

    notes = [Note(f"n{i}", "texto", []) for i in range(200)]
    adapt = AdaptConfig(corpus="-", dev="-", base_model="-", data_fraction=0.25, seed=3)
    ner = NerTrainConfig(train="-", dev="-", base_model="-", train_fraction=0.25, seed=3)
    picked = [n.doc_id for n in adapted_on(adapt, notes)]
    assert picked == [n.doc_id for n in notes if note_role(n.doc_id, ner) == "train"]
    assert 30 < len(picked) < 70
    assert len(adapted_on(dataclasses.replace(adapt, data_fraction=0.001), notes[:3])) == 1
    assert adapted_on(dataclasses.replace(adapt, data_fraction=0), notes) == []

    root, train, dev, base = lm_corpus
    cfg = dict(
        corpus=str(train), dev=str(dev), base_model=str(base), data_fraction=0,
        canaries=1, canary_repeats=[1], canary_candidates=32, membership=True,
        membership_holdout=str(dev), context_length=64, num_workers=1, cpus_per_worker=1,
    )  # fmt: skip
    (tmp_path / "adapt.yaml").write_text(json.dumps(cfg))
    out = tmp_path / "adapt"
    run = subprocess.run(
        [sys.executable, "-m", "sdeid.cli", "adapt", "--config", str(tmp_path / "adapt.yaml")]
        + ["--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    for name in ("config.json", "model.safetensors"):
        assert (out / "merged" / name).read_bytes() == (base / name).read_bytes()
    mem = json.loads((out / "memorization.json").read_text())
    assert [c["candidates"] for c in mem["canaries"]["per_canary"]] == [32]
    loss = mem["membership"]["loss"]
    assert loss["members"] == 0 and loss["auc"] is None and loss["non_members"] > 0
    assert len(canaries.read(out)) == 1
