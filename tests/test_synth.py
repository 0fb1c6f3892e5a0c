"""audioscore.synth: layout, ground truth, splits, benchmark schema, determinism, audibility."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import spearmanr

from audiobase.audio import MUQ_SR, load_audio
from audioscore.data import read_groups
from audioscore.synth.corpus import make_corpus, make_groups, plan_split, read_clips_csv
from audioscore.synth.labels import SCORE_MAX, SCORE_MIN, ClipPlan, draw_degradations, score_clip
from audioscore.synth.voices import make_singers, render_clip

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import make_synthetic_corpus  # noqa: E402

TINY = dict(singers=2, clips=4, min_dur=3.0, max_dur=3.2, bench_rows=1)  # = the CLI call below


def clips_by_path(corpus) -> dict[str, dict]:
    return {r["audio_file"]: r for r in read_clips_csv(corpus["clips_csv"])}


def test_layout_and_groups(synth_corpus):
    for key in ("root", "train", "val", "bench", "clips_csv", "meta", "readme"):
        assert Path(synth_corpus[key]).exists(), key
    clips = clips_by_path(synth_corpus)
    root = Path(synth_corpus["root"])
    seen = []
    for split in ("train", "val"):
        groups = read_groups(synth_corpus[split])  # checks files exist and order high -> low
        assert len(groups) >= 1
        for group in groups:
            assert 3 <= len(group) <= 6 or len(groups) == 1
            for item in group:
                rel = str(Path(item["audio_file"]).relative_to(root))
                row = clips[rel]
                assert row["split"] == split and item["singer"] == row["singer"]
                assert item["score"] == pytest.approx(row["score"])
                assert SCORE_MIN <= item["score"] <= SCORE_MAX
                seen.append(rel)
    expected = sorted(p for p, r in clips.items() if r["split"] in ("train", "val"))
    assert sorted(seen) == expected  # every clip in exactly one group
    assert "score = clip(99 - sum of penalties, 50, 99)" in Path(synth_corpus["readme"]).read_text()


def test_scores_follow_the_documented_formula(synth_corpus):
    for row in read_clips_csv(synth_corpus["clips_csv"]):
        penalties = [row[k] for k in row if k.startswith("penalty_")]
        assert row["score"] == pytest.approx(np.clip(99 - sum(penalties), 50, 99), abs=0.02)
        assert row["penalty_noise"] == pytest.approx(0.5 * (40 - row["snr_db"]), abs=0.01)


@pytest.mark.parametrize(
    "field, worse",
    [("pitch_cents", 30), ("jitter_ms", 50), ("snr_db", -20), ("breath", 0.3), ("clip_db", 8)],
)
def test_score_is_monotone_in_each_degradation(field, worse):
    plan = ClipPlan(
        "x",
        "val",
        "x.wav",
        "s00",
        3.0,
        "slow",
        0.2,
        **draw_degradations(0.2, np.random.default_rng(0)),
    )
    degraded = replace(plan, **{field: getattr(plan, field) + worse})
    assert score_clip(degraded) < score_clip(plan)


def test_every_format_decodes_to_its_duration(synth_corpus):
    rows = [r for r in read_clips_csv(synth_corpus["clips_csv"]) if r["split"] != "bench"]
    assert {r["format"] for r in rows} == {"wav", "flac", "mp3", "m4a"}
    for fmt in ("wav", "flac", "mp3", "m4a"):
        row = next(r for r in rows if r["format"] == fmt)
        wav = load_audio(Path(synth_corpus["root"]) / row["audio_file"], MUQ_SR)
        assert wav.shape[0] == pytest.approx(row["duration"] * MUQ_SR, abs=2)
        assert 0.1 < np.abs(wav).max() < 1.0  # lossy codecs overshoot a little: headroom kept


def test_singer_predicts_score_in_train_but_not_in_val():
    cast = make_singers(8, seed=3)
    formats = ("wav",)
    for split, lo, hi in (("train", 0.7, 1.0), ("val", 0.0, 0.2)):
        plans = plan_split(split, 800, cast, 3, (3.0, 20.0), formats)
        scores = np.array([p.score for p in plans])
        singer = np.array([p.singer for p in plans])
        means = {s: scores[singer == s].mean() for s in set(singer)}
        eta2 = np.var([means[s] for s in singer]) / np.var(scores)  # share explained by singer
        assert lo <= eta2 <= hi, (split, eta2)
        assert scores.std() > 8  # scores spread over the range in both splits


def test_singers_differ_in_timbre():
    cast = make_singers(6, seed=0)
    assert len({round(s.formant_scale, 3) for s in cast}) == 6
    assert {s.voice for s in cast} == {"low", "high"}
    low = [s.base_midi for s in cast if s.voice == "low"]
    high = [s.base_midi for s in cast if s.voice == "high"]
    assert max(low) < min(high)


def test_bench_schema(synth_corpus):
    root = Path(synth_corpus["root"])
    rows = [json.loads(line) for line in Path(synth_corpus["bench"]).read_text().splitlines()]
    by = {"PAM": [], "MusicEval": [], "Music Arena": [], "cmi-arena-annotation": []}
    for row in rows:
        assert row["split"] == "test"
        key = next(k for k in by if k in row["source"])
        by[key].append(row)
        for field in ("audio-path", "audio2", "ref-audio-path"):
            if row.get(field):
                assert not Path(row[field]).is_absolute() and (root / row[field]).is_file()
    assert all(len(v) == 5 for v in by.values())
    for row in by["PAM"]:
        assert re.fullmatch(r"human_eval/music/\w+/[\w-]{11}\.wav", row["audio-path"])
        assert (
            1 <= row["musicality"] <= 5 and 1 <= row["text-music alignment"] <= 5 and row["prompt"]
        )
    for row in by["MusicEval"]:
        assert re.fullmatch(r"MusicEval_data/test_audio/\d+\.wav", row["audio-path"])
    for row in by["Music Arena"]:
        assert row["audio-path"].startswith("MusicArena_data/audio_files/")
        assert row["audio-path"].endswith("-a.mp3") and row["audio2"].endswith("-b.mp3")
        assert row["preference"] in ("A", "B")
    modalities = set()
    for row in by["cmi-arena-annotation"]:
        assert (
            row["audio-path"].startswith("cmi-pref/gen-audio/") and row["model_a"] != row["model_b"]
        )
        for dim in ("musicality", "alignment"):
            assert row[f"preference-{dim}"] in ("model_a", "model_b", "both")
            conf = float(row[f"confidence_preference-{dim}"])  # strings like "2.0"
            assert 1 <= conf <= 5 and conf * 2 == int(conf * 2)
        modalities.add((bool(row["lyrics"]), bool(row["ref-audio-path"])))
    assert len(modalities) == 4


def test_bench_labels_follow_ground_truth(synth_corpus):
    clips = clips_by_path(synth_corpus)
    rows = [json.loads(line) for line in Path(synth_corpus["bench"]).read_text().splitlines()]
    single = [r for r in rows if "musicality" in r]
    mos = [r["musicality"] for r in single]
    truth = [clips[r["audio-path"]]["score"] for r in single]
    assert spearmanr(mos, truth)[0] > 0.8
    arena = [r for r in rows if "preference" in r]
    agree = [
        (r["preference"] == "A") == (clips[r["audio-path"]]["score"] >= clips[r["audio2"]]["score"])
        for r in arena
    ]
    assert np.mean(agree) >= 0.6


def test_same_seed_same_corpus_different_seed_different(tmp_path):
    a = make_synthetic_corpus.main(["--out", str(tmp_path / "a"), "--singers", "2", "--clips", "4",
                                    "--max-dur", "3.2", "--bench-rows", "1", "--workers", "1"])  # fmt: skip
    b = make_corpus(tmp_path / "b", seed=0, workers=2, **TINY)
    c = make_corpus(tmp_path / "c", seed=1, workers=1, **TINY)
    assert a["clips_csv"].read_bytes() == b["clips_csv"].read_bytes()
    assert a["train"].read_bytes() == b["train"].read_bytes()
    assert a["bench"].read_bytes() == b["bench"].read_bytes()
    files = sorted(
        p.relative_to(a["root"])
        for p in Path(a["root"]).rglob("*")
        if p.suffix in (".wav", ".flac", ".mp3", ".m4a")
    )
    assert len(files) >= 10
    for rel in files:  # encoders are deterministic too: identical bytes, identical samples
        assert (a["root"] / rel).read_bytes() == (b["root"] / rel).read_bytes(), rel
        x, y = load_audio(a["root"] / rel, MUQ_SR), load_audio(b["root"] / rel, MUQ_SR)
        np.testing.assert_array_equal(x, y)
    scores = lambda corpus: [r["score"] for r in read_clips_csv(corpus["clips_csv"])]  # noqa: E731
    assert scores(a) != scores(c)


def _plan(**degradations) -> tuple[ClipPlan, object]:
    cast = make_singers(2, seed=0)
    clean = dict(pitch_cents=0.0, jitter_ms=0.0, snr_db=40.0, breath=0.0, clip_db=0.0)
    plan = ClipPlan(
        "x",
        "val",
        "x.wav",
        cast[0].name,
        2.0,
        "slow",
        0.0,
        seed=[0, 9, 0],
        **{**clean, **degradations},
    )
    return plan, cast[0]


def _band_share(wav: np.ndarray, lo_hz: float) -> float:
    spec = np.abs(np.fft.rfft(wav)) ** 2
    freqs = np.fft.rfftfreq(len(wav), 1 / MUQ_SR)
    return float(spec[freqs > lo_hz].sum() / spec.sum())


def _flatness(wav: np.ndarray) -> float:
    spec = np.abs(np.fft.rfft(wav)) ** 2 + 1e-12
    return float(np.exp(np.mean(np.log(spec))) / np.mean(spec))


def test_degradations_are_audible():
    clean = render_clip(*_plan())
    noisy = render_clip(*_plan(snr_db=5.0))
    assert _flatness(noisy) > 10 * _flatness(clean)
    breathy = render_clip(*_plan(breath=0.6))
    assert _band_share(breathy, 4000) > 3 * _band_share(clean, 4000)
    clipped = render_clip(*_plan(clip_db=12.0))
    at_peak = lambda w: np.mean(np.abs(w) >= 0.999 * np.abs(w).max())  # noqa: E731
    assert at_peak(clipped) > 0.05 > at_peak(clean)
    detuned = render_clip(*_plan(pitch_cents=60.0))
    assert detuned.shape == clean.shape and not np.allclose(detuned, clean, atol=1e-3)


@pytest.mark.parametrize("n", [4, 11, 12, 23, 57])
def test_groups_keep_their_size_range_and_order(n):
    cast = make_singers(3, seed=0)
    plans = plan_split("val", n, cast, 0, (3.0, 4.0), ("wav",))
    groups = make_groups(plans, (4, 10), np.random.default_rng(n))
    assert sorted(it["audio_file"] for g in groups for it in g) == sorted(
        p.audio_file for p in plans
    )
    for g in groups:
        assert 4 <= len(g) <= 10
        assert [it["score"] for it in g] == sorted((it["score"] for it in g), reverse=True)


# ---------------------------------------------------------------- timbre knobs


def _knob_plans(effect: float = 0.0, confound: float = 0.0, n: int = 800):
    from audioscore.synth.labels import TimbreKnobs
    from audioscore.synth.voices import timbre_axis

    cast = make_singers(8, seed=3)
    knobs = TimbreKnobs(timbre_axis(cast), effect, confound)
    plans = {
        split: plan_split(split, n, cast, 3, (3.0, 20.0), ("wav",), knobs)
        for split in ("train", "val")
    }
    return plans, knobs.tau


def _tau_slope(plans, tau) -> float:
    """Slope over singers of their mean score against their timbre tau (points per unit tau)."""
    names = sorted(tau)
    means = [np.mean([p.score for p in plans if p.singer == s]) for s in names]
    return float(np.polyfit([tau[s] for s in names], means, 1)[0])


def test_timbre_axis_spans_minus_one_to_one_by_formant_scale():
    from audioscore.synth.voices import timbre_axis

    cast = make_singers(8, seed=0)
    tau = timbre_axis(cast)
    assert sorted(tau.values()) == pytest.approx(np.linspace(-1, 1, 8), abs=1e-5)
    by_scale = sorted(cast, key=lambda s: s.formant_scale)
    assert [tau[s.name] for s in by_scale] == sorted(tau.values())


def test_timbre_confound_biases_train_labels_only():
    plans, tau = _knob_plans(confound=15.0)
    base, _ = _knob_plans()
    # timbre predicts the training labels: singer means rise with tau (clipping at 50 / 99 eats
    # part of the shift), while validation labels are untouched
    assert _tau_slope(plans["train"], tau) > _tau_slope(base["train"], tau) + 8
    assert [p.score for p in plans["val"]] == [p.score for p in base["val"]]
    assert abs(_tau_slope(plans["val"], tau)) < 3
    for p, q in zip(plans["train"], base["train"], strict=True):
        # not part of the truth: the audio plan and the true score are unchanged
        assert (p.severity, p.pitch_cents, p.snr_db) == (q.severity, q.pitch_cents, q.snr_db)
        assert score_clip(p) == pytest.approx(q.score, abs=0.01)
        assert p.confound == pytest.approx(15.0 * tau[p.singer])
        assert p.score == pytest.approx(np.clip(q.score + p.confound, 50, 99), abs=0.02)


def test_timbre_effect_is_part_of_the_true_score_in_every_split():
    plans, tau = _knob_plans(effect=15.0)
    base, _ = _knob_plans()
    for split in ("train", "val"):
        for p, q in zip(plans[split], base[split], strict=True):
            assert p.confound == 0.0
            quality = SCORE_MAX - sum(q.penalties().values())
            expected = np.clip(quality + 15.0 * tau[p.singer], SCORE_MIN, SCORE_MAX)
            assert p.score == pytest.approx(expected, abs=0.02)
            assert score_clip(p) == pytest.approx(p.score, abs=0.01)  # label = truth
        assert _tau_slope(plans[split], tau) > _tau_slope(base[split], tau) + 8
    assert abs(_tau_slope(base["val"], tau)) < 3  # without it, val scores ignore timbre


def test_timbre_knobs_in_corpus_files(tmp_path):
    paths = make_synthetic_corpus.main(
        ["--out", str(tmp_path / "k"), "--singers", "2", "--clips", "4", "--max-dur", "3.2",
         "--bench-rows", "1", "--workers", "1", "--timbre-effect", "4", "--timbre-confound", "6"]
    )  # fmt: skip
    plain = make_corpus(tmp_path / "plain", seed=0, workers=1, **TINY)
    rows = read_clips_csv(paths["clips_csv"])
    meta = json.loads(paths["meta"].read_text())
    assert meta["timbre"]["effect"] == 4.0 and meta["timbre"]["confound"] == 6.0
    tau = meta["timbre"]["tau"]
    for r in rows:
        assert r["timbre"] == tau[r["singer"]]
        assert r["timbre_effect"] == pytest.approx(4 * r["timbre"])
        assert r["confound"] == pytest.approx(6 * r["timbre"] if r["split"] == "train" else 0)
        assert r["score"] == pytest.approx(np.clip(r["true_score"] + r["confound"], 50, 99))
    assert "train label = clip(true score + Y tau, 50, 99)" in paths["readme"].read_text()
    for p in Path(plain["root"]).rglob("*.wav"):  # the knobs change labels, never audio
        assert (paths["root"] / p.relative_to(plain["root"])).read_bytes() == p.read_bytes()


# sha256 of the text files of `make_corpus(out)` with every default, taken before the timbre
# knobs existed (audio is rendered from the same plans, so equal plans mean equal audio)
DEFAULT_CORPUS_SHA256 = {
    "train": "00775a46f97b24e5185ac091b1987dee2ed22005cb9a213d39111e4047a09b33",
    "val": "38ba7ef800f50ce8b30f2d80622f5f1480e0d3d85356fe5cc99a86bc347ff02a",
    "bench": "3e7b0185dab2083e7bd9ad205254c17e2e9b6143538e66a14cb6ff10e4d02726",
    "clips_csv": "1eefc0b7f64a64271eaee60835788f7a51ff64f83341b9819d6a18893b3340ba",
    "meta": "5e97fc68b4a14596cdc6dd0d4688f4fe2363abf3eefd72d68361f224ecef683a",
    "readme": "97b387486468fcb9253206f2da94db84aeea4741d4592822238a62c86c1050f5",
}


def test_defaults_keep_the_corpus_byte_identical(tmp_path, monkeypatch):
    import hashlib

    from audioscore.synth import corpus

    monkeypatch.setattr(corpus, "render_all", lambda *a, **k: None)  # plans and labels only
    paths = corpus.make_corpus(tmp_path / "c", timbre_effect=0.0, timbre_confound=0.0)
    got = {k: hashlib.sha256(paths[k].read_bytes()).hexdigest() for k in DEFAULT_CORPUS_SHA256}
    assert got == DEFAULT_CORPUS_SHA256
