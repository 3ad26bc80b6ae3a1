# Log-linear histogram of inter-token gaps (the HDR-histogram idea).
#
# A run of a million requests produces over a hundred million inter-token gaps: too many to
# store, so they are counted in bins read straight off the bits of the IEEE double. The
# exponent and the top ITL_MANTISSA_BITS bits of the mantissa select the bin, which makes bins
# 1/1024 of an octave wide: a percentile read at a bin's midpoint is within 0.05% of the exact
# one. Gaps below 2**-30 s (~1 ns) or above 2**20 s (~12 days) fall in the end bins.

from libc.stdint cimport int64_t, uint64_t
from libc.string cimport memcpy

cdef enum:
    ITL_MANTISSA_BITS = 10
    ITL_MIN_EXPONENT = -30
    ITL_MAX_EXPONENT = 20
    ITL_NBINS = (ITL_MAX_EXPONENT - ITL_MIN_EXPONENT) << ITL_MANTISSA_BITS

# Bits of 2.0**ITL_MIN_EXPONENT shifted down to the bin resolution: (1023 - 30) << 10.
cdef enum:
    ITL_FIRST_KEY = (1023 + ITL_MIN_EXPONENT) << ITL_MANTISSA_BITS


cdef inline int64_t itl_bin(double gap) noexcept nogil:
    cdef uint64_t bits
    cdef int64_t key
    if not gap > 0.0:  # zero, negative or NaN
        return 0
    memcpy(&bits, &gap, sizeof(double))
    key = <int64_t> (bits >> (52 - ITL_MANTISSA_BITS)) - ITL_FIRST_KEY
    if key < 0:
        return 0
    if key >= ITL_NBINS:
        return ITL_NBINS - 1
    return key
