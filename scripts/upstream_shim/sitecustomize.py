"""Stand-in for torchaudio.load where torchaudio has no decoding backend: PyAV decodes."""

import av
import numpy as np
import torch
import torchaudio


def _load(uri, frame_offset=0, num_frames=-1, normalize=True, channels_first=True, *a, **k):
    with av.open(str(uri)) as c:
        st = c.streams.audio[0]
        sr = st.codec_context.sample_rate
        res = av.AudioResampler(format="fltp", layout=st.codec_context.layout, rate=sr)
        chunks = []
        for fr in c.decode(st):
            chunks += [o.to_ndarray() for o in res.resample(fr)]
        chunks += [o.to_ndarray() for o in res.resample(None)]
    x = torch.from_numpy(np.concatenate(chunks, axis=1).astype(np.float32))
    if frame_offset or num_frames >= 0:
        x = x[:, frame_offset : None if num_frames < 0 else frame_offset + num_frames]
    return (x if channels_first else x.T), sr


torchaudio.load = _load
