"""The machine's state as the data plane sees it: one named tuple of arrays.

Numba compiles functions over a :class:`Machine` once; reading a field is a
static offset, so bundling the arrays costs nothing at run time and keeps
the kernels' signatures short. The arrays' layouts are in :mod:`.layout`.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np


class Machine(NamedTuple):
    """Every array of one simulated memory, its page tables, TLB and swap."""

    cfg: np.ndarray  # int64[N_CFG] configuration
    shifts: np.ndarray  # int64[levels] vpn shift of each level's index
    masks: np.ndarray  # int64[levels] index mask of each level
    st: np.ndarray  # int64[N_STATE] scalars
    pctr: np.ndarray  # int64[procs, N_PCTR] per-process counters
    fi32: np.ndarray  # int32[frames, 2 * N_FI64] frame metadata: fi64's rows, as int32
    fi64: np.ndarray  # int64[frames, N_FI64] each frame's row: back-pointers, tokens
    tables: np.ndarray  # int64[table pages, entries] the page-table pages
    table_frame: np.ndarray  # int32[table pages] frame holding each table page
    table_free: np.ndarray  # int32[table pages] freed table indices
    tlb_tags: np.ndarray  # int64[tlb levels, entries]
    tlb_vals: np.ndarray  # int64[tlb levels, entries]
    tlb_stamps: np.ndarray  # int64[tlb levels, entries] LRU stamps
    swap_token: np.ndarray  # int64[slots] contents of swap slots
    swap_owner: np.ndarray  # int32[slots] pid owning a slot, -1 when free
    swap_free: np.ndarray  # int32[slots] free slots
    swap_csize: np.ndarray  # int32[slots] bytes of a slot kept compressed, 0 on the device
    huge_free: np.ndarray  # int64[huge pages] free huge-page base frames
    proc: np.ndarray  # int64[procs, N_PROC] per-process state
    regions: np.ndarray  # int64[regions, 3] address-space regions
    lists: np.ndarray  # int64[procs + 1, N_LIST] replacement lists
    record: np.ndarray  # int32[3, cap] frames walks read, written?, a table page?
    ring: np.ndarray  # int64[cap, N_RING] evictions (owner, vpn, frame, written), when logged
    watch: np.ndarray  # int64[words] bit f % 64 of word f // 64: frame f's changes are noted
    watch_log: np.ndarray  # int64[cap] frames noted (K_COW), S_COW_N of them
    changed: np.ndarray  # int64[words] bit f % 64 of word f // 64: f changed content (K_SYNC)
    memo: np.ndarray  # int64[MEMO_SLOTS, MEMO_COLS]: walks a batch made (layout.MEMO_*)


def copy_machine(m: Machine) -> Machine:
    """A copy of every array of ``m``, in which ``fi32`` is again a view of ``fi64``'s
    memory, as in a machine built (copied one by one, the two would drift apart)."""
    arrays = {name: a.copy() for name, a in zip(Machine._fields, m, strict=True)}
    arrays["fi32"] = arrays["fi64"].view(np.int32)
    return Machine(**arrays)
