"""latex.txt: upstream's latex.txt, line for line (musicality, alignment, final, CMI-Pref).

Same comment lines and columns as upstream: correlations with 4 decimals, accuracies in
percent with 2, "-" when missing; means skip missing values. Each row starts with the variant
label (upstream: the output folder's name unless the config sets `training_variant`).
"""

from __future__ import annotations

from typing import Any


def fmt4(v: float | None) -> str:
    return "-" if v is None else f"{v:.4f}"


def fmt_pct(v: float | None) -> str:
    return "-" if v is None else f"{v * 100:.2f}"


def mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def latex_lines(metrics: dict[str, Any], variant: str) -> list[str]:
    """The twelve lines of upstream's latex.txt (six comments, six rows) for one variant."""

    def summ(dataset: str, task: str, col: str) -> float | None:
        hit = [r for r in metrics["summary"] if r["dataset"] == dataset and r["task"] == task]
        return hit[0].get(col) if hit else None

    def det(task: str, key: str, value: str, ref: str | None = None) -> float | None:
        for r in metrics["detail"]:
            if (r["dataset"], r["task"], r["group_key"], r["group_value"]) != (
                "CMI-Pref",
                task,
                key,
                value,
            ):
                continue
            if ref is None or r.get("ref_category") == ref:
                return r.get("ACC")
        return None

    def row(*cells: str) -> str:
        return " & ".join([variant, *cells]) + r" \\"

    def conf(task: str, ref: str) -> list[str]:
        return [fmt_pct(det(task, "confidence", g, ref)) for g in ("<3", "=3", ">3")]

    corr = ("LCC", "SRCC", "K-Tau")
    mus = [fmt4(summ("PAM", "musicality", c)) for c in corr]
    mus += [fmt4(summ("MusicEval", "musicality", c)) for c in corr]
    mus += [
        fmt_pct(summ("MusicArena", "preference", "ACC")),
        fmt_pct(summ("CMI-Pref", "musicality", "ACC")),
    ]
    mods = [
        det("alignment", "modality", m)
        for m in ("text", "text+lyrics", "text+ref", "text+lyrics+ref")
    ]
    ali = [fmt4(summ("PAM", "alignment", c)) for c in corr] + [fmt_pct(v) for v in mods]
    ali += [fmt_pct(mean(mods[:2])), fmt_pct(mean(mods[2:]))]  # all = the text+lyrics+ref column
    final = [
        fmt4(mean([summ("PAM", "musicality", "SRCC"), summ("PAM", "alignment", "SRCC")])),
        fmt4(summ("MusicEval", "musicality", "SRCC")),
        fmt_pct(summ("MusicArena", "preference", "ACC")),
        fmt_pct(
            mean([summ("CMI-Pref", "alignment", "ACC"), summ("CMI-Pref", "musicality", "ACC")])
        ),
    ]
    cmi_mus = [fmt_pct(summ("CMI-Pref", "musicality", "ACC")), *conf("musicality", "all")]
    cmi_mus += [fmt_pct(det("musicality", "modality_type", t)) for t in ("instru", "vocal")]
    tma = [fmt_pct(det("alignment", "ref_subset", "no_ref")), *conf("alignment", "no_ref")]
    tma += [fmt_pct(det("alignment", "modality", m)) for m in ("text", "text+lyrics")]
    ama = [fmt_pct(det("alignment", "ref_subset", "ref")), *conf("alignment", "ref")]
    ama += [fmt_pct(det("alignment", "modality", m)) for m in ("text+ref", "text+lyrics+ref")]
    return [
        "% Musicality: Method&Model, PAM(LCC,SRCC,K-Tau), MusicEval(LCC,SRCC,K-Tau), "
        "MusicArena(ACC), CMI-Pref(ACC)",
        row(*mus),
        "% Alignment: Method&Model, PAM(LCC,SRCC,K-Tau), "
        "CMI(text,lyrics,audio,all=text+lyrics+ref,w/o audio,w/ audio)",
        row(*ali),
        "% Final: Training variant, PAM Mean SRCC, MusicEval SRCC, Music Arena Acc, "
        "CMI-Pref Mean Acc",
        row(*final),
        "% CMI-Pref Musicality: variant, Total, Conf<3, Conf=3, Conf>3, Instru(no lyrics), "
        "Vocal(lyrics)",
        row(*cmi_mus),
        "% CMI-Pref Text-Music Alignment (no ref): variant, Total, Conf<3, Conf=3, Conf>3, "
        "Instru(text), Vocal(text+lyrics)",
        row(*tma),
        "% CMI-Pref Audio-Music Alignment (ref): variant, Total, Conf<3, Conf=3, Conf>3, "
        "Instru(text+ref), Vocal(text+lyrics+ref)",
        row(*ama),
    ]
