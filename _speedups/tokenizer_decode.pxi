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


# Names, namespaces and short attribute values repeat endlessly: a direct-mapped cache of
# ASCII strings saves the allocation and decoding, and idle tokenizers share their strings.
cdef enum:
    _ICACHE_SIZE = 4096
cdef list _ICACHE = [None] * _ICACHE_SIZE


cdef str _istr(const unsigned char* p, Py_ssize_t n):
    """``p[:n]`` as a str, from the cache when it is short ASCII (a hit is verified with
    memcmp, so the hash only needs to spread the usual names)."""
    cdef unsigned int h
    cdef object hit
    if n > 48 or n == 0:
        return _utf8(p, n)
    h = (<unsigned int>n * 0x9E3779B1u) ^ (p[0] * 0x85EBCA77u) ^ (p[n - 1] * 0xC2B2AE3Du) \
        ^ (p[n >> 1] * 0x27D4EB2Fu) ^ (p[n >> 2] * 0x165667B1u) ^ (p[(3 * n) >> 2] * 0xD3A2646Cu)
    h = (h ^ (h >> 15) ^ (h >> 23)) & (_ICACHE_SIZE - 1)
    hit = <object>PyList_GET_ITEM(_ICACHE, h)
    if hit is not None and PyUnicode_GET_LENGTH(hit) == n and \
            memcmp(PyUnicode_1BYTE_DATA(hit), p, n) == 0:
        return <str>hit
    value = _utf8(p, n)
    if PyUnicode_IS_COMPACT_ASCII(value):
        _ICACHE[h] = value
    return value


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


cdef str _attr_str(const unsigned char* p, Py_ssize_t s, Py_ssize_t e, TBuf* tb):
    """Decode a validated attribute value: references, and each tab/CR/LF (CRLF once) ->
    space, as expat normalizes CDATA attributes."""
    cdef Py_ssize_t i = s, j
    cdef unsigned char c
    while i < e and not AN[p[i]]:
        i += 1
    if i == e:
        return _istr(p + s, e - s)
    tb.len = 0
    _tb_put(tb, p + s, i - s)
    while i < e:
        j = i
        while j < e and not AN[p[j]]:
            j += 1
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
        j = i
        while j < e and p[j] != 0x0D and (p[j] != 0x26 or not refs):
            j += 1
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
