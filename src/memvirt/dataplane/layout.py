"""Where each field of the simulated machine lives in the data plane's arrays.

The data plane keeps state in arrays, not one Python object per page:
``fi32[pfn, FIELD]`` and ``fi64[pfn, FIELD]`` for frames (two views of one
array of 40-byte rows: a frame's fields side by side, so that one access
touches one or two cache lines, not a line in each of two arrays),
``proc[pid, FIELD]`` for processes, ``pctr[pid, COUNTER]`` for per-process
counters, ``st[FIELD]`` for scalars and ``cfg[FIELD]`` for the configuration.
The numba kernels read these module-level integers as compile-time constants.

A page-table entry (PTE) is an ``int64``: the frame number (or swap slot)
in bits 12 and up, and flag bits below, as on x86-64 (Intel SDM vol. 3A,
section 4.5): present, writable, user, accessed, dirty, huge (a leaf above
the last level), and memvirt's own *swapped* bit for a page whose only copy
is in a swap slot.
"""

from __future__ import annotations

# --- PTE bits --------------------------------------------------------------
PTE_PRESENT = 1
PTE_WRITABLE = 2
PTE_USER = 4
PTE_ACCESSED = 8
PTE_DIRTY = 16
PTE_HUGE = 32
PTE_SWAPPED = 64
PTE_SHIFT = 12  # frame number or swap slot above the flag bits

# --- frame fields: int32 -----------------------------------------------------
F_OWNER = 0  # pid holding the frame, -1 when free
F_PREV = 1  # replacement list links (frame numbers, -1 at the ends)
F_NEXT = 2
F_SLOT = 3  # swap slot holding a current copy of this page, -1 if none
F_FLAGS = 4
# reverse map: where the PTE mapping this frame is, table * 4096 + index. 32 bits hold
# 2**19 table pages (MAX_TABLE_PAGES), which map 2**28 pages: memory and swap are each
# capped at 2**27 pages
F_RMAP = 5
N_FI32 = 6

# frame flag bits
FR_REFERENCED = 1
FR_DIRTY = 2
FR_PINNED = 4
FR_TABLE = 8  # the frame holds a page-table page
FR_HUGE = 16  # part of a huge page (from the huge-page pool)

# --- frame fields: int64 -----------------------------------------------------
# A frame's row is N_FI64 int64 columns (40 bytes; 48 with opt's G_NEXT_USE); ``fi32`` is
# the same memory as int32 (memvirt.memory.frames.FramePool), whose first N_FI32 columns
# (the first three int64 columns, 24 bytes) are the int32 fields above
G_VPN = 3  # back-pointer: the vpn held, or the table index for a table frame
G_TOKEN = 4  # content token of the page (a 64-bit pattern)
G_NEXT_USE = 5  # for opt only: index of this page's next access, or NEVER
N_FI64 = 5  # int64 columns of a row without opt (the int32 fields', then two); opt adds one
RMAP_SHIFT = 12
MAX_TABLE_PAGES = 1 << (31 - RMAP_SHIFT)  # table pages a reverse map can name

# --- process fields ----------------------------------------------------------
P_ALIVE = 0
P_ROOT = 1  # table index of the root table
P_RESIDENT = 2  # data pages in frames (huge pages count each base page)
P_SWAPPED = 3  # pages whose only copy is in swap
P_TABLES = 4  # table pages
P_QUOTA = 5  # frames the process may hold under local replacement
P_REG_START = 6  # first row in the region array
P_REG_COUNT = 7
P_COMPRESSED = 8  # pages of this process held compressed (in swap slots marked compressed)
P_COMP_BYTES = 9  # bytes those compressed pages take
P_COMP_CAP = 10  # bytes its compression cache may hold (0: no compression)
# how its pages compress (memvirt.workloads.contents.compressed_size, per VM):
P_COMP_THRESHOLD = 11  # a token fits in 2 KiB when its hash's top 53 bits are below this
P_COMP_MIN = 12  # smallest compressed size of a non-zero page, bytes
P_COMP_ZERO = 13  # compressed size of a zero page, bytes
N_PROC = 14

# region rows: start vpn, end vpn (exclusive), flags
R_START = 0
R_END = 1
R_FLAGS = 2
REG_WRITABLE = 1
REG_HUGE = 2

# replacement lists: one global list (row 0) or one per process (row pid + 1)
L_HEAD = 0
L_TAIL = 1
L_SIZE = 2
N_LIST = 3

# --- per-process counters ------------------------------------------------------
C_ACCESSES = 0
C_READS = 1
C_WRITES = 2
C_TLB1_HITS = 3
C_TLB1_MISSES = 4
C_TLB2_HITS = 5
C_TLB2_MISSES = 6
C_WALKS = 7
C_WALK_REFS = 8
C_MINOR = 9
C_MAJOR = 10
C_EVICTIONS = 11  # this process's pages taken out of memory
C_WRITEBACKS = 12  # dirty pages written to swap
C_CLEAN_DROPS = 13  # clean pages dropped, their swap copy current
C_ZERO_DROPS = 14  # never-written pages dropped (they read back as zeros)
C_TABLE_ALLOCS = 15
C_DIRTY_UPDATES = 16  # write hits on a clean TLB entry that set the PTE's dirty bit
C_COMPRESSIONS = 17  # pages compressed into the compression cache instead of written to swap
C_DECOMPRESSIONS = 18  # faults served from the compression cache (counted in C_MAJOR too)
C_SWAP_READ_ERRORS = 19  # swap-ins that failed (an injected fault): the page is lost
C_SWAP_WRITE_ERRORS = 20  # swap writes that failed (an injected fault): the page stayed
N_PCTR = 21

# --- scalar state --------------------------------------------------------------
S_FREE_TOP = 0  # free frames (on the free list)
S_SWAP_TOP = 1  # entries on the stack of freed swap slots (given back, to be reused first)
S_TABLE_NEXT = 2  # next never-used table index
S_TABLE_FREE_TOP = 3  # entries on the free-table stack
S_TOKEN = 4  # last content token handed out
S_RNG = 5  # xorshift64* state
S_TLB_CLOCK = 6  # LRU stamp for TLB entries
S_HUGE_TOP = 7  # entries on the free huge-page stack
S_FAULT_VPN = 8  # the vpn of the last stop (segfault, OOM, ...)
S_FAULT_KIND = 9  # why a segfault happened: 1 no region, 2 write to read-only
S_OOM_KILLS = 10
S_LAST_ASID = 11  # address space last run, for flush-on-switch
S_TLB_FLUSHES = 12
S_REC_N = 13  # entries written to the walk record
S_RING_N = 14  # evictions written to the eviction ring
S_FAULT_RNG = 15  # xorshift64* state of the injected swap errors (apart from S_RNG)
# the next swap slot never used: slots are handed out in order, so the swap arrays need only
# hold slots below it (they grow as it rises); free slots = S_SWAP_TOP + K_SWAP_SLOTS - it
S_SWAP_NEXT = 16
# the free list's first frame (-1: none). Free frames are chained through their F_NEXT
# field (unused while a frame is free), last freed first, as a stack would give them
S_FREE_HEAD = 17
# real pages noted in the sharing watch log since the hypervisor last read it (beyond the
# log's length only the count goes on: the reader must then check every shared page)
S_COW_N = 18
N_STATE = 19

# --- configuration ---------------------------------------------------------------
K_LEVELS = 0
K_OFFSET_BITS = 1
K_POLICY = 2
K_LOCAL = 3  # 1 for local (per-process) replacement
K_TLB_LEVELS = 4  # 0, 1 or 2
K_TLB1_SETS = 5
K_TLB1_WAYS = 6
K_TLB2_SETS = 7
K_TLB2_WAYS = 8
K_FLUSH_ON_SWITCH = 9
K_HUGE_SHIFT = 10  # vpn bits below a huge leaf (9 on x86-64)
K_HAS_HUGE = 11
K_RECORD = 12  # 1: record the frames every walk reads (for a hypervisor below)
# 1: log every eviction (owner, vpn, frame, written) in the eviction ring (an eviction
# beyond its rows is only counted: the layer above falls back on a whole flush); 2: the
# same, but a fault that might not find room stops its batch first (STOP_NEED_RING), so
# that the control plane grows the ring and no eviction goes unlogged
K_RING = 13
K_COMPRESS = 14  # 1: evictions try the compression cache before swap
# injected swap errors: a read (write) fails when 63 random bits fall below this (0: never)
K_SWAP_READ_FAIL = 15
K_SWAP_WRITE_FAIL = 16
K_SWAP_SLOTS = 17  # slots of the swap device (its arrays may hold fewer: see S_SWAP_NEXT)
# 1: a guest under a hypervisor that shares pages: a frame whose content changes while its
# bit in the watch map is set (a real page mapping a shared frame) is noted in the watch log
K_COW = 18
# 1: a guest under a hypervisor: a frame whose content changes gets its bit in the change
# map set, so that the hypervisor's content sync visits only the frames whose bits are set
K_SYNC = 19
K_NO_PATH_MEMO = 20  # 1: run_batch walks every level every time (to check the path memo)
N_CFG = 21

# eviction ring columns
RING_OWNER = 0
RING_VPN = 1
RING_FRAME = 2
RING_WRITTEN = 3  # 1 when the eviction stored a copy (to swap or the compression cache)
N_RING = 4

# a guest's walk record (Machine.record, int32): one entry per real page a walk read, the
# page number with two flags above it, so real pages must stay below 2**29 (2 TiB of a VM's
# real memory in 4 KiB pages)
REC_TABLE = 1 << 29  # a page-table page (else the walk's data page)
REC_WRITE = 1 << 30  # the walk wrote it (the dirty or accessed bit of an entry, or the data)
REC_PAGE = REC_TABLE - 1  # the mask of the page number
REC_PAGES = REC_TABLE  # real pages a VM may have

# run_batch's walk memo (no TLB): slots, a power of two, indexed by page number mod MEMO_SLOTS.
# A host pass reads the guests' upper page-table pages at every guest walk, their leaf table
# pages (one per 512 pages touched) often, and data pages in between, each taking the slot
# of its page number: with 64 slots the data pages kept pushing the leaf tables out (the
# host's run_batch took 11% longer on examples/two-level-nested.toml than with 1,024)
MEMO_SLOTS = 1024
# its columns: the walk memo (a page's last walk), then the path memo (a leaf table's path):
# the prefix above the leaf level, the leaf table's index, and the frames of the table pages
# above it, root first (MAX_LEVELS - 1 of them at most)
MEMO_PAGE = 0
MEMO_FRAME = 1
MEMO_REFS = 2
MEMO_PREFIX = 3
MEMO_LEAF = 4
MEMO_PATH = 5
MAX_LEVELS = 5
MEMO_COLS = MEMO_PATH + MAX_LEVELS - 1

# policy codes
POLICY_FIFO = 0
POLICY_LRU = 1
POLICY_CLOCK = 2
POLICY_RANDOM = 3
POLICY_OPT = 4
POLICY_RANDOM_FRAME = 5

# why a batch stopped
STOP_DONE = 0
STOP_SEGFAULT = 1
STOP_OOM = 2  # a frame or swap slot is needed and none can be had
STOP_NEED_TABLES = 3  # the table-page pool must grow (control plane)
STOP_SIGBUS = 4  # a bus error: the huge-page pool is exhausted, or a swap read failed
STOP_RECORD_FULL = 5  # the walk record is full: the hypervisor must pass over it
STOP_NEED_SLOTS = 6  # the swap arrays must grow before a fault may take slots (control plane)
STOP_NEED_RING = 7  # the eviction ring must grow before a fault may evict (K_RING 2)

SEGV_NO_REGION = 1
SEGV_READ_ONLY = 2
# why a bus error happened (S_FAULT_KIND after STOP_SIGBUS)
BUS_NO_HUGE_PAGE = 1
BUS_SWAP_READ = 2

# TLB entry value: frame number above three bits
TV_DIRTY = 1
TV_WRITABLE = 2
TV_HUGE = 4
TV_SHIFT = 3
TLB_HUGE_TAG = 1 << 62
TLB_ASID_SHIFT = 44

NEVER = (1 << 62) - 1  # "no next use" for opt


def seed_state(seed: int) -> int:
    """The xorshift64* state a run starts from: the seed scrambled, never zero."""
    x = ((seed * 0x9E3779B97F4A7C15) | 1) & 0xFFFFFFFFFFFFFFFF
    return x - (1 << 64) if x >= 1 << 63 else x
