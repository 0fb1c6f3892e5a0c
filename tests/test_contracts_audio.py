"""The decoding contract (audiobase.audio): the exact error each bad input gets, the window a
call reads, the decompression-bomb caps, how a wav header proves a file cut, how an MPEG file
proves its length, and what resampling, loudness and saving keep. Tiny files at low rates
(a wav header is built byte by byte where its fields matter)."""

from __future__ import annotations

import logging
import struct
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch

import audiobase.audio as audio
from audiobase.audio import (
    SILENCE_PEAK,
    AudioDecodeError,
    AudioEmptyError,
    AudioMissingError,
    AudioSilentError,
    AudioTooLongError,
    AudioTooShortError,
    _mpeg_declares_frames,
    audio_duration,
    load_audio,
    loudness_normalize,
    read_wav_bytes,
    resample,
    save_audio,
    too_long,
)

SR = 8000


def tone(seconds: float = 1.0, sr: int = SR, amp: float = 0.5) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (amp * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def wav_file(path: Path, samples, sr: int = SR, subtype: str = "PCM_16") -> Path:
    sf.write(str(path), np.asarray(samples, dtype=np.float32), sr, subtype=subtype)
    return path


def riff(
    pcm: bytes,
    *,
    declared: int | None = None,
    rate: int = 10,
    block: int = 2,
    before: bytes = b"",
    fmt: bool = True,
    magic: bytes = b"RIFF",
) -> bytes:
    """A 16-bit mono PCM wav whose data chunk declares `declared` bytes and holds `pcm`."""
    fmt_chunk = b"fmt " + struct.pack("<IHHIIHH", 16, 1, 1, rate, rate * block, block, 16)
    n = len(pcm) if declared is None else declared
    body = b"WAVE" + (fmt_chunk if fmt else b"") + before + b"data" + struct.pack("<I", n) + pcm
    return magic + struct.pack("<I", len(body)) + body


def pcm(frames: int) -> bytes:
    return np.full(frames, 1000, np.int16).tobytes()


# ---------------------------------------------------------------- messages and arguments


def test_too_long_names_the_limit_how_it_was_found_and_the_way_out():
    err = too_long("a.flac", 2.5, "the header declares 9.0 s")
    assert isinstance(err, AudioTooLongError) and err.path == "a.flac"
    assert str(err) == (
        "a.flac: longer than the limit of max_seconds=2.5 s (the header declares 9.0 s); "
        "raise max_seconds to read it"
    )


@pytest.mark.parametrize("bad", [0, -1.0])
def test_max_seconds_must_be_positive_or_none_everywhere(tmp_path, bad):
    path = wav_file(tmp_path / "a.wav", tone(0.1))
    msg = rf"^max_seconds must be > 0 or None \(no limit\), got {bad}$"
    for read in (
        lambda: load_audio(path, SR, max_seconds=bad),
        lambda: audio_duration(path, max_seconds=bad),
        lambda: read_wav_bytes(path.read_bytes(), max_seconds=bad),
    ):
        with pytest.raises(ValueError, match=msg):
            read()


def test_bad_arguments_are_named_in_the_error(tmp_path):
    path = wav_file(tmp_path / "a.wav", tone(0.1))
    with pytest.raises(ValueError) as err:
        load_audio(path, 0)
    assert str(err.value) == (
        "need sr > 0, offset >= 0, duration > 0; got sr=0, offset=0.0, duration=None"
    )


def test_a_one_hertz_rate_is_a_rate(tmp_path):
    assert load_audio(wav_file(tmp_path / "a.wav", tone(1.0)), 1).shape == (1,)


def test_an_empty_wav_has_no_samples(tmp_path):
    path = wav_file(tmp_path / "empty.wav", np.zeros(0))
    with pytest.raises(AudioEmptyError) as err:
        load_audio(path, SR)
    assert str(err.value) == f"{path}: no audio samples"


@pytest.mark.parametrize("offset", [0.5, 1.0, 2.0])
def test_an_offset_at_or_past_the_end_names_the_offset(tmp_path, offset):
    path = wav_file(tmp_path / "a.wav", tone(0.5))
    with pytest.raises(AudioEmptyError) as err:
        load_audio(path, SR, offset=offset)
    assert str(err.value) == f"{path}: no audio samples after offset {offset:g} s"


def test_nan_samples_are_a_decode_error_naming_the_file(tmp_path):
    path = wav_file(tmp_path / "nan.wav", [0.1, np.nan, 0.2], subtype="FLOAT")
    with pytest.raises(AudioDecodeError) as err:
        load_audio(path, SR)
    assert str(err.value) == f"{path}: decoded samples contain NaN or Inf"


def test_rejected_silence_names_the_file(tmp_path):
    path = wav_file(tmp_path / "quiet.wav", np.zeros(100))
    with pytest.raises(AudioSilentError) as err:
        load_audio(path, SR, reject_silent=True)
    assert str(err.value) == f"{path}: all samples are silent (peak below -80 dBFS)"


def test_a_peak_just_above_the_silence_threshold_is_not_silent(tmp_path):
    path = wav_file(tmp_path / "soft.wav", np.full(100, 4 * SILENCE_PEAK), subtype="FLOAT")
    assert load_audio(path, SR, reject_silent=True).shape == (100,)


@pytest.mark.parametrize(
    ("kw", "span"),
    [
        ({}, ""),
        ({"duration": 0.01}, " in the window read"),
        ({"offset": 0.001}, " in the window read"),
        ({"offset": 0.001, "duration": 0.01}, " in the window read"),
    ],
)
def test_the_silence_warning_says_whether_only_a_window_was_read(tmp_path, caplog, kw, span):
    path = wav_file(tmp_path / "quiet.wav", np.zeros(400))
    with caplog.at_level(logging.WARNING, logger="audiobase.audio"):
        load_audio(path, SR, **kw)
    assert [r.getMessage() for r in caplog.records] == [
        f"{path}: all samples are silent{span} (peak below -80 dBFS); a score of it means nothing"
    ]


def test_too_short_names_the_file_the_count_and_the_need(tmp_path):
    path = wav_file(tmp_path / "short.wav", tone(0.01))
    with pytest.raises(AudioTooShortError) as err:
        load_audio(path, SR, min_samples=81)
    assert str(err.value) == f"{path}: 80 samples at 8000 Hz, the encoder needs at least 81"
    assert load_audio(path, SR, min_samples=80).shape == (80,)


def test_less_than_one_sample_at_the_rate_asked_is_too_short(tmp_path):
    path = wav_file(tmp_path / "one.wav", [0.5], sr=48_000)
    with pytest.raises(AudioTooShortError) as err:
        load_audio(path, SR)
    assert str(err.value) == f"{path}: 0 samples at 8000 Hz, shorter than one sample period"
    assert load_audio(path, 48_000).shape == (1,)


def test_without_min_samples_a_single_sample_is_returned(tmp_path):
    path = wav_file(tmp_path / "one.wav", [0.5])
    out = load_audio(path, SR)
    assert out.shape == (1,) and out.dtype == np.float32


# ---------------------------------------------------------------- files that are not audio


def test_a_missing_file_says_so(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioMissingError) as err:
        load_audio(path, SR)
    assert str(err.value) == f"{path}: file does not exist"
    with pytest.raises(AudioMissingError, match=r": file does not exist$"):
        load_audio(tmp_path / "nope.wav" / "child.wav", SR)


def test_a_broken_symlink_names_its_target(tmp_path):
    link = tmp_path / "clip.wav"
    link.symlink_to(tmp_path / "gone.wav")
    with pytest.raises(AudioMissingError) as err:
        load_audio(link, SR)
    assert str(err.value) == (
        f"{link}: broken symlink: its target {tmp_path / 'gone.wav'} does not exist"
    )


def test_a_symlink_loop_says_so(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.symlink_to(b)
    b.symlink_to(a)
    with pytest.raises(AudioDecodeError) as err:
        load_audio(a, SR)
    assert str(err.value) == f"{a}: symlink loop (too many levels of symbolic links)"


def test_a_path_that_cannot_be_accessed_says_why(tmp_path):
    path = tmp_path / ("a" * 300 + ".wav")
    with pytest.raises(AudioDecodeError) as err:
        load_audio(path, SR)
    assert str(err.value) == f"{path}: cannot access: File name too long"
    assert isinstance(err.value.__cause__, OSError)


def test_a_folder_is_not_a_regular_file(tmp_path):
    with pytest.raises(AudioDecodeError) as err:
        audio_duration(tmp_path)
    assert str(err.value) == f"{tmp_path}: not a regular file"


def test_a_zero_byte_file_says_so(tmp_path):
    path = tmp_path / "z.mp3"
    path.write_bytes(b"")
    with pytest.raises(AudioEmptyError) as err:
        load_audio(path, SR)
    assert str(err.value) == f"{path}: zero-length file (0 bytes)"


def test_a_file_without_an_audio_stream_says_so(tmp_path):
    path = tmp_path / "subs.srt"
    path.write_text("1\n00:00:00,000 --> 00:00:01,000\nhello\n\n")
    for read in (lambda: load_audio(path, SR), lambda: audio_duration(path)):
        with pytest.raises(AudioDecodeError) as err:
            read()
        assert str(err.value) == f"{path}: no audio stream in the file"


def test_garbage_named_wav_quotes_both_decoders(tmp_path):
    path = tmp_path / "g.wav"
    path.write_bytes(b"hello world" * 100)
    with pytest.raises(AudioDecodeError) as err:
        load_audio(path, SR)
    assert err.value.path == str(path)
    assert err.value.reason.startswith("cannot decode: ")
    assert "(soundfile: " in err.value.reason and err.value.reason.endswith(")")


def test_garbage_named_mp3_quotes_ffmpeg_only(tmp_path):
    path = tmp_path / "g.mp3"
    path.write_bytes(b"hello world" * 100)
    with pytest.raises(AudioDecodeError) as err:
        load_audio(path, SR)
    assert str(err.value) == f"{path}: cannot decode: {err.value.__cause__}"
    with pytest.raises(AudioDecodeError) as err:
        audio_duration(path)
    assert str(err.value) == f"{path}: cannot read container: {err.value.__cause__}"


# ---------------------------------------------------------------- the window read


def test_a_window_reads_like_a_file_cut_to_it(tmp_path):
    """Reading [0, d) at another rate equals reading a file holding only that window."""
    full = tone(1.0, 16_000) + tone(1.0, 16_000, 0.1)[::-1]
    path = wav_file(tmp_path / "full.wav", full, 16_000)
    alone = wav_file(tmp_path / "alone.wav", full[: int(np.ceil(0.3 * 16_000))], 16_000)
    np.testing.assert_array_equal(
        load_audio(path, 11_025, duration=0.3), load_audio(alone, 11_025, duration=0.3)
    )


def test_a_window_of_a_pyav_file_reads_like_its_slice_at_the_native_rate(tmp_path):
    path = save_audio(tmp_path / "a.m4a", tone(1.0), SR)
    native = load_audio(path, SR)
    got = load_audio(path, SR, offset=0.25, duration=0.5)
    np.testing.assert_allclose(got, native[2000:6000], atol=1e-4)
    part = load_audio(path, 11_025, duration=0.25)
    assert part.shape == (int(round(0.25 * 11_025)),)
    alone = wav_file(tmp_path / "alone.wav", native[:2000])
    np.testing.assert_allclose(part, load_audio(alone, 11_025), atol=2e-4)


def test_a_decoded_window_of_a_wav_is_exact(tmp_path):
    wav = np.arange(100, dtype=np.float32) / 200
    path = wav_file(tmp_path / "ramp.wav", wav, subtype="FLOAT")
    np.testing.assert_array_equal(load_audio(path, SR, offset=0.001, duration=0.002), wav[8:24])
    np.testing.assert_array_equal(load_audio(path, SR, offset=0.01), wav[80:])


# ---------------------------------------------------------------- decompression caps


def test_a_wav_header_past_max_seconds_is_refused_naming_it(tmp_path):
    path = wav_file(tmp_path / "a.wav", tone(2.0))
    with pytest.raises(AudioTooLongError) as err:
        load_audio(path, SR, max_seconds=1.5)
    assert str(err.value) == str(too_long(path, 1.5, "the header declares 2.0 s"))
    assert load_audio(path, SR, max_seconds=2.0).shape == (2 * SR,)


def test_a_container_past_max_seconds_is_refused_naming_it(tmp_path):
    path = save_audio(tmp_path / "a.m4a", tone(1.0), SR)
    with pytest.raises(AudioTooLongError) as err:
        load_audio(path, SR, max_seconds=0.5)
    assert str(err.value) == str(too_long(path, 0.5, "the container declares 1.0 s"))


def test_a_container_exactly_at_max_seconds_is_read(tmp_path):
    path = save_audio(tmp_path / "a.m4a", tone(1.0), SR)
    assert audio_duration(path) == 1.0
    assert load_audio(path, SR, max_seconds=1.0).shape == (SR,)


def test_audio_duration_returns_a_declared_length_past_max_seconds(tmp_path):
    path = save_audio(tmp_path / "a.m4a", tone(0.5), SR)
    assert audio_duration(path, max_seconds=0.25) == 0.5


def test_audio_duration_of_soundfile_formats_is_frames_over_rate(tmp_path):
    for ext in ("wav", "flac", "ogg"):
        path = save_audio(tmp_path / f"a.{ext}", tone(0.5), SR)
        assert audio_duration(path) == 0.5
    upper = save_audio(tmp_path / "B.WAV", tone(0.25), SR)
    assert audio_duration(upper) == 0.25


# ---------------------------------------------------------------- a wav header proves a cut


def test_a_wav_missing_more_than_the_slack_is_truncated():
    data = riff(pcm(10), declared=24)  # 1.2 s declared at 10 Hz, 1.0 s held
    with pytest.raises(AudioDecodeError) as err:
        read_wav_bytes(data, "clip.wav")
    assert str(err.value) == (
        "clip.wav: truncated: the wav header declares 1.20 s, the file holds 1.00 s"
    )


def test_a_wav_missing_exactly_the_slack_is_read():
    wav, rate = read_wav_bytes(riff(pcm(10), declared=22))  # 0.1 s missing
    assert (wav.shape, rate) == ((10,), 10)


def test_a_truncated_wav_file_is_refused_before_decoding(tmp_path):
    path = tmp_path / "cut.wav"
    path.write_bytes(riff(pcm(10), declared=24))
    for read in (lambda: load_audio(path, 10), lambda: audio_duration(path)):
        with pytest.raises(AudioDecodeError) as err:
            read()
        assert str(err.value) == (
            f"{path}: truncated: the wav header declares 1.20 s, the file holds 1.00 s"
        )


def test_a_wav_holding_no_data_bytes_of_those_it_declares_is_truncated():
    with pytest.raises(AudioDecodeError, match=r"declares 1\.00 s, the file holds 0\.00 s$"):
        read_wav_bytes(riff(b"", declared=20))


def test_a_huge_declared_data_chunk_is_truncated_not_negative():
    with pytest.raises(AudioDecodeError, match=r"declares 107374182\.40 s"):
        read_wav_bytes(riff(pcm(10), declared=0x80000000))


def test_odd_sized_chunks_are_padded_before_the_next():
    extra = b"LIST" + struct.pack("<I", 3) + b"abc" + b"\0"
    with pytest.raises(AudioDecodeError, match="truncated"):
        read_wav_bytes(riff(pcm(10), declared=24, before=extra))
    wav, _ = read_wav_bytes(riff(pcm(10), before=extra))
    assert wav.shape == (10,)


def test_a_streamed_wav_of_unknown_length_is_not_truncated():
    wav, rate = read_wav_bytes(riff(pcm(10), declared=0xFFFFFFFF))
    assert rate == 10 and wav.shape[0] >= 10


@pytest.mark.parametrize(
    "data",
    [
        riff(pcm(10), declared=24, magic=b"RIFX"),  # not a little-endian RIFF: not ours to judge
        riff(pcm(10), declared=24, fmt=False),  # no fmt chunk: no rate to measure with
        riff(pcm(10), declared=24)[:36],  # no data chunk at all
    ],
)
def test_a_header_that_cannot_be_measured_is_left_to_the_decoder(data):
    with pytest.raises(AudioDecodeError) as err:
        read_wav_bytes(data)
    assert "truncated" not in str(err.value)
    assert err.value.reason.startswith("not a readable WAV: ")


def test_a_header_with_a_zero_block_size_is_not_measured():
    wav, rate = read_wav_bytes(riff(pcm(10), declared=24, block=0))
    assert (wav.shape, rate) == ((10,), 10)


# ---------------------------------------------------------------- WAV bytes (a request body)


def test_wav_bytes_are_named_by_default_as_wav_bytes():
    with pytest.raises(AudioDecodeError) as err:
        read_wav_bytes(b"junk" * 20)
    assert err.value.path == "<wav bytes>"
    assert str(err.value).startswith("<wav bytes>: not a readable WAV: ")
    assert isinstance(err.value.__cause__, Exception)


def test_wav_bytes_are_mixed_to_mono_float32(tmp_path):
    stereo = np.stack([np.full(8, 0.5), np.full(8, -0.25)], axis=1).astype(np.float32)
    path = tmp_path / "s.wav"
    sf.write(str(path), stereo, SR, subtype="FLOAT")
    wav, rate = read_wav_bytes(path.read_bytes())
    assert (rate, type(rate), wav.dtype) == (SR, int, np.float32)
    np.testing.assert_array_equal(wav, np.full(8, 0.125, np.float32))
    mono, _ = read_wav_bytes(wav_file(tmp_path / "m.wav", [0.5, -0.5]).read_bytes())
    np.testing.assert_allclose(mono, [0.5, -0.5])


def test_one_frame_of_wav_bytes_is_read_and_none_is_empty(tmp_path):
    one, _ = read_wav_bytes(wav_file(tmp_path / "one.wav", [0.5]).read_bytes(), "one")
    assert one.shape == (1,)
    with pytest.raises(AudioEmptyError) as err:
        read_wav_bytes(wav_file(tmp_path / "none.wav", np.zeros(0)).read_bytes(), "none")
    assert str(err.value) == "none: no audio samples"


def test_wav_bytes_past_max_seconds_are_refused_and_exactly_at_it_read(tmp_path):
    data = wav_file(tmp_path / "a.wav", tone(1.0)).read_bytes()
    with pytest.raises(AudioTooLongError) as err:
        read_wav_bytes(data, "body", max_seconds=0.5)
    assert str(err.value) == str(too_long("body", 0.5, "the header declares 1.0 s"))
    assert read_wav_bytes(data, "body", max_seconds=1.0)[0].shape == (SR,)


def test_other_formats_as_bytes_are_refused_by_name(tmp_path):
    path = save_audio(tmp_path / "a.flac", tone(0.1), SR)
    with pytest.raises(AudioDecodeError) as err:
        read_wav_bytes(path.read_bytes(), "up.flac")
    assert str(err.value) == "up.flac: not a WAV file (libsndfile reads FLAC)"


# ---------------------------------------------------------------- an MPEG file proves its length

FRAME_MONO = bytes([0xFF, 0xFB, 0x90, 0xC0])  # MPEG-1 Layer III, 128 kb/s, 44.1 kHz, mono
FRAME_STEREO = bytes([0xFF, 0xFB, 0x90, 0x00])
MPEG2_MONO = bytes([0xFF, 0xF3, 0x90, 0xC0])  # MPEG-2 Layer III
MPEG2_STEREO = bytes([0xFF, 0xF3, 0x90, 0x00])
MPEG25_STEREO = bytes([0xFF, 0xE3, 0x90, 0x00])  # MPEG-2.5
LAYER2 = bytes([0xFF, 0xFD, 0x90, 0x00])


def frame(header: bytes, side: int, tag: bytes = b"Xing", flags: int = 1) -> bytes:
    """A frame header, `side` bytes of side info, then a Xing/Info tag with `flags`."""
    return header + bytes(side) + tag + flags.to_bytes(4, "big") + bytes(120)


def mp3(tmp_path: Path, data: bytes, name: str = "a.mp3") -> Path:
    path = tmp_path / name
    path.write_bytes(data + bytes(200))
    return path


@pytest.mark.parametrize(
    ("header", "side"),
    [
        (FRAME_STEREO, 32),
        (FRAME_MONO, 17),
        (MPEG2_STEREO, 17),
        (MPEG2_MONO, 9),
        (MPEG25_STEREO, 17),
    ],
)
def test_a_xing_frame_count_is_found_after_the_side_info(tmp_path, header, side):
    assert _mpeg_declares_frames(mp3(tmp_path, frame(header, side)))
    assert _mpeg_declares_frames(mp3(tmp_path, frame(header, side, b"Info"), "i.mp3"))
    assert not _mpeg_declares_frames(mp3(tmp_path, frame(header, side + 1), "off.mp3"))
    assert not _mpeg_declares_frames(mp3(tmp_path, frame(header, side - 1), "off2.mp3"))


@pytest.mark.parametrize(("flags", "counted"), [(1, True), (3, True), (0, False), (2, False)])
def test_only_the_frame_count_flag_counts(tmp_path, flags, counted):
    assert _mpeg_declares_frames(mp3(tmp_path, frame(FRAME_STEREO, 32, flags=flags))) is counted


def test_the_flag_is_read_from_the_four_flag_bytes_only(tmp_path):
    data = FRAME_STEREO + bytes(32) + b"Xing" + (1).to_bytes(4, "big") + b"\x00\x00\x01\x00"
    assert _mpeg_declares_frames(mp3(tmp_path, data + bytes(100)))


def test_a_vbri_header_counts_the_frames(tmp_path):
    assert _mpeg_declares_frames(mp3(tmp_path, FRAME_STEREO + bytes(32) + b"VBRI" + bytes(100)))
    assert not _mpeg_declares_frames(mp3(tmp_path, FRAME_MONO + bytes(200), "plain.mp3"))
    assert not _mpeg_declares_frames(
        mp3(tmp_path, FRAME_STEREO + bytes(33) + b"VBRI" + bytes(100), "late.mp3")
    )
    assert not _mpeg_declares_frames(
        mp3(tmp_path, FRAME_STEREO + bytes(31) + b"VBRI" + bytes(100), "early.mp3")
    )


def test_a_vbri_header_is_found_after_leading_bytes(tmp_path):
    data = bytes(50) + FRAME_STEREO + bytes(32) + b"VBRI" + bytes(100)
    assert _mpeg_declares_frames(mp3(tmp_path, data))


def test_layer_one_and_two_files_carry_no_frame_count(tmp_path):
    assert not _mpeg_declares_frames(mp3(tmp_path, frame(LAYER2, 32)))


@pytest.mark.parametrize(
    "junk",
    [
        bytes([0x00, 0xFB, 0x90, 0xC0]),  # no sync byte
        bytes([0xFF, 0x1B, 0x90, 0xC0]),  # sync bits missing
        bytes([0xFF, 0xEB, 0x90, 0xC0]),  # reserved version
        bytes([0xFF, 0xF9, 0x90, 0xC0]),  # reserved layer
        bytes([0xFF, 0xFB, 0xF0, 0xC0]),  # bad bitrate index
        bytes([0xFF, 0xFB, 0x8C, 0xC0]),  # reserved sample-rate index
    ],
)
def test_what_is_not_a_frame_header_is_skipped(tmp_path, junk):
    assert _mpeg_declares_frames(mp3(tmp_path, junk + frame(FRAME_STEREO, 32)))


def test_the_mode_byte_is_the_fourth_and_the_rates_the_third(tmp_path):
    # mono with a mode byte that, read as the rate byte, would be a reserved rate
    header = bytes([0xFF, 0xFB, 0x90, 0xCC])
    assert _mpeg_declares_frames(mp3(tmp_path, bytes(8) + frame(header, 17)))


def id3(size: int, flags: int = 0) -> bytes:
    syncsafe = bytes((size >> s) & 0x7F for s in (21, 14, 7, 0))
    return b"ID3" + bytes([4, 0, flags]) + syncsafe


def test_an_id3_tag_is_skipped_by_its_syncsafe_size(tmp_path):
    size = 0x81 + 0x100  # spans two syncsafe bytes
    decoy = frame(LAYER2, 32)  # a Layer II header inside the tag: found only if it is not skipped
    data = id3(size) + bytes(100) + decoy + bytes(size - 100 - len(decoy)) + frame(FRAME_STEREO, 32)
    assert _mpeg_declares_frames(mp3(tmp_path, data))


def test_an_id3_footer_adds_ten_bytes(tmp_path):
    decoy = LAYER2 + bytes(6)  # a Layer II header where the footer is
    data = id3(100, flags=0x10) + bytes(100) + decoy + frame(FRAME_STEREO, 32)
    assert _mpeg_declares_frames(mp3(tmp_path, data))
    no_footer = id3(100, flags=0x01) + bytes(100) + frame(FRAME_STEREO, 32)
    assert _mpeg_declares_frames(mp3(tmp_path, no_footer, "nf.mp3"))


def test_a_frame_at_the_very_start_is_found(tmp_path):
    assert _mpeg_declares_frames(mp3(tmp_path, frame(FRAME_STEREO, 32)))


def test_only_the_first_4096_bytes_after_the_tag_are_searched(tmp_path):
    last = bytes(4096 - 45) + FRAME_STEREO + bytes(32) + b"VBRI" + bytes(100)
    assert _mpeg_declares_frames(mp3(tmp_path, last))
    beyond = bytes(4096 - 44) + FRAME_STEREO + bytes(32) + b"VBRI" + bytes(100)
    assert not _mpeg_declares_frames(mp3(tmp_path, beyond, "b.mp3"))


def test_a_short_file_without_frames_declares_nothing(tmp_path):
    path = tmp_path / "tiny.mp3"
    path.write_bytes(bytes(30))
    assert not _mpeg_declares_frames(path)
    path.write_bytes(bytes(100))
    assert not _mpeg_declares_frames(path)


# ---------------------------------------------------------------- resampling


def test_the_same_rate_returns_the_input_itself():
    x = np.ones(4, np.int16)
    assert resample(x, SR, SR) is x


def test_float64_stays_float64_and_other_dtypes_become_float32():
    assert resample(np.zeros(100, np.float64), SR, 4000).dtype == np.float64
    assert resample(np.zeros(100, np.float32), SR, 4000).dtype == np.float32
    out = resample(np.full(100, 1000, np.int16), SR, 4000)
    assert out.dtype == np.float32 and out.shape == (50,)
    out = resample(np.full((2, 100), 1000, np.int16), SR, 4000)
    assert out.dtype == np.float32 and out.shape == (2, 50)
    assert resample(np.zeros((2, 100), np.float64), SR, 4000).dtype == np.float64


def test_every_leading_axis_is_resampled_as_its_own_signal():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3, 160)).astype(np.float32)
    out = resample(x, SR, 4000)
    assert out.shape == (2, 3, 80) and out.flags["C_CONTIGUOUS"]
    for i in range(2):
        for j in range(3):
            np.testing.assert_allclose(out[i, j], resample(x[i, j], SR, 4000), atol=1e-6)


def test_a_tensor_is_resampled_as_a_tensor():
    out = resample(torch.ones(2, 160), SR, 4000)
    assert isinstance(out, torch.Tensor) and tuple(out.shape) == (2, 80)


# ---------------------------------------------------------------- loudness


def test_silence_and_nothing_come_back_unchanged_as_float32():
    quiet = np.zeros(100, np.float64)
    out = loudness_normalize(quiet, SR)
    assert out.dtype == np.float32 and not out.any()
    empty = loudness_normalize(np.zeros(0), SR)
    assert empty.shape == (0,) and empty.dtype == np.float32


def test_a_clip_a_sample_shorter_than_a_block_is_measured_tiled():
    block = int(np.ceil(0.4 * SR))
    wav = np.resize(tone(1.0), block - 1)
    out = loudness_normalize(wav, SR, target_lufs=-20.0)
    assert out.shape == wav.shape
    tiled = np.tile(out, 3).astype(np.float64)
    assert pyloudnorm.Meter(SR).integrated_loudness(tiled) == pytest.approx(-20.0, abs=0.05)


def test_a_clip_longer_than_a_block_is_measured_as_it_is():
    block = int(np.ceil(0.4 * SR))
    wav = np.resize(tone(1.0), block + 1)
    loud = pyloudnorm.Meter(SR).integrated_loudness(wav.astype(np.float64))
    expected = (wav * 10.0 ** ((-20.0 - loud) / 20.0)).astype(np.float32)
    np.testing.assert_array_equal(loudness_normalize(wav, SR, target_lufs=-20.0), expected)


# ---------------------------------------------------------------- saving


def test_an_unknown_suffix_is_refused_naming_the_path(tmp_path):
    path = tmp_path / "a.xyz"
    with pytest.raises(ValueError) as err:
        save_audio(path, tone(0.1), SR)
    assert str(err.value) == f"{path}: cannot write format '.xyz'"


@pytest.mark.parametrize("ext", ["mp3", "m4a"])
def test_samples_past_full_scale_are_clipped_before_encoding(tmp_path, ext):
    loud = (3.0 * tone(0.2)).astype(np.float64)  # float64 in, peaks at +-1.5
    a = save_audio(tmp_path / f"loud.{ext}", loud, SR)
    b = save_audio(tmp_path / f"clipped.{ext}", np.clip(loud, -1.0, 1.0).astype(np.float32), SR)
    assert a.read_bytes() == b.read_bytes()


@pytest.mark.parametrize("ext", ["mp3", "m4a", "opus"])
def test_lossy_formats_keep_the_length_and_the_rate(tmp_path, ext):
    path = save_audio(tmp_path / f"a.{ext}", tone(1.0, 16_000), 16_000)
    with av.open(str(path)) as container:
        rate = container.streams.audio[0].codec_context.sample_rate
    assert rate == (48_000 if ext == "opus" else 16_000)
    assert audio_duration(path) == pytest.approx(1.0, abs=0.01)
    out = load_audio(path, 16_000)
    assert abs(out.shape[0] - 16_000) <= 2
    spectrum = np.abs(np.fft.rfft(out))
    assert abs(np.argmax(spectrum) * 16_000 / out.shape[0] - 440) < 5  # the same pitch


def test_a_wav_from_ffmpeg_is_mixed_like_soundfiles(tmp_path):
    stereo = np.stack([np.linspace(-0.5, 0.5, 400), np.full(400, 0.25)], axis=1)
    path = tmp_path / "s.wav"
    sf.write(str(path), stereo.astype(np.float32), SR, subtype="PCM_16")
    other = tmp_path / "s.bin"  # not a soundfile suffix: FFmpeg reads it (packed s16)
    other.write_bytes(path.read_bytes())
    np.testing.assert_array_equal(load_audio(other, SR), load_audio(path, SR))
    one = tmp_path / "one.bin"
    buf = tmp_path / "one.wav"
    sf.write(str(buf), np.array([[0.5, -0.25]], np.float32), SR, subtype="PCM_16")
    one.write_bytes(buf.read_bytes())
    np.testing.assert_allclose(load_audio(one, SR), [0.125], atol=1e-4)


def test_the_silence_warning_is_given_once_per_file(tmp_path, caplog, monkeypatch):
    monkeypatch.setattr(audio, "_WARNED_SILENT", set())
    a = wav_file(tmp_path / "a.wav", np.zeros(100))
    b = wav_file(tmp_path / "b.wav", np.zeros(100))
    with caplog.at_level(logging.WARNING, logger="audiobase.audio"):
        for path in (a, a, b):
            load_audio(path, SR)
    assert len(caplog.records) == 2


def test_tags_that_are_not_utf8_do_not_stop_decoding(tmp_path):
    path = save_audio(tmp_path / "a.mp3", tone(0.5), SR)
    data = path.read_bytes()
    size = sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(data[6:10]))
    text = b"\x03" + b"bad \xff\xfe utf8"  # a UTF-8 title frame holding invalid bytes
    title = b"TIT2" + bytes((len(text) >> s) & 0x7F for s in (21, 14, 7, 0)) + b"\0\0" + text
    tag = b"ID3\x04\x00\x00" + bytes((len(title) >> s) & 0x7F for s in (21, 14, 7, 0)) + title
    bad = tmp_path / "bad.mp3"
    bad.write_bytes(tag + data[10 + size :])
    assert audio_duration(bad) == pytest.approx(0.5, abs=0.01)
    assert abs(load_audio(bad, SR).shape[0] - SR // 2) <= 2


def test_a_cut_container_names_where_decoding_stopped(tmp_path):
    path = save_audio(tmp_path / "a.mp3", tone(1.0), SR)  # its Info header counts the frames
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(AudioDecodeError) as err:
        load_audio(cut, SR)
    text = str(err.value)
    prefix = f"{cut}: truncated: container declares 1.00 s, decoding stopped at "
    assert text.startswith(prefix) and text.endswith(" s")
    assert 0.0 < float(text[len(prefix) : -2]) < 1.0


def test_an_undeclared_length_is_refused_where_decoding_passed_the_limit(tmp_path):
    data = save_audio(tmp_path / "a.mp3", tone(1.0), SR).read_bytes()
    path = tmp_path / "nocount.mp3"  # no Info header: the length is only a bitrate estimate
    path.write_bytes(data.replace(b"Info", b"\0\0\0\0", 1))
    with pytest.raises(AudioTooLongError) as err:
        load_audio(path, SR, max_seconds=0.5)
    text = str(err.value)
    prefix = f"{path}: longer than the limit of max_seconds=0.5 s (decoding passed "
    assert text.startswith(prefix) and text.endswith(" s); raise max_seconds to read it")
    assert 0.5 <= float(text[len(prefix) :].split(" ")[0]) < 0.7


def test_no_limit_reads_a_pyav_file_whole(tmp_path):
    path = save_audio(tmp_path / "a.m4a", tone(1.0), SR)
    assert load_audio(path, SR, max_seconds=None).shape == (SR,)


def test_a_window_past_the_end_of_an_uncounted_mp3_returns_the_rest(tmp_path):
    data = save_audio(tmp_path / "a.mp3", tone(1.0), SR).read_bytes()
    path = tmp_path / "nocount.mp3"  # no Info header: no declared length to check against
    path.write_bytes(data.replace(b"Info", b"\0\0\0\0", 1))
    whole = load_audio(path, SR)
    np.testing.assert_array_equal(load_audio(path, SR, duration=5.0), whole)
