"""Data: the groups-file reader (light imports only; the DataModule lives in `datamodule.py`)."""

from audioscore.data.groups import GroupsFormatError, MissingAudioError, read_groups

__all__ = ["GroupsFormatError", "MissingAudioError", "read_groups"]
