# Characters: UTF-8 validation (``_mb_len``), name characters, and character and entity
# references (scanned with expat's rules, then valued).
#
# Included by tokenizer.pyx (textual include: one module, cdef inline functions stay inline).

# -- characters ---------------------------------------------------------------------------

cdef inline int _mb_len(const unsigned char* p, Py_ssize_t avail) noexcept nogil:
    """Length of the valid UTF-8 character at ``p`` (2-4); 0 if invalid, -1 if incomplete.

    Same order as expat: a lead byte first asks for its whole sequence, then validity
    (overlong forms, surrogates, > U+10FFFF and U+FFFE/U+FFFF are invalid)."""
    cdef unsigned char c = p[0]
    cdef int t = CT[c]
    if t == C_LEAD2:
        if avail < 2:
            return -1
        if c < 0xC2 or (p[1] & 0xC0) != 0x80:
            return 0
        return 2
    if t == C_LEAD3:
        if avail < 3:
            return -1
        if (p[2] & 0x80) == 0:
            return 0
        if c == 0xEF and p[1] == 0xBF:
            if p[2] > 0xBD:
                return 0
        elif (p[2] & 0xC0) == 0xC0:
            return 0
        if c == 0xE0:
            if p[1] < 0xA0 or (p[1] & 0xC0) == 0xC0:
                return 0
        elif (p[1] & 0x80) == 0:
            return 0
        elif c == 0xED:
            if p[1] > 0x9F:
                return 0
        elif (p[1] & 0xC0) == 0xC0:
            return 0
        return 3
    if t == C_LEAD4:
        if avail < 4:
            return -1
        if (p[3] & 0xC0) != 0x80 or (p[2] & 0xC0) != 0x80:
            return 0
        if c == 0xF0:
            if p[1] < 0x90 or (p[1] & 0xC0) == 0xC0:
                return 0
        elif (p[1] & 0x80) == 0:
            return 0
        elif c == 0xF4:
            if p[1] > 0x8F:
                return 0
        elif (p[1] & 0xC0) == 0xC0:
            return 0
        return 4
    return 0


cdef inline int _name_char(const unsigned char* p, Py_ssize_t avail, bint start) noexcept nogil:
    """Bytes of the name (start) character at ``p``; 0 if it is not one, -1 if incomplete."""
    cdef unsigned char c = p[0]
    cdef int t = CT[c], k
    cdef unsigned int cp
    if c < 0x80:
        if t == C_NMSTRT or (t == C_NAME and not start):
            return 1
        return 0
    k = _mb_len(p, avail)
    if k <= 0:
        return k
    if k == 4:
        return 0
    if k == 2:
        cp = ((c & 0x1F) << 6) | (p[1] & 0x3F)
    else:
        cp = ((c & 0x0F) << 12) | ((p[1] & 0x3F) << 6) | (p[2] & 0x3F)
    if start:
        return k if NMSTRT_BM[cp >> 3] & (1 << (cp & 7)) else 0
    return k if NAME_BM[cp >> 3] & (1 << (cp & 7)) else 0


cdef inline bint _is_hex(unsigned char c) noexcept nogil:
    return (0x30 <= c <= 0x39) or (0x41 <= c <= 0x46) or (0x61 <= c <= 0x66)


cdef Py_ssize_t _scan_ref(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, int* res,
                          Py_ssize_t hint) noexcept nogil:
    """Scan a reference whose ``&`` is at ``i``; return the index after its ``;``.

    ``res`` is R_OK, R_PARTIAL or E_NWF (expat's scanRef/scanCharRef syntax).  On
    R_PARTIAL the index returned is where a later call may resume (``hint``), so a long
    reference arriving in pieces is scanned once."""
    cdef int k
    i += 1
    if i >= n:
        res[0] = R_PARTIAL
        return i
    if p[i] == 0x23:  # '#'
        i += 1
        if i >= n:
            res[0] = R_PARTIAL
            return i
        if p[i] == 0x78:  # 'x'
            i += 1
            if i >= n:
                res[0] = R_PARTIAL
                return i
            if not _is_hex(p[i]):
                res[0] = E_NWF
                return i
            i += 1
            if hint > i:
                i = hint
            while i < n:
                if p[i] == 0x3B:
                    res[0] = R_OK
                    return i + 1
                if not _is_hex(p[i]):
                    res[0] = E_NWF
                    return i
                i += 1
            res[0] = R_PARTIAL
            return i
        if not (0x30 <= p[i] <= 0x39):
            res[0] = E_NWF
            return i
        i += 1
        if hint > i:
            i = hint
        while i < n:
            if p[i] == 0x3B:
                res[0] = R_OK
                return i + 1
            if not (0x30 <= p[i] <= 0x39):
                res[0] = E_NWF
                return i
            i += 1
        res[0] = R_PARTIAL
        return i
    k = _name_char(p + i, n - i, 1)
    if k <= 0:
        res[0] = R_PARTIAL if k < 0 else E_NWF
        return i
    i += k
    if hint > i:
        i = hint
    while i < n:
        if p[i] == 0x3B:
            res[0] = R_OK
            return i + 1
        k = _name_char(p + i, n - i, 0)
        if k <= 0:
            res[0] = R_PARTIAL if k < 0 else E_NWF
            return i
        i += k
    res[0] = R_PARTIAL
    return i


cdef long _ref_value(const unsigned char* p, Py_ssize_t i, Py_ssize_t e) noexcept nogil:
    """The code point of the complete reference ``p[i:e]`` (``&...;``).

    -1 for a character reference to a character XML forbids, -2 for an undefined entity."""
    cdef long v = 0
    cdef unsigned char c
    cdef Py_ssize_t n = e - i - 2
    if p[i + 1] == 0x23:
        if p[i + 2] == 0x78:
            for i in range(i + 3, e - 1):
                c = p[i]
                v = (v << 4) | (c - 0x30 if c <= 0x39 else (c | 0x20) - 0x57)
                if v >= 0x110000:
                    return -1
        else:
            for i in range(i + 2, e - 1):
                v = v * 10 + (p[i] - 0x30)
                if v >= 0x110000:
                    return -1
        if (0xD800 <= v <= 0xDFFF) or v == 0xFFFE or v == 0xFFFF:
            return -1
        if v < 0x20 and v != 9 and v != 10 and v != 13:
            return -1
        return v
    p = p + i + 1
    if n == 2 and p[1] == 0x74:
        if p[0] == 0x6C:
            return 0x3C
        if p[0] == 0x67:
            return 0x3E
    elif n == 3 and p[0] == 0x61 and p[1] == 0x6D and p[2] == 0x70:
        return 0x26
    elif n == 4:
        if memcmp(p, b"quot", 4) == 0:
            return 0x22
        if memcmp(p, b"apos", 4) == 0:
            return 0x27
    return -2


cdef inline bint _ws(unsigned char c) noexcept nogil:
    return c == 0x20 or c == 0x0A or c == 0x09 or c == 0x0D
