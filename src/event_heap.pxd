# Binary min-heap of in-flight events, ordered by (time, insertion sequence).
#
# Only events that are already in flight live here (a replica's step ending, later a KV
# transfer finishing); future arrivals stay in their sorted array behind a cursor, so the heap
# stays small and cache-resident. Ties in time are broken by insertion order, which makes
# every run of the same scenario process events in the same order.

from libc.stdint cimport int32_t, int64_t
from libc.stdlib cimport malloc, realloc, free


ctypedef struct Event:
    double time
    int64_t seq
    int32_t kind
    int32_t target


ctypedef struct EventHeap:
    Event* data
    int64_t size
    int64_t capacity
    int64_t next_seq


cdef inline bint event_before(const Event* a, const Event* b) noexcept nogil:
    return a.time < b.time or (a.time == b.time and a.seq < b.seq)


cdef inline int heap_init(EventHeap* h, int64_t capacity) noexcept nogil:
    """Allocate room for `capacity` events; returns -1 when memory is exhausted."""
    if capacity < 4:
        capacity = 4
    h.data = <Event*> malloc(capacity * sizeof(Event))
    h.size = 0
    h.capacity = capacity
    h.next_seq = 0
    return -1 if h.data == NULL else 0


cdef inline void heap_release(EventHeap* h) noexcept nogil:
    free(h.data)
    h.data = NULL
    h.size = 0
    h.capacity = 0


cdef inline int heap_push(EventHeap* h, double time, int32_t kind, int32_t target) noexcept nogil:
    """Insert an event; returns -1 when memory is exhausted."""
    cdef Event* grown
    cdef int64_t i, parent
    cdef Event ev
    if h.size == h.capacity:
        grown = <Event*> realloc(h.data, 2 * h.capacity * sizeof(Event))
        if grown == NULL:
            return -1
        h.data = grown
        h.capacity *= 2
    ev.time = time
    ev.seq = h.next_seq
    ev.kind = kind
    ev.target = target
    h.next_seq += 1
    i = h.size
    h.size += 1
    while i > 0:
        parent = (i - 1) >> 1
        if not event_before(&ev, &h.data[parent]):
            break
        h.data[i] = h.data[parent]
        i = parent
    h.data[i] = ev
    return 0


cdef inline Event heap_pop(EventHeap* h) noexcept nogil:
    """Remove and return the earliest event; the caller checks that the heap is not empty."""
    cdef Event top = h.data[0]
    cdef Event last
    cdef int64_t i = 0, child, n
    h.size -= 1
    n = h.size
    if n > 0:
        last = h.data[n]
        while True:
            child = 2 * i + 1
            if child >= n:
                break
            if child + 1 < n and event_before(&h.data[child + 1], &h.data[child]):
                child += 1
            if not event_before(&h.data[child], &last):
                break
            h.data[i] = h.data[child]
            i = child
        h.data[i] = last
    return top
