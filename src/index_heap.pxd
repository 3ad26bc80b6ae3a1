# Indexed binary min-heap of request ids, ordered by (key[i], tie * i).
#
# Used for the completion order of decoding requests (key = completion step), for choosing a
# preemption victim under priority scheduling (key = -priority, tie = -1: the lowest priority,
# latest arrival first), and for the priority-ordered waiting queue (key = priority). Every heap
# keeps each member's position so members can be removed from the middle in O(log n).

from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport malloc, realloc, free


ctypedef struct IHeap:
    int32_t* items
    int64_t size
    int64_t capacity
    int32_t* pos       # per request: index in items, valid only while a member
    const int64_t* key # per request
    int64_t tie        # +1: smaller id first on equal keys; -1: larger id first


cdef inline int iheap_init(IHeap* h, int64_t capacity, int32_t* pos, const int64_t* key,
                           int64_t tie) noexcept nogil:
    if capacity < 4:
        capacity = 4
    h.items = <int32_t*> malloc(capacity * sizeof(int32_t))
    h.size = 0
    h.capacity = capacity
    h.pos = pos
    h.key = key
    h.tie = tie
    return -1 if h.items == NULL else 0


cdef inline void iheap_release(IHeap* h) noexcept nogil:
    free(h.items)
    h.items = NULL
    h.size = 0


cdef inline bint iheap_before(const IHeap* h, int32_t a, int32_t b) noexcept nogil:
    cdef int64_t ka = h.key[a], kb = h.key[b]
    return ka < kb or (ka == kb and h.tie * a < h.tie * b)


cdef inline void iheap_sift_up(IHeap* h, int64_t k) noexcept nogil:
    cdef int32_t i = h.items[k]
    cdef int64_t parent
    while k > 0:
        parent = (k - 1) >> 1
        if not iheap_before(h, i, h.items[parent]):
            break
        h.items[k] = h.items[parent]
        h.pos[h.items[k]] = <int32_t> k
        k = parent
    h.items[k] = i
    h.pos[i] = <int32_t> k


cdef inline void iheap_sift_down(IHeap* h, int64_t k) noexcept nogil:
    cdef int32_t i = h.items[k]
    cdef int64_t child, n = h.size
    while True:
        child = 2 * k + 1
        if child >= n:
            break
        if child + 1 < n and iheap_before(h, h.items[child + 1], h.items[child]):
            child += 1
        if not iheap_before(h, h.items[child], i):
            break
        h.items[k] = h.items[child]
        h.pos[h.items[k]] = <int32_t> k
        k = child
    h.items[k] = i
    h.pos[i] = <int32_t> k


cdef inline int iheap_push(IHeap* h, int32_t i) noexcept nogil:
    """Insert request i (its key must already be set); -1 when memory is exhausted."""
    cdef int32_t* grown
    if h.size == h.capacity:
        grown = <int32_t*> realloc(h.items, 2 * h.capacity * sizeof(int32_t))
        if grown == NULL:
            return -1
        h.items = grown
        h.capacity *= 2
    h.items[h.size] = i
    h.size += 1
    iheap_sift_up(h, h.size - 1)
    return 0


cdef inline void iheap_remove(IHeap* h, int32_t i) noexcept nogil:
    cdef int64_t k = h.pos[i]
    h.size -= 1
    if k == h.size:
        return
    h.items[k] = h.items[h.size]
    h.pos[h.items[k]] = <int32_t> k
    if k > 0 and iheap_before(h, h.items[k], h.items[(k - 1) >> 1]):
        iheap_sift_up(h, k)
    else:
        iheap_sift_down(h, k)


cdef inline int32_t iheap_pop(IHeap* h) noexcept nogil:
    cdef int32_t top = h.items[0]
    iheap_remove(h, top)
    return top
