"""Audio I/O: decode any common format to mono float32 at a requested rate, with typed errors.

wav/flac go through soundfile (fast, exact seeking); everything else (mp3, ogg, m4a/AAC, or a
wav/flac soundfile rejects) through PyAV, which bundles FFmpeg. Both paths decode at the file's
native rate, mix to mono by averaging channels, then resample with soxr, so the same audio gives
the same samples whichever decoder read it.

AAC priming: FFmpeg's mp4 demuxer applies the edit list, so the encoder delay is already
dropped; the trailing padding is not, so we stop at the stream's declared duration.

Truncated files (an interrupted copy or download) are errors naming the file and "truncated":
a wav whose data chunk declares more bytes than the file holds, whatever window is read; a
flac, m4a/AAC or mp3 whose decoding stops short of the length its container declares (an mp3
declares one only in a Xing/Info/VBRI header, which LAME and FFmpeg write; without one its
duration is a bitrate estimate and a cut file yields its surviving frames). All-silent audio
is decoded (a logged warning names the file, once per process) unless the caller rejects it.

Decompression bombs (a few hundred kB of FLAC, Vorbis or MP3 silence can hold hours of audio):
a file longer than `max_seconds` (default `DEFAULT_MAX_SECONDS`, 15 min) is refused with
`AudioTooLongError`, whatever window is read. The length the header declares is checked before
anything is decoded, and the samples decoded are counted against the limit as they come (a
header may lie or declare nothing), so no more than `max_seconds` of audio is ever held.
"""

from __future__ import annotations

import errno
import io
import logging
import os
import stat
import struct
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import av
import numpy as np
import soundfile as sf
import soxr

from audiobase.files import atomic_path

if TYPE_CHECKING:  # torch is imported only when a tensor is resampled
    import torch

log = logging.getLogger(__name__)

MUQ_SR = 24_000
CAMPP_SR = 16_000
MUQ_MIN_SAMPLES = 1025  # MuQ's reflect padding fails at 1024 samples or fewer (24 kHz)

DEFAULT_MAX_SECONDS = 900.0  # longer files are refused: a song fits, a decompression bomb does not
SILENCE_PEAK = 1e-4  # below -80 dBFS peak counts as silent
_SOUNDFILE_EXTS = {".wav", ".flac", ".ogg"}
_MAX_DECODE_ERRORS = 8  # corrupt packets tolerated before giving up (keeps garbage from looping)
_UNKNOWN_FRAMES = 2**62  # libsndfile's frame count for a length it does not know (SF_COUNT_MAX)
_WAV_FORMATS = {"WAV", "WAVEX", "RF64"}  # what read_wav_bytes accepts (libsndfile's format names)
_TRUNCATION_SLACK_S = 0.1  # decoded this much less than the container promised -> truncated
# suffix -> (codec, container, forced rate, options); Opus only runs at 48 kHz. The fast
# settings cut encoding time 2-3x (the synthetic corpus writes hundreds of clips).
_PYAV_ENCODERS = {
    ".mp3": ("libmp3lame", "mp3", None, {"compression_level": "9"}),
    ".m4a": ("aac", "ipod", None, {"aac_coder": "fast"}),
    ".opus": ("libopus", "ogg", 48_000, {}),
}
_SEEK_PREROLL_S = 0.5  # decode from this much earlier: mp3/AAC need warm-up frames after a seek
_MPEG_AUDIO_CODECS = {"mp3", "mp3float", "mp2", "mp2float", "mp1", "mp1float"}
_SEEKABLE_CODECS = _MPEG_AUDIO_CODECS | {"aac", "aac_fixed", "alac", "flac"}
# planar FFmpeg sample formats whose plane is a plain array of this dtype
_SAMPLE_DTYPES = {
    "fltp": "float32",
    "dblp": "float64",
    "s16p": "int16",
    "s32p": "int32",
    "s64p": "int64",
    "u8p": "uint8",
}
_WARNED_SILENT: set[str] = set()  # files already warned about in this process


class AudioError(Exception):
    """Base class: `path` is the offending file, `reason` says what is wrong with it."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # keep (path, reason) across DataLoader worker processes
        return type(self), (self.path, self.reason)


class AudioMissingError(AudioError):
    """The file does not exist."""


class AudioDecodeError(AudioError):
    """The file is unreadable, corrupt, truncated or not audio."""


class AudioEmptyError(AudioError):
    """The file (or the requested span of it) holds no samples."""


class AudioSilentError(AudioError):
    """All samples are (near) zero and the caller asked to reject silence."""


class AudioTooShortError(AudioError):
    """Fewer samples than the caller's encoder needs."""


class AudioTooLongError(AudioError):
    """Longer than the caller's `max_seconds`, as the header declares or as decoding found."""


class _LengthUnknown(Exception):
    """soundfile cannot tell the length: the file is left to PyAV, which counts as it decodes."""


class _LimitPassed(Exception):
    """Decoding passed the `max_seconds` limit at sample `pos` (the caller names the file)."""

    def __init__(self, pos: int) -> None:
        self.pos = pos
        super().__init__(pos)


def too_long(path: str | Path, max_seconds: float, found: str) -> AudioTooLongError:
    """The refusal of a file longer than the limit; `found` says how that was learnt."""
    return AudioTooLongError(
        path,
        f"longer than the limit of max_seconds={max_seconds:g} s ({found}); "
        "raise max_seconds to read it",
    )


def _check_max_seconds(max_seconds: float | None) -> None:
    if max_seconds is not None and not max_seconds > 0:
        raise ValueError(f"max_seconds must be > 0 or None (no limit), got {max_seconds}")


def load_audio(
    path: str | os.PathLike,
    sr: int,
    *,
    offset: float = 0.0,
    duration: float | None = None,
    reject_silent: bool = False,
    min_samples: int = 0,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> np.ndarray:
    """Decode `path` to mono float32 at `sr`; returns [T].

    Args:
        offset: seconds to skip from the start (seeks, does not decode the skipped part).
        duration: maximum seconds to return (None = to the end).
        reject_silent: raise AudioSilentError if the peak is below -80 dBFS.
        min_samples: raise AudioTooShortError if fewer samples result (MUQ_MIN_SAMPLES for MuQ).
        max_seconds: raise AudioTooLongError if the file is longer, whatever window is read,
            before decoding more than this (None = no limit).
    """
    path = Path(path)
    _check_file(path)
    if sr <= 0 or offset < 0 or (duration is not None and duration <= 0):
        raise ValueError(
            f"need sr > 0, offset >= 0, duration > 0; got {sr=}, {offset=}, {duration=}"
        )
    _check_max_seconds(max_seconds)
    wav, native_sr = _decode(path, offset, duration, max_seconds)  # [T] at native rate
    if wav.size == 0:
        where = f" after offset {offset:g} s" if offset > 0 else ""
        raise AudioEmptyError(path, f"no audio samples{where}")
    if not np.all(np.isfinite(wav)):
        raise AudioDecodeError(path, "decoded samples contain NaN or Inf")
    wav = resample(wav, native_sr, sr)
    if duration is not None:
        wav = wav[: int(round(duration * sr))]
    if wav.size == 0:  # fewer than one sample at `sr` (a tiny clip or window, a low rate)
        raise AudioTooShortError(path, f"0 samples at {sr} Hz, shorter than one sample period")
    if float(np.max(np.abs(wav))) < SILENCE_PEAK:
        if reject_silent:
            raise AudioSilentError(path, "all samples are silent (peak below -80 dBFS)")
        if str(path) not in _WARNED_SILENT:
            _WARNED_SILENT.add(str(path))
            span = "" if offset == 0 and duration is None else " in the window read"
            log.warning(
                "%s: all samples are silent%s (peak below -80 dBFS); a score of it means nothing",
                path,
                span,
            )
    if wav.shape[0] < min_samples:
        raise AudioTooShortError(
            path, f"{wav.shape[0]} samples at {sr} Hz, the encoder needs at least {min_samples}"
        )
    return np.ascontiguousarray(wav, dtype=np.float32)


def audio_duration(
    path: str | os.PathLike, *, max_seconds: float | None = DEFAULT_MAX_SECONDS
) -> float:
    """Duration in seconds from container metadata, falling back to a full decode (which
    raises AudioTooLongError past `max_seconds`; a declared length is returned as it is)."""
    path = Path(path)
    _check_file(path)
    _check_max_seconds(max_seconds)
    _check_wav_length(path)
    if path.suffix.lower() in _SOUNDFILE_EXTS:
        seconds = _sndfile_seconds(path)
        if seconds is not None:
            return seconds

    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            stream = _audio_stream(container, path)
            seconds = _declared_seconds(container, stream)
            if seconds is not None and seconds > 0:
                return seconds
    except AudioError:
        raise
    except Exception as exc:
        raise AudioDecodeError(path, f"cannot read container: {exc}") from exc
    wav, native_sr = _decode(path, 0.0, None, max_seconds)
    return wav.shape[0] / native_sr


def header_seconds(path: str | os.PathLike) -> float:
    """A planning estimate of a file's length in seconds from its header alone, 0.0 when
    unknown: libsndfile's header read (WAV, FLAC, Ogg, MP3: about 0.1 ms), else the length the
    container declares through PyAV (about 0.35 ms for an MP3, which FFmpeg probes by decoding
    its first frames). For batching and memory estimates only: an MP3 without a frame-count
    header gets a bitrate estimate, and nothing is decoded or checked (`audio_duration` and
    `load_audio` do that)."""
    seconds = _sndfile_seconds(path)
    if seconds is not None:
        return seconds
    try:
        with av.open(str(path), metadata_errors="ignore") as container:
            if not container.streams.audio:
                return 0.0
            seconds = _declared_seconds(container, container.streams.audio[0])
    except Exception:  # unreadable: the decoder reports it, with its reason
        return 0.0
    return seconds if seconds is not None and seconds > 0 else 0.0


def _sndfile_seconds(path: str | os.PathLike) -> float | None:
    """The length libsndfile reads from the header, None when it does not know it (a format
    it does not read, an unreadable file, a streamed length)."""
    try:
        with sf.SoundFile(str(path)) as f:
            if 0 < f.frames < _UNKNOWN_FRAMES and f.samplerate > 0:
                return f.frames / f.samplerate
    except Exception:  # soundfile's errors vary; PyAV gets a try after
        pass
    return None


def resample(wav: np.ndarray | torch.Tensor, orig_sr: int, new_sr: int):
    """Band-limited resampling along the last axis; numpy in -> numpy out, tensor in -> tensor out."""
    if orig_sr == new_sr:
        return wav
    if type(wav).__module__.split(".")[0] == "torch":  # a tensor, without importing torch
        import torchaudio.functional as AF  # here on purpose: numpy-only callers skip torch

        return AF.resample(wav, orig_sr, new_sr)
    wav = np.asarray(wav)
    dtype = wav.dtype if wav.dtype in (np.float32, np.float64) else np.float32
    if wav.ndim == 1:
        return soxr.resample(wav.astype(dtype, copy=False), orig_sr, new_sr, quality="HQ")
    flat = wav.reshape(-1, wav.shape[-1]).T  # [T, C]: soxr wants channels last
    out = soxr.resample(np.ascontiguousarray(flat, dtype=dtype), orig_sr, new_sr, quality="HQ")
    return np.ascontiguousarray(out.T).reshape(*wav.shape[:-1], -1)


def loudness_normalize(wav: np.ndarray, sr: int, target_lufs: float = -12.0) -> np.ndarray:
    """Scale to `target_lufs` integrated loudness (ITU-R BS.1770). Silence is returned unchanged.

    BS.1770 needs at least one 400 ms block, so shorter clips are measured on a tiled copy
    (tiling does not change loudness). The result is not clipped: it is a model input, not a file.
    """
    # here on purpose: pyloudnorm pulls scipy.signal (~1.5 s per process) and only a contract
    # with `target_lufs` gets here; every process decoding audio would pay it otherwise
    import pyloudnorm

    wav = np.asarray(wav, dtype=np.float32)
    if wav.size == 0 or float(np.max(np.abs(wav))) < SILENCE_PEAK:
        return wav
    block = int(np.ceil(0.4 * sr)) + 1
    probe = np.tile(wav, int(np.ceil(block / wav.shape[0]))) if wav.shape[0] < block else wav
    loudness = pyloudnorm.Meter(sr).integrated_loudness(probe.astype(np.float64))
    if not np.isfinite(loudness):  # everything gated away: too quiet to measure
        return wav
    gain = 10.0 ** ((target_lufs - loudness) / 20.0)
    return (wav * gain).astype(np.float32)


def save_audio(path: str | Path, wav: np.ndarray, sr: int) -> Path:
    """Write mono float `wav` ([T]) to `path`; the format follows the suffix.

    wav/flac/ogg (Vorbis) via soundfile; mp3 (libmp3lame), m4a (AAC) and opus via PyAV.
    Written to a temporary name and renamed, so a crash never leaves a half file.
    """
    path = Path(path)
    wav = np.clip(np.asarray(wav, dtype=np.float32), -1.0, 1.0)
    ext = path.suffix.lower()
    if ext not in (".wav", ".flac", ".ogg") and ext not in _PYAV_ENCODERS:
        raise ValueError(f"{path}: cannot write format {ext!r}")
    with atomic_path(path, suffix=f".tmp{path.suffix}") as tmp:
        if ext in (".wav", ".flac", ".ogg"):
            subtype = {".wav": "PCM_16", ".flac": "PCM_16", ".ogg": "VORBIS"}[ext]
            with sf.SoundFile(str(tmp), "w", sr, 1, subtype=subtype) as f:
                for i in range(0, len(wav), sr):  # 1 s blocks: one long Vorbis write can crash
                    f.write(wav[i : i + sr])
        else:
            _encode_pyav(tmp, wav, sr, *_PYAV_ENCODERS[ext])
    return path


def _encode_pyav(path: Path, wav: np.ndarray, sr: int, codec: str, fmt: str, rate, options):

    rate = rate or sr
    if rate != sr:
        wav = resample(wav, sr, rate)
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=rate)
        assert isinstance(stream, av.AudioStream)  # an audio codec name gives an audio stream
        stream.layout = "mono"
        stream.codec_context.options = dict(options)
        step = 4096
        for i in range(0, len(wav), step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(wav[None, i : i + step]), format="flt", layout="mono"
            )
            frame.sample_rate, frame.pts = rate, i
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))  # flush the encoder's delay line


def _check_file(path: Path) -> None:
    try:
        st = path.stat()
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AudioDecodeError(
                path, "symlink loop (too many levels of symbolic links)"
            ) from exc
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):
            raise AudioDecodeError(path, f"cannot access: {exc.strerror}") from exc
        if path.is_symlink():
            raise AudioMissingError(
                path, f"broken symlink: its target {os.readlink(path)} does not exist"
            ) from exc
        raise AudioMissingError(path, "file does not exist") from exc
    if not stat.S_ISREG(st.st_mode):
        raise AudioDecodeError(path, "not a regular file")
    if st.st_size == 0:
        raise AudioEmptyError(path, "zero-length file (0 bytes)")


def _check_wav_length(path: Path) -> None:
    """A RIFF/WAVE file's data chunk declares its size: fewer bytes on disk means it was cut
    (soundfile would quietly read what is there). Streamed wavs (size 0 or 0xFFFFFFFF), RF64
    and anything that is not a RIFF/WAVE file are left to the decoders."""
    with open(path, "rb") as f:
        cut = _wav_truncation(f, path.stat().st_size)
    if cut:
        raise AudioDecodeError(path, cut)


def _wav_truncation(f: BinaryIO, size: int) -> str | None:
    """Why a RIFF/WAVE file of `size` bytes read from `f` is truncated, or None."""
    head = f.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:] != b"WAVE":
        return None
    pos, block, rate = 12, 0, 0
    while pos + 8 <= size:
        f.seek(pos)
        chunk, n = struct.unpack("<4sI", f.read(8))
        if chunk == b"fmt ":
            fmt = f.read(14)
            if len(fmt) == 14:
                _, _, rate, _, block = struct.unpack("<HHIIH", fmt)
        elif chunk == b"data":
            if n in (0, 0xFFFFFFFF) or not (block and rate):
                return None  # length unknown
            held = size - pos - 8
            if (n - held) / block / rate > _TRUNCATION_SLACK_S:
                return (
                    f"truncated: the wav header declares {n / block / rate:.2f} s, the file "
                    f"holds {held / block / rate:.2f} s"
                )
            return None
        pos += 8 + n + (n & 1)  # chunks are padded to even sizes
    return None


def read_wav_bytes(
    data: bytes, name: str = "<wav bytes>", *, max_seconds: float | None = DEFAULT_MAX_SECONDS
) -> tuple[np.ndarray, int]:
    """A WAV file's bytes (a request body, say) -> (mono float32 [T], rate).

    Only WAV is read (FLAC or Vorbis bytes would be decompression bombs); a truncated one, or
    one longer than `max_seconds`, is refused before its samples are read. Errors are
    `AudioError`s naming `name`."""
    _check_max_seconds(max_seconds)
    cut = _wav_truncation(io.BytesIO(data), len(data))
    if cut:
        raise AudioDecodeError(name, cut)
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.format not in _WAV_FORMATS:
                raise AudioDecodeError(name, f"not a WAV file (libsndfile reads {f.format})")
            rate, frames = f.samplerate, f.frames
            if max_seconds is not None and frames > max_seconds * rate:
                raise too_long(name, max_seconds, f"the header declares {frames / rate:.1f} s")
            wav = f.read(frames, dtype="float32", always_2d=True)  # [T, C]
    except AudioError:
        raise
    except Exception as exc:  # libsndfile's errors vary
        raise AudioDecodeError(name, f"not a readable WAV: {exc}") from exc
    if wav.shape[0] == 0:
        raise AudioEmptyError(name, "no audio samples")
    return np.ascontiguousarray(wav.mean(axis=1), dtype=np.float32), int(rate)


def _mpeg_declares_frames(path: Path) -> bool:
    """Whether an MPEG audio file's first frame is a Xing/Info/VBRI header with a frame count
    (LAME and FFmpeg write one): then FFmpeg's duration is exact, not a bitrate estimate."""
    with open(path, "rb") as f:
        tag = f.read(10)
        start = 0
        if len(tag) == 10 and tag[:3] == b"ID3":  # ID3v2: a syncsafe size, maybe a footer
            start = 10 + sum((b & 0x7F) << (7 * (3 - i)) for i, b in enumerate(tag[6:10]))
            start += 10 if tag[5] & 0x10 else 0
        f.seek(start)
        buf = f.read(4096)
    for i in range(len(buf) - 44):
        b1, b2, b3 = buf[i + 1], buf[i + 2], buf[i + 3]
        version, layer = (b1 >> 3) & 3, (b1 >> 1) & 3  # version 3 = MPEG-1; layer 1 = III
        if buf[i] != 0xFF or b1 & 0xE0 != 0xE0 or version == 1 or layer == 0:
            continue
        if b2 >> 4 == 15 or (b2 >> 2) & 3 == 3:  # bad bitrate or sample rate index: no frame
            continue
        if layer != 1:
            return False  # Layer I/II files carry no frame-count header
        mono = b3 >> 6 == 3
        side = (17 if mono else 32) if version == 3 else (9 if mono else 17)
        xing = buf[i + 4 + side : i + 12 + side]
        if xing[:4] in (b"Xing", b"Info"):
            return bool(int.from_bytes(xing[4:8], "big") & 1)  # flag 1: the frame count
        return buf[i + 36 : i + 40] == b"VBRI"
    return False


def _decode(
    path: Path, offset: float, duration: float | None, max_seconds: float | None
) -> tuple[np.ndarray, int]:
    """Decode [offset, offset + duration) at the native rate; returns ([T] float32, rate).
    A file longer than `max_seconds` raises AudioTooLongError."""
    sf_error = None
    _check_wav_length(path)
    if path.suffix.lower() in _SOUNDFILE_EXTS:
        try:
            return _decode_soundfile(path, offset, duration, max_seconds)
        except AudioError:
            raise
        except Exception as exc:  # fall through to FFmpeg, which reads more
            sf_error = exc
    try:
        return _decode_pyav(path, offset, duration, max_seconds)
    except AudioError:
        raise
    except Exception as exc:  # any FFmpeg failure means unreadable/corrupt
        extra = f" (soundfile: {sf_error})" if sf_error else ""
        raise AudioDecodeError(path, f"cannot decode: {exc}{extra}") from exc


def _decode_soundfile(
    path: Path,
    offset: float,
    duration: float | None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> tuple[np.ndarray, int]:
    """libsndfile reads no further than the length the header declares (a lying header gives
    less, never more), so checking that length bounds what is decoded."""
    with sf.SoundFile(str(path)) as f:
        rate, total = f.samplerate, f.frames
        if total >= _UNKNOWN_FRAMES:  # a FLAC that does not declare its length
            raise _LengthUnknown(f"{path}: length unknown")
        if max_seconds is not None and total > max_seconds * rate:
            raise too_long(path, max_seconds, f"the header declares {total / rate:.1f} s")
        start = int(round(offset * rate))
        if start >= total:
            return np.zeros(0, np.float32), rate
        f.seek(start)
        frames = total - start if duration is None else int(np.ceil(duration * rate))
        data = f.read(min(frames, total - start), dtype="float32", always_2d=True)  # [T, C]
    return data.mean(axis=1), rate


def _decode_pyav(
    path: Path,
    offset: float,
    duration: float | None,
    max_seconds: float | None = DEFAULT_MAX_SECONDS,
) -> tuple[np.ndarray, int]:

    with av.open(str(path), metadata_errors="ignore") as container:
        stream = _audio_stream(container, path)
        rate = stream.codec_context.sample_rate or stream.rate
        if not rate:
            raise AudioDecodeError(path, "audio stream has no sample rate")
        # MPEG audio durations are bitrate estimates unless a Xing/Info/VBRI header counts the
        # frames; the others' are exact (mp4, flac, ogg)
        codec = stream.codec_context.name
        exact = codec not in _MPEG_AUDIO_CODECS or _mpeg_declares_frames(path)
        declared = _declared_seconds(container, stream) if exact else None
        if max_seconds is not None and declared is not None and declared > max_seconds:
            raise too_long(path, max_seconds, f"the container declares {declared:.1f} s")
        limit = None if max_seconds is None else max_seconds * rate  # samples, counted below
        start = int(round(offset * rate))
        stop = None if duration is None else start + int(np.ceil(duration * rate))
        if declared is not None:  # AAC: drop the encoder's trailing padding
            end = int(round(declared * rate))
            stop = end if stop is None else min(stop, end)
        # Seek only where FFmpeg's timestamps proved sample-exact; Ogg's are not (they can be
        # off by the Vorbis pre-skip), so those are decoded from the start and counted.
        seek = start > 0 and stream.time_base is not None and codec in _SEEKABLE_CODECS
        if seek:
            container.seek(
                _to_pts(max(offset - _SEEK_PREROLL_S, 0.0), stream),
                stream=stream,
                backward=True,
                any_frame=False,
            )
        try:
            found = _collect_frames(container, stream, rate, start, stop, seek, limit)
            if found is None:  # no timestamps after the seek: positions unknown, decode from 0
                container.seek(0)
                found = _collect_frames(container, stream, rate, start, stop, False, limit)
        except _LimitPassed as stopped:
            assert max_seconds is not None  # only a limit is passed
            where = f"decoding passed {stopped.pos / rate:.1f} s"
            raise too_long(path, max_seconds, where) from None
        chunks, pos = found
    wav = _to_mono(chunks)
    if declared is not None and stop is not None and start < stop:
        expected = (stop - start) / rate
        if expected - wav.shape[0] / rate > max(_TRUNCATION_SLACK_S, 0.02 * expected):
            raise AudioDecodeError(
                path,
                f"truncated: container declares {declared:.2f} s, decoding stopped at {pos / rate:.2f} s",
            )
    return wav, rate


def _collect_frames(
    container,
    stream,
    rate: int,
    start: int,
    stop: int | None,
    use_pts: bool,
    limit: float | None = None,
):
    """Decode frames, keeping samples in [start, stop) by position; returns (chunks [n] for
    mono frames or [C, n], in the stream's sample format; end pos).

    Positions come from timestamps after a seek (`use_pts`), else from counting samples from
    the first frame. Returns None if `use_pts` and a frame has no timestamp. Raises
    `_LimitPassed` as soon as the position passes `limit` samples (the file is longer than the
    caller allows) while more is still wanted, so at most `limit` samples are decoded.
    Conversion to mono float32 happens once, on the whole clip (`_to_mono`): MP3 frames hold
    576-1152 samples, so the loop does as little per frame as it can (a frame inside the
    window is kept whole, one comparison; only the frames at its edges are cut).
    """

    base = stream.start_time or 0
    pos = None  # sample index of the next frame, counted when pts is missing
    chunks: list[np.ndarray] = []
    errors = 0
    packets = container.demux(stream)
    while True:
        try:
            frames = next(packets).decode()
        except StopIteration:
            break
        except av.error.FFmpegError:
            errors += 1  # skip a bad packet, but garbage must fail fast, not loop
            if errors > _MAX_DECODE_ERRORS or not chunks:
                raise
            continue
        for frame in frames:
            if use_pts:
                if frame.pts is None:
                    return None
                pos = int(round(float((frame.pts - base) * stream.time_base) * rate))
            elif pos is None:
                pos = 0
            data = _frame_samples(frame)  # [n] or [C, n]
            n = data.shape[-1]
            if start <= pos and (stop is None or pos + n <= stop):
                chunks.append(data)
            else:  # an edge of the window, or outside it
                lo = max(start - pos, 0)
                hi = n if stop is None else min(stop - pos, n)
                if hi > lo:
                    chunks.append(data[..., lo:hi])
            pos += n
        if stop is not None and pos is not None and pos >= stop:
            break
        if limit is not None and pos is not None and pos > limit:
            raise _LimitPassed(pos)
    return chunks, pos or 0


def _frame_samples(frame) -> np.ndarray:
    """One decoded frame's samples in its own sample format, no copy where possible: [n] for a
    mono planar frame (its one plane's buffer), else [C, n]."""
    fmt = frame.format
    if fmt.is_planar:
        planes = frame.planes
        if len(planes) == 1:
            dtype = _SAMPLE_DTYPES.get(fmt.name)
            if dtype is not None:
                return np.frombuffer(planes[0], dtype=dtype, count=frame.samples)
    arr = frame.to_ndarray()
    if not fmt.is_planar:  # packed: [1, n * C] interleaved
        arr = arr.reshape(-1, len(frame.layout.channels)).T
    return arr


def _to_mono(chunks: list[np.ndarray]) -> np.ndarray:
    """Frames' samples ([n_i] mono or [C, n_i]) -> mono float32 [sum n_i] (integer formats
    scaled to [-1, 1))."""
    if not chunks:
        return np.zeros(0, np.float32)
    if all(c.ndim == 1 for c in chunks):
        arr = np.concatenate(chunks)[None]  # [1, T], a new array
    else:
        arr = np.concatenate([c if c.ndim == 2 else c[None] for c in chunks], axis=1)  # [C, T]
    if arr.dtype.kind == "i":
        arr = arr.astype(np.float32) / float(np.iinfo(arr.dtype).max + 1)
    elif arr.dtype.kind == "u":  # u8 is offset binary
        arr = (arr.astype(np.float32) - 128.0) / 128.0
    arr = arr.astype(np.float32, copy=False)
    return arr[0] if arr.shape[0] == 1 else arr.mean(axis=0)  # arr is new: no copy needed


def _audio_stream(container, path: Path):
    if not container.streams.audio:
        raise AudioDecodeError(path, "no audio stream in the file")
    stream = container.streams.audio[0]
    if not (stream.codec_context.sample_rate or stream.rate):  # FFmpeg probed garbage
        raise AudioDecodeError(path, "audio stream has no sample rate")
    return stream


def _declared_seconds(container, stream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000  # av.time_base is microseconds
    return None


def _to_pts(seconds: float, stream) -> int:
    return int((stream.start_time or 0) + seconds / float(stream.time_base))
