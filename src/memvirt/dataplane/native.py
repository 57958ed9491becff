"""The per-access path of one-level mapping, compiled with numba.

:func:`run_batch` takes a batch of one process's accesses (virtual page
numbers and write flags) and, for each, looks the page up in the TLB,
walks the radix page table on a miss, takes a page fault when the page is
not present (zero-filling it on first touch, reading it back from swap
otherwise), evicts a victim chosen by the replacement policy when no frame
is free, and keeps the referenced/dirty bits and content tokens. It runs
until the batch ends or something needs the control plane (a segmentation
fault, an out-of-memory kill, more table-page or swap-slot storage) and
returns the index where it stopped and why; the control plane acts and calls
it again from there, so an access is never counted twice.

Everything here takes arrays and scalars only (see :mod:`.layout`). The
naive twin that the tests compare against lives in ``tests/reference.py``.
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.typed import Dict

from .jit import inlined, kernel, lowest_bit, prefetch2
from .layout import (
    BUS_NO_HUGE_PAGE,
    BUS_SWAP_READ,
    C_ACCESSES,
    C_CLEAN_DROPS,
    C_COMPRESSIONS,
    C_DECOMPRESSIONS,
    C_DIRTY_UPDATES,
    C_EVICTIONS,
    C_MAJOR,
    C_MINOR,
    C_READS,
    C_SWAP_READ_ERRORS,
    C_SWAP_WRITE_ERRORS,
    C_TABLE_ALLOCS,
    C_TLB1_HITS,
    C_TLB1_MISSES,
    C_TLB2_HITS,
    C_TLB2_MISSES,
    C_WALK_REFS,
    C_WALKS,
    C_WRITEBACKS,
    C_WRITES,
    C_ZERO_DROPS,
    F_FLAGS,
    F_NEXT,
    F_OWNER,
    F_PREV,
    F_RMAP,
    F_SLOT,
    FR_DIRTY,
    FR_HUGE,
    FR_PINNED,
    FR_REFERENCED,
    FR_TABLE,
    G_NEXT_USE,
    G_TOKEN,
    G_VPN,
    K_COMPRESS,
    K_COW,
    K_FLUSH_ON_SWITCH,
    K_HAS_HUGE,
    K_HUGE_SHIFT,
    K_LEVELS,
    K_LOCAL,
    K_NO_PATH_MEMO,
    K_POLICY,
    K_RECORD,
    K_RING,
    K_SWAP_READ_FAIL,
    K_SWAP_SLOTS,
    K_SWAP_WRITE_FAIL,
    K_SYNC,
    K_TLB1_SETS,
    K_TLB1_WAYS,
    K_TLB2_SETS,
    K_TLB2_WAYS,
    K_TLB_LEVELS,
    L_HEAD,
    L_SIZE,
    L_TAIL,
    MEMO_FRAME,
    MEMO_LEAF,
    MEMO_PAGE,
    MEMO_PATH,
    MEMO_PREFIX,
    MEMO_REFS,
    MEMO_SLOTS,
    NEVER,
    P_ALIVE,
    P_COMP_BYTES,
    P_COMP_CAP,
    P_COMP_MIN,
    P_COMP_THRESHOLD,
    P_COMP_ZERO,
    P_COMPRESSED,
    P_QUOTA,
    P_REG_COUNT,
    P_REG_START,
    P_RESIDENT,
    P_ROOT,
    P_SWAPPED,
    P_TABLES,
    POLICY_CLOCK,
    POLICY_LRU,
    POLICY_OPT,
    POLICY_RANDOM,
    POLICY_RANDOM_FRAME,
    PTE_ACCESSED,
    PTE_DIRTY,
    PTE_HUGE,
    PTE_PRESENT,
    PTE_SHIFT,
    PTE_SWAPPED,
    PTE_USER,
    PTE_WRITABLE,
    R_END,
    R_FLAGS,
    R_START,
    REC_PAGE,
    REC_TABLE,
    REC_WRITE,
    REG_HUGE,
    REG_WRITABLE,
    RING_FRAME,
    RING_OWNER,
    RING_VPN,
    RING_WRITTEN,
    RMAP_SHIFT,
    S_COW_N,
    S_FAULT_KIND,
    S_FAULT_RNG,
    S_FAULT_VPN,
    S_FREE_HEAD,
    S_FREE_TOP,
    S_HUGE_TOP,
    S_LAST_ASID,
    S_REC_N,
    S_RING_N,
    S_RNG,
    S_SWAP_NEXT,
    S_SWAP_TOP,
    S_TABLE_FREE_TOP,
    S_TABLE_NEXT,
    S_TLB_CLOCK,
    S_TLB_FLUSHES,
    S_TOKEN,
    SEGV_NO_REGION,
    SEGV_READ_ONLY,
    STOP_DONE,
    STOP_NEED_RING,
    STOP_NEED_SLOTS,
    STOP_NEED_TABLES,
    STOP_OOM,
    STOP_RECORD_FULL,
    STOP_SEGFAULT,
    STOP_SIGBUS,
    TLB_ASID_SHIFT,
    TLB_HUGE_TAG,
    TV_DIRTY,
    TV_HUGE,
    TV_SHIFT,
    TV_WRITABLE,
)
from .state import Machine

#: ESX keeps a compressed page only if it fits in half a page (memvirt.workloads.contents).
COMPRESSION_LIMIT = 2048
PAGE_BYTES = 4096
GOLDEN = 0x9E3779B97F4A7C15
SALT_SIZE = 0x452821E638D01377

# ---------------------------------------------------------------------------
# random numbers: one seeded xorshift64* stream per run, held in st[S_RNG]


@inlined
def xorshift_next(st: np.ndarray, at: int) -> int:
    """Advance the xorshift64* generator whose state is ``st[at]``; 63 random bits."""
    x = np.uint64(st[at])
    x ^= x >> np.uint64(12)
    x ^= x << np.uint64(25)
    x ^= x >> np.uint64(27)
    st[at] = np.int64(x)
    return np.int64((x * np.uint64(2685821657736338717)) >> np.uint64(1))


@kernel
def rng_next(st: np.ndarray) -> int:
    """Advance the run's xorshift64* generator and return 63 random bits."""
    return xorshift_next(st, S_RNG)


@kernel
def swap_fails(st: np.ndarray, threshold: int) -> bool:
    """True when an injected swap error strikes: 63 bits of the fault stream (its own
    xorshift64* state, ``st[S_FAULT_RNG]``, so that the policies' draws do not move) fall
    below ``threshold``. Draws nothing when ``threshold`` is 0."""
    if threshold <= 0:
        return False
    return xorshift_next(st, S_FAULT_RNG) < threshold


# ---------------------------------------------------------------------------
# replacement lists: doubly linked through fi32[:, F_PREV], fi32[:, F_NEXT]


@inlined
def list_append(lists: np.ndarray, fi32: np.ndarray, lid: int, f: int) -> None:
    """Put frame ``f`` at the tail (most recent end) of list ``lid``."""
    tail = lists[lid, L_TAIL]
    fi32[f, F_PREV] = tail
    fi32[f, F_NEXT] = -1
    if tail >= 0:
        fi32[tail, F_NEXT] = f
    else:
        lists[lid, L_HEAD] = f
    lists[lid, L_TAIL] = f
    lists[lid, L_SIZE] += 1


@inlined
def list_remove(lists: np.ndarray, fi32: np.ndarray, lid: int, f: int) -> None:
    """Unlink frame ``f`` from list ``lid``."""
    p = fi32[f, F_PREV]
    n = fi32[f, F_NEXT]
    if p >= 0:
        fi32[p, F_NEXT] = n
    else:
        lists[lid, L_HEAD] = n
    if n >= 0:
        fi32[n, F_PREV] = p
    else:
        lists[lid, L_TAIL] = p
    fi32[f, F_PREV] = -1
    fi32[f, F_NEXT] = -1
    lists[lid, L_SIZE] -= 1


@kernel
def list_id(m: Machine, pid: int) -> int:
    """The replacement list of a process: 0 (global) or pid + 1 (local)."""
    if m.cfg[K_LOCAL] != 0:
        return pid + 1
    return 0


# ---------------------------------------------------------------------------
# TLB: per level, entries [set * ways + way] with a tag, a value and an LRU stamp


@kernel
def tlb_geometry(m: Machine, lvl: int) -> tuple[int, int]:
    if lvl == 0:
        return m.cfg[K_TLB1_SETS], m.cfg[K_TLB1_WAYS]
    return m.cfg[K_TLB2_SETS], m.cfg[K_TLB2_WAYS]


@inlined
def tlb_set(key: int, sets: int) -> int:
    """The set of ``key``: key mod sets (a mask when sets is a power of two, as in hardware)."""
    if (sets & (sets - 1)) == 0:
        return key & (sets - 1)
    return key % sets


@inlined
def tlb_key(pid: int, vpn: int, huge: bool, huge_shift: int) -> tuple[int, int]:
    """The (tag, set key) of a translation: base pages by vpn, huge pages by huge-page number."""
    if huge:
        key = vpn >> huge_shift
        return TLB_HUGE_TAG | (pid << TLB_ASID_SHIFT) | key, key
    return (pid << TLB_ASID_SHIFT) | vpn, vpn


@kernel  # a call: run_batch fills in the way its probe found, but after a fault or for huge pages
def tlb_fill(
    tags: np.ndarray, vals: np.ndarray, stamps: np.ndarray, st: np.ndarray,
    lvl: int, sets: int, ways: int, tag: int, key: int, val: int,
) -> None:  # fmt: skip
    """Cache ``tag -> val`` at level ``lvl`` in an invalid way or over the set's LRU way."""
    base = tlb_set(key, sets) * ways
    victim = base
    oldest = stamps[lvl, base]
    for w in range(ways):
        e = base + w
        if tags[lvl, e] == tag or tags[lvl, e] < 0:
            victim = e
            break
        if stamps[lvl, e] < oldest:
            oldest = stamps[lvl, e]
            victim = e
    st[S_TLB_CLOCK] += 1
    tags[lvl, victim] = tag
    vals[lvl, victim] = val
    stamps[lvl, victim] = st[S_TLB_CLOCK]


@inlined
def tlb_probe_victim(
    tags: np.ndarray, vals: np.ndarray, stamps: np.ndarray, st: np.ndarray,
    lvl: int, sets: int, ways: int, tag: int, key: int,
) -> tuple[int, int]:  # fmt: skip
    """:func:`tlb_probe`, which on a miss also returns the way :func:`tlb_fill` would take
    for ``tag`` in the same set (the first invalid way, else the first least recently used):
    ``(value, -1)`` on a hit, ``(-1, way)`` on a miss. The set is read once for both."""
    base = tlb_set(key, sets) * ways
    invalid = -1
    victim = base
    oldest = stamps[lvl, base]
    for w in range(ways):
        e = base + w
        t = tags[lvl, e]
        if t == tag:
            st[S_TLB_CLOCK] += 1
            stamps[lvl, e] = st[S_TLB_CLOCK]
            return vals[lvl, e], -1
        if t < 0:
            if invalid < 0:
                invalid = e
        elif stamps[lvl, e] < oldest:
            oldest = stamps[lvl, e]
            victim = e
    return -1, (invalid if invalid >= 0 else victim)


@inlined
def tlb_put(
    tags: np.ndarray, vals: np.ndarray, stamps: np.ndarray, st: np.ndarray,
    lvl: int, e: int, tag: int, val: int,
) -> None:  # fmt: skip
    """Cache ``tag -> val`` in way ``e`` of level ``lvl``, as :func:`tlb_fill` does in the
    way it picks."""
    st[S_TLB_CLOCK] += 1
    tags[lvl, e] = tag
    vals[lvl, e] = val
    stamps[lvl, e] = st[S_TLB_CLOCK]


@kernel  # a call: run_batch probes with tlb_probe_victim, this only for huge pages
def tlb_probe(
    tags: np.ndarray, vals: np.ndarray, stamps: np.ndarray, st: np.ndarray,
    lvl: int, sets: int, ways: int, tag: int, key: int,
) -> int:  # fmt: skip
    """The value cached for ``tag`` at TLB level ``lvl`` (its LRU stamp refreshed), or -1."""
    return tlb_probe_victim(tags, vals, stamps, st, lvl, sets, ways, tag, key)[0]


@kernel
def tlb_mark_dirty(m: Machine, tag: int, key: int) -> None:
    """Set the dirty flag of the cached translation ``tag`` at every level."""
    for lvl in range(m.cfg[K_TLB_LEVELS]):
        sets, ways = tlb_geometry(m, lvl)
        base = tlb_set(key, sets) * ways
        for w in range(ways):
            if m.tlb_tags[lvl, base + w] == tag:
                m.tlb_vals[lvl, base + w] |= TV_DIRTY


@kernel
def tlb_invalidate(m: Machine, pid: int, vpn: int, huge: bool) -> None:
    """Drop the cached translation of ``vpn`` in ``pid``'s address space at every level."""
    tag, key = tlb_key(pid, vpn, huge, m.cfg[K_HUGE_SHIFT])
    for lvl in range(m.cfg[K_TLB_LEVELS]):
        sets, ways = tlb_geometry(m, lvl)
        base = tlb_set(key, sets) * ways
        for w in range(ways):
            if m.tlb_tags[lvl, base + w] == tag:
                m.tlb_tags[lvl, base + w] = -1
                m.tlb_vals[lvl, base + w] = -1


@kernel
def tlb_flush_asid(m: Machine, pid: int) -> None:
    """Drop every cached translation of address space ``pid`` (``-1``: all)."""
    for lvl in range(m.tlb_tags.shape[0]):
        for e in range(m.tlb_tags.shape[1]):
            t = m.tlb_tags[lvl, e]
            if t < 0:
                continue
            if pid < 0 or ((t & ~TLB_HUGE_TAG) >> TLB_ASID_SHIFT) == pid:
                m.tlb_tags[lvl, e] = -1
                m.tlb_vals[lvl, e] = -1


# ---------------------------------------------------------------------------
# page tables


@kernel
def table_of(fi64: np.ndarray, entry: int) -> int:
    """The table index of the table page a non-leaf entry points to."""
    return fi64[entry >> PTE_SHIFT, G_VPN]


@kernel
def alloc_table(m: Machine) -> int:
    """A free table index: a freed one first, else the next never used."""
    if m.st[S_TABLE_FREE_TOP] > 0:
        m.st[S_TABLE_FREE_TOP] -= 1
        return m.table_free[m.st[S_TABLE_FREE_TOP]]
    t = m.st[S_TABLE_NEXT]
    m.st[S_TABLE_NEXT] += 1
    return t


@kernel
def table_room(m: Machine, needed: int) -> bool:
    """True when ``needed`` more table pages fit in the table pool's storage."""
    return m.st[S_TABLE_FREE_TOP] + (m.tables.shape[0] - m.st[S_TABLE_NEXT]) >= needed


@kernel
def install_table(m: Machine, pid: int, f: int) -> int:
    """Make frame ``f`` a new, empty table page of ``pid``; return its table index."""
    nt = alloc_table(m)
    m.tables[nt, :] = 0
    m.table_frame[nt] = f
    m.fi32[f, F_OWNER] = pid
    m.fi32[f, F_FLAGS] = FR_TABLE | FR_PINNED
    m.fi64[f, G_VPN] = nt
    set_token(m, f, 0)
    m.proc[pid, P_TABLES] += 1
    m.pctr[pid, C_TABLE_ALLOCS] += 1
    return nt


@kernel
def build_path(m: Machine, pid: int, vpn: int, leaf_level: int) -> tuple[int, int]:
    """Add the table pages ``vpn`` lacks down to ``leaf_level``; return its (table, index).

    Returns ``(-1, -1)`` when a frame for a table page cannot be had. The
    caller has checked that the table pool has room.
    """
    t = m.proc[pid, P_ROOT]
    for lvl in range(leaf_level):
        idx = (vpn >> m.shifts[lvl]) & m.masks[lvl]
        e = m.tables[t, idx]
        if e & PTE_PRESENT:
            t = table_of(m.fi64, e)
            continue
        f = take_frame_called(m, pid, False)
        if f < 0:
            return -1, -1
        nt = install_table(m, pid, f)
        m.tables[t, idx] = (f << PTE_SHIFT) | PTE_PRESENT | PTE_WRITABLE | PTE_USER
        t = nt
    return t, (vpn >> m.shifts[leaf_level]) & m.masks[leaf_level]


@kernel
def find_region(m: Machine, pid: int, vpn: int) -> int:
    """The row of the region of ``pid`` that holds ``vpn``, or -1."""
    r0 = m.proc[pid, P_REG_START]
    for r in range(r0, r0 + m.proc[pid, P_REG_COUNT]):
        if m.regions[r, R_START] <= vpn < m.regions[r, R_END]:
            return r
    return -1


# ---------------------------------------------------------------------------
# frames, eviction and swap


@inlined
def pick_victim(m: Machine, lid: int) -> int:
    """Choose the frame to evict from list ``lid`` by the configured policy, or -1."""
    size = m.lists[lid, L_SIZE]
    if size == 0:
        return -1
    policy = m.cfg[K_POLICY]
    if policy == POLICY_CLOCK:
        # second chance: a referenced page at the head loses its bit and goes to the tail
        while True:
            f = m.lists[lid, L_HEAD]
            if m.fi32[f, F_FLAGS] & FR_REFERENCED:
                m.fi32[f, F_FLAGS] &= ~FR_REFERENCED
                list_remove(m.lists, m.fi32, lid, f)
                list_append(m.lists, m.fi32, lid, f)
            else:
                return f
    if policy == POLICY_RANDOM_FRAME:
        # a frame drawn uniformly, again until it holds a page of this list: O(1)
        # expected when memory is full (the usual case when a victim is needed)
        nframes = m.fi32.shape[0]
        for _ in range(64 * (nframes // size + 1)):
            f = rng_next(m.st) % nframes
            q = m.fi32[f, F_OWNER]
            if (
                q >= 0
                and (m.fi32[f, F_FLAGS] & (FR_TABLE | FR_HUGE | FR_PINNED)) == 0
                and list_id(m, q) == lid
            ):
                return f
        # not found by chance (a list far smaller than memory): take the oldest
        return m.lists[lid, L_HEAD]
    if policy == POLICY_RANDOM:
        k = rng_next(m.st) % size
        f = m.lists[lid, L_HEAD]
        for _ in range(k):
            f = m.fi32[f, F_NEXT]
        return f
    if policy == POLICY_OPT:
        best = -1
        best_use = -1
        best_vpn = 0
        f = m.lists[lid, L_HEAD]
        while f >= 0:
            use = m.fi64[f, G_NEXT_USE]
            vpn = m.fi64[f, G_VPN]
            if use > best_use or (use == best_use and vpn < best_vpn):
                best = f
                best_use = use
                best_vpn = vpn
            f = m.fi32[f, F_NEXT]
        return best
    # fifo and lru: the head is the oldest loaded / least recently used
    return m.lists[lid, L_HEAD]


@inlined
def free_push(fi32: np.ndarray, st: np.ndarray, f: int) -> None:
    """Put free frame ``f`` at the head of the free list (chained through F_NEXT)."""
    fi32[f, F_NEXT] = st[S_FREE_HEAD]
    st[S_FREE_HEAD] = f
    st[S_FREE_TOP] += 1


@inlined
def free_pop(fi32: np.ndarray, st: np.ndarray) -> int:
    """Take the frame at the head of the free list (there is one: S_FREE_TOP > 0)."""
    f = st[S_FREE_HEAD]
    st[S_FREE_HEAD] = fi32[f, F_NEXT]
    fi32[f, F_NEXT] = -1
    st[S_FREE_TOP] -= 1
    return f


@kernel
def take_free_frame(m: Machine) -> int:
    """The frame :func:`take_frame` gives while frames are free (and no quota applies),
    or -1 when none is free. Spawning a process takes its root table's frame with it, so
    that a run need not compile the whole inlined ``take_frame`` as a call of its own."""
    if m.st[S_FREE_TOP] == 0:
        return -1
    return free_pop(m.fi32, m.st)


@kernel
def free_list(fi32: np.ndarray, st: np.ndarray, out: np.ndarray) -> int:
    """The free frames, head first, into ``out``; returns how many the chain holds (at
    most ``out``'s length: a chain longer than the count of free frames is cut there)."""
    n = 0
    f = st[S_FREE_HEAD]
    while f >= 0 and n < out.shape[0]:
        out[n] = f
        n += 1
        f = fi32[f, F_NEXT]
    return n


@kernel
def set_free_list(fi32: np.ndarray, st: np.ndarray, frames: np.ndarray) -> None:
    """Make ``frames`` (head first) the free list."""
    n = frames.shape[0]
    for k in range(n):
        fi32[frames[k], F_NEXT] = frames[k + 1] if k + 1 < n else -1
    st[S_FREE_HEAD] = frames[0] if n > 0 else -1
    st[S_FREE_TOP] = n


@inlined
def free_frame(m: Machine, f: int) -> None:
    """Clear frame ``f``'s metadata and put it back on the free list."""
    m.fi32[f, F_OWNER] = -1
    m.fi32[f, F_FLAGS] = 0
    m.fi32[f, F_SLOT] = -1
    m.fi32[f, F_PREV] = -1
    m.fi64[f, G_VPN] = -1
    set_token(m, f, 0)
    free_push(m.fi32, m.st, f)  # its F_NEXT links the free list now


@inlined
def take_slot(m: Machine) -> int:
    """A free swap slot: the last one given back, else the next never used (so slots are
    handed out 0, 1, 2... and reused last-in first-out); -1 when the device is full.

    The swap arrays hold only the slots handed out so far, and a few more: the control
    plane grows them ahead of any call that may take slots (:func:`slot_room`).
    """
    top = m.st[S_SWAP_TOP]
    if top > 0:
        m.st[S_SWAP_TOP] = top - 1
        return m.swap_free[top - 1]
    slot = m.st[S_SWAP_NEXT]
    if slot >= m.cfg[K_SWAP_SLOTS]:
        return -1
    if slot >= m.swap_owner.shape[0]:
        # a caller that did not make room first: writing past the arrays would corrupt memory
        raise IndexError("a swap slot beyond the swap arrays: the control plane must grow them")
    m.st[S_SWAP_NEXT] = slot + 1
    return slot


@inlined
def swap_full(m: Machine) -> bool:
    """True when no swap slot is free: none given back, and every slot of the device used."""
    return m.st[S_SWAP_TOP] == 0 and m.st[S_SWAP_NEXT] >= m.cfg[K_SWAP_SLOTS]


@inlined
def slot_room(m: Machine, needed: int) -> bool:
    """True when the swap arrays hold every slot that ``needed`` more takes could hand out:
    never-used slots from ``S_SWAP_NEXT`` on, up to the device's size (freed slots are
    below it, in the arrays already)."""
    nxt = m.st[S_SWAP_NEXT]
    slots = m.cfg[K_SWAP_SLOTS]
    return nxt >= slots or min(nxt + needed, slots) <= m.swap_owner.shape[0]


@inlined
def ring_room(m: Machine, needed: int) -> bool:
    """True unless the eviction ring must grow first (K_RING 2) for ``needed`` more
    evictions to be logged."""
    return m.cfg[K_RING] != 2 or m.st[S_RING_N] + needed <= m.ring.shape[0]


@kernel
def free_slot(m: Machine, slot: int) -> None:
    """Give swap slot ``slot`` back (and its room in a compression cache, if it had any)."""
    size = m.swap_csize[slot]
    if size > 0:
        q = m.swap_owner[slot]
        m.proc[q, P_COMPRESSED] -= 1
        m.proc[q, P_COMP_BYTES] -= size
        m.swap_csize[slot] = 0
    m.swap_owner[slot] = -1
    m.swap_free[m.st[S_SWAP_TOP]] = slot
    m.st[S_SWAP_TOP] += 1


@kernel
def mix64(x: int) -> int:
    """splitmix64's finalizer on a 64-bit pattern (as :func:`memvirt.workloads.contents._mix`)."""
    u = np.uint64(x)
    u = (u ^ (u >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    u = (u ^ (u >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    u = u ^ (u >> np.uint64(31))
    return np.int64(u)


@kernel
def compressed_bytes(proc: np.ndarray, q: int, token: int) -> int:
    """Bytes a page of process ``q`` holding ``token`` compresses to, as
    :func:`memvirt.workloads.contents.compressed_size` computes it with ``q``'s content
    model (at least 1)."""
    if token == 0:
        return max(1, proc[q, P_COMP_ZERO])
    h = mix64(np.int64(np.uint64(token) * np.uint64(GOLDEN) + np.uint64(SALT_SIZE)))  # type: ignore[arg-type]
    hu = np.uint64(h)
    lo = proc[q, P_COMP_MIN]
    if np.int64(hu >> np.uint64(11)) < proc[q, P_COMP_THRESHOLD]:
        s = np.float64(np.uint64(mix64(h)) >> np.uint64(11)) * (1.0 / 9007199254740992.0)
        return max(1, np.int64(lo + np.floor(s * (COMPRESSION_LIMIT - lo + 1))))
    s = np.float64(np.uint64(mix64(h)) >> np.uint64(11)) * (1.0 / 9007199254740992.0)
    return np.int64(COMPRESSION_LIMIT + 1 + np.floor(s * (PAGE_BYTES - COMPRESSION_LIMIT)))


#: Victims an eviction tries when swap writes fail (an injected fault) before it gives up.
WRITE_RETRIES = 16


def _evict(m: Machine, lid: int) -> bool:
    """Take one page out of memory from list ``lid``; False when none can be taken.

    A dirty page is written to a free swap slot; a clean page whose swap copy
    is current is dropped without a write; a clean page never written reads
    back as zeros and is dropped. False also when a dirty victim needs a slot
    and swap is full. When a write fails (an injected swap error), the page
    stays and the policy picks another victim, up to :data:`WRITE_RETRIES`
    times, as Linux redirties a page whose write-back failed and reclaims
    others.
    """
    for _ in range(WRITE_RETRIES):
        f = pick_victim(m, lid)
        if f < 0:
            return False
        if evict_frame(m, lid, f):
            return True
        if swap_full(m):  # no other victim would do better
            return False
    return False


def _evict_frame(m: Machine, lid: int, f: int) -> bool:
    """Take the page in frame ``f`` (on list ``lid``) out of memory, as :func:`evict` does.

    With compression on (``K_COMPRESS``), a dirty page that compresses to 2 KiB
    or less and fits in its owner's compression cache goes there instead of to
    the device: it still takes a swap slot (the slot holds the content), marked
    compressed with its size, and no write is made.

    A write to the device may fail (``K_SWAP_WRITE_FAIL``, an injected fault): the slot
    goes back, the page stays in memory, dirty, moved to the list's most recent end so
    that the next victim is another page, and False is returned.
    """
    q = m.fi32[f, F_OWNER]
    vpn = m.fi64[f, G_VPN]
    flags = m.fi32[f, F_FLAGS]
    slot = m.fi32[f, F_SLOT]
    written = 0
    if flags & FR_DIRTY:
        slot = take_slot(m)
        if slot < 0:
            return False
        m.swap_token[slot] = m.fi64[f, G_TOKEN]
        m.swap_owner[slot] = q
        size = 0
        if m.cfg[K_COMPRESS] != 0 and m.proc[q, P_COMP_CAP] > 0:
            size = compressed_bytes(m.proc, q, m.fi64[f, G_TOKEN])
            if size > COMPRESSION_LIMIT or m.proc[q, P_COMP_BYTES] + size > m.proc[q, P_COMP_CAP]:
                size = 0
        written = 1  # a copy is stored, on the device or in the compression cache
        if size == 0 and swap_fails(m.st, m.cfg[K_SWAP_WRITE_FAIL]):
            free_slot(m, slot)
            m.pctr[q, C_SWAP_WRITE_ERRORS] += 1
            list_remove(m.lists, m.fi32, lid, f)
            list_append(m.lists, m.fi32, lid, f)
            return False
        if size > 0:
            m.swap_csize[slot] = size
            m.proc[q, P_COMPRESSED] += 1
            m.proc[q, P_COMP_BYTES] += size
            m.pctr[q, C_COMPRESSIONS] += 1
        else:
            m.pctr[q, C_WRITEBACKS] += 1
    elif slot >= 0:
        m.pctr[q, C_CLEAN_DROPS] += 1
    else:
        m.pctr[q, C_ZERO_DROPS] += 1
    where = m.fi32[f, F_RMAP]
    t = where >> RMAP_SHIFT
    idx = where & ((1 << RMAP_SHIFT) - 1)
    if slot >= 0:
        m.tables[t, idx] = (slot << PTE_SHIFT) | PTE_SWAPPED
        m.proc[q, P_SWAPPED] += 1
    else:
        m.tables[t, idx] = 0
    m.memo[vpn & (MEMO_SLOTS - 1), MEMO_PAGE] = -1  # a batch's memo of this walk is stale now
    m.pctr[q, C_EVICTIONS] += 1
    if m.cfg[K_RING] != 0:  # tell the layer above which page left (a TLB shootdown)
        n = m.st[S_RING_N]
        if n < m.ring.shape[0]:
            m.ring[n, RING_OWNER] = q
            m.ring[n, RING_VPN] = vpn
            m.ring[n, RING_FRAME] = f
            m.ring[n, RING_WRITTEN] = written
        m.st[S_RING_N] = n + 1
    tlb_invalidate(m, q, vpn, False)
    list_remove(m.lists, m.fi32, lid, f)
    m.proc[q, P_RESIDENT] -= 1
    free_frame(m, f)
    return True


def _take_frame(m: Machine, pid: int, for_data: bool) -> int:
    """Return a free frame for ``pid``, evicting a page if needed; -1 if none can be had.

    Under local replacement a process at its quota evicts one of its own
    pages even when frames are free elsewhere; otherwise a free frame is
    taken first and a victim is chosen only when memory is full.
    """
    local = m.cfg[K_LOCAL] != 0
    lid = list_id(m, pid)
    at_quota = for_data and local and m.proc[pid, P_RESIDENT] >= m.proc[pid, P_QUOTA]
    if at_quota or m.st[S_FREE_TOP] == 0:
        # one call site for the eviction (an inlined copy each costs compile time):
        # its own list first; under local replacement, if it had nothing to give and
        # was not at its quota, the largest list
        target = lid
        ok = False
        for attempt in range(2):
            ok = evict(m, target)
            if ok or at_quota or not local or attempt == 1:
                break
            target = 0
            for other in range(1, m.lists.shape[0]):
                if m.lists[other, L_SIZE] > m.lists[target, L_SIZE]:
                    target = other
        if not ok:
            return -1
    return free_pop(m.fi32, m.st)


#: :func:`evict`, :func:`evict_frame` and :func:`take_frame` compiled once each as functions
#: of their own, for the rare callers (table pages, the hypervisor's reclamation): only the
#: per-access path carries inlined copies, and each inlined copy costs compile time.
evict = inlined(_evict)
evict_frame = inlined(_evict_frame)
take_frame = inlined(_take_frame)
evict_called = kernel(_evict)
evict_frame_called = kernel(_evict_frame)
take_frame_called = kernel(_take_frame)


@inlined
def set_bit(words: np.ndarray, f: int) -> None:
    """Set bit ``f % 64`` of word ``f // 64`` (the change map's and the watch map's layout)."""
    words[f >> 6] |= np.int64(1) << (f & 63)


@inlined
def clear_bit(words: np.ndarray, f: int) -> None:
    """Clear bit ``f`` of the bitmap ``words`` (:func:`set_bit`'s layout)."""
    words[f >> 6] &= ~(np.int64(1) << (f & 63))


@inlined
def has_bit(words: np.ndarray, f: int) -> bool:
    """Whether bit ``f`` of the bitmap ``words`` is set (:func:`set_bit`'s layout)."""
    return (words[f >> 6] >> (f & 63)) & 1 != 0


@inlined
def next_bit(words: np.ndarray, f: int) -> int:
    """The first bit set in the bitmap ``words`` at ``f`` or after (:func:`set_bit`'s
    layout), or -1: a loop over a bitmap's set bits in order skips its empty words."""
    word = f >> 6
    if word >= words.shape[0]:
        return -1
    bits = words[word] & (np.int64(-1) << (f & 63))  # (the bits below f cleared)
    while bits == 0:
        word += 1
        if word >= words.shape[0]:
            return -1
        bits = words[word]
    return (word << 6) + lowest_bit(bits)


@kernel
def new_token(st: np.ndarray) -> int:
    """A content token no page has had before."""
    st[S_TOKEN] += 1
    return st[S_TOKEN]


@kernel  # a call, not inlined: it runs only when a guest's content changes under sharing
def note_change(watch: np.ndarray, log: np.ndarray, st: np.ndarray, f: int) -> None:
    """Frame ``f``'s content changes: if its bit in the watch map is set (its real page maps
    a frame the hypervisor shares), the bit is cleared and ``f`` goes into the watch log
    (past the log's end only the count goes on: the reader must then check every page)."""
    word = watch[f >> 6]
    bit = np.int64(1) << (f & 63)
    if word & bit:
        watch[f >> 6] = word & ~bit
        n = st[S_COW_N]
        if n < log.shape[0]:
            log[n] = f
        st[S_COW_N] = n + 1


@inlined
def set_token(m: Machine, f: int, token: int) -> None:
    """Frame ``f`` holds content ``token`` now: its bit set in the change map (K_SYNC),
    and noted when watched (:func:`note_change`)."""
    m.fi64[f, G_TOKEN] = token
    if m.cfg[K_SYNC] != 0:
        set_bit(m.changed, f)
    if m.cfg[K_COW] != 0:
        note_change(m.watch, m.watch_log, m.st, f)


@kernel
def note_changes(m: Machine, frames: np.ndarray) -> None:
    """``frames``' contents were changed from Python: set their bits in the change map
    (K_SYNC), and note the watched ones (K_COW), as :func:`set_token` does."""
    if m.cfg[K_SYNC] != 0:
        for k in range(frames.shape[0]):
            set_bit(m.changed, frames[k])
    if m.cfg[K_COW] != 0:
        for k in range(frames.shape[0]):
            note_change(m.watch, m.watch_log, m.st, frames[k])


# ---------------------------------------------------------------------------
# the per-access loop


@kernel
def segfault(m: Machine, vpn: int, kind: int) -> int:
    m.st[S_FAULT_VPN] = vpn
    m.st[S_FAULT_KIND] = kind
    return STOP_SEGFAULT


@inlined
def page_fault(
    m: Machine, pid: int, vpn: int, w: bool, t: int, idx: int, lvl: int
) -> tuple[int, int, int]:
    """Handle a fault on ``vpn``, whose walk stopped at entry ``idx`` of table ``t``, level ``lvl``.

    Returns ``(pfn, tlb value, 0)`` when the page is now in memory, or
    ``(-1, -1, reason)`` when the control plane must act first.
    """
    r = find_region(m, pid, vpn)
    if r < 0:
        return -1, -1, segfault(m, vpn, SEGV_NO_REGION)
    rflags = m.regions[r, R_FLAGS]
    writable = (rflags & REG_WRITABLE) != 0
    if w and not writable:
        return -1, -1, segfault(m, vpn, SEGV_READ_ONLY)
    huge = (rflags & REG_HUGE) != 0
    huge_shift = m.cfg[K_HUGE_SHIFT]
    huge_span = 1 << huge_shift
    leaf_level = m.cfg[K_LEVELS] - (2 if huge else 1)
    # each table page to add and the page itself may take a frame by an eviction, and each
    # eviction a swap slot: the swap arrays must hold them before anything changes
    if not slot_room(m, max(1, leaf_level - lvl + 1)):
        return -1, -1, STOP_NEED_SLOTS
    if not ring_room(m, max(1, leaf_level - lvl + 1)):  # ...and the ring log them
        return -1, -1, STOP_NEED_RING
    if lvl < leaf_level:
        # the walk met an empty upper entry: table pages must be added first
        if not table_room(m, leaf_level - lvl):
            return -1, -1, STOP_NEED_TABLES
        if huge and m.st[S_HUGE_TOP] == 0:
            m.st[S_FAULT_VPN] = vpn
            m.st[S_FAULT_KIND] = BUS_NO_HUGE_PAGE
            return -1, -1, STOP_SIGBUS
        t, idx = build_path(m, pid, vpn, leaf_level)
        if t < 0:
            m.st[S_FAULT_VPN] = vpn
            return -1, -1, STOP_OOM
    pte = PTE_PRESENT | PTE_USER | PTE_ACCESSED
    pte |= PTE_WRITABLE if writable else 0
    pte |= PTE_DIRTY if w else 0
    tv = (TV_WRITABLE if writable else 0) | (TV_DIRTY if w else 0)
    if huge:
        # a huge page from the pool: pinned, never on a replacement list
        if m.st[S_HUGE_TOP] == 0:
            m.st[S_FAULT_VPN] = vpn
            m.st[S_FAULT_KIND] = BUS_NO_HUGE_PAGE
            return -1, -1, STOP_SIGBUS
        m.st[S_HUGE_TOP] -= 1
        base = m.huge_free[m.st[S_HUGE_TOP]]
        hvpn = vpn - (vpn & (huge_span - 1))
        for k in range(huge_span):
            m.fi32[base + k, F_OWNER] = pid
            m.fi32[base + k, F_FLAGS] = FR_HUGE | FR_PINNED
            m.fi64[base + k, G_VPN] = hvpn + k
            set_token(m, base + k, 0)
            m.fi32[base + k, F_RMAP] = (t << RMAP_SHIFT) | idx
        m.tables[t, idx] = (base << PTE_SHIFT) | pte | PTE_HUGE
        m.proc[pid, P_RESIDENT] += huge_span
        m.pctr[pid, C_MINOR] += 1
        return base + (vpn & (huge_span - 1)), tv | (base << TV_SHIFT) | TV_HUGE, 0
    e = m.tables[t, idx]
    swapped_out = (e & PTE_SWAPPED) != 0 and m.swap_csize[e >> PTE_SHIFT] == 0
    if swapped_out and swap_fails(m.st, m.cfg[K_SWAP_READ_FAIL]):
        # the device could not read the page back (an injected fault): its only copy is
        # lost, so the process gets a bus error, as Linux's do_swap_page gives SIGBUS
        m.pctr[pid, C_SWAP_READ_ERRORS] += 1
        m.st[S_FAULT_VPN] = vpn
        m.st[S_FAULT_KIND] = BUS_SWAP_READ
        return -1, -1, STOP_SIGBUS
    f = take_frame(m, pid, True)
    if f < 0:
        m.st[S_FAULT_VPN] = vpn
        return -1, -1, STOP_OOM
    # evictions change only present entries: this one is as the walk left it
    e = m.tables[t, idx]
    dirty_after = False
    if e & PTE_SWAPPED:
        slot = e >> PTE_SHIFT
        set_token(m, f, m.swap_token[slot])
        m.proc[pid, P_SWAPPED] -= 1
        m.pctr[pid, C_MAJOR] += 1
        if m.swap_csize[slot] > 0:
            # decompressed: the cache gives the room back, and the page must be written
            # (or compressed) again when it next leaves memory
            free_slot(m, slot)
            m.pctr[pid, C_DECOMPRESSIONS] += 1
            m.fi32[f, F_SLOT] = -1
            dirty_after = True
        else:
            m.fi32[f, F_SLOT] = slot  # the swap copy stays current while the page is clean
    else:
        set_token(m, f, 0)
        m.fi32[f, F_SLOT] = -1
        m.pctr[pid, C_MINOR] += 1
    m.fi32[f, F_OWNER] = pid
    m.fi32[f, F_FLAGS] = FR_DIRTY if dirty_after else 0
    m.fi64[f, G_VPN] = vpn
    m.fi32[f, F_RMAP] = (t << RMAP_SHIFT) | idx
    list_append(m.lists, m.fi32, list_id(m, pid), f)
    m.tables[t, idx] = (f << PTE_SHIFT) | pte
    m.proc[pid, P_RESIDENT] += 1
    return f, tv | (f << TV_SHIFT), 0


#: How many accesses ahead :func:`run_batch` asks for the leaf entry of a page it will
#: translate (half as many for the metadata of its frame and, under LRU, a quarter as many
#: for the metadata of its neighbours in the replacement list). Alternated on
#: benchmarks/bench_vms.py: 16 beat 8 and 32 (docs/benchmarks.md, "Prefetching ahead").
PREFETCH_AHEAD = 16


@inlined
def memo_leaf(
    memo: np.ndarray, vpn: int, leaf_shift: int, last_shift: int, last_mask: int
) -> tuple[int, int]:
    """Where ``vpn``'s last-level entry is, ``(leaf table, index)``, when the path memo
    (columns MEMO_PREFIX and MEMO_LEAF) knows the leaf table of its prefix; else
    ``(-1, -1)``."""
    prefix = vpn >> leaf_shift
    slot = prefix & (MEMO_SLOTS - 1)
    if memo[slot, MEMO_PREFIX] != prefix:
        return -1, -1
    return memo[slot, MEMO_LEAF], (vpn >> last_shift) & last_mask


@inlined
def memo_frame(
    memo: np.ndarray, tables: np.ndarray, vpn: int, leaf_shift: int, last_shift: int,
    last_mask: int,
) -> int:  # fmt: skip
    """The frame that ``vpn``'s last-level entry maps, when the path memo knows its leaf
    table (:func:`memo_leaf`) and the entry is present; else -1. For cache hints only: of a
    huge page it gives the base frame."""
    t, idx = memo_leaf(memo, vpn, leaf_shift, last_shift, last_mask)
    if t < 0:
        return -1
    e = tables[t, idx]
    return e >> PTE_SHIFT if e & PTE_PRESENT else -1


@inlined
def prefetch_row(fi32: np.ndarray, fi64: np.ndarray, f: int) -> None:
    """A cache hint for frame ``f``'s metadata row: its first and its last bytes. A row is
    40 bytes (48 under opt) and rows lie end to end, so half of them cross a 64-byte line:
    the row's start alone would leave the other line (for some rows the one holding
    ``F_FLAGS``, which every access reads, for others ``G_TOKEN``) to a miss."""
    prefetch2(fi32, f, 0)
    prefetch2(fi64, f, fi64.shape[1] - 1)


@inlined
def prefetch_ahead(
    memo: np.ndarray, tables: np.ndarray, fi32: np.ndarray, fi64: np.ndarray, vpn: int,
    leaf_shift: int, last_shift: int, last_mask: int, rows: bool,
) -> None:  # fmt: skip
    """A cache hint for a coming access to ``vpn``, which changes no state: when the batch
    has walked to ``vpn``'s leaf table (the path memo knows its prefix), the leaf entry, or
    with ``rows`` (the entry asked for some accesses earlier) the frame's metadata rows."""
    if not rows:
        t, idx = memo_leaf(memo, vpn, leaf_shift, last_shift, last_mask)
        if t >= 0:
            prefetch2(tables, t, idx)
        return
    f = memo_frame(memo, tables, vpn, leaf_shift, last_shift, last_mask)
    if f >= 0:
        prefetch_row(fi32, fi64, f)


@inlined
def prefetch_neighbours(
    memo: np.ndarray, tables: np.ndarray, fi32: np.ndarray, vpn: int, leaf_shift: int,
    last_shift: int, last_mask: int,
) -> None:  # fmt: skip
    """A cache hint for a coming access to ``vpn`` under LRU, which changes no state: the
    metadata rows of the frames before and after its frame in the replacement list, which
    the access will relink (:func:`list_remove`). Asked for after the frame's own rows
    (:func:`prefetch_ahead`), whose links it reads; the list may change before the access
    comes, and then the hint is wasted, not wrong."""
    f = memo_frame(memo, tables, vpn, leaf_shift, last_shift, last_mask)
    if f < 0:
        return
    before, after = fi32[f, F_PREV], fi32[f, F_NEXT]
    if before >= 0:  # (the link each one's row has rewritten, wherever its line is)
        prefetch2(fi32, before, F_NEXT)
    if after >= 0:
        prefetch2(fi32, after, F_PREV)


@kernel
def run_batch(
    m: Machine,
    pid: int,
    vpns: np.ndarray,
    writes: np.ndarray,
    next_use: np.ndarray,
    start: int,
    end: int,
) -> tuple[int, int]:
    """Run accesses ``start..end`` of process ``pid``; return ``(stop index, reason)``.

    ``reason`` is STOP_DONE when the batch ran to ``end``. Otherwise access
    ``stop index`` has not happened (nothing of it is counted) and the
    control plane must act: kill the process (segfault, SIGBUS), pick an
    out-of-memory victim, or grow the table pool, then call again.
    """
    levels = m.cfg[K_LEVELS]
    policy = m.cfg[K_POLICY]
    tlb_levels = m.cfg[K_TLB_LEVELS]
    huge_shift = m.cfg[K_HUGE_SHIFT]
    huge_span = 1 << huge_shift
    has_huge = m.cfg[K_HAS_HUGE] != 0
    lid = list_id(m, pid)
    root = m.proc[pid, P_ROOT]
    use_opt = policy == POLICY_OPT
    is_lru = policy == POLICY_LRU
    tags, vals, stamps, st = m.tlb_tags, m.tlb_vals, m.tlb_stamps, m.st
    tables, fi32, fi64, lists = m.tables, m.fi32, m.fi64, m.lists
    shifts, masks = m.shifts, m.masks
    tsets = (m.cfg[K_TLB1_SETS], m.cfg[K_TLB2_SETS])
    tways = (m.cfg[K_TLB1_WAYS], m.cfg[K_TLB2_WAYS])
    # the batch's own counters, added to pctr[pid] when it stops
    n_writes = 0
    l1_hits = 0
    l2_hits = 0
    walks = 0
    refs = 0
    dirty_updates = 0

    if tlb_levels > 0 and m.cfg[K_FLUSH_ON_SWITCH] != 0 and st[S_LAST_ASID] != pid:
        tlb_flush_asid(m, -1)
        st[S_TLB_FLUSHES] += 1
    st[S_LAST_ASID] = pid

    stop = end
    reason = STOP_DONE
    recording = m.cfg[K_RECORD] != 0
    record = m.record
    watching = m.cfg[K_COW] != 0  # a hypervisor below shares pages: note their changes
    syncing = m.cfg[K_SYNC] != 0  # a hypervisor below syncs the contents that changed
    changed = m.changed
    rec_n = st[S_REC_N]
    # Without a TLB (the hypervisor's pass over the guests' walks) many accesses read a
    # page the batch has just walked: a guest's upper page-table pages come back at every
    # guest walk. A read of a page walked since the batch's last fault finds the same
    # entries, with the accessed bit already set: the walk would change nothing, so it
    # is counted from the memo instead of made again. Everything else about the access
    # (the frame's bits, the replacement list) is done as for any access. Only an
    # eviction changes a walked page's entries within a batch, and it forgets the page.
    memo = m.memo
    use_memo = tlb_levels == 0 and not recording
    if use_memo:
        memo[:, MEMO_PAGE] = -1
    # The path memo: a walk reads the same upper entries for every page under one leaf
    # table, and those entries do not change within a batch (a fault only fills empty
    # ones, and table pages are pinned), so a walk that reached a leaf table notes its
    # path, by the prefix above the leaf level, and a later walk under the same leaf table
    # starts there: the same entries read and counted, the same table pages recorded.
    use_paths = m.cfg[K_NO_PATH_MEMO] == 0
    if use_paths:
        memo[:, MEMO_PREFIX] = -1
    leaf_shift = shifts[levels - 2]
    # Prefetching ahead: the accesses to come are known, so while access i runs, the CPU
    # is asked for the leaf entry of access i + PREFETCH_AHEAD, for the frame's rows of
    # access i + PREFETCH_AHEAD / 2 (whose entry it was asked for before) and, under LRU,
    # for the rows of that frame's list neighbours at i + PREFETCH_AHEAD / 4, where the
    # access's own loads would meet their cache misses one after another. Through the
    # path memo: only the leaf tables the batch has walked to. Not for the hypervisor's
    # pass (no TLB), which prefetches its data pages before it runs.
    ahead = PREFETCH_AHEAD if use_paths and tlb_levels > 0 else 0
    last_shift, last_mask = shifts[levels - 1], masks[levels - 1]
    for i in range(start, end):
        if ahead > 0:
            if i + ahead < end:
                prefetch_ahead(memo, tables, fi32, fi64, vpns[i + ahead], leaf_shift,
                               last_shift, last_mask, False)  # fmt: skip
            if i + (ahead >> 1) < end:
                prefetch_ahead(memo, tables, fi32, fi64, vpns[i + (ahead >> 1)], leaf_shift,
                               last_shift, last_mask, True)  # fmt: skip
            if is_lru and i + (ahead >> 2) < end:
                prefetch_neighbours(memo, tables, fi32, vpns[i + (ahead >> 2)], leaf_shift,
                                    last_shift, last_mask)  # fmt: skip
        if recording and rec_n + levels + 1 > record.shape[0]:
            stop, reason = i, STOP_RECORD_FULL
            break
        vpn = vpns[i]
        w = writes[i] != 0
        val = -1
        hit_level = -1
        # --- TLB lookup, level by level: the base-page tag, then the huge-page tag
        # (a miss in a level's base-page set also finds the way a fill there would take:
        # ``way0`` and ``way1`` keep it for each level, for as long as nothing else changes the set)
        way0 = -1
        way1 = -1
        for lvl in range(tlb_levels):
            sets, ways = tsets[lvl], tways[lvl]
            tag, key = tlb_key(pid, vpn, False, huge_shift)
            val, way = tlb_probe_victim(tags, vals, stamps, st, lvl, sets, ways, tag, key)
            if lvl == 0:
                way0 = way
            else:
                way1 = way
            if val < 0 and has_huge:
                tag, key = tlb_key(pid, vpn, True, huge_shift)
                val = tlb_probe(tags, vals, stamps, st, lvl, sets, ways, tag, key)
                way0 = -1  # the fill may be of a huge page, in another set
                way1 = -1
            if val >= 0:
                hit_level = lvl
                if lvl > 0:  # refill the first level
                    if way0 >= 0:
                        tlb_put(tags, vals, stamps, st, 0, way0, tag, val)
                    else:
                        tlb_fill(tags, vals, stamps, st, 0, tsets[0], tways[0], tag, key, val)
                break

        loaded = False
        faulted = False
        memo_slot = vpn & (MEMO_SLOTS - 1)
        if use_memo and not w and memo[memo_slot, MEMO_PAGE] == vpn:
            pfn = memo[memo_slot, MEMO_FRAME]
            walks += 1
            refs += memo[memo_slot, MEMO_REFS]
        elif val >= 0:
            pfn = val >> TV_SHIFT
            if val & TV_HUGE:
                pfn += vpn & (huge_span - 1)
            if w:
                if (val & TV_WRITABLE) == 0:
                    stop, reason = i, segfault(m, vpn, SEGV_READ_ONLY)
                    break
                if (val & TV_DIRTY) == 0:
                    # the MMU sets the PTE's dirty bit on the first write through this entry
                    where = fi32[pfn, F_RMAP]
                    tables[where >> RMAP_SHIFT, where & ((1 << RMAP_SHIFT) - 1)] |= PTE_DIRTY
                    tag, key = tlb_key(pid, vpn, (val & TV_HUGE) != 0, huge_shift)
                    tlb_mark_dirty(m, tag, key)
                    dirty_updates += 1
        else:
            # --- page walk: one memory reference per level read
            t = root
            e = 0
            idx = 0
            lvl = 0
            n_refs = 0
            prefix = vpn >> leaf_shift
            path_slot = prefix & (MEMO_SLOTS - 1)
            known_path = use_paths and memo[path_slot, MEMO_PREFIX] == prefix
            if known_path:  # the upper levels, as this batch read them last
                lvl = levels - 1
                n_refs = levels - 1
                t = memo[path_slot, MEMO_LEAF]
                if recording:
                    for k in range(n_refs):
                        record[rec_n + k] = memo[path_slot, MEMO_PATH + k] | REC_TABLE
            while True:
                idx = (vpn >> shifts[lvl]) & masks[lvl]
                e = tables[t, idx]
                if recording:  # the table page read, for the hypervisor's pass
                    record[rec_n + n_refs] = m.table_frame[t] | REC_TABLE
                n_refs += 1
                if (e & PTE_PRESENT) == 0 or lvl == levels - 1 or (e & PTE_HUGE) != 0:
                    break
                t = fi64[e >> PTE_SHIFT, G_VPN]  # the next level's table page
                lvl += 1
            if use_paths and lvl == levels - 1 and not known_path:  # reached a leaf table
                memo[path_slot, MEMO_PREFIX] = prefix
                memo[path_slot, MEMO_LEAF] = t
                if recording:
                    for k in range(levels - 1):
                        memo[path_slot, MEMO_PATH + k] = record[rec_n + k] & REC_PAGE
            if e & PTE_PRESENT:
                if w and (e & PTE_WRITABLE) == 0:
                    stop, reason = i, segfault(m, vpn, SEGV_READ_ONLY)
                    break
                huge = (e & PTE_HUGE) != 0
                base = e >> PTE_SHIFT
                pfn = base + (vpn & (huge_span - 1)) if huge else base
                updated = e | PTE_ACCESSED | (PTE_DIRTY if w else 0)
                if updated != e:  # the walker writes the entry only when a bit changes
                    tables[t, idx] = updated
                    if recording:  # ...and so writes the leaf table page
                        record[rec_n + n_refs - 1] |= REC_WRITE
                tv = (base << TV_SHIFT) | (TV_WRITABLE if e & PTE_WRITABLE else 0)
                tv |= TV_DIRTY if (w or (e & PTE_DIRTY)) else 0
                tv |= TV_HUGE if huge else 0
                if use_memo:
                    memo[memo_slot, MEMO_PAGE] = vpn
                    memo[memo_slot, MEMO_FRAME] = pfn
                    memo[memo_slot, MEMO_REFS] = n_refs
            else:
                faulted = True
                pfn, tv, why = page_fault(m, pid, vpn, w, t, idx, lvl)
                if pfn < 0:
                    stop, reason = i, why
                    break
                loaded = (tv & TV_HUGE) == 0
                if recording:  # the fault wrote the new entry into the leaf table page
                    record[rec_n + n_refs - 1] |= REC_WRITE
            if recording:  # and the data page itself
                record[rec_n + n_refs] = pfn | REC_WRITE if w else pfn
                rec_n += n_refs + 1
            walks += 1
            refs += n_refs
            # --- fill the TLB, every level (in the ways the probes found, unless a fault,
            # whose evictions invalidate entries, came between)
            huge_fill = (tv & TV_HUGE) != 0
            tag, key = tlb_key(pid, vpn, huge_fill, huge_shift)
            for lvl in range(tlb_levels):
                way = way0 if lvl == 0 else way1
                if way >= 0 and not faulted and not huge_fill:
                    tlb_put(tags, vals, stamps, st, lvl, way, tag, tv)
                else:
                    tlb_fill(tags, vals, stamps, st, lvl, tsets[lvl], tways[lvl], tag, key, tv)

        # --- the access itself: policy bookkeeping, referenced/dirty bits, contents
        old_flags = fi32[pfn, F_FLAGS]
        flags = old_flags
        if (flags & FR_HUGE) == 0:
            if not loaded:
                flags |= FR_REFERENCED
                if is_lru and lists[lid, L_TAIL] != pfn:
                    list_remove(lists, fi32, lid, pfn)
                    list_append(lists, fi32, lid, pfn)
            if use_opt:
                fi64[pfn, G_NEXT_USE] = next_use[i]
        if w:
            flags |= FR_DIRTY
            fi64[pfn, G_TOKEN] = new_token(st)
            if syncing:
                set_bit(changed, pfn)
            if watching:
                note_change(m.watch, m.watch_log, st, pfn)
            n_writes += 1
            slot = fi32[pfn, F_SLOT]
            if slot >= 0:
                free_slot(m, slot)  # the swap copy is stale now
                fi32[pfn, F_SLOT] = -1
        if flags != old_flags:
            fi32[pfn, F_FLAGS] = flags
        if hit_level == 0:
            l1_hits += 1
        elif hit_level == 1:
            l2_hits += 1

    st[S_REC_N] = rec_n
    # --- counters of the accesses that happened
    done = stop - start
    c = m.pctr
    c[pid, C_ACCESSES] += done
    c[pid, C_WRITES] += n_writes
    c[pid, C_READS] += done - n_writes
    if tlb_levels > 0:
        c[pid, C_TLB1_HITS] += l1_hits
        c[pid, C_TLB1_MISSES] += done - l1_hits
        if tlb_levels > 1:
            c[pid, C_TLB2_HITS] += l2_hits
            c[pid, C_TLB2_MISSES] += done - l1_hits - l2_hits
    c[pid, C_WALKS] += walks
    c[pid, C_WALK_REFS] += refs
    c[pid, C_DIRTY_UPDATES] += dirty_updates
    return stop, reason


@kernel
def kill_process(m: Machine, huge_base: int, pid: int) -> None:
    """End process ``pid``: free its frames, table pages, huge pages and swap slots."""
    span = 1 << m.cfg[K_HUGE_SHIFT]
    for f in range(m.fi32.shape[0]):
        if m.fi32[f, F_OWNER] != pid:
            continue
        flags = m.fi32[f, F_FLAGS]
        if flags & FR_HUGE:
            if (f - huge_base) % span == 0:
                m.huge_free[m.st[S_HUGE_TOP]] = f
                m.st[S_HUGE_TOP] += 1
            m.fi32[f, F_OWNER] = -1
            m.fi32[f, F_FLAGS] = 0
            m.fi64[f, G_VPN] = -1
            set_token(m, f, 0)
            continue
        if flags & FR_TABLE:
            m.table_free[m.st[S_TABLE_FREE_TOP]] = m.fi64[f, G_VPN]
            m.st[S_TABLE_FREE_TOP] += 1
        else:
            list_remove(m.lists, m.fi32, list_id(m, pid), f)
            slot = m.fi32[f, F_SLOT]
            if slot >= 0:
                free_slot(m, slot)
        free_frame(m, f)
    for slot in range(min(m.st[S_SWAP_NEXT], m.swap_owner.shape[0])):  # the slots ever used
        if m.swap_owner[slot] == pid:
            free_slot(m, slot)
    tlb_flush_asid(m, pid)
    m.proc[pid, P_ALIVE] = 0
    m.proc[pid, P_RESIDENT] = 0
    m.proc[pid, P_SWAPPED] = 0
    m.proc[pid, P_TABLES] = 0
    m.proc[pid, P_ROOT] = -1


@njit(cache=True)
def next_uses(keys: np.ndarray) -> np.ndarray:
    """For each access, the index of the next access to the same page (NEVER if none)."""
    n = keys.shape[0]
    out = np.empty(n, dtype=np.int64)
    last = Dict.empty(key_type=types.int64, value_type=types.int64)
    for i in range(n - 1, -1, -1):
        k = keys[i]
        out[i] = last.get(k, NEVER)
        last[k] = i
    return out


@kernel
def walk_cache_filter(
    pages: np.ndarray, is_table: np.ndarray, keys: np.ndarray, stamps: np.ndarray,
    clock: np.ndarray, keep: np.ndarray,
) -> int:  # fmt: skip
    """Pass the guest-table real pages through a page-walk cache; return how many to keep.

    ``keys``/``stamps`` are a fully associative LRU cache of real pages whose
    host translation is cached (-1: empty). A guest page-table page found
    there needs no host walk (``keep[i] = 0``); one not found is kept for
    the host to translate, and cached. Data pages are always kept.
    """
    kept = 0
    for i in range(pages.shape[0]):
        if is_table[i] == 0:
            keep[i] = 1
            kept += 1
            continue
        page = pages[i]
        clock[0] += 1
        victim = 0
        hit = False
        for j in range(keys.shape[0]):
            if keys[j] == page:
                stamps[j] = clock[0]
                hit = True
                break
            if stamps[j] < stamps[victim]:
                victim = j
        if hit:
            keep[i] = 0
        else:
            keys[victim] = page
            stamps[victim] = clock[0]
            keep[i] = 1
            kept += 1
    return kept
