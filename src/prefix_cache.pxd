# Prefix cache of one replica: KV blocks identified by the content id of the prompt span they
# hold, shared between requests by reference count, evicted least recently freed first.
#
# The cache works in granules of `granule_blocks` KV blocks: one granule per prefix id the
# workload supplies (Mooncake's hash_ids cover 512 tokens = 32 blocks of 16). A granule with
# references is in use; one without stays cached but counts as free, and is evicted (oldest
# first) when a request needs empty blocks, as in vLLM's block pool. Ids are looked up in an
# open-addressing hash table with linear probing and backward-shift deletion.

from libc.stdint cimport int32_t, int64_t, uint64_t
from libc.stdlib cimport malloc, free


ctypedef struct PrefixEntry:
    int64_t id
    int32_t refs
    int32_t lru_prev    # links of the evictable (refs == 0) list, or of the free-entry list
    int32_t lru_next


ctypedef struct PrefixCache:
    PrefixEntry* entries
    int32_t* table      # slot -> entry index, -1 when empty
    int64_t mask        # table size - 1 (a power of two)
    int32_t free_head   # unused entry indices (a singly linked list through lru_next)
    int32_t lru_head    # oldest evictable entry
    int32_t lru_tail
    int64_t n_evictable # entries with no references
    int64_t granule_blocks


cdef inline uint64_t prefix_hash(int64_t id) noexcept nogil:
    cdef uint64_t x = <uint64_t> id
    x ^= x >> 33
    x *= 0xff51afd7ed558ccdULL
    x ^= x >> 33
    x *= 0xc4ceb9fe1a85ec53ULL
    x ^= x >> 33
    return x


cdef inline int prefix_init(PrefixCache* c, int64_t max_entries, int64_t granule_blocks) noexcept nogil:
    cdef int64_t size = 16, k
    while size < 2 * max_entries + 2:
        size *= 2
    c.entries = <PrefixEntry*> malloc((max_entries + 1) * sizeof(PrefixEntry))
    c.table = <int32_t*> malloc(size * sizeof(int32_t))
    if c.entries == NULL or c.table == NULL:
        return -1
    c.mask = size - 1
    for k in range(size):
        c.table[k] = -1
    for k in range(max_entries + 1):
        c.entries[k].lru_next = <int32_t> (k + 1) if k < max_entries else -1
    c.free_head = 0
    c.lru_head = -1
    c.lru_tail = -1
    c.n_evictable = 0
    c.granule_blocks = granule_blocks
    return 0


cdef inline void prefix_release(PrefixCache* c) noexcept nogil:
    free(c.entries)
    free(c.table)
    c.entries = NULL
    c.table = NULL


cdef inline int32_t prefix_find(const PrefixCache* c, int64_t id) noexcept nogil:
    """Entry index holding `id`, or -1."""
    cdef int64_t slot = <int64_t> (prefix_hash(id) & <uint64_t> c.mask)
    cdef int32_t e
    while True:
        e = c.table[slot]
        if e < 0:
            return -1
        if c.entries[e].id == id:
            return e
        slot = (slot + 1) & c.mask


cdef inline void _lru_unlink(PrefixCache* c, int32_t e) noexcept nogil:
    cdef int32_t p = c.entries[e].lru_prev, q = c.entries[e].lru_next
    if p < 0:
        c.lru_head = q
    else:
        c.entries[p].lru_next = q
    if q < 0:
        c.lru_tail = p
    else:
        c.entries[q].lru_prev = p
    c.n_evictable -= 1


cdef inline void _lru_append(PrefixCache* c, int32_t e) noexcept nogil:
    c.entries[e].lru_prev = c.lru_tail
    c.entries[e].lru_next = -1
    if c.lru_tail < 0:
        c.lru_head = e
    else:
        c.entries[c.lru_tail].lru_next = e
    c.lru_tail = e
    c.n_evictable += 1


cdef inline void prefix_ref(PrefixCache* c, int32_t e) noexcept nogil:
    """Take a reference; an evictable entry stops being evictable."""
    if c.entries[e].refs == 0:
        _lru_unlink(c, e)
    c.entries[e].refs += 1


cdef inline void prefix_unref(PrefixCache* c, int32_t e) noexcept nogil:
    c.entries[e].refs -= 1
    if c.entries[e].refs == 0:
        _lru_append(c, e)


cdef inline int32_t prefix_insert(PrefixCache* c, int64_t id) noexcept nogil:
    """Add `id` with one reference (the caller checked it is absent); returns its entry."""
    cdef int32_t e = c.free_head
    cdef int64_t slot = <int64_t> (prefix_hash(id) & <uint64_t> c.mask)
    c.free_head = c.entries[e].lru_next
    c.entries[e].id = id
    c.entries[e].refs = 1
    while c.table[slot] >= 0:
        slot = (slot + 1) & c.mask
    c.table[slot] = e
    return e


cdef inline void prefix_evict_oldest(PrefixCache* c) noexcept nogil:
    """Drop the least recently freed evictable entry (the caller checked there is one)."""
    cdef int32_t e = c.lru_head
    cdef int64_t slot, hole, home
    _lru_unlink(c, e)
    slot = <int64_t> (prefix_hash(c.entries[e].id) & <uint64_t> c.mask)
    while c.table[slot] != e:
        slot = (slot + 1) & c.mask
    # backward-shift deletion keeps every probe sequence unbroken
    hole = slot
    slot = (slot + 1) & c.mask
    while c.table[slot] >= 0:
        home = <int64_t> (prefix_hash(c.entries[c.table[slot]].id) & <uint64_t> c.mask)
        if ((slot - home) & c.mask) >= ((slot - hole) & c.mask):
            c.table[hole] = c.table[slot]
            hole = slot
        slot = (slot + 1) & c.mask
    c.table[hole] = -1
    c.entries[e].lru_next = c.free_head
    c.free_head = e
