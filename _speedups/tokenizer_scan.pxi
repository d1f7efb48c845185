# Block scans: find the next byte of a small stop set 16 bytes at a time (SSE2, part of
# every x86-64) or 8 at a time (SWAR on a uint64, any little-endian target), byte by byte
# elsewhere.  They only skip the bytes that need no work; the byte they stop at is then
# judged by the byte-class tables, exactly as before, so the validation rules live in one
# place and a false stop (a tab, say) costs one table look-up.
#
# Included by tokenizer.pyx (textual include: one module, cdef inline functions stay inline).

cdef extern from *:
    """
    #include <string.h>
    #include <stdint.h>
    #if defined(__SSE2__) || defined(_M_X64) || (defined(_M_IX86_FP) && _M_IX86_FP >= 2)
    #include <emmintrin.h>
    #define XMPPD_SSE2 1
    #elif defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
    #define XMPPD_SWAR 1
    #endif

    static inline unsigned xmppd_ctz(uint64_t v) {
    #if defined(__GNUC__) || defined(__clang__)
        return (unsigned)__builtin_ctzll(v);
    #else
        unsigned k = 0;
        while (!(v & 1)) { v >>= 1; k++; }
        return k;
    #endif
    }

    /* The first j in [i, e) whose byte equals c1..c4 (a negative c is unused), or, with
       ctl, is below 0x20 or above 0x7F, or, with high, is above 0x7F; e if none.  Reads
       whole blocks up to lim (lim >= e: the caller's buffer goes on that far), so a short
       run is scanned in one block too.  Constant arguments fold away once inlined. */
    static inline Py_ssize_t xmppd_scan(const unsigned char* p, Py_ssize_t i, Py_ssize_t e,
                                        Py_ssize_t lim, int c1, int c2, int c3, int c4,
                                        int ctl, int high) {
    #if defined(XMPPD_SSE2)
        const __m128i v1 = _mm_set1_epi8((char)c1), v2 = _mm_set1_epi8((char)c2);
        const __m128i v3 = _mm_set1_epi8((char)c3), v4 = _mm_set1_epi8((char)c4);
        const __m128i sp = _mm_set1_epi8(0x20);
        while (i < e && i + 16 <= lim) {
            __m128i x = _mm_loadu_si128((const __m128i*)(p + i));
            __m128i m = _mm_cmpeq_epi8(x, v1);
            unsigned mask;
            if (c2 >= 0) m = _mm_or_si128(m, _mm_cmpeq_epi8(x, v2));
            if (c3 >= 0) m = _mm_or_si128(m, _mm_cmpeq_epi8(x, v3));
            if (c4 >= 0) m = _mm_or_si128(m, _mm_cmpeq_epi8(x, v4));
            if (ctl) m = _mm_or_si128(m, _mm_cmplt_epi8(x, sp));  /* signed: >0x7F too */
            mask = (unsigned)_mm_movemask_epi8(m);
            if (high) mask |= (unsigned)_mm_movemask_epi8(x);
            if (mask) {
                i += xmppd_ctz(mask);
                return i < e ? i : e;
            }
            i += 16;
        }
    #elif defined(XMPPD_SWAR)
        const uint64_t ones = 0x0101010101010101ULL, highs = 0x8080808080808080ULL;
        while (i < e && i + 8 <= lim) {
            uint64_t w, x, mask = 0;
            memcpy(&w, p + i, 8);
            /* a byte of x is zero where w has the byte: the lowest flag is exact */
            x = w ^ (ones * (uint8_t)c1); mask |= (x - ones) & ~x & highs;
            if (c2 >= 0) { x = w ^ (ones * (uint8_t)c2); mask |= (x - ones) & ~x & highs; }
            if (c3 >= 0) { x = w ^ (ones * (uint8_t)c3); mask |= (x - ones) & ~x & highs; }
            if (c4 >= 0) { x = w ^ (ones * (uint8_t)c4); mask |= (x - ones) & ~x & highs; }
            if (ctl) mask |= ((w - ones * 0x20) & ~w & highs) | (w & highs);
            else if (high) mask |= w & highs;
            if (mask) {
                i += xmppd_ctz(mask) >> 3;
                return i < e ? i : e;
            }
            i += 8;
        }
    #endif
        for (; i < e; i++) {
            int c = p[i];
            if (c == c1 || c == c2 || c == c3 || c == c4 || (ctl && (c < 0x20 || c > 0x7F))
                    || (high && c > 0x7F))
                return i;
        }
        return e;
    }
    """
    Py_ssize_t xmppd_scan(const unsigned char* p, Py_ssize_t i, Py_ssize_t e, Py_ssize_t lim,
                          int c1, int c2, int c3, int c4, bint ctl, bint high) noexcept nogil


cdef inline Py_ssize_t _skip_av(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """The next byte of an attribute value with AV set (or ``n``)."""
    while True:
        i = xmppd_scan(p, i, n, n, 0x3C, 0x26, 0x22, 0x27, True, False)
        if i >= n or AV[p[i]]:
            return i
        i += 1  # tab, LF, CR: plain value bytes


cdef inline Py_ssize_t _skip_tx(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """The next byte of character data with TX set (or ``n``)."""
    while True:
        i = xmppd_scan(p, i, n, n, 0x3C, 0x26, 0x5D, 0x0D, True, False)
        if i >= n or TX[p[i]]:
            return i
        i += 1  # tab, LF: plain text bytes


cdef inline Py_ssize_t _skip_nsv(const unsigned char* p, Py_ssize_t i, Py_ssize_t e,
                                 Py_ssize_t lim) noexcept nogil:
    """The next byte of a namespace declaration's value with NSV set (or ``e``)."""
    while True:
        i = xmppd_scan(p, i, e, lim, 0x26, 0x20, -1, -1, True, False)
        if i >= e or NSV[p[i]]:
            return i
        i += 1
