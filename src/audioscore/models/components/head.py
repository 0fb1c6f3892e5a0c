"""The scorer's head is SongEval's (`audiobase.songeval_head`, shared with the SongEval reward).

Exports written before the head moved name `audioscore.models.components.head.SongEvalHead` in
their `config.yaml`; this name keeps them loadable.
"""

from audiobase.songeval_head import SongEvalHead

__all__ = ["SongEvalHead"]
