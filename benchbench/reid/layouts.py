"""The on-disk conventions of the ReID layouts benchbench reads (docs/data.md).

Torch-free, so the task's params and the synthetic generator can name layouts without
importing torchreid; ``benchbench.reid.data`` parses them through torchreid.
"""
from __future__ import annotations

from typing import Literal, get_args

Layout = Literal["market1501", "dukemtmcreid", "msmt17"]
LAYOUTS: tuple[str, ...] = get_args(Layout)
#: split folders of Market-1501 and DukeMTMC-reID: train, query, gallery
SPLIT_DIRS = ("bounding_box_train", "query", "bounding_box_test")
#: MSMT17's list files (lines ``<path> <id>``): train, query, gallery
MSMT_LISTS = ("list_train.txt", "list_query.txt", "list_gallery.txt")
#: cameras a layout's file names can hold (1-based in the names)
CAMERAS = {"market1501": 6, "dukemtmcreid": 8, "msmt17": 15}
#: the data set's short name, for board names of generated worlds (``synthetic-duke``)
SHORT = {"market1501": "market", "dukemtmcreid": "duke", "msmt17": "msmt17"}
