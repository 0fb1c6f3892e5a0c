"""Synthetic singing corpus with a known ground truth (the corpus README_TEXT has the formulas).

A clip is a sung melody: a band-limited sawtooth at a vibrato-laden f0 contour, tilted and shaped
by a singer's formants (vowels change per note). Five controlled degradations lower its score:
pitch error, timing jitter, background noise, breathiness and hard clipping. A clip's overall
severity `q` in [0, 1] scales all five, each with its own random share, so every degradation
varies but a model that hears any of them can rank clips.

Splits: in `train` each singer has its own severity level (a model could score timbre instead of
quality: the GRL experiment relies on that shortcut); in `val` severity is independent of the
singer. `bench.jsonl` mimics CMI-RewardBench's four subsets on short clips.

Timbre knobs (both 0 by default, which leaves the corpus byte-identical to one made without them):
each singer has a timbre coordinate tau in [-1, 1] (`timbre_axis`); `timbre_effect` X adds X tau to
the true score in every split (a genuine preference for some voices), `timbre_confound` Y adds
Y tau to the training labels only (timbre predicts training scores without being part of the truth).

Everything is drawn from `np.random.default_rng([seed, ...])` per clip, so a seed gives the same
plan, samples and encoded bytes, whatever the number of worker processes.

Modules: `voices` (singers and the sung audio), `labels` (a clip's degradations and its
ground-truth score, the timbre knobs), `benchmark` (the CMI-RewardBench rows), `corpus` (the
corpus on disk: `make_corpus`, groups files, `clips.csv`, README).
"""

from audioscore.synth.corpus import make_corpus, read_clips_csv

__all__ = ["make_corpus", "read_clips_csv"]
