"""Read a few entries of a TBranch that has many baskets, at a cost set by the entries read.

uproot's ``TBranch.array`` walks every basket boundary of the branch on each call
(``entry_offsets`` as a Python list, then a loop over it to find the baskets of
the range, then the same list again in ``final_array``): a read of the last ten
entries of a branch with 50,000 baskets costs ~10 ms. A DAQ that appends a small
basket at a time makes exactly such branches. :func:`window` gives a stand-in of
the branch that holds only the baskets of the range, renumbered from its first
one, so that uproot's own reading does the rest, over those baskets only.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np
import uproot

#: a branch with fewer baskets than this is read whole (the walk costs less than building a window)
MIN_BASKETS = 64


def window(branch: Any, start: int, stop: int) -> tuple[Any, int]:
    """``(stand-in, first)``: read entries ``[start, stop)`` of ``branch`` as entries
    ``[start - first, stop - first)`` of the stand-in. The branch itself and 0 when it
    has few baskets, or baskets that are not free ones (embedded in its metadata)."""
    n = getattr(branch, "_num_normal_baskets", 0)
    if (n < MIN_BASKETS or branch._embedded_baskets != []  # None: not looked at yet; a list: some
            or isinstance(branch.interpretation, uproot.interpretation.grouped.AsGrouped)):
        return branch, 0
    entry = branch.member("fBasketEntry")
    if int(entry[n]) != branch.num_entries:
        return branch, 0
    # basket i holds entries [entry[i], entry[i + 1]) (uproot's basket_entry_start_stop)
    lo = max(0, int(np.searchsorted(entry[: n + 1], start, side="right")) - 1)
    hi = min(n, max(lo + 1, int(np.searchsorted(entry[: n + 1], stop, side="left"))))
    if hi - lo > n // 2:
        return branch, 0
    first = int(entry[lo])
    branch.cache_key  # noqa: B018  computed (and kept) by the branch itself: it looks the branch up among its parent's
    view = copy.copy(branch)  # shares the interpretation, file and parents; its own members below
    members = dict(branch._members)
    members["fBasketEntry"] = entry[lo : hi + 1] - first
    members["fBasketSeek"] = branch.member("fBasketSeek")[lo:hi]
    members["fBasketBytes"] = branch.member("fBasketBytes")[lo:hi]
    members["fWriteBasket"] = hi - lo
    members["fEntries"] = members["fEntryNumber"] = int(entry[hi]) - first
    view._members = members
    view._num_normal_baskets = hi - lo
    view._embedded_baskets = []
    return view, first
