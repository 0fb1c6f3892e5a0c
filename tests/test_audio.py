"""audiobase.audio: every format decodes to the right length/rate; every bad input gets its error."""

from __future__ import annotations

import io
import os
import pickle
import tracemalloc
from pathlib import Path

import av
import numpy as np
import pyloudnorm
import pytest
import soundfile as sf
import torch
from helpers.bombs import write_silent_flac

from audiobase.audio import (
    CAMPP_SR,
    MUQ_MIN_SAMPLES,
    MUQ_SR,
    AudioDecodeError,
    AudioEmptyError,
    AudioError,
    AudioMissingError,
    AudioSilentError,
    AudioTooLongError,
    AudioTooShortError,
    audio_duration,
    header_seconds,
    load_audio,
    loudness_normalize,
    read_wav_bytes,
    resample,
    save_audio,
)
from audiobase.files import walk_files
from audiobase.preprocess import Preprocess

FORMATS = ["wav", "flac", "ogg", "mp3", "m4a", "opus"]
LOSSLESS = {"wav", "flac"}
SRC_SR = 44_100
SECONDS = 1.7


def make_tone(seconds: float = SECONDS, sr: int = SRC_SR) -> np.ndarray:
    t = np.arange(int(round(seconds * sr))) / sr
    return (0.3 * np.sin(2 * np.pi * 330 * t) + 0.1 * np.sin(2 * np.pi * 1234 * t)).astype(
        np.float32
    )


@pytest.fixture(scope="module")
def encoded(tmp_path_factory) -> dict[str, object]:
    """The same tone written once in every format."""
    root = tmp_path_factory.mktemp("formats")
    wav = make_tone()
    return {ext: save_audio(root / f"tone.{ext}", wav, SRC_SR) for ext in FORMATS}


@pytest.mark.parametrize("ext", FORMATS)
@pytest.mark.parametrize("sr", [MUQ_SR, CAMPP_SR])
def test_every_format_decodes_to_length_and_rate(encoded, ext, sr):
    wav = load_audio(encoded[ext], sr)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert abs(wav.shape[0] - round(SECONDS * sr)) <= 2
    ref = resample(make_tone(), SRC_SR, sr)[: wav.shape[0]]
    corr = np.corrcoef(ref, wav[: ref.shape[0]])[0, 1]
    assert corr > (0.999 if ext in LOSSLESS else 0.98)  # aligned: no priming offset left


@pytest.mark.parametrize("ext", FORMATS)
def test_offset_and_duration_match_a_slice_of_the_full_decode(encoded, ext):
    full = load_audio(encoded[ext], MUQ_SR)
    part = load_audio(encoded[ext], MUQ_SR, offset=0.6, duration=0.5)
    assert part.shape[0] == round(0.5 * MUQ_SR)
    ref = full[round(0.6 * MUQ_SR) :][: part.shape[0]]
    # interior only: resampling a segment differs from the whole at its edges
    np.testing.assert_allclose(part[200:-200], ref[200:-200], atol=1e-3)


@pytest.mark.parametrize("ext", FORMATS)
def test_audio_duration_from_metadata(encoded, ext):
    assert audio_duration(encoded[ext]) == pytest.approx(SECONDS, abs=0.01)


@pytest.mark.parametrize("ext", FORMATS)
def test_header_seconds_estimates_every_format(encoded, ext):
    assert header_seconds(encoded[ext]) == pytest.approx(SECONDS, abs=0.05)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("ext", ["wav", "mp3", "m4a"])
def test_header_seconds_of_what_is_not_audio_is_a_number_not_an_error(tmp_path, ext):
    garbage = tmp_path / f"garbage.{ext}"
    garbage.write_bytes(np.random.default_rng(0).bytes(200_000))
    text = tmp_path / f"notes.{ext}"
    text.write_text("this is not audio\n" * 100)
    for path in (garbage, text, tmp_path / f"missing.{ext}", tmp_path):
        seconds = header_seconds(path)
        assert isinstance(seconds, float) and seconds >= 0.0, path
    assert header_seconds(text) == 0.0 and header_seconds(tmp_path / "missing.wav") == 0.0


def test_stereo_is_mixed_to_mono(tmp_path):
    left, right = make_tone(), np.zeros(int(SECONDS * SRC_SR), np.float32)
    path = tmp_path / "stereo.wav"
    sf.write(path, np.stack([left, right], axis=1), SRC_SR, subtype="FLOAT")
    wav = load_audio(path, SRC_SR)
    np.testing.assert_allclose(wav, left / 2, atol=1e-6)


def test_duration_past_the_end_returns_the_rest(encoded):
    wav = load_audio(encoded["wav"], MUQ_SR, offset=1.5, duration=10.0)
    assert abs(wav.shape[0] - round(0.2 * MUQ_SR)) <= 2


def test_offset_past_the_end_is_empty(encoded):
    with pytest.raises(AudioEmptyError, match="offset"):
        load_audio(encoded["m4a"], MUQ_SR, offset=5.0)


def test_missing_file(tmp_path):
    path = tmp_path / "nope.wav"
    with pytest.raises(AudioMissingError) as info:
        load_audio(path, MUQ_SR)
    assert str(path) in str(info.value) and "does not exist" in str(info.value)
    assert info.value.path == str(path)


def test_directory_is_not_audio(tmp_path):
    with pytest.raises(AudioDecodeError, match="not a regular file"):
        load_audio(tmp_path, MUQ_SR)


@pytest.mark.parametrize("ext", ["wav", "m4a"])
def test_zero_length_file(tmp_path, ext):
    path = tmp_path / f"empty.{ext}"
    path.write_bytes(b"")
    with pytest.raises(AudioEmptyError, match="zero-length"):
        load_audio(path, MUQ_SR)
    with pytest.raises(AudioEmptyError):
        audio_duration(path)


@pytest.mark.timeout(10)
@pytest.mark.parametrize("ext", FORMATS)
def test_garbage_bytes_fail_fast(tmp_path, ext):
    path = tmp_path / f"garbage.{ext}"
    path.write_bytes(np.random.default_rng(0).bytes(200_000))
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path, MUQ_SR)
    assert str(path) in str(info.value)
    with pytest.raises(AudioDecodeError):  # no made-up duration either
        audio_duration(path)


@pytest.mark.timeout(10)
def test_text_file_named_m4a(tmp_path):
    path = tmp_path / "notes.m4a"
    path.write_text("this is not audio\n" * 100)
    with pytest.raises(AudioDecodeError):
        load_audio(path, MUQ_SR)


def cut(path, tmp_path, keep: float = 0.5):
    """A copy of `path` with only its first `keep` share of bytes, as an interrupted copy."""
    data = path.read_bytes()
    out = tmp_path / f"cut{path.suffix}"
    out.write_bytes(data[: int(len(data) * keep)])
    return out


@pytest.mark.timeout(10)
@pytest.mark.parametrize("ext", ["flac", "m4a", "wav", "mp3"])
def test_truncated_file_is_corrupt(encoded, tmp_path, ext):
    path = cut(encoded[ext], tmp_path)
    with pytest.raises(AudioDecodeError) as info:
        load_audio(path, MUQ_SR)
    assert str(path) in str(info.value)
    if ext != "m4a":  # a cut mp4 loses its index: FFmpeg cannot open it at all
        assert "truncated" in str(info.value)


def test_truncated_wav_is_caught_whatever_window_is_read(encoded, tmp_path):
    """A wav header declares its length: a cut file fails even where its samples survive."""
    path = cut(encoded["wav"], tmp_path, keep=0.9)
    with pytest.raises(AudioDecodeError, match="truncated"):
        load_audio(path, MUQ_SR, duration=0.5)
    with pytest.raises(AudioDecodeError, match="truncated"):
        audio_duration(path)


def encode_vbr_mp3(path, wav: np.ndarray, sr: int):
    """An mp3 in LAME's VBR mode (save_audio writes constant bit rate)."""
    with av.open(str(path), "w", format="mp3") as container:
        stream = container.add_stream("libmp3lame", rate=sr)
        stream.layout = "mono"
        stream.codec_context.flags |= av.codec.context.Flags.qscale
        stream.codec_context.qscale = 4
        frame = av.AudioFrame.from_ndarray(wav[None], format="flt", layout="mono")
        frame.sample_rate, frame.pts = sr, 0
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


@pytest.mark.timeout(10)
def test_vbr_mp3_loads_whole_and_fails_cut(tmp_path):
    """Its Xing header counts the frames, so a cut VBR file is caught too; a whole one loads."""
    path = encode_vbr_mp3(tmp_path / "vbr.mp3", make_tone(), SRC_SR)
    assert b"Xing" in path.read_bytes()[:2000]  # VBR (a CBR file says "Info")
    assert abs(load_audio(path, MUQ_SR).shape[0] - SECONDS * MUQ_SR) <= 2
    assert audio_duration(path) == pytest.approx(SECONDS, abs=1e-3)
    with pytest.raises(AudioDecodeError, match="truncated"):
        load_audio(cut(path, tmp_path), MUQ_SR)


@pytest.mark.timeout(10)
def test_truncated_mp3_without_a_frame_count_decodes_what_is_there(encoded, tmp_path):
    # without a Xing/Info/VBRI header an mp3 declares no length (its duration is a bitrate
    # estimate from the file size), so a cut one yields its surviving frames
    data = encoded["mp3"].read_bytes()
    path = tmp_path / "cut.mp3"
    path.write_bytes(data[: len(data) // 2].replace(b"Info", b"\0\0\0\0", 1))
    wav = load_audio(path, MUQ_SR)
    assert 0.3 * SECONDS * MUQ_SR < wav.shape[0] < 0.7 * SECONDS * MUQ_SR


def test_symlink_loop_is_reported_as_a_loop(tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    a.symlink_to(b)
    b.symlink_to(a)
    for read in (lambda p: load_audio(p, MUQ_SR), audio_duration):
        with pytest.raises(AudioDecodeError, match="symlink loop") as info:
            read(a)
        assert info.value.path == str(a)


def test_dangling_symlink_names_its_target(tmp_path):
    link = tmp_path / "clip.wav"
    link.symlink_to(tmp_path / "gone.wav")
    with pytest.raises(AudioMissingError, match="gone.wav"):
        load_audio(link, MUQ_SR)


def test_silent_audio_is_scored_with_a_warning_naming_the_file(tmp_path, caplog):
    path = save_audio(tmp_path / "quiet.wav", np.zeros(MUQ_SR, np.float32), MUQ_SR)
    with caplog.at_level("WARNING", logger="audiobase.audio"):
        load_audio(path, MUQ_SR)
        load_audio(path, MUQ_SR)
    warned = [r.getMessage() for r in caplog.records if "silent" in r.getMessage()]
    assert len(warned) == 1 and str(path) in warned[0]  # once per file, not per read
    caplog.clear()
    with caplog.at_level("WARNING", logger="audiobase.audio"):
        load_audio(save_audio(tmp_path / "tone.wav", make_tone(), SRC_SR), MUQ_SR)
    assert not caplog.records


def test_silence_is_rejected_only_on_request(tmp_path):
    path = save_audio(tmp_path / "silent.flac", np.zeros(MUQ_SR, np.float32), MUQ_SR)
    assert load_audio(path, MUQ_SR).shape == (MUQ_SR,)
    with pytest.raises(AudioSilentError, match="silent"):
        load_audio(path, MUQ_SR, reject_silent=True)


def test_too_short_for_muq(tmp_path):
    path = save_audio(tmp_path / "short.wav", make_tone(1024 / MUQ_SR, MUQ_SR), MUQ_SR)
    with pytest.raises(AudioTooShortError, match="1025"):
        load_audio(path, MUQ_SR, min_samples=MUQ_MIN_SAMPLES)
    ok = save_audio(tmp_path / "ok.wav", make_tone(1025 / MUQ_SR, MUQ_SR), MUQ_SR)
    assert load_audio(ok, MUQ_SR, min_samples=MUQ_MIN_SAMPLES).shape == (1025,)


def test_errors_pickle_for_dataloader_workers():
    err = pickle.loads(pickle.dumps(AudioDecodeError("/x/a.mp3", "corrupt")))
    assert isinstance(err, AudioError) and err.path == "/x/a.mp3" and err.reason == "corrupt"
    assert str(err) == "/x/a.mp3: corrupt"


def test_same_input_gives_same_samples(tmp_path):
    wav = make_tone()
    for ext in ("mp3", "m4a"):
        a = load_audio(save_audio(tmp_path / f"a.{ext}", wav, SRC_SR), MUQ_SR)
        b = load_audio(save_audio(tmp_path / f"b.{ext}", wav, SRC_SR), MUQ_SR)
        np.testing.assert_array_equal(a, b)


def test_save_is_atomic(tmp_path):
    save_audio(tmp_path / "x.m4a", make_tone(), SRC_SR)
    assert sorted(os.listdir(tmp_path)) == ["x.m4a"]


def test_resample_keeps_type_and_is_band_limited():
    sr_in, sr_out = 48_000, 16_000
    t = np.arange(sr_in) / sr_in
    above_nyquist = np.sin(2 * np.pi * 10_000 * t).astype(np.float32)  # aliases if not filtered
    out = resample(above_nyquist, sr_in, sr_out)
    assert isinstance(out, np.ndarray) and out.shape == (sr_out,)
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) < 0.01
    out_t = resample(torch.from_numpy(above_nyquist)[None], sr_in, sr_out)  # [1, T]
    assert isinstance(out_t, torch.Tensor) and out_t.shape == (1, sr_out)
    assert out_t[0, 1000:-1000].pow(2).mean().sqrt() < 0.02
    stereo = np.stack([above_nyquist, above_nyquist])  # [C, T]
    assert resample(stereo, sr_in, sr_out).shape == (2, sr_out)


def test_resample_keeps_an_in_band_tone():
    sr_in, sr_out = 44_100, 24_000
    tone = make_tone(1.0, sr_in)
    out = resample(tone, sr_in, sr_out)
    ref = make_tone(1.0, sr_out)
    np.testing.assert_allclose(out[500:-500], ref[500:-500], atol=0.01)


@pytest.mark.parametrize("seconds", [3.0, 0.2])
def test_loudness_normalize_hits_target(seconds):
    wav = 0.01 * make_tone(seconds, MUQ_SR)
    out = loudness_normalize(wav, MUQ_SR, target_lufs=-12.0)
    probe = np.tile(out, int(np.ceil(0.5 / seconds)))  # BS.1770 needs >= 400 ms to measure
    measured = pyloudnorm.Meter(MUQ_SR).integrated_loudness(probe.astype(np.float64))
    assert measured == pytest.approx(-12.0, abs=0.3)
    assert out.dtype == np.float32 and out.shape == wav.shape


def test_loudness_normalize_leaves_silence_alone():
    silent = np.zeros(MUQ_SR, np.float32)
    out = loudness_normalize(silent, MUQ_SR)
    assert np.all(np.isfinite(out)) and not np.any(out)


@pytest.mark.parametrize(
    "kw",
    [
        dict(sr=0),
        dict(sr=MUQ_SR, offset=-1.0),
        dict(sr=MUQ_SR, duration=0.0),
        dict(sr=MUQ_SR, max_seconds=0.0),
    ],
)
def test_bad_arguments(encoded, kw):
    with pytest.raises(ValueError):
        load_audio(encoded["wav"], **kw)


def test_shared_tone_files_fixture(tone_files):
    assert set(tone_files) == {"wav", "flac", "mp3", "m4a", "ogg"}
    for path in tone_files.values():
        assert load_audio(path, CAMPP_SR).shape[0] == pytest.approx(2 * CAMPP_SR, abs=2)


def write_stereo_pyav(path, left: np.ndarray, right: np.ndarray, sr: int, codec: str, fmt: str):
    """Stereo file through FFmpeg (the shape of real user uploads: 44.1 kHz stereo m4a)."""
    import av

    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=sr)
        stream.layout = "stereo"
        data = np.stack([left, right]).astype(np.float32)  # [2, T] planar
        for i in range(0, data.shape[1], 4096):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(data[:, i : i + 4096]), format="fltp", layout="stereo"
            )
            frame.sample_rate, frame.pts = sr, i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.mark.parametrize("codec, fmt, ext", [("aac", "ipod", "m4a"), ("pcm_s16le", "wav", "wav")])
def test_stereo_through_ffmpeg_is_mixed_to_mono(tmp_path, codec, fmt, ext):
    from audiobase import audio

    left = make_tone()
    path = tmp_path / f"stereo.{ext}"
    write_stereo_pyav(path, left, np.zeros_like(left), SRC_SR, codec, fmt)
    wav, rate = audio._decode_pyav(path, 0.0, None)  # the FFmpeg path, even for wav
    assert rate == SRC_SR and abs(wav.shape[0] - left.shape[0]) <= 2
    gain = np.dot(wav[: left.shape[0]], left) / np.dot(left, left)
    assert gain == pytest.approx(0.5, abs=0.02)  # mean of the channels


@pytest.mark.parametrize(
    "subtype, channels", [("PCM_16", 1), ("PCM_16", 2), ("PCM_32", 2), ("FLOAT", 2), ("PCM_U8", 1)]
)
def test_ffmpeg_path_equals_soundfile_sample_for_sample(tmp_path, subtype, channels):
    """PyAV's frames are converted and mixed once per clip (not per frame): the samples equal
    libsndfile's, exactly, for planar and packed, integer and float formats."""
    from audiobase import audio

    rng = np.random.default_rng(channels)
    data = np.clip(rng.normal(0, 0.3, (3 * SRC_SR + 123, channels)), -1, 0.999).astype(np.float32)
    path = tmp_path / f"{subtype}_{channels}.wav"
    sf.write(path, data, SRC_SR, subtype=subtype)
    ours, rate = audio._decode_pyav(path, 0.0, None)
    ref, ref_rate = audio._decode_soundfile(path, 0.0, None)
    assert rate == ref_rate == SRC_SR and ours.dtype == np.float32
    np.testing.assert_array_equal(ours, ref)
    part, _ = audio._decode_pyav(path, 1.0, 0.5)  # a window: the same samples
    np.testing.assert_array_equal(part, ref[SRC_SR : SRC_SR + SRC_SR // 2])


@pytest.mark.parametrize("ext", ["mp3", "ogg", "m4a"])
def test_planar_frames_read_from_their_buffers_equal_pyavs_arrays(encoded, ext):
    """Mono planar float frames (MP3, Vorbis, AAC) are read straight from the frame buffer:
    the same samples as PyAV's own `to_ndarray`, frame by frame."""
    from audiobase import audio

    if ext not in encoded:
        pytest.skip(f"no {ext} encoder")
    with av.open(str(encoded[ext])) as container:
        frames = [f.to_ndarray()[0] for f in container.decode(audio=0)]
    ours, _ = audio._decode_pyav(Path(encoded[ext]), 0.0, None)
    ref = np.concatenate(frames).astype(np.float32)
    np.testing.assert_array_equal(ours[: ref.shape[0]], ref[: ours.shape[0]])
    assert abs(ours.shape[0] - ref.shape[0]) <= 2 * 1152  # only encoder padding may differ


def decoded_peak_bytes(read) -> int:
    """The most memory Python-visible allocations (numpy arrays included) held during `read()`."""
    tracemalloc.start()
    try:
        read()
    except AudioTooLongError:
        pass
    finally:
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return peak


def test_a_declared_length_past_max_seconds_is_refused_whatever_window_is_read(tmp_path):
    path = write_silent_flac(tmp_path / "long.flac", 120)
    for window in (dict(), dict(duration=1.0), dict(offset=100.0, duration=1.0)):
        with pytest.raises(AudioTooLongError, match="max_seconds=60 s") as info:
            load_audio(path, CAMPP_SR, max_seconds=60, **window)
        assert info.value.path == str(path) and "declares 120.0 s" in info.value.reason
    assert load_audio(path, 8000, max_seconds=120).shape == (120 * 8000,)
    assert load_audio(path, 8000, max_seconds=None).shape == (120 * 8000,)


def test_an_undeclared_length_is_counted_and_decoding_stops_at_max_seconds(tmp_path):
    path = write_silent_flac(tmp_path / "hidden.flac", 600, declare_length=False)
    whole = 600 * 8000 * 2  # what the decoder must hold to read it all, as 16-bit samples
    with pytest.raises(AudioTooLongError, match=r"max_seconds=5 s \(decoding passed"):
        load_audio(path, 8000, max_seconds=5)
    peak = decoded_peak_bytes(lambda: load_audio(path, 8000, max_seconds=5))
    assert peak < whole / 20, f"{peak} bytes held refusing a 5 s limit ({whole} for the file)"


def test_audio_duration_counts_a_flac_that_hides_its_length(tmp_path):
    path = write_silent_flac(tmp_path / "hidden.flac", 3, declare_length=False)
    assert audio_duration(path) == pytest.approx(3.0)  # not libsndfile's "unknown" count
    with pytest.raises(AudioTooLongError):
        audio_duration(path, max_seconds=1)


def test_read_wav_bytes_round_trips_a_wav():
    buf = io.BytesIO()
    tone = make_tone(0.5, CAMPP_SR)
    sf.write(buf, np.stack([tone, tone], axis=1), CAMPP_SR, format="WAV", subtype="FLOAT")
    wav, rate = read_wav_bytes(buf.getvalue())
    assert rate == CAMPP_SR and np.array_equal(wav, tone)


def test_read_wav_bytes_refuses_other_formats(tmp_path):
    flac = write_silent_flac(tmp_path / "bomb.flac", 60).read_bytes()
    with pytest.raises(AudioDecodeError, match=r"req: not a WAV file \(libsndfile reads FLAC\)"):
        read_wav_bytes(flac, "req")


def test_read_wav_bytes_refuses_a_long_or_truncated_wav():
    buf = io.BytesIO()
    sf.write(buf, np.zeros(8000 * 3, np.float32), 8000, format="WAV", subtype="PCM_16")
    data = buf.getvalue()
    with pytest.raises(AudioTooLongError, match="max_seconds=2 s"):
        read_wav_bytes(data, max_seconds=2)
    with pytest.raises(AudioDecodeError, match="truncated"):
        read_wav_bytes(data[: len(data) // 2])


def test_max_seconds_is_a_route_limit_outside_the_contract(tmp_path):
    pre = Preprocess(sr=8000, max_seconds=2.0)
    assert "max_seconds" not in pre.to_dict() and pre == Preprocess(sr=8000)
    assert Preprocess.from_dict({"sr": 8000, "max_seconds": 2.0}).max_seconds == 2.0
    with pytest.raises(AudioTooLongError, match="max_seconds=2 s"):
        pre.load(write_silent_flac(tmp_path / "long.flac", 3))
    with pytest.raises(AudioTooLongError, match="<waveform>: longer"):
        pre.apply(np.zeros(3 * 8000, np.float32))
    with pytest.raises(ValueError, match="max_seconds"):
        Preprocess(sr=8000, max_seconds=0)


def test_walk_files_returns_links_that_lead_nowhere(tmp_path):
    (tmp_path / "sub").mkdir()
    save_audio(tmp_path / "sub" / "ok.wav", make_tone(0.1), SRC_SR)
    (tmp_path / "gone.wav").symlink_to(tmp_path / "missing.wav")
    (tmp_path / "x.flac").symlink_to(tmp_path / "y.flac")
    (tmp_path / "y.flac").symlink_to(tmp_path / "x.flac")
    (tmp_path / "notes.txt").symlink_to(tmp_path / "nothing")  # not audio by name
    files, broken = walk_files(tmp_path, {".wav", ".flac"})
    assert files == [tmp_path / "sub" / "ok.wav"]
    assert broken == [tmp_path / "gone.wav", tmp_path / "x.flac", tmp_path / "y.flac"]
