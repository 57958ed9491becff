"""Page sharing's data plane: the hash tables of content-based sharing, and the scan.

ESX's page sharing (Waldspurger, OSDI 2002, section 4) finds identical pages by their
contents. A scanner visits a few pages of each VM per second and looks each page's
content up in a hash table:

- the content is already held by a **shared frame**: the page is mapped to it, read
  only, and its own frame is freed;
- the content was seen once before, in another page: that page is a **hint**. If the
  hinted page still holds the content (it may have been written since), it becomes a
  shared frame and the page just scanned maps it too; if not, the page just scanned
  becomes the hint;
- the content is new: the page becomes its hint.

A write to a shared page copies it to a private frame first (copy-on-write); the last
page to leave a shared frame frees it. With *salting* (``inter_vm = false``) a content
key is (VM, token), so only pages within one VM are shared.

**A page has at most one hint.** The paper calls a hint "a page whose contents have not
been shared, that may change": it stands for one page, as it is now. So when a page is
hinted under a new key (its contents changed since it was last scanned), or is shared
(it maps a shared frame, or its hint row becomes one), its old hint row is removed; and
when a hint is found stale (its page changed, or is out of memory), the row passes to the
page just scanned and no longer names the old page. Each page remembers the key of its
hint, so its old row is found at once. The table then holds at most one row per real page
plus one per shared frame, however long guests keep writing new contents, as ESX's does
(it has one entry per page). Keeping every content ever seen, as a dictionary of hints
would, grows the table without bound: the memory of a run of hours climbs by tens of MB
per simulated hour. The rule changes a result only where a stale hint would have become
valid again, a page returning to a content it held before (the zero page, say): that
page is then found by its next scan rather than through its old row.

A scan visits every page it is given, but most contents are unique: a page is looked up
and becomes a hint, and nothing else happens. So the tables are arrays and the scan is
one compiled loop. Nothing comes back to the control plane
(:mod:`memvirt.hypervisor.reclamation`) but counts: its ``real page -> shared frame``
mapping of each VM is a view of the VM's log (:class:`SharedPages`). The scan also lists
the pages it shared, as events, for whoever follows sharing page by page (the tests).

The tables are open-addressing hash tables: each one an ``int64[capacity, width]`` array
of rows, a key's row found by hashing the key to a slot and stepping to the next slot
while the slot holds another key (*linear probing*). A removed row becomes a tombstone
(``DEAD``), which a lookup steps over and an insertion reuses. The control plane keeps
every table at most half full, counting tombstones, by rebuilding it before a step that
may insert rows (a kernel cannot allocate): the rebuilt table holds the live rows only,
sized by their number, so tombstones never pile up and a table whose rows were removed
shrinks again. A table is rebuilt where it is, resized in place: memory never used
before is dear (its pages are faulted in and zeroed), and a table that doubles needs new
memory for its new half only.

- **contents**: key (salt, token) -> a shared frame holding that content, or the hint
  (VM, real page) of the one page seen with it. The salt is -1 when VMs share with each
  other, the VM's index when salted.
- **pages**: key (VM, real page) -> the shared frame the page maps, and where the page
  is in its VM's log. A bitmap per VM tells at once whether a page is shared at all
  (the common answer is no: a scan asks for every page it visits).
- **frames**: key (shared frame, 0) -> how many pages map it, and its content key.
- **hints by page**: a bitmap per VM of the pages that are a hint, and the token each
  is hinted under (its row's key, with the VM's salt).

Each VM also has a **log** of its shared pages, (real page, shared frame, the frame's
content) in the order they were shared, as a Python ``dict`` keeps its keys: a page that
stops being shared leaves a hole, and holes are closed up now and then, keeping the
order. Checking a VM's shared pages before each host pass reads its log from start to end
(mostly in page order too, the order the scan goes), comparing each page's content with
the one in the log, and undoes broken sharing, freeing frames, in that order.

A kernel sees the guest arrays of the VM it scans only. When VMs share with each other, a
hint may name a page of another VM, whose current token decides whether it still holds
the content: the control plane reads those tokens before the scan
(:func:`hints_elsewhere` says which).
"""

from __future__ import annotations

from collections.abc import ItemsView, Iterator, Mapping
from typing import Any, NamedTuple

import numpy as np

from .jit import inlined, kernel
from .layout import (
    F_FLAGS,
    FR_PINNED,
    FR_TABLE,
    G_TOKEN,
    K_HUGE_SHIFT,
    K_LEVELS,
    PTE_HUGE,
    PTE_PRESENT,
    PTE_SHIFT,
)
from .reclaim import (
    discard,
    frame_of,
    leaf_table,
    make_shared,
    map_shared,
    release_frames,
    unmap,
)
from .state import Machine

# --- every table's row: its state and its key (a, b) --------------------------------
EMPTY = 0  # never used: a lookup stops here (np.zeros makes an empty table)
LIVE = 1
DEAD = 2  # removed: a lookup steps over it
H_STATE = 0
H_A = 1
H_B = 2

# contents: key (salt, token)
# the shared frame holding the content (>= 0), or the hint: the VM and real page that
# hold it, as ~(vm << HINT_SHIFT | page) (< 0): a row is 32 bytes
CT_VALUE = 3
N_CONTENT = 4
HINT_SHIFT = 32
HINT_PAGE = (1 << HINT_SHIFT) - 1

# pages: key (vm, real page)
PG_FRAME = 3  # the shared frame the page maps
PG_POS = 4  # where the page is in its VM's log
N_PAGE = 5

# a VM's log: one entry per page shared, in order; LG_PAGE -1 for a page no longer shared
LG_PAGE = 0
LG_FRAME = 1
LG_TOKEN = 2  # the shared frame's content, which stays as it is while the frame is shared
N_LOG = 3
# per VM: log entries used (live and holes), live entries
LN_USED = 0
LN_LIVE = 1

# frames: key (shared frame, 0)
FM_REFS = 3  # pages mapping the frame
FM_SALT = 4  # its content key
FM_TOKEN = 5
N_FRAME = 6

# rows of the counts array, one per table: (live rows, dead rows)
CONTENTS = 0
PAGES = 1
FRAMES = 2

# the key of a content when VMs share with each other
NO_SALT = -1
# a scan that reads no hints in other VMs (salted): no rows, no tokens
NO_HINTS = np.zeros(0, dtype=np.int64)

_SKIP = FR_PINNED | FR_TABLE
_BATCH = 32  # pages whose contents rows a scan reads ahead
_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xBF58476D1CE4E5B9)
_MIX3 = np.uint64(0x94D049BB133111EB)


class Tables(NamedTuple):
    """The arrays of page sharing, bundled for the kernels (as :class:`.state.Machine`)."""

    contents: np.ndarray  # int64[capacity, N_CONTENT]
    pages: np.ndarray  # int64[capacity, N_PAGE]
    frames: np.ndarray  # int64[capacity, N_FRAME]
    log: np.ndarray  # int64[vms, capacity, N_LOG] each VM's shared pages, in order
    log_n: np.ndarray  # int64[vms, 2] entries of each VM's log used, and live
    bits: np.ndarray  # int64[vms, words] bit p % 64 of word p // 64: real page p is shared
    counts: np.ndarray  # int64[3, 2] live and dead rows of contents, pages and frames
    one: np.ndarray  # int64[1] room for a frame to release
    hinted: np.ndarray  # int64[vms, words] as bits: real page p is the hint of a contents row
    hint_token: np.ndarray  # int64[vms, pages] the token a hinted page is hinted under
    # int64[vms, words] as bits: real page p is shared and its guest notes its next change
    # (each guest's watch map is its row: :func:`.native.note_change`)
    watch: np.ndarray


# ------------------------------------------------------------------------- hashing


@inlined
def _slot(a: int, b: int, mask: int) -> int:
    """Where key (a, b) starts probing: a 64-bit mix of both words (splitmix64's
    finalizer), so that tokens that differ in a few bits land far apart."""
    x = np.uint64(a) * _MIX1 + np.uint64(b)
    x ^= x >> np.uint64(30)
    x *= _MIX2
    x ^= x >> np.uint64(27)
    x *= _MIX3
    x ^= x >> np.uint64(31)
    return np.int64(x & np.uint64(mask))


@inlined
def find(t: np.ndarray, a: int, b: int) -> int:
    """The row of key (a, b) in table ``t``, or -1."""
    mask = t.shape[0] - 1
    s = _slot(a, b, mask)
    while True:
        state = t[s, H_STATE]
        if state == EMPTY:
            return -1
        if state == LIVE and t[s, H_A] == a and t[s, H_B] == b:
            return s
        s = (s + 1) & mask


@inlined
def _free_row(t: np.ndarray, a: int, b: int) -> int:
    """The first row not in use on key (a, b)'s probe path (the key is not in ``t``)."""
    mask = t.shape[0] - 1
    s = _slot(a, b, mask)
    while t[s, H_STATE] == LIVE:
        s = (s + 1) & mask
    return s


@inlined
def place(t: np.ndarray, counts: np.ndarray, which: int, a: int, b: int) -> int:
    """A new row for key (a, b), which is not in table ``t`` (row ``which`` of counts)."""
    s = _free_row(t, a, b)
    if t[s, H_STATE] == DEAD:
        counts[which, 1] -= 1
    counts[which, 0] += 1
    t[s, H_STATE] = LIVE
    t[s, H_A] = a
    t[s, H_B] = b
    return s


@inlined
def remove(t: np.ndarray, counts: np.ndarray, which: int, s: int) -> None:
    """Row ``s`` of table ``t`` is removed: a tombstone."""
    t[s, H_STATE] = DEAD
    counts[which, 0] -= 1
    counts[which, 1] += 1


@kernel
def rehash(
    t: np.ndarray, old_rows: int, new_rows: int, scratch: np.ndarray, counts: np.ndarray, which: int
) -> None:
    """Rebuild table ``t`` (row ``which`` of the counts) in place: the live rows of its
    first ``old_rows`` rows go, without tombstones, into its first ``new_rows`` rows (a
    power of two, at most ``t``'s rows, which are zeros from ``old_rows`` on), by way of
    ``scratch`` (room for the live rows, one after another). The rows left empty are
    zeros."""
    width = t.shape[1]
    n = 0
    for s in range(old_rows):
        if t[s, H_STATE] == LIVE:
            for c in range(width):
                scratch[n * width + c] = t[s, c]
            n += 1
        for c in range(width):
            t[s, c] = 0
    mask = new_rows - 1
    for k in range(n):
        row = k * width
        d = _slot(scratch[row + H_A], scratch[row + H_B], mask)
        while t[d, H_STATE] == LIVE:
            d = (d + 1) & mask
        for c in range(width):
            t[d, c] = scratch[row + c]
    counts[which, 1] = 0


# ------------------------------------------------------------- pages and their logs


@inlined
def is_shared(tb: Tables, vm: int, page: int) -> bool:
    """Whether ``page`` of ``vm`` maps a shared frame."""
    return ((tb.bits[vm, page >> 6] >> (page & 63)) & 1) != 0


@inlined
def _add_page(tb: Tables, vm: int, page: int, frame: int, token: int) -> None:
    tb.bits[vm, page >> 6] |= np.int64(1) << (page & 63)
    tb.watch[vm, page >> 6] |= np.int64(1) << (page & 63)
    pos = tb.log_n[vm, LN_USED]
    tb.log[vm, pos, LG_PAGE] = page
    tb.log[vm, pos, LG_FRAME] = frame
    tb.log[vm, pos, LG_TOKEN] = token
    tb.log_n[vm, LN_USED] = pos + 1
    tb.log_n[vm, LN_LIVE] += 1
    s = place(tb.pages, tb.counts, PAGES, vm, page)
    tb.pages[s, PG_FRAME] = frame
    tb.pages[s, PG_POS] = pos


@inlined
def _remove_page(tb: Tables, s: int) -> None:
    vm, page = tb.pages[s, H_A], tb.pages[s, H_B]
    tb.bits[vm, page >> 6] &= ~(np.int64(1) << (page & 63))
    tb.watch[vm, page >> 6] &= ~(np.int64(1) << (page & 63))
    tb.log[vm, tb.pages[s, PG_POS], LG_PAGE] = -1
    tb.log_n[vm, LN_LIVE] -= 1
    remove(tb.pages, tb.counts, PAGES, s)


@inlined
def _close_up(tb: Tables, vm: int) -> None:
    log = tb.log
    w = 0
    for pos in range(tb.log_n[vm, LN_USED]):
        page = log[vm, pos, LG_PAGE]
        if page < 0:
            continue
        if w != pos:
            for c in range(N_LOG):
                log[vm, w, c] = log[vm, pos, c]
            tb.pages[find(tb.pages, vm, page), PG_POS] = w
        w += 1
    tb.log_n[vm, LN_USED] = w


@kernel
def close_up(tb: Tables, vm: int) -> None:
    """Close the holes in ``vm``'s log, keeping the order."""
    _close_up(tb, vm)


# ------------------------------------------------------------------ hints by page


@inlined
def _hint_value(vm: int, page: int) -> int:
    """A contents row's ``CT_VALUE`` when ``page`` of ``vm`` is its hint."""
    return ~((vm << HINT_SHIFT) | page)


@inlined
def is_hint(tb: Tables, vm: int, page: int) -> bool:
    """Whether ``page`` of ``vm`` is the hint of a contents row."""
    return ((tb.hinted[vm, page >> 6] >> (page & 63)) & 1) != 0


@inlined
def _set_hint(tb: Tables, vm: int, page: int, token: int) -> None:
    tb.hinted[vm, page >> 6] |= np.int64(1) << (page & 63)
    tb.hint_token[vm, page] = token


@inlined
def _unmark_hint(tb: Tables, vm: int, page: int) -> None:
    """``page`` of ``vm`` is no longer a hint: its row now holds a shared frame, or names
    another page (the row stays)."""
    tb.hinted[vm, page >> 6] &= ~(np.int64(1) << (page & 63))


@inlined
def _drop_hint(tb: Tables, salt: int, vm: int, page: int) -> None:
    """``page`` of ``vm`` (content keys salted with ``salt``) is about to be hinted under
    another key, or shared: its hint row, if it has one, is removed (a page has one hint
    at most)."""
    if not is_hint(tb, vm, page):
        return
    _unmark_hint(tb, vm, page)
    cs = find(tb.contents, salt, tb.hint_token[vm, page])
    if cs >= 0 and tb.contents[cs, CT_VALUE] == _hint_value(vm, page):
        remove(tb.contents, tb.counts, CONTENTS, cs)


# ------------------------------------------------------------------ shared frames


@inlined
def _release_ref(m: Machine, tb: Tables, frame: int) -> None:
    """One page fewer maps shared ``frame``: after the last, the frame is freed and its
    content is no longer in the table."""
    fs = find(tb.frames, frame, 0)
    if fs < 0:
        return
    tb.frames[fs, FM_REFS] -= 1
    if tb.frames[fs, FM_REFS] > 0:
        return
    salt, token = tb.frames[fs, FM_SALT], tb.frames[fs, FM_TOKEN]
    remove(tb.frames, tb.counts, FRAMES, fs)
    cs = find(tb.contents, salt, token)
    if cs >= 0 and tb.contents[cs, CT_VALUE] == frame:
        remove(tb.contents, tb.counts, CONTENTS, cs)
    tb.one[0] = frame
    release_frames(m, tb.one, 1)


@kernel
def drop_ref(m: Machine, tb: Tables, frame: int, vm: int, page: int) -> None:
    """Page ``page`` of ``vm`` no longer counts among the pages mapping shared ``frame``
    (its mapping is gone: the VM was stopped); nothing if it was not one of them."""
    if not is_shared(tb, vm, page):
        return
    s = find(tb.pages, vm, page)
    if s < 0 or tb.pages[s, PG_FRAME] != frame:
        return
    _remove_page(tb, s)
    _release_ref(m, tb, frame)


@inlined
def _unshare(m: Machine, tb: Tables, vm: int, pid: int, page: int) -> int:
    """Page ``page`` of ``vm`` (host process ``pid``) stops mapping its shared frame: its
    host entry is cleared. Returns the shared frame, or -1 if the page was not shared."""
    if not is_shared(tb, vm, page):
        return -1
    s = find(tb.pages, vm, page)
    frame = tb.pages[s, PG_FRAME]
    _remove_page(tb, s)
    unmap(m, pid, page)
    _release_ref(m, tb, frame)
    return frame


@kernel
def break_sharing(
    m: Machine,
    tb: Tables,
    g_fi64: np.ndarray,
    vm: int,
    pid: int,
    written: np.ndarray,
    changed: np.ndarray,
    n_changed: int,
    marks: np.ndarray,
    out: np.ndarray,
    order: np.ndarray,
) -> int:
    """Unshare the pages of ``vm`` whose contents changed (the guest's token is not the
    shared frame's) or that are in ``written``; they go into ``out`` in the order they
    were shared. Returns how many.

    A shared page's content can only have changed if its guest noted the change in its
    watch log (:func:`.native.note_change`), ``changed[:n_changed]``: only the shared
    pages among ``written`` and those are judged, unless the log overflowed (``n_changed``
    beyond its length), when every shared page is. A page judged unchanged is watched
    again. ``out`` and ``order`` (scratch) hold as many as ``vm`` has shared pages;
    ``marks`` has a zero bit for each real page (bit ``p % 64`` of word ``p // 64``), and
    is left so."""
    one = np.uint64(1)
    log = tb.log
    n = 0
    nw = written.shape[0]
    if n_changed > changed.shape[0]:
        for k in range(nw):
            page = written[k]
            if is_shared(tb, vm, page):
                marks[page >> 6] |= one << np.uint64(page & 63)
        for pos in range(tb.log_n[vm, LN_USED]):  # every page is judged before any goes
            page = log[vm, pos, LG_PAGE]
            if page < 0:
                continue
            marked = (marks[page >> 6] >> np.uint64(page & 63)) & one
            # the frame's content is in the log: no read of the host's frame, which would
            # be a cache miss for nearly every shared page
            if marked != 0 or g_fi64[page, G_TOKEN] != log[vm, pos, LG_TOKEN]:
                out[n] = page
                n += 1
            else:
                tb.watch[vm, page >> 6] |= np.int64(1) << (page & 63)
        n_changed = 0
    else:
        # the candidates, each once (marked), kept in the order they were shared
        for k in range(nw + n_changed):
            page = written[k] if k < nw else changed[k - nw]
            if not is_shared(tb, vm, page):
                continue
            if (marks[page >> 6] >> np.uint64(page & 63)) & one:
                continue
            marks[page >> 6] |= one << np.uint64(page & 63)
            pos = tb.pages[find(tb.pages, vm, page), PG_POS]
            if k < nw or g_fi64[page, G_TOKEN] != log[vm, pos, LG_TOKEN]:
                j = n  # insertion by place in the log: a pass breaks few sharings
                while j > 0 and order[j - 1] > pos:
                    order[j] = order[j - 1]
                    out[j] = out[j - 1]
                    j -= 1
                order[j] = pos
                out[j] = page
                n += 1
            else:  # its content came back (a swap-in): it stays shared, watched again
                tb.watch[vm, page >> 6] |= np.int64(1) << (page & 63)
    for k in range(nw):
        marks[written[k] >> 6] = 0  # no page is unshared yet: the words marked are these
    for k in range(n_changed):
        marks[changed[k] >> 6] = 0
    for k in range(n):
        _unshare(m, tb, vm, pid, out[k])
    live = tb.log_n[vm, LN_LIVE]
    if tb.log_n[vm, LN_USED] - live > max(live, 64):  # more holes than pages: close up
        _close_up(tb, vm)
    return n


@kernel
def unshare_pages(
    m: Machine, tb: Tables, vm: int, pid: int, pages: np.ndarray, out: np.ndarray
) -> int:
    """Of ``pages`` of ``vm`` (host process ``pid``), those that map a shared frame stop
    mapping it, in order, and go into ``out``; returns how many."""
    n = 0
    for k in range(pages.shape[0]):
        if _unshare(m, tb, vm, pid, pages[k]) >= 0:
            out[n] = pages[k]
            n += 1
    return n


@kernel
def discard_pages(
    m: Machine,
    tb: Tables,
    vm: int,
    pid: int,
    any_shared: bool,
    pages: np.ndarray,
    shared_out: np.ndarray,
) -> int:
    """The hypervisor frees what backs ``pages`` of ``vm`` (host process ``pid``), balloon
    pages: those that map a shared frame stop mapping it, in order (when ``any_shared``:
    the VM has shared pages at all), then :func:`.reclaim.discard` frees the frames and
    swap slots of the rest. One call for what is two steps, as a balloon inflates by a
    hundred pages or so at a time. Returns how many frames were freed."""
    if any_shared:
        for k in range(pages.shape[0]):
            _unshare(m, tb, vm, pid, pages[k])
    freed, _ = discard(m, pid, pages, shared_out)
    return freed


# ------------------------------------------------------------------------ the scan


@kernel
def hints_elsewhere(
    tb: Tables,
    g_fi64: np.ndarray,
    g_fi32: np.ndarray,
    vm: int,
    salt: int,
    cursor: int,
    n: int,
    real_pages: int,
    out: np.ndarray,
) -> int:
    """The contents rows, into ``out``, of the hints in other VMs that a scan of ``n``
    pages of ``vm`` from ``cursor`` may consult; returns how many (with repeats).

    A hint is checked against its page's current token, which is in its own VM's guest
    arrays: the control plane reads those for the scan (``hint_tokens``). A scan never
    adds a hint in another VM (only the pages it visits become hints), and no guest
    token changes during it, so the tokens read before are those the scan would read."""
    k = 0
    contents = tb.contents
    for i in range(n):
        page = (cursor + i) % real_pages
        if g_fi32[page, F_FLAGS] & _SKIP:
            continue
        cs = find(contents, salt, g_fi64[page, G_TOKEN])
        if cs >= 0 and contents[cs, CT_VALUE] < 0 and (~contents[cs, CT_VALUE] >> HINT_SHIFT) != vm:
            out[k] = cs
            k += 1
    return k


@kernel
def scan(
    m: Machine,
    tb: Tables,
    g_fi64: np.ndarray,
    g_fi32: np.ndarray,
    vm: int,
    pid: int,
    salt: int,
    cursor: int,
    n: int,
    real_pages: int,
    pids: np.ndarray,
    spid: int,
    hint_rows: np.ndarray,
    hint_tokens: np.ndarray,
    events: np.ndarray,
) -> tuple[int, int, int, int]:
    """Scan ``n`` real pages of ``vm`` (host process ``pid``, guest arrays ``g_fi64``,
    ``g_fi32``) from ``cursor``, wrapping at ``real_pages``, for contents to share.

    ``pids`` holds each VM's host process, ``spid`` is the pseudo-process that owns the
    shared frames, ``salt`` the salt of this VM's content keys; ``hint_tokens`` holds
    the current tokens of the pages hinted in other VMs, by contents row (``hint_rows``,
    sorted: :func:`hints_elsewhere`). Each page that starts mapping a shared frame is an
    event ``(vm, real page, frame)`` in ``events`` (room for ``2 n``), in order. Returns
    (events, pages of ``vm`` that became shared, events of other VMs, hints in other VMs
    whose token was missing: none, unless the rows were not read as they should be)."""
    contents = tb.contents
    k = 0
    shared_pages = 0
    elsewhere = 0
    missing = 0
    mask = contents.shape[0] - 1
    # the pages go in order, so each leaf table of the VM's host table is found once, not
    # walked to for every page (nothing the scan does changes the upper levels)
    levels = m.cfg[K_LEVELS]
    block_shift = m.shifts[levels - 2]
    leaf_shift, leaf_mask = m.shifts[levels - 1], m.masks[levels - 1]
    huge_mask = (1 << m.cfg[K_HUGE_SHIFT]) - 1
    block, leaf, huge_at = -1, -1, -1
    for i in range(n):
        if i % _BATCH == 0:
            # read the contents rows of the next pages' keys first, all at once, and the rows
            # of the hints that changed pages give up: the table is larger than the caches,
            # and misses that go out together overlap, where one at a time each would wait
            # its turn (this decides nothing)
            seen = 0
            for j in range(i, min(n, i + _BATCH)):
                ahead = (cursor + j) % real_pages
                ahead_token = g_fi64[ahead, G_TOKEN]
                seen += contents[_slot(salt, ahead_token, mask), H_STATE]
                if is_hint(tb, vm, ahead) and tb.hint_token[vm, ahead] != ahead_token:
                    seen += contents[_slot(salt, tb.hint_token[vm, ahead], mask), H_STATE]
            tb.one[0] = seen  # a use, so that the reads stay
        page = (cursor + i) % real_pages
        # balloon pages are not the guest's to share, and page-table pages change
        # without their tokens changing: neither is a candidate
        if g_fi32[page, F_FLAGS] & _SKIP:
            continue
        if is_shared(tb, vm, page):
            continue
        # the frame the page is in (frame_of's answer)
        if page >> block_shift != block:
            block = page >> block_shift
            leaf, huge_at = leaf_table(m, pid, page)
        if leaf < 0:  # never mapped
            continue
        e = m.tables[leaf, huge_at if huge_at >= 0 else (page >> leaf_shift) & leaf_mask]
        if (e & PTE_PRESENT) == 0:  # not in memory
            continue
        f = e >> PTE_SHIFT
        if e & PTE_HUGE:
            f += page & huge_mask
        token = g_fi64[page, G_TOKEN]
        cs = find(contents, salt, token)
        if cs >= 0 and contents[cs, CT_VALUE] >= 0:  # a shared frame holds it
            shared = contents[cs, CT_VALUE]
            _drop_hint(tb, salt, vm, page)  # a row of an older content of this page
            map_shared(m, f, shared)
            tb.frames[find(tb.frames, shared, 0), FM_REFS] += 1
            _add_page(tb, vm, page, shared, token)
            events[k, 0], events[k, 1], events[k, 2] = vm, page, shared
            k += 1
            shared_pages += 1
            continue
        if cs >= 0:  # a hint
            hint = ~contents[cs, CT_VALUE]
            hvm, hpage = hint >> HINT_SHIFT, hint & HINT_PAGE
            if hvm == vm and hpage == page:  # this page, unchanged: it stays the hint
                continue
            hf = frame_of(m, pids[hvm], hpage)
            if hvm == vm:
                htoken = g_fi64[hpage, G_TOKEN]
            else:
                at = np.searchsorted(hint_rows, cs)
                if at < hint_rows.shape[0] and hint_rows[at] == cs:
                    htoken = hint_tokens[at]
                else:
                    missing += 1
                    htoken = ~token
            # the row stops naming the hinted page either way: it becomes the shared
            # frame's, or (the hinted page changed, or is out of memory) this page's
            _unmark_hint(tb, hvm, hpage)
            _drop_hint(tb, salt, vm, page)
            if hf >= 0 and htoken == token and not is_shared(tb, hvm, hpage):
                # the hinted page still holds the content: its frame becomes shared
                make_shared(m, hf, spid)
                m.fi64[hf, G_TOKEN] = token
                contents[cs, CT_VALUE] = hf
                fs = place(tb.frames, tb.counts, FRAMES, hf, 0)
                tb.frames[fs, FM_REFS] = 2
                tb.frames[fs, FM_SALT] = salt
                tb.frames[fs, FM_TOKEN] = token
                _add_page(tb, hvm, hpage, hf, token)
                events[k, 0], events[k, 1], events[k, 2] = hvm, hpage, hf
                k += 1
                if hvm != vm:
                    elsewhere += 1
                map_shared(m, f, hf)
                _add_page(tb, vm, page, hf, token)
                events[k, 0], events[k, 1], events[k, 2] = vm, page, hf
                k += 1
                shared_pages += 1
                continue
        else:
            # removed first, so that the new row may take the old one's place
            _drop_hint(tb, salt, vm, page)
            cs = place(contents, tb.counts, CONTENTS, salt, token)
        # this page is the content's hint now
        contents[cs, CT_VALUE] = _hint_value(vm, page)
        _set_hint(tb, vm, page, token)
    return k, shared_pages, elsewhere, missing


# ------------------------------------------------------------ the control plane's side


def _capacity(rows: int, extra: int = 0) -> int:
    """A power of two with room for ``rows`` at most a third full, and for many more
    reservations of ``extra`` rows (most are far from filled: a scan of n pages rarely
    makes n shared frames) before the next rebuild."""
    cap = 64
    while cap < 3 * rows or cap < 16 * extra:
        cap *= 2
    return cap


class SharingTables:
    """The arrays of page sharing, grown by the control plane between kernel calls."""

    def __init__(self) -> None:
        self.contents = np.zeros((_capacity(0), N_CONTENT), dtype=np.int64)
        self.pages = np.zeros((_capacity(0), N_PAGE), dtype=np.int64)
        self.frames = np.zeros((_capacity(0), N_FRAME), dtype=np.int64)
        self.log = np.zeros((0, 64, N_LOG), dtype=np.int64)
        self.log_n = np.zeros((0, 2), dtype=np.int64)
        self.bits = np.zeros((0, 0), dtype=np.int64)
        self.watch = np.zeros((0, 0), dtype=np.int64)
        self.counts = np.zeros((3, 2), dtype=np.int64)
        self.one = np.zeros(1, dtype=np.int64)
        self.hinted = np.zeros((0, 0), dtype=np.int64)
        self.hint_token = np.zeros((0, 0), dtype=np.int64)
        #: room for a scan's events: (vm, real page, shared frame)
        self.events = np.zeros((0, 3), dtype=np.int64)
        #: room for the live rows of a table being rebuilt, one after another
        self.scratch = np.zeros(0, dtype=np.int64)
        #: a zero bit per real page (of the largest VM), for break_sharing
        self.marks = np.zeros(0, dtype=np.uint64)

    @property
    def bundle(self) -> Tables:
        """The arrays as the kernels take them (valid until the next :meth:`reserve`)."""
        return Tables(self.contents, self.pages, self.frames, self.log, self.log_n, self.bits,
                      self.counts, self.one, self.hinted, self.hint_token,
                      self.watch)  # fmt: skip

    def reserve(self, vms: int, real_pages: int, contents: int, pages: int, frames: int) -> None:
        """Room for VMs ``0 .. vms - 1`` of up to ``real_pages`` pages each, for so many new
        rows in each table, new entries in any VM's log, and ``pages`` events; each table is
        kept at most half full.

        The room is judged on the rows and entries in use now (a few numbers), so that a
        table is rebuilt, or a log closed up or grown, only when a step could not
        otherwise be done: most steps add far fewer rows than they reserve."""
        # the events are one step's: they must fit whatever room the tables have left (a scan
        # of more pages than the one before wrote past the end of the array: the heap was
        # corrupted)
        if self.events.shape[0] < pages:
            self.events = np.zeros((max(pages, 2 * self.events.shape[0]), 3), dtype=np.int64)
        rows, words = self.bits.shape
        if vms > rows or real_pages > 64 * words:
            shape = (max(vms, rows), max(-(-real_pages // 64), words))
            self.bits = _grown(self.bits, shape)
            self.watch = _grown(self.watch, shape)  # a new array: the guests' rows are anew
            self.hinted = _grown(self.hinted, shape)
            self.hint_token = _grown(self.hint_token, (shape[0], 64 * shape[1]))
        (c_live, c_dead), (p_live, p_dead), (f_live, f_dead) = self.counts.tolist()
        if 2 * (c_live + c_dead + contents) > self.contents.shape[0]:
            self._rebuild("contents", CONTENTS, c_live, contents)
        if 2 * (p_live + p_dead + pages) > self.pages.shape[0]:
            self._rebuild("pages", PAGES, p_live, pages)
        if 2 * (f_live + f_dead + frames) > self.frames.shape[0]:
            self._rebuild("frames", FRAMES, f_live, frames)
        most = max(self.log_n[:, LN_USED].tolist(), default=0)
        if vms > self.log.shape[0] or most + pages > self.log.shape[1]:
            self._log_room(vms, pages)

    def _rebuild(self, name: str, which: int, live: int, extra: int) -> None:
        """Rebuild table ``name`` (row ``which`` of the counts, ``live`` rows in use) without
        tombstones, a third full or less with ``extra`` more rows.

        The table is rebuilt where it is, grown or shrunk in place (numpy's ``resize``: a
        large block is extended by remapping its pages, without a copy), by way of a
        scratch array kept from one rebuild to the next. Memory never used before costs
        more than the rebuild itself (each page is faulted in and zeroed): a table that
        doubles takes new memory for its new half only, and one rebuilt at its size (to
        clear tombstones) takes none."""
        old, width = getattr(self, name).shape
        cap = _capacity(live + extra, extra)
        if self.scratch.shape[0] < live * width:
            self.scratch = np.zeros(max(live * width, 2 * self.scratch.shape[0]), dtype=np.int64)
        if cap > old:
            self._resize(name, cap)
        rehash(getattr(self, name), old, cap, self.scratch, self.counts, which)
        if cap < old:
            self._resize(name, cap)

    def _resize(self, name: str, rows: int) -> None:
        """Table ``name`` with ``rows`` rows: its first rows kept, new ones zeros."""
        try:
            # the attribute is the one reference numpy allows: the array is not a view, nor
            # held by anything else (as a kernel's arguments are only during the call)
            getattr(self, name).resize((rows, getattr(self, name).shape[1]), refcheck=True)
        except ValueError:  # it is held elsewhere too: a new array
            table = getattr(self, name)
            if rows <= table.shape[0]:
                setattr(self, name, table[:rows].copy())
            else:
                new = np.zeros((rows, table.shape[1]), dtype=np.int64)
                new[: table.shape[0]] = table
                setattr(self, name, new)

    def _log_room(self, vms: int, extra: int) -> None:
        """Logs for ``vms`` VMs, each with room for ``extra`` more entries, at most half
        full (closing up holes first)."""
        cap = self.log.shape[1]
        used, live = self.log_n[:, LN_USED], self.log_n[:, LN_LIVE]
        for vm in np.flatnonzero((2 * (used + extra) > cap) & (used > live)).tolist():
            close_up(self.bundle, vm)
        most = int(self.log_n[:, LN_USED].max(initial=0))
        if self.log.shape[0] >= vms and 2 * (most + extra) <= cap:
            return
        while cap < 4 * (most + extra):
            cap *= 2
        log = np.zeros((max(vms, self.log.shape[0]), cap, N_LOG), dtype=np.int64)
        log[: self.log.shape[0], : self.log.shape[1]] = self.log
        log_n = np.zeros((log.shape[0], 2), dtype=np.int64)
        log_n[: self.log_n.shape[0]] = self.log_n
        self.log, self.log_n = log, log_n

    def marks_for(self, real_pages: int) -> np.ndarray:
        """A zero bit for each of ``real_pages`` pages (break_sharing leaves them zero)."""
        if 64 * self.marks.shape[0] < real_pages:
            self.marks = np.zeros(-(-real_pages // 64), dtype=np.uint64)
        return self.marks

    @property
    def shared_frames(self) -> int:
        """How many frames are shared."""
        return int(self.counts[FRAMES, 0])

    def shared_pages(self, vm: int) -> list[tuple[int, int]]:
        """``vm``'s (real page, shared frame) pairs, in the order they were shared."""
        if vm >= self.log.shape[0]:
            return []
        log = self.log[vm, : self.log_n[vm, LN_USED]]
        live = log[log[:, LG_PAGE] >= 0]
        return [(page, frame) for page, frame in live[:, [LG_PAGE, LG_FRAME]].tolist()]

    def content_rows(self) -> np.ndarray:
        """The live rows of the contents table."""
        rows: np.ndarray = self.contents[self.contents[:, H_STATE] == LIVE]
        return rows

    def page_hints(self) -> dict[tuple[int, int], int]:
        """(VM, real page) -> the token it is hinted under, for each page that is a hint."""
        p = np.arange(self.hint_token.shape[1])
        vms, pages = np.nonzero((self.hinted[:, p >> 6] >> (p & 63)) & 1)
        tokens = self.hint_token[vms, pages]
        return {(v, q): t for v, q, t in zip(vms.tolist(), pages.tolist(), tokens.tolist(),
                                             strict=True)}  # fmt: skip


def _grown(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """``a`` in a zeroed array of ``shape`` (as large or larger), at its top left."""
    out = np.zeros(shape, dtype=a.dtype)
    out[: a.shape[0], : a.shape[1]] = a
    return out


def split_hint(value: int) -> tuple[int, int]:
    """The (VM, real page) of a hint, from its contents row's ``CT_VALUE``."""
    hint = ~value
    return hint >> HINT_SHIFT, hint & HINT_PAGE


def content_key(salt: int, token: int) -> Any:
    """A content's key as the control plane names it: the token, or (VM, token) when
    salted."""
    return token if salt == NO_SALT else (salt, token)


class SharedPages(Mapping[int, int]):
    """real page -> shared frame, for the pages of one VM that map a shared frame, in the
    order they were shared: a read-only view of the VM's log. Its length and whether a
    page is in it are read from the arrays at once; the control plane asks for little
    else, so nothing is kept beside the tables (a dictionary kept in step with them cost
    more than the kernels that change them)."""

    def __init__(self, tables: SharingTables, vm: int) -> None:
        self._tables = tables
        self._vm = vm

    def __len__(self) -> int:
        log_n = self._tables.log_n
        return int(log_n[self._vm, LN_LIVE]) if self._vm < log_n.shape[0] else 0

    def __contains__(self, page: object) -> bool:
        bits = self._tables.bits
        if not isinstance(page, int | np.integer) or self._vm >= bits.shape[0]:
            return False
        page = int(page)
        if not 0 <= page < 64 * bits.shape[1]:
            return False
        return (int(bits[self._vm, page >> 6]) >> (page & 63)) & 1 != 0

    def __getitem__(self, page: int) -> int:
        if page not in self:
            raise KeyError(page)
        pages = self._tables.pages
        return int(pages[find(pages, self._vm, page), PG_FRAME])

    def __iter__(self) -> Iterator[int]:
        return iter([page for page, _ in self._tables.shared_pages(self._vm)])

    def items(self) -> ItemsView[int, int]:
        # one pass over the log, not a lookup per page
        return dict(self._tables.shared_pages(self._vm)).items()


class SharedFrames(Mapping[int, tuple[Any, set[tuple[int, int]]]]):
    """shared frame -> (its content key, the (VM index, real page) pairs mapped to it): a
    read-only view of the tables. Its length is one number; the rest is read from the
    arrays each time, for checks and tests."""

    def __init__(self, tables: SharingTables) -> None:
        self._tables = tables

    def __len__(self) -> int:
        return self._tables.shared_frames

    def __iter__(self) -> Iterator[int]:
        frames = self._tables.frames
        return iter(frames[frames[:, H_STATE] == LIVE, H_A].tolist())

    def __getitem__(self, frame: int) -> tuple[Any, set[tuple[int, int]]]:
        return self._snapshot(frame)[frame]

    def items(self) -> ItemsView[int, tuple[Any, set[tuple[int, int]]]]:
        # one pass over the arrays, not one per frame
        return self._snapshot(None).items()

    def _snapshot(self, only: int | None) -> dict[int, tuple[Any, set[tuple[int, int]]]]:
        tb = self._tables
        frames = tb.frames[tb.frames[:, H_STATE] == LIVE]
        if only is not None:
            frames = frames[frames[:, H_A] == only]
            if frames.shape[0] == 0:
                raise KeyError(only)
        out: dict[int, tuple[Any, set[tuple[int, int]]]] = {
            int(row[H_A]): (content_key(int(row[FM_SALT]), int(row[FM_TOKEN])), set())
            for row in frames
        }
        pages = tb.pages[tb.pages[:, H_STATE] == LIVE]
        for vm, page, frame in pages[:, [H_A, H_B, PG_FRAME]].tolist():
            if frame in out:
                out[frame][1].add((vm, page))
        return out
