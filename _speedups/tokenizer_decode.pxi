# Decoding validated bytes: the growable buffer, ASCII fast paths and the string cache,
# attribute values and character data (references, newline normalization), and namespace
# scopes.
#
# Included by tokenizer.pyx (textual include: one module, cdef inline functions stay inline).

# -- a growable byte buffer for decoding ----------------------------------------------------

cdef struct TBuf:
    char* data
    Py_ssize_t len
    Py_ssize_t cap


cdef int _tb_grow(TBuf* tb, Py_ssize_t extra) except -1:
    cdef Py_ssize_t cap = tb.cap * 2 + extra + 64
    cdef char* d = <char*>PyMem_Realloc(tb.data, cap)
    if d == NULL:
        raise MemoryError()
    tb.data = d
    tb.cap = cap
    return 0


cdef inline int _tb_put(TBuf* tb, const unsigned char* s, Py_ssize_t n) except -1:
    if tb.len + n > tb.cap:
        _tb_grow(tb, n)
    memcpy(tb.data + tb.len, s, n)
    tb.len += n
    return 0


cdef inline int _tb_putc(TBuf* tb, long cp) except -1:
    cdef char* d
    if tb.len + 4 > tb.cap:
        _tb_grow(tb, 4)
    d = tb.data + tb.len
    if cp < 0x80:
        d[0] = <char>cp
        tb.len += 1
    elif cp < 0x800:
        d[0] = <char>(0xC0 | (cp >> 6))
        d[1] = <char>(0x80 | (cp & 0x3F))
        tb.len += 2
    elif cp < 0x10000:
        d[0] = <char>(0xE0 | (cp >> 12))
        d[1] = <char>(0x80 | ((cp >> 6) & 0x3F))
        d[2] = <char>(0x80 | (cp & 0x3F))
        tb.len += 3
    else:
        d[0] = <char>(0xF0 | (cp >> 18))
        d[1] = <char>(0x80 | ((cp >> 12) & 0x3F))
        d[2] = <char>(0x80 | ((cp >> 6) & 0x3F))
        d[3] = <char>(0x80 | (cp & 0x3F))
        tb.len += 4
    return 0


cdef inline bint _is_ascii(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t k = 0
    cdef uint64_t w, acc = 0
    while k + 8 <= n:
        memcpy(&w, p + k, 8)
        acc |= w
        k += 8
    while k < n:
        acc |= p[k]
        k += 1
    return (acc & 0x8080808080808080ULL) == 0


cdef inline str _utf8(const unsigned char* p, Py_ssize_t n):
    """Validated UTF-8 as a str; ASCII (most of it) is copied without the codec machinery."""
    cdef str u
    if n > 1 and _is_ascii(p, n):
        u = <str>PyUnicode_New(n, 127)
        memcpy(PyUnicode_1BYTE_DATA(u), p, n)
        return u
    return PyUnicode_DecodeUTF8(<const char*>p, n, NULL)


# Names and namespaces repeat endlessly, and so do many attribute values (types, JIDs):
# two bounded, direct-mapped caches of their strings save the allocation and decoding, and
# idle tokenizers share their strings.  Names (element and attribute names, namespace
# URIs) get their own table, so that the stream of one-off values (ids, stamps) cannot
# evict them.  An entry is keyed by the bytes themselves: up to 16 bytes the key *is* the
# content (two overlapping loads), so a hit is two compares and the string is not touched;
# longer ones (namespace URIs) are confirmed with memcmp on the cached ASCII string.
cdef struct ICEntry:
    uint64_t a
    uint64_t b
    Py_ssize_t n
    PyObject* s      # a reference owned by the table (never released: it is bounded)

cdef enum:
    _NAMES_BITS = 10
    _VALUES_BITS = 11
    _ICACHE_MAX = 64  # longer strings are not cached
cdef ICEntry _NAMES[1 << _NAMES_BITS]
cdef ICEntry _VALUES[1 << _VALUES_BITS]


cdef inline uint64_t _icache_key(const unsigned char* p, Py_ssize_t n, uint64_t* b) noexcept nogil:
    """The first word of ``p[:n]``'s key (``b``: the second); exact up to 16 bytes."""
    cdef uint64_t a
    cdef unsigned int x, y
    if n >= 8:
        memcpy(&a, p, 8)
        memcpy(b, p + n - 8, 8)
        return a
    b[0] = 0
    if n >= 4:
        memcpy(&x, p, 4)
        memcpy(&y, p + n - 4, 4)
        return x | (<uint64_t>y << 32)
    return p[0] | (<uint64_t>p[n >> 1] << 8) | (<uint64_t>p[n - 1] << 16)


cdef inline str _cached(ICEntry* table, int bits, const unsigned char* p, Py_ssize_t n):
    cdef uint64_t a, b
    cdef ICEntry* ent
    if n > _ICACHE_MAX or n == 0:
        return _utf8(p, n)
    a = _icache_key(p, n, &b)
    ent = table + (((a ^ (b * 0xC2B2AE3D27D4EB4FULL) ^ <uint64_t>n) * 0x9E3779B97F4A7C15ULL) >> (64 - bits))
    if ent.n == n and ent.a == a and ent.b == b and \
            (n <= 16 or memcmp(PyUnicode_1BYTE_DATA(<object>ent.s), p, n) == 0):
        return <str>ent.s
    value = _utf8(p, n)
    if n <= 16 or PyUnicode_IS_COMPACT_ASCII(value):  # longer ones are confirmed on ASCII
        Py_INCREF(value)
        Py_XDECREF(ent.s)
        ent.s = <PyObject*>value
        ent.a = a
        ent.b = b
        ent.n = n
    return value


cdef str _istr(const unsigned char* p, Py_ssize_t n):
    """``p[:n]`` as a str, from the names cache (element and attribute names, URIs)."""
    return _cached(_NAMES, _NAMES_BITS, p, n)


cdef str _vstr(const unsigned char* p, Py_ssize_t n):
    """``p[:n]`` as a str, from the attribute values cache."""
    return _cached(_VALUES, _VALUES_BITS, p, n)


cdef bint _has_space(str uri):
    """The pure twin's test (a ``\\s`` match: any Unicode whitespace), fast for ASCII."""
    cdef Py_ssize_t k
    cdef unsigned char* d
    if PyUnicode_IS_COMPACT_ASCII(uri):
        d = PyUnicode_1BYTE_DATA(uri)
        for k in range(PyUnicode_GET_LENGTH(uri)):
            if d[k] <= 0x20 and (d[k] == 0x20 or 0x09 <= d[k] <= 0x0D or 0x1C <= d[k] <= 0x1F):
                return True
        return False
    return _WS_IN_NS(uri) is not None


cdef str _attr_str(const unsigned char* p, Py_ssize_t s, Py_ssize_t e, Py_ssize_t lim,
                   TBuf* tb, bint uri):
    """Decode a validated attribute value: references, and each tab/CR/LF (CRLF once) ->
    space, as expat normalizes CDATA attributes.  The buffer goes on to ``lim``; ``uri``:
    a namespace declaration's value (cached with the names)."""
    cdef Py_ssize_t i, j
    cdef unsigned char c
    i = xmppd_scan(p, s, e, lim, 0x26, 0x09, 0x0A, 0x0D, False, False)
    if i == e:
        return _istr(p + s, e - s) if uri else _vstr(p + s, e - s)
    tb.len = 0
    _tb_put(tb, p + s, i - s)
    while i < e:
        j = xmppd_scan(p, i, e, lim, 0x26, 0x09, 0x0A, 0x0D, False, False)
        if j > i:
            _tb_put(tb, p + i, j - i)
            i = j
            if i == e:
                break
        c = p[i]
        if c == 0x26:
            j = <Py_ssize_t>(<const unsigned char*>memchr(p + i, 0x3B, e - i) - p) + 1
            _tb_putc(tb, _ref_value(p, i, j))
            i = j
        else:
            if c == 0x0D and i + 1 < e and p[i + 1] == 0x0A:
                i += 1
            _tb_putc(tb, 0x20)
            i += 1
    return _utf8(<const unsigned char*>tb.data, tb.len)


cdef int _text_put(TBuf* tb, const unsigned char* p, Py_ssize_t i, Py_ssize_t e, bint refs) except -1:
    """Append validated character data ``p[i:e]``: CRLF and CR -> LF, references decoded
    (``refs`` is false inside CDATA sections)."""
    cdef Py_ssize_t j
    cdef unsigned char c
    while i < e:
        j = xmppd_scan(p, i, e, e, 0x0D, 0x26 if refs else -1, -1, -1, False, False)
        if j > i:
            _tb_put(tb, p + i, j - i)
            i = j
            if i == e:
                break
        c = p[i]
        if c == 0x0D:
            _tb_putc(tb, 0x0A)
            i += 2 if i + 1 < e and p[i + 1] == 0x0A else 1
        else:
            j = <Py_ssize_t>(<const unsigned char*>memchr(p + i, 0x3B, e - i) - p) + 1
            _tb_putc(tb, _ref_value(p, i, j))
            i = j
    return 0


# -- namespace scopes -----------------------------------------------------------------------
# A scope is a list of (prefix bytes, uri str) in declaration order; b"" is the default
# namespace.  Lookups scan backwards: elements rarely declare more than one or two.

cdef Py_ssize_t _find_prefix(list scope, const unsigned char* p, Py_ssize_t n) except -2:
    """Index in ``scope`` of the binding of prefix ``p[:n]``, or -1."""
    cdef Py_ssize_t k
    cdef bytes pre
    for k in range(PyList_GET_SIZE(scope) - 1, -1, -1):
        pre = <bytes>(<tuple>scope[k])[0]
        if PyBytes_GET_SIZE(pre) == n and memcmp(PyBytes_AS_STRING(pre), p, n) == 0:
            return k
    return -1


cdef object _default_ns(list scope, object base):
    cdef Py_ssize_t k = _find_prefix(scope, <const unsigned char*>b"", 0)
    return base if k < 0 else (<tuple>scope[k])[1]


cdef inline bint _is_xml_prefix(const unsigned char* p, Py_ssize_t n) noexcept nogil:
    return n == 3 and p[0] == 0x78 and p[1] == 0x6D and p[2] == 0x6C
