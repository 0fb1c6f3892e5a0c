"""The preprocessing contract in memory (audiobase.preprocess.Preprocess): which window of a long
waveform a model sees, the shortest input it accepts, and what a stored contract may hold.
Tiny arrays (a ramp makes every sample name its own position), no audio files."""

from __future__ import annotations

import numpy as np
import pyloudnorm as pyln
import pytest
import torch

from audiobase.audio import AudioDecodeError, AudioTooShortError
from audiobase.preprocess import Preprocess, to_mono

SR = 10  # 10 Hz: max_dur=1.0 is 10 samples


def ramp(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32)


def test_center_crop_of_a_long_waveform_takes_the_middle_window():
    out = Preprocess(sr=SR, max_dur=1.0, crop="center").apply(ramp(30))
    np.testing.assert_array_equal(out, ramp(30)[10:20])


def test_center_crop_of_an_odd_surplus_rounds_the_start_down():
    out = Preprocess(sr=SR, max_dur=1.0, crop="center").apply(ramp(13))
    np.testing.assert_array_equal(out, ramp(13)[1:11])


def test_start_crop_of_a_long_waveform_takes_the_first_window():
    out = Preprocess(sr=SR, max_dur=1.0, crop="start").apply(ramp(30))
    np.testing.assert_array_equal(out, ramp(10))


def test_waveform_of_exactly_max_dur_is_kept_whole():
    out = Preprocess(sr=SR, max_dur=1.0, crop="center").apply(ramp(10))
    np.testing.assert_array_equal(out, ramp(10))


def test_no_max_dur_keeps_the_whole_waveform():
    out = Preprocess(sr=SR, crop="center").apply(ramp(30))
    np.testing.assert_array_equal(out, ramp(30))


def test_max_samples_rounds_max_dur_times_sr():
    assert Preprocess(sr=SR, max_dur=1.26).max_samples == 13
    assert Preprocess(sr=SR).max_samples is None


def test_window_of_a_center_crop_is_the_middle():
    p = Preprocess(sr=SR, max_dur=2.0, crop="center")
    assert p.window(6.0) == 2.0
    assert p.window(2.0) == 0.0 and p.window(1.0) == 0.0


def test_window_of_a_start_crop_or_no_crop_is_zero():
    assert Preprocess(sr=SR, max_dur=2.0, crop="start").window(6.0) == 0.0
    assert Preprocess(sr=SR, crop="center").window(6.0) == 0.0


def test_fewer_samples_than_min_samples_is_an_error_naming_the_input():
    p = Preprocess(sr=SR, min_samples=5)
    with pytest.raises(AudioTooShortError, match=r"clip\.wav.*4 samples at 10 Hz, need at least 5"):
        p.apply(ramp(4), name="clip.wav")


def test_exactly_min_samples_is_accepted():
    np.testing.assert_array_equal(Preprocess(sr=SR, min_samples=5).apply(ramp(5)), ramp(5))


def test_a_one_sample_waveform_is_accepted_without_min_samples():
    np.testing.assert_array_equal(Preprocess(sr=SR).apply(ramp(1)), ramp(1))


def test_apply_names_the_input_in_shape_errors():
    with pytest.raises(ValueError, match=r"^clip\.wav: waveform must be"):
        Preprocess(sr=SR).apply(np.zeros((1, 1, 4)), name="clip.wav")


def test_load_of_a_file_shorter_than_min_samples_is_an_error_naming_it(tmp_path):
    from audiobase.audio import save_audio

    path = save_audio(tmp_path / "short.wav", np.zeros(8, dtype=np.float32), 1000)
    with pytest.raises(AudioTooShortError, match="short.wav"):
        Preprocess(sr=1000, min_samples=20).load(path)


def test_a_one_hertz_contract_is_valid():
    assert Preprocess(sr=1).sr == 1


def test_an_empty_waveform_is_too_short_even_without_min_samples():
    with pytest.raises(AudioTooShortError):
        Preprocess(sr=SR).apply(np.zeros(0, dtype=np.float32))


def test_apply_returns_contiguous_float32():
    out = Preprocess(sr=SR).apply(np.arange(6, dtype=np.float64)[::2])
    assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]


def test_target_lufs_changes_the_level_and_none_leaves_it():
    rng = np.random.default_rng(0)
    wav = (0.1 * rng.standard_normal(16_000)).astype(np.float32)
    same = Preprocess(sr=16_000).apply(wav)
    louder = Preprocess(sr=16_000, target_lufs=-14.0).apply(wav)
    np.testing.assert_array_equal(same, wav)
    assert louder.dtype == np.float32
    assert pyln.Meter(16_000).integrated_loudness(louder) == pytest.approx(-14.0, abs=0.1)


def test_call_with_a_waveform_applies_and_with_a_path_loads(tmp_path):
    from audiobase.audio import save_audio

    p = Preprocess(sr=SR * 100, max_dur=0.01, crop="center")
    wav = (np.arange(30, dtype=np.float32) / 100).astype(np.float32)
    np.testing.assert_array_equal(p(wav), wav[10:20])
    path = save_audio(tmp_path / "ramp.wav", wav, SR * 100)
    np.testing.assert_allclose(p(path), wav[10:20], atol=1e-4)
    np.testing.assert_allclose(p(str(path)), wav[10:20], atol=1e-4)


def test_load_with_an_offset_overrides_the_crop(tmp_path):
    from audiobase.audio import save_audio

    wav = (np.arange(30, dtype=np.float32) / 100).astype(np.float32)
    path = save_audio(tmp_path / "ramp.wav", wav, 1000)
    got = Preprocess(sr=1000, max_dur=0.01, crop="center").load(path, offset=0.005)
    np.testing.assert_allclose(got, wav[5:15], atol=1e-4)


def test_load_of_a_start_crop_takes_the_first_window(tmp_path):
    from audiobase.audio import save_audio

    wav = (np.arange(30, dtype=np.float32) / 100).astype(np.float32)
    path = save_audio(tmp_path / "ramp.wav", wav, 1000)
    got = Preprocess(sr=1000, max_dur=0.01, crop="start").load(path)
    np.testing.assert_allclose(got, wav[:10], atol=1e-4)


@pytest.mark.parametrize(
    "kwargs",
    [{"crop": "middle"}, {"sr": 0}, {"sr": -1}, {"max_dur": 0.0}, {"max_dur": -1.0}],
)
def test_invalid_contract_is_a_value_error(kwargs):
    with pytest.raises(ValueError, match="preprocess"):
        Preprocess(**{"sr": SR, **kwargs})


def test_replace_ignores_none_and_returns_self_when_nothing_changes():
    p = Preprocess(sr=SR, max_dur=1.0)
    assert p.replace(max_dur=None) is p
    q = p.replace(crop="center", max_dur=None)
    assert q == Preprocess(sr=SR, max_dur=1.0, crop="center")


def test_dict_round_trip_and_unknown_keys_named():
    p = Preprocess(sr=SR, max_dur=1.0, crop="center", target_lufs=-20.0, min_samples=3)
    assert p.to_dict() == {
        "sr": SR,
        "max_dur": 1.0,
        "crop": "center",
        "target_lufs": -20.0,
        "min_samples": 3,
    }
    assert Preprocess.from_dict(p.to_dict()) == p
    with pytest.raises(ValueError, match=r"unknown preprocess keys \['hop', 'win'\]"):
        Preprocess.from_dict({"sr": SR, "win": 1, "hop": 2})


def test_to_mono_averages_channels_and_squeezes_one():
    stereo = np.stack([ramp(4), 3 * ramp(4)])
    np.testing.assert_array_equal(to_mono(stereo), 2 * ramp(4))
    np.testing.assert_array_equal(to_mono(ramp(4)[None]), ramp(4))
    np.testing.assert_array_equal(to_mono(np.array([[1.0], [3.0]])), [2.0])


def test_to_mono_takes_a_torch_tensor():
    out = to_mono(torch.arange(4, dtype=torch.float64))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, ramp(4))


def test_to_mono_rejects_what_is_not_a_waveform():
    with pytest.raises(TypeError, match="got list"):
        to_mono([0.0, 1.0])
    with pytest.raises(ValueError, match=r"clip\.wav: waveform must be .*\(1, 1, 4\)"):
        to_mono(np.zeros((1, 1, 4)), "clip.wav")
    with pytest.raises(AudioDecodeError, match=r"^clip\.wav: waveform contains NaN or Inf$"):
        to_mono(np.array([0.0, np.inf]), "clip.wav")
