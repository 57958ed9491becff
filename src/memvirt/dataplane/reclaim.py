"""Data-plane steps of reclamation: the few loops the hypervisor's control plane runs often.

Reclamation itself is decided in plain Python (:mod:`memvirt.hypervisor.reclamation`); what
it asks of a memory, page by page, is here, compiled:

- a **balloon driver** takes frames from its guest kernel (free ones first, then pages
  the guest's own replacement policy evicts) and pins them; deflating frees them;
- the hypervisor **discards** the real pages behind a balloon: their frames (or swap
  slots) go back and the mapping is cleared, with no write — the guest promised not to
  use them;
- **host swapping** evicts chosen frames of one VM (drawn at random, as ESX does, or by
  the clock's second chance, an LRU approximation);
- **page sharing** maps a real page to another frame holding the same content, read
  only, and frees its own; a frame becomes shared by passing to the hypervisor's own
  pseudo-process, pinned;
- **active-memory sampling** marks the sampled pages a host pass touched;
- **content sync**: the guest writes pages through its TLB, which the host does not see
  one by one (nor does the hardware: it sets the dirty bit of the host entry); before
  the host acts on a VM, each of its frames takes its real page's current content.

All functions but the sampler's take the :class:`~.state.Machine` of the memory they act
on.
"""

from __future__ import annotations

import numpy as np

from .jit import inlined, kernel, prefetch2
from .layout import (
    C_COMPRESSIONS,
    C_WRITEBACKS,
    F_FLAGS,
    F_NEXT,
    F_OWNER,
    F_RMAP,
    F_SLOT,
    FR_DIRTY,
    FR_HUGE,
    FR_PINNED,
    FR_REFERENCED,
    FR_TABLE,
    G_TOKEN,
    G_VPN,
    K_HUGE_SHIFT,
    K_LEVELS,
    K_LOCAL,
    L_HEAD,
    L_SIZE,
    MEMO_LEAF,
    MEMO_PREFIX,
    MEMO_SLOTS,
    P_ALIVE,
    P_COMPRESSED,
    P_RESIDENT,
    P_ROOT,
    P_SWAPPED,
    PTE_ACCESSED,
    PTE_HUGE,
    PTE_PRESENT,
    PTE_SHIFT,
    PTE_SWAPPED,
    PTE_USER,
    PTE_WRITABLE,
    REC_PAGE,
    REC_TABLE,
    REC_WRITE,
    RING_FRAME,
    RING_OWNER,
    RING_VPN,
    RING_WRITTEN,
    RMAP_SHIFT,
    S_FREE_HEAD,
    S_FREE_TOP,
    S_HUGE_TOP,
)
from .native import (
    clear_bit,
    evict_called,
    evict_frame_called,
    free_frame,
    free_pop,
    free_slot,
    has_bit,
    list_append,
    list_id,
    list_remove,
    memo_leaf,
    next_bit,
    prefetch_row,
    rng_next,
    set_bit,
    set_token,
    swap_full,
    take_frame_called,
    tlb_invalidate,
)
from .state import Machine

_RMAP_MASK = (1 << RMAP_SHIFT) - 1
_PINNED_OR_TABLE = FR_TABLE | FR_HUGE | FR_PINNED


@inlined
def leaf_table(m: Machine, pid: int, vpn: int) -> tuple[int, int]:
    """Where the last-level entry of ``vpn`` is, for every page the same leaf table maps:
    (the leaf table, -1); (table, index) of the entry of a huge page that maps ``vpn``;
    (-1, -1) when an upper level is missing (the page was never mapped)."""
    t = m.proc[pid, P_ROOT]
    if t < 0:
        return -1, -1
    for lvl in range(m.cfg[K_LEVELS] - 1):
        idx = (vpn >> m.shifts[lvl]) & m.masks[lvl]
        e = m.tables[t, idx]
        if (e & PTE_PRESENT) == 0:
            return -1, -1
        if e & PTE_HUGE:  # a huge page maps vpn from this level: its entry is the leaf
            return t, idx
        t = m.fi64[e >> PTE_SHIFT, G_VPN]
    return t, -1


@kernel
def leaf_entry(m: Machine, pid: int, vpn: int) -> tuple[int, int]:
    """The (table, index) of the last-level entry for ``vpn``, or (-1, -1) when an upper
    level is missing (the page was never mapped)."""
    t, idx = leaf_table(m, pid, vpn)
    if t >= 0 and idx < 0:
        levels = m.cfg[K_LEVELS]
        idx = (vpn >> m.shifts[levels - 1]) & m.masks[levels - 1]
    return t, idx


@kernel
def walk_depth(m: Machine, pid: int, npages: int) -> int:
    """The fewest entries a walk of ``pid``'s table reads for any of its pages
    ``0 .. npages``: down to the last level, to a huge page's entry, or to the first entry
    not present (as ``run_batch`` counts a walk's references). Pages under one leaf table
    share the entries above it, so one walk a leaf table's span is looked at. Table pages
    stay until their process ends, so the depth only grows while it lives."""
    levels = m.cfg[K_LEVELS]
    root = m.proc[pid, P_ROOT]
    if root < 0:
        return 0
    depth = levels
    span = 1 << m.shifts[levels - 2] if levels > 1 else npages
    for first in range(0, npages, span):
        t = root
        for lvl in range(levels - 1):
            e = m.tables[t, (first >> m.shifts[lvl]) & m.masks[lvl]]
            if (e & PTE_PRESENT) == 0 or (e & PTE_HUGE) != 0:
                depth = min(depth, lvl + 1)
                break
            t = m.fi64[e >> PTE_SHIFT, G_VPN]
    return depth


@kernel
def entry_frame(m: Machine, e: int, vpn: int) -> int:
    """The frame that a present leaf entry ``e`` maps ``vpn`` to (within a huge page, the
    base frame plus the page's offset in it)."""
    f = e >> PTE_SHIFT
    if e & PTE_HUGE:
        f += vpn & ((1 << m.cfg[K_HUGE_SHIFT]) - 1)
    return f


# ------------------------------------------------------------------------- balloon


@kernel
def balloon_inflate(m: Machine, bpid: int, n: int, out: np.ndarray) -> int:
    """Give the balloon process ``bpid`` up to ``n`` frames, pinned; their numbers in ``out``.

    Free frames go first; then the kernel evicts pages by its replacement policy (clean
    ones dropped, dirty ones written to its swap). Returns how many frames it got: fewer
    than ``n`` when nothing more can be evicted.
    """
    got = 0
    while got < n:
        if m.st[S_FREE_TOP] == 0:
            lid = 0
            if m.cfg[K_LOCAL] != 0:  # local lists: take from the largest
                for other in range(1, m.lists.shape[0]):
                    if m.lists[other, L_SIZE] > m.lists[lid, L_SIZE]:
                        lid = other
            if not evict_called(m, lid):
                break
        f = free_pop(m.fi32, m.st)
        m.fi32[f, F_OWNER] = bpid
        m.fi32[f, F_FLAGS] = FR_PINNED
        m.fi32[f, F_SLOT] = -1
        m.fi64[f, G_VPN] = -1
        set_token(m, f, 0)
        m.proc[bpid, P_RESIDENT] += 1
        out[got] = f
        got += 1
    return got


@kernel
def release_frames(m: Machine, frames: np.ndarray, n: int) -> None:
    """Free the first ``n`` of ``frames``, pinned frames of a pseudo-process (balloon pages,
    the hypervisor's shared and cache frames)."""
    for k in range(n):
        f = frames[k]
        m.proc[m.fi32[f, F_OWNER], P_RESIDENT] -= 1
        free_frame(m, f)


@kernel
def grab_frame(m: Machine, pid: int) -> int:
    """A frame for pseudo-process ``pid``, pinned (evicting a page if memory is full); -1 if
    none can be had."""
    f = take_frame_called(m, pid, False)
    if f < 0:
        return -1
    m.fi32[f, F_OWNER] = pid
    m.fi32[f, F_FLAGS] = FR_PINNED
    m.fi32[f, F_SLOT] = -1
    m.fi64[f, G_VPN] = -1
    set_token(m, f, 0)
    m.proc[pid, P_RESIDENT] += 1
    return f


@kernel
def grab_frames(m: Machine, pid: int, n: int, out: np.ndarray) -> int:
    """:func:`grab_frame` ``n`` times, or until no frame can be had; the frames go into
    ``out``. Returns how many."""
    for k in range(n):
        f = grab_frame(m, pid)
        if f < 0:
            return k
        out[k] = f
    return n


@kernel
def discard(m: Machine, pid: int, vpns: np.ndarray, shared_out: np.ndarray) -> tuple[int, int]:
    """Forget pages ``vpns`` of ``pid`` without saving them: free their frames or swap
    slots and clear their entries. Returns ``(frames freed, n)``; the first ``n`` of
    ``shared_out`` are frames the pages were mapped to but ``pid`` does not own (shared
    frames: their reference counts are the caller's)."""
    freed = 0
    n_shared = 0
    for k in range(vpns.shape[0]):
        t, idx = leaf_entry(m, pid, vpns[k])
        if t < 0:
            continue
        e = m.tables[t, idx]
        if e & PTE_PRESENT:
            f = e >> PTE_SHIFT
            if m.fi32[f, F_OWNER] == pid:
                list_remove(m.lists, m.fi32, list_id(m, pid), f)
                slot = m.fi32[f, F_SLOT]
                if slot >= 0:
                    free_slot(m, slot)
                m.proc[pid, P_RESIDENT] -= 1
                free_frame(m, f)
                freed += 1
            else:
                shared_out[n_shared] = f
                n_shared += 1
        elif e & PTE_SWAPPED:
            free_slot(m, e >> PTE_SHIFT)
            m.proc[pid, P_SWAPPED] -= 1
        m.tables[t, idx] = 0
    return freed, n_shared


# ------------------------------------------------------------------- host swapping


@kernel
def pick_frames(m: Machine, pid: int, n: int, lru: bool, out: np.ndarray) -> int:
    """Choose up to ``n`` distinct data frames of ``pid`` to evict; their numbers in ``out``.

    At random (uniform draws over memory, kept when the frame holds an unpinned page of
    ``pid``: ESX's random victims), or, with ``lru``, by the clock's second chance over
    the replacement list from its head: a referenced page loses its bit and moves to the
    tail; an unreferenced page of ``pid`` is taken.
    """
    nframes = m.fi32.shape[0]
    got = 0
    if lru:
        lid = list_id(m, pid)
        budget = 2 * m.lists[lid, L_SIZE] + 1
        f = m.lists[lid, L_HEAD]
        while got < n and budget > 0 and f >= 0:
            budget -= 1
            nxt = m.fi32[f, F_NEXT]
            if m.fi32[f, F_OWNER] == pid:
                if m.fi32[f, F_FLAGS] & FR_REFERENCED:
                    m.fi32[f, F_FLAGS] &= ~FR_REFERENCED
                    list_remove(m.lists, m.fi32, lid, f)
                    list_append(m.lists, m.fi32, lid, f)
                else:
                    out[got] = f
                    got += 1
            f = nxt
        return got
    resident = m.proc[pid, P_RESIDENT]
    if resident == 0:
        return 0
    tries = 64 * (nframes // resident + 1) * n
    while got < n and tries > 0:
        tries -= 1
        f = rng_next(m.st) % nframes
        if m.fi32[f, F_OWNER] != pid or (m.fi32[f, F_FLAGS] & _PINNED_OR_TABLE) != 0:
            continue
        seen = False
        for k in range(got):
            if out[k] == f:
                seen = True
                break
        if not seen:
            out[got] = f
            got += 1
    return got


@kernel
def evict_frames(m: Machine, frames: np.ndarray, n: int) -> int:
    """Take the pages in the first ``n`` of ``frames`` out of memory (written to swap,
    compressed, or dropped, as an eviction does). Returns how many left: fewer when swap
    is full, or when a write to it failed (an injected fault: that page stays)."""
    done = 0
    for k in range(n):
        f = frames[k]
        q = m.fi32[f, F_OWNER]
        if q < 0 or (m.fi32[f, F_FLAGS] & _PINNED_OR_TABLE) != 0:
            continue
        if not evict_frame_called(m, list_id(m, q), f):
            if swap_full(m):
                break
            continue
        done += 1
    return done


# ---------------------------------------------------------- active-memory sampling


@kernel
def mark_span(bits: np.ndarray, pages: np.ndarray, first: int) -> None:
    """Set ``bits[page - first]`` (bools) for each of ``pages``: the pages a process
    touched, over its span of pages from ``first`` (one outside the span is left out)."""
    for k in range(pages.shape[0]):
        i = pages[k] - first
        if 0 <= i < bits.shape[0]:
            bits[i] = True


@kernel
def making_room(pctr: np.ndarray) -> tuple[int, int]:
    """The pages written to swap and compressed, summed over every process of a memory's
    counters ``pctr``: what the host did to make room, whichever VM a page belonged to."""
    written = 0
    compressed = 0
    for pid in range(pctr.shape[0]):
        written += pctr[pid, C_WRITEBACKS]
        compressed += pctr[pid, C_COMPRESSIONS]
    return written, compressed


@kernel
def mark_touched(unseen: np.ndarray, pages: np.ndarray) -> int:
    """Of ``pages`` (real pages a host pass touched), those of the period's sample not seen
    yet (their bits in ``unseen``, bit ``p % 64`` of word ``p // 64``) are seen now: their
    bits are cleared. Returns how many.

    A bit a page, not a byte: a pass touches some ten thousand pages, and the sample's
    bitmap (a few KiB) stays in the cache while they are looked up."""
    seen = 0
    for k in range(pages.shape[0]):
        p = pages[k]
        bit = np.uint64(1) << np.uint64(p & 63)
        if unseen[p >> 6] & bit:
            unseen[p >> 6] &= ~bit
            seen += 1
    return seen


# --------------------------------------------------------------------- page sharing


@kernel
def make_shared(m: Machine, f: int, spid: int) -> None:
    """Frame ``f``, a page of some VM, becomes a shared frame of pseudo-process ``spid``:
    pinned, off the replacement lists, mapped read-only (a write must copy it)."""
    q = m.fi32[f, F_OWNER]
    list_remove(m.lists, m.fi32, list_id(m, q), f)
    slot = m.fi32[f, F_SLOT]
    if slot >= 0:
        free_slot(m, slot)
    where = m.fi32[f, F_RMAP]
    m.tables[where >> RMAP_SHIFT, where & _RMAP_MASK] &= ~PTE_WRITABLE
    m.proc[q, P_RESIDENT] -= 1
    m.proc[spid, P_RESIDENT] += 1
    m.fi32[f, F_OWNER] = spid
    m.fi32[f, F_FLAGS] = FR_PINNED
    m.fi32[f, F_SLOT] = -1


@kernel
def map_shared(m: Machine, f: int, shared: int) -> None:
    """The page in frame ``f`` (private to its VM) now maps ``shared``, a shared frame with
    the same content; ``f`` is freed."""
    q = m.fi32[f, F_OWNER]
    where = m.fi32[f, F_RMAP]
    m.tables[where >> RMAP_SHIFT, where & _RMAP_MASK] = (
        (shared << PTE_SHIFT) | PTE_PRESENT | PTE_USER | PTE_ACCESSED
    )
    list_remove(m.lists, m.fi32, list_id(m, q), f)
    slot = m.fi32[f, F_SLOT]
    if slot >= 0:
        free_slot(m, slot)
    m.proc[q, P_RESIDENT] -= 1
    free_frame(m, f)


@kernel
def unmap(m: Machine, pid: int, vpn: int) -> int:
    """Clear the present entry of ``vpn`` in ``pid``'s table; return the frame it mapped
    (-1 if none). The frame is left as it is: the caller owns what happens to it."""
    t, idx = leaf_entry(m, pid, vpn)
    if t < 0:
        return -1
    e = m.tables[t, idx]
    if (e & PTE_PRESENT) == 0:
        return -1
    m.tables[t, idx] = 0
    return e >> PTE_SHIFT


@kernel
def frame_of(m: Machine, pid: int, vpn: int) -> int:
    """The frame ``vpn`` of ``pid`` is in, or -1 (not present)."""
    t, idx = leaf_entry(m, pid, vpn)
    if t < 0:
        return -1
    e = m.tables[t, idx]
    return entry_frame(m, e, vpn) if e & PTE_PRESENT else -1


# ---------------------------------------------------------------------- contents


@inlined
def take_content(m: Machine, f: int, token: int) -> bool:
    """Frame ``f`` holds ``token`` now: if that is new, the frame turns dirty and gives back
    its swap copy, now stale. Returns whether it changed."""
    if m.fi64[f, G_TOKEN] == token:
        return False
    m.fi64[f, G_TOKEN] = token
    m.fi32[f, F_FLAGS] |= FR_DIRTY
    slot = m.fi32[f, F_SLOT]
    if slot >= 0:
        free_slot(m, slot)
        m.fi32[f, F_SLOT] = -1
    return True


@kernel
def sync_contents(m: Machine, pid: int, content: np.ndarray) -> int:
    """Give each data frame of ``pid`` the content of the page it holds: ``content[vpn]``
    for pages ``0 .. len(content)`` (a VM's real pages: the guest frame tokens). A frame
    whose page changed turns dirty and gives back its swap copy, now stale. Returns how
    many changed. It visits the pages' leaf tables, one walk per table: the cost follows
    the VM's size, not the host's."""
    changed = 0
    fi32 = m.fi32
    npages = content.shape[0]
    levels = m.cfg[K_LEVELS]
    span = 1 << m.shifts[levels - 2]  # pages one leaf table (or one huge page) maps
    mask = m.masks[levels - 1]
    for first in range(0, npages, span):
        t, idx = leaf_entry(m, pid, first)
        if t < 0:
            continue
        huge = (m.tables[t, idx] & PTE_HUGE) != 0
        for k in range(min(span, npages - first)):
            if huge:
                f = (m.tables[t, idx] >> PTE_SHIFT) + k
            else:
                e = m.tables[t, ((first + k) & mask)]
                if (e & PTE_PRESENT) == 0:
                    continue
                f = e >> PTE_SHIFT
            if fi32[f, F_OWNER] != pid:
                continue  # a shared frame: its sharing is checked on its own
            if take_content(m, f, content[first + k, G_TOKEN]):
                changed += 1
    return changed


@kernel
def sync_changed(m: Machine, pid: int, content: np.ndarray, changed: np.ndarray) -> int:
    """:func:`sync_contents` for the real pages whose bits are set in the guest's change map
    ``changed`` (each page whose content changed since the last sync): the pages are
    visited in the same order, so the swap slots given back are freed in the same order.

    A page whose host copy is not a frame of ``pid`` (a swap slot, the compression cache,
    a shared frame, nowhere) cannot take the content now: its bit stays set while that
    copy differs from the content (what :func:`host_copy` holds is not ``content[page]``),
    so that :func:`mark_stale_changed` reads it as stale; every other bit is cleared.
    Pages come in order, so consecutive ones share a leaf table: the walk down to it is
    made once for them. Returns how many frames changed."""
    n = 0
    fi32 = m.fi32
    npages = content.shape[0]
    levels = m.cfg[K_LEVELS]
    leaf_shift, shift, mask = m.shifts[levels - 2], m.shifts[levels - 1], m.masks[levels - 1]
    known = -1  # pages come in order: the leaf table of the last prefix looked up
    known_t = -1
    page = next_bit(changed, 0)
    while 0 <= page < npages:
        clear_bit(changed, page)
        if page >> leaf_shift == known:
            t, idx = known_t, (page >> shift) & mask
        else:
            t, idx = leaf_table(m, pid, page)
            if t >= 0 and idx < 0:  # a leaf table (not a huge page's entry)
                known, known_t = page >> leaf_shift, t
                idx = (page >> shift) & mask
            elif t < 0:
                idx = -1
        e = m.tables[t, idx] if t >= 0 else 0
        f = entry_frame(m, e, page) if e & PTE_PRESENT else -1
        if f >= 0 and fi32[f, F_OWNER] == pid:
            if take_content(m, f, content[page, G_TOKEN]):
                n += 1
        elif entry_copy(m, e, page)[1] != content[page, G_TOKEN]:
            # a shared frame (its sharing is checked apart), a swap slot, nowhere
            set_bit(changed, page)  # stale until the host takes it again
        page = next_bit(changed, page + 1)
    return n


@inlined
def known_leaf_entry(m: Machine, pid: int, page: int, leaf_shift: int) -> tuple[int, int]:
    """:func:`leaf_entry`, by way of the leaf tables noted in the path memo's columns
    (``m.memo``: MEMO_PREFIX, MEMO_LEAF), which it fills: the pages of one VM lie under a
    few leaf tables, and the walk down to each is then made once, not once a page."""
    levels = m.cfg[K_LEVELS]
    shift, mask = m.shifts[levels - 1], m.masks[levels - 1]
    t, idx = memo_leaf(m.memo, page, leaf_shift, shift, mask)
    if t >= 0:
        return t, idx
    t, huge_idx = leaf_table(m, pid, page)
    if t < 0 or huge_idx >= 0:  # unmapped above the leaf level, or a huge page's entry
        return t, huge_idx
    slot = (page >> leaf_shift) & (MEMO_SLOTS - 1)
    m.memo[slot, MEMO_PREFIX] = page >> leaf_shift
    m.memo[slot, MEMO_LEAF] = t
    return t, (page >> shift) & mask


@kernel
def prefetch_pages(m: Machine, pid: int, pages: np.ndarray) -> None:
    """Bring the host's last-level entries of ``pages``, then their frames' metadata, into
    the cache: a hint for the host pass that follows, which changes nothing it reads. Its
    loads do not wait for one another, so their cache misses overlap, where the pass's
    walks would meet them one at a time.

    It notes each leaf table it finds in the path memo's columns (run_batch clears them
    when it starts, so they serve here as scratch): the walk down to a leaf table is made
    once a call, not twice a page."""
    leaf_shift = m.shifts[m.cfg[K_LEVELS] - 2]
    m.memo[:, MEMO_PREFIX] = -1
    for k in range(pages.shape[0]):
        t, idx = known_leaf_entry(m, pid, pages[k], leaf_shift)
        if t >= 0:
            prefetch2(m.tables, t, idx)
    for k in range(pages.shape[0]):
        t, idx = known_leaf_entry(m, pid, pages[k], leaf_shift)
        if t >= 0:
            e = m.tables[t, idx]
            if e & PTE_PRESENT:
                f = entry_frame(m, e, pages[k])
                prefetch_row(m.fi32, m.fi64, f)


@kernel
def split_record(
    record: np.ndarray, n: int, pages: np.ndarray, writes: np.ndarray, kinds: np.ndarray,
    data_pages: np.ndarray, written: np.ndarray,
) -> tuple[int, int]:  # fmt: skip
    """The first ``n`` entries of a guest's walk record (each a real page, with the flags
    REC_TABLE and REC_WRITE) as the host pass takes them: each page into ``pages``,
    whether it is written into ``writes`` and its kind (1 for a page-table page, 0 for a
    data page) into ``kinds``; the data pages, and the pages written, in order into
    ``data_pages`` and ``written``. Returns how many of each."""
    n_data = 0
    n_written = 0
    for i in range(n):
        entry = record[i]
        page = entry & REC_PAGE
        pages[i] = page
        w = (entry & REC_WRITE) != 0
        writes[i] = 1 if w else 0
        if w:
            written[n_written] = page
            n_written += 1
        if entry & REC_TABLE:
            kinds[i] = 1
        else:
            kinds[i] = 0
            data_pages[n_data] = page
            n_data += 1
    return n_data, n_written


@kernel
def mark_stale_changed(
    pages: np.ndarray, kinds: np.ndarray, writes: np.ndarray, changed: np.ndarray
) -> int:
    """:func:`mark_stale` after :func:`sync_changed`: the accesses to data pages (those of
    ``pages`` of kind 0) whose bits are still set in the change map (their host copies
    differ from their contents) are marked as writes, without a walk of the host table.
    Returns how many were marked."""
    marked = 0
    for k in range(pages.shape[0]):
        page = pages[k]
        if kinds[k] == 0 and writes[k] == 0 and has_bit(changed, page):
            writes[k] = 1
            marked += 1
    return marked


@kernel
def doubled_pages(m: Machine, pid: int, ring: np.ndarray, n: int, out: np.ndarray) -> int:
    """Of the real pages a guest wrote to its swap (the entries of the first ``n`` of its
    eviction ``ring`` that stored a copy, in order), those ``pid``'s host entry says are
    in swap, into ``out``: double paging. Returns how many."""
    k = 0
    for i in range(min(n, ring.shape[0])):
        if ring[i, RING_WRITTEN] != 1:
            continue
        vpn = ring[i, RING_FRAME]
        t, idx = leaf_entry(m, pid, vpn)
        if t >= 0 and (m.tables[t, idx] & PTE_SWAPPED) != 0:
            out[k] = vpn
            k += 1
    return k


@inlined
def shoot_down_frame(m: Machine, f: int) -> None:
    """Invalidate the TLB entries that map the page in frame ``f``."""
    q = m.fi32[f, F_OWNER]
    flags = m.fi32[f, F_FLAGS]
    if q >= 0 and (flags & FR_TABLE) == 0 and m.fi64[f, G_VPN] >= 0:
        tlb_invalidate(m, q, m.fi64[f, G_VPN], (flags & FR_HUGE) != 0)


@kernel
def shoot_down(m: Machine, frames: np.ndarray) -> None:
    """Invalidate the TLB entries that map the pages in ``frames`` (a TLB shootdown)."""
    for k in range(frames.shape[0]):
        shoot_down_frame(m, frames[k])


@kernel
def shoot_down_ring(m: Machine, ring: np.ndarray, n: int, owner: int) -> int:
    """:func:`shoot_down` for the frames of ``m`` that the first ``n`` evictions of a host's
    ``ring`` took from ``owner`` (a VM whose guest memory ``m`` is: its real pages are the
    guest's frames), in the ring's order. Returns how many."""
    k = 0
    for i in range(min(n, ring.shape[0])):
        if ring[i, RING_OWNER] == owner:
            shoot_down_frame(m, ring[i, RING_VPN])
            k += 1
    return k


@kernel
def fix_swap_copies(m: Machine, ring: np.ndarray, n: int, pid: int, content: np.ndarray) -> None:
    """Pages of ``pid`` that the last ``n`` evictions of ``ring`` wrote to swap take their
    contents from ``content[vpn]``: what they held when they left (their frame's token may
    have lagged behind writes made through a TLB in the same quantum)."""
    for k in range(min(n, ring.shape[0])):
        if ring[k, 0] != pid or ring[k, 3] == 0:
            continue
        vpn = ring[k, 1]
        t, idx = leaf_entry(m, pid, vpn)
        if t < 0:
            continue
        e = m.tables[t, idx]
        if e & PTE_SWAPPED:
            m.swap_token[e >> PTE_SHIFT] = content[vpn, G_TOKEN]


@kernel
def fix_all_swap_copies(m: Machine, pid: int, content: np.ndarray) -> None:
    """:func:`fix_swap_copies` for every page of ``pid`` in swap (when the eviction log
    overflowed): each takes ``content[vpn]``. Pages swapped out earlier hold it already;
    those of the pass that overflowed the log may lag behind it. Visits the pages' leaf
    tables, one walk per table."""
    levels = m.cfg[K_LEVELS]
    span = 1 << m.shifts[levels - 2]
    mask = m.masks[levels - 1]
    npages = content.shape[0]
    for first in range(0, npages, span):
        t, idx = leaf_entry(m, pid, first)
        if t < 0 or (m.tables[t, idx] & PTE_HUGE) != 0:
            continue  # nothing mapped there, or a huge page (never swapped)
        for k in range(min(span, npages - first)):
            e = m.tables[t, (first + k) & mask]
            if e & PTE_SWAPPED:
                m.swap_token[e >> PTE_SHIFT] = content[first + k, G_TOKEN]


@inlined
def entry_copy(m: Machine, e: int, vpn: int) -> tuple[int, int]:
    """:func:`host_copy` of the page whose last-level entry is ``e``."""
    if e & PTE_PRESENT:
        return 1, m.fi64[entry_frame(m, e, vpn), G_TOKEN]
    if e & PTE_SWAPPED:
        return 2, m.swap_token[e >> PTE_SHIFT]
    return 0, 0


@kernel
def host_copy(m: Machine, pid: int, vpn: int) -> tuple[int, int]:
    """Where the host keeps page ``vpn`` of ``pid`` and its content: (1, token) in a frame,
    (2, token) in a swap slot or the compression cache, (0, 0) nowhere."""
    t, idx = leaf_entry(m, pid, vpn)
    if t < 0:
        return 0, 0
    return entry_copy(m, m.tables[t, idx], vpn)


@kernel
def mark_stale(
    m: Machine, pid: int, pages: np.ndarray, content: np.ndarray, writes: np.ndarray
) -> int:
    """Mark as writes the accesses to ``pages`` whose content the host does not hold yet
    (its copy, in a frame or in swap, differs from ``content[page]``, or it has none and
    the page is not zeros): the guest wrote them through its TLB, and the hardware would
    have set the host entry's dirty bit. Returns how many were marked."""
    marked = 0
    for k in range(pages.shape[0]):
        if writes[k] != 0:
            continue
        _, token = host_copy(m, pid, pages[k])
        if token != content[pages[k], G_TOKEN]:
            writes[k] = 1
            marked += 1
    return marked


@kernel
def first_bad_copy(m: Machine, pid: int, guest: Machine, skip_owner: int) -> int:
    """The first real page in use by a guest process whose host copy (frame, shared frame,
    swap slot or compression cache) does not hold what the guest frame holds, or -1.
    A page the host holds nowhere must be zeros. Pages of ``skip_owner`` (the balloon) and
    page-table pages are not checked: the guest does not read their contents."""
    for rpn in range(guest.fi32.shape[0]):
        q = guest.fi32[rpn, F_OWNER]
        if q < 0 or q == skip_owner or (guest.fi32[rpn, F_FLAGS] & FR_TABLE) != 0:
            continue
        where, token = host_copy(m, pid, rpn)
        want = guest.fi64[rpn, G_TOKEN]
        if token != want or (where == 0 and want != 0):
            return rpn
    return -1


@kernel
def settle_tokens(m: Machine, pid: int, pages: np.ndarray, content: np.ndarray) -> int:
    """After a host pass over ``pages`` of ``pid``: each one in a frame of ``pid`` holds
    ``content[page]`` (the pass's own writes and zero-filling faults leave the host's
    tokens behind the guest's). Returns how many frames changed."""
    n = 0
    for k in range(pages.shape[0]):
        t, idx = leaf_entry(m, pid, pages[k])  # (frame_of's lookup, one call fewer per page)
        if t < 0 or (m.tables[t, idx] & PTE_PRESENT) == 0:
            continue
        f = entry_frame(m, m.tables[t, idx], pages[k])
        if m.fi32[f, F_OWNER] == pid and take_content(m, f, content[pages[k], G_TOKEN]):
            n += 1
    return n


@kernel
def settle_changed(
    m: Machine, pid: int, pages: np.ndarray, content: np.ndarray, marks: np.ndarray,
    guest_changed: np.ndarray,
) -> None:  # fmt: skip
    """:func:`settle_tokens` for the frames whose bits are set in the host's change map
    (``m.changed``, K_SYNC), which it clears.

    Before a host pass every frame of ``pid`` holds its real page's content (the content
    sync), and a frame's token changes, or the frame takes another page, only through a
    write or :func:`~.native.set_token`, both of which set its bit. So only the frames
    whose bits are set can differ from their pages' contents. Those that hold one of
    ``pages`` and do differ are settled in the order of ``pages``, as by
    :func:`settle_tokens`, so any swap slots given back are freed in the same order.
    The others that differ (page-table pages the pass wrote) have their pages' bits set
    in the guest's change map ``guest_changed``, for the next content sync. ``marks`` is
    two bitmaps over ``pid``'s pages (the pages of the pass, and those to settle), all
    clear, and left so.
    """
    fi32, fi64, changed = m.fi32, m.fi64, m.changed
    nframes, npages = fi32.shape[0], content.shape[0]
    passed, due = marks[0], marks[1]
    for k in range(pages.shape[0]):
        set_bit(passed, pages[k])
    n = 0
    f = next_bit(changed, 0)
    while 0 <= f < nframes:
        clear_bit(changed, f)
        page = fi64[f, G_VPN]
        ours = fi32[f, F_OWNER] == pid and fi32[f, F_FLAGS] & FR_TABLE == 0
        if ours and 0 <= page < npages and fi64[f, G_TOKEN] != content[page, G_TOKEN]:
            if has_bit(passed, page):
                set_bit(due, page)
                n += 1
            else:
                set_bit(guest_changed, page)
        f = next_bit(changed, f + 1)
    for k in range(pages.shape[0]):
        page = pages[k]
        passed[page >> 6] = 0
        if n == 0 or not has_bit(due, page):
            continue
        clear_bit(due, page)
        n -= 1
        t, idx = leaf_entry(m, pid, page)
        if t >= 0 and m.tables[t, idx] & PTE_PRESENT:
            f = entry_frame(m, m.tables[t, idx], page)
            if fi32[f, F_OWNER] == pid:
                take_content(m, f, content[page, G_TOKEN])


# violations the accounting check reports (first found), with the page or frame involved
CHECK_OK = 0
CHECK_FREE_OWNED = 1  # a frame on the free list has an owner
CHECK_FREE_TWICE = 2  # a frame is on the free list twice
CHECK_LOST_FRAME = 3  # a frame is neither free nor owned
CHECK_WRONG_OWNER = 4  # a page is mapped to a frame another VM owns privately
CHECK_MAPPED_TWICE = 5  # a private frame is mapped by two pages
CHECK_UNMAPPED = 6  # a VM's private data frame is mapped by no page
CHECK_BACK_POINTER = 7  # a private frame's back-pointer names another page
CHECK_SLOT_OWNER = 8  # a swapped page's slot belongs to another owner, or to none
CHECK_SLOT_TWICE = 9  # a swap slot holds two pages
CHECK_SLOT_LOST = 10  # a used swap slot holds no page
CHECK_COUNTS = 11  # a VM's resident, swapped or compressed count is wrong
CHECK_BALLOON_BACKED = 12  # a balloon page is still backed by the host


@kernel
def check_accounting(
    m: Machine,
    vm_pids: np.ndarray,
    guests_owner: np.ndarray,
    balloon_pids: np.ndarray,
    shared_pid: int,
    refs: np.ndarray,
    slot_refs: np.ndarray,
    out: np.ndarray,
) -> int:
    """Check that the host's memory is accounted for exactly once: every frame is free or
    owned, and free once; every real page of every VM is in one frame of its own, in a
    shared frame, in one swap slot (or compressed) of its own, or nowhere; every private
    data frame is mapped by exactly one page, the page its back-pointer names; every used
    swap slot holds exactly one page (by an entry or a frame's swap-cache link); each
    VM's counts match; no balloon page is backed. ``guests_owner[v, rpn]`` is the owner of
    real page ``rpn`` in VM ``v``'s guest (-1 free). ``refs[f]`` (frames) is left holding
    how many pages map each frame, for the caller to check shared frames' counts.

    Returns CHECK_OK or the first violation; ``out`` then holds (vm index, page, frame)."""
    nframes = m.fi32.shape[0]
    refs[:] = 0
    slot_refs[:] = 0
    seen = refs  # reused below: first as a free-list marker
    f = m.st[S_FREE_HEAD]
    for _ in range(m.st[S_FREE_TOP]):
        if f < 0:  # the chain ends before the count of free frames
            out[0], out[1], out[2] = -1, -1, -1
            return CHECK_LOST_FRAME
        if m.fi32[f, F_OWNER] >= 0:
            out[0], out[1], out[2] = -1, -1, f
            return CHECK_FREE_OWNED
        if seen[f] != 0:
            out[0], out[1], out[2] = -1, -1, f
            return CHECK_FREE_TWICE
        seen[f] = 1
        f = m.fi32[f, F_NEXT]
    huge_free = m.st[S_HUGE_TOP] * (1 << m.cfg[K_HUGE_SHIFT])
    owned = 0
    for f in range(nframes):
        if m.fi32[f, F_OWNER] >= 0:
            owned += 1
    if owned + m.st[S_FREE_TOP] + huge_free != nframes:
        out[0], out[1], out[2] = -1, -1, -1
        return CHECK_LOST_FRAME
    refs[:] = 0
    for v in range(vm_pids.shape[0]):
        pid = vm_pids[v]
        if m.proc[pid, P_ALIVE] == 0:
            continue
        resident = 0
        swapped = 0
        compressed = 0
        for rpn in range(guests_owner.shape[1]):
            t, idx = leaf_entry(m, pid, rpn)
            if t < 0:
                continue
            e = m.tables[t, idx]
            if e & PTE_PRESENT:
                f = entry_frame(m, e, rpn)
                q = m.fi32[f, F_OWNER]
                if q == pid:
                    refs[f] += 1
                    if refs[f] > 1:
                        out[0], out[1], out[2] = v, rpn, f
                        return CHECK_MAPPED_TWICE
                    if m.fi64[f, G_VPN] != rpn:
                        out[0], out[1], out[2] = v, rpn, f
                        return CHECK_BACK_POINTER
                    resident += 1
                    slot = m.fi32[f, F_SLOT]
                    if slot >= 0:
                        slot_refs[slot] += 1
                elif q == shared_pid:
                    refs[f] += 1
                else:
                    out[0], out[1], out[2] = v, rpn, f
                    return CHECK_WRONG_OWNER
                if guests_owner[v, rpn] == balloon_pids[v]:
                    out[0], out[1], out[2] = v, rpn, f
                    return CHECK_BALLOON_BACKED
            elif e & PTE_SWAPPED:
                slot = e >> PTE_SHIFT
                if m.swap_owner[slot] != pid:
                    out[0], out[1], out[2] = v, rpn, slot
                    return CHECK_SLOT_OWNER
                slot_refs[slot] += 1
                swapped += 1
                if m.swap_csize[slot] > 0:
                    compressed += 1
                if guests_owner[v, rpn] == balloon_pids[v]:
                    out[0], out[1], out[2] = v, rpn, slot
                    return CHECK_BALLOON_BACKED
        if (
            resident != m.proc[pid, P_RESIDENT]
            or swapped != m.proc[pid, P_SWAPPED]
            or compressed != m.proc[pid, P_COMPRESSED]
        ):
            out[0], out[1], out[2] = v, resident, swapped
            return CHECK_COUNTS
    for f in range(nframes):
        q = m.fi32[f, F_OWNER]
        if q < 0 or refs[f] != 0:
            continue
        flags = m.fi32[f, F_FLAGS]
        if (flags & (FR_TABLE | FR_PINNED)) != 0:
            continue
        for v in range(vm_pids.shape[0]):
            if vm_pids[v] == q and m.proc[q, P_ALIVE] != 0:
                out[0], out[1], out[2] = v, m.fi64[f, G_VPN], f
                return CHECK_UNMAPPED
    for slot in range(m.swap_owner.shape[0]):
        if slot_refs[slot] > 1:
            out[0], out[1], out[2] = -1, -1, slot
            return CHECK_SLOT_TWICE
        if m.swap_owner[slot] >= 0 and slot_refs[slot] == 0:
            out[0], out[1], out[2] = -1, -1, slot
            return CHECK_SLOT_LOST
    return CHECK_OK
