# The element builder: Element construction without ``__init__``, the unchecking builder
# that decodes a stanza's validated inner bytes, the lazy ``children`` callable, and the
# ``Element.children`` accessor in C.
#
# Included by tokenizer.pyx (textual include: one module, cdef inline functions stay inline).

# Element construction without running Element.__init__ (a Python frame per element): the
# slots are written directly.  Element is a __slots__ class whose __init__ only stores its
# arguments; if that ever stops being true, _FAST_ELEMENT is False and __init__ is called.
cdef Py_ssize_t _OFF[8]
cdef bint _FAST_ELEMENT = False


cdef int _init_element_slots() except -1:
    global _FAST_ELEMENT
    cdef int k
    names = ("name", "ns", "attrs", "_children", "_lazy", "_raw_inner", "_raw_ns", "_wire")
    for k, slot in enumerate(names):
        descr = Element.__dict__.get(slot)
        if type(descr).__name__ != "member_descriptor":
            return 0
        _OFF[k] = (<PyMemberDescrObject*>descr).d_member.offset
    _FAST_ELEMENT = getattr(Element, "__slots__", None) == names
    _install_children()
    return 0


# ``Element.children`` is read once per element by every tree walk (and by hasattr):
# as a Python property, a frame each time, more than a slot read costs.  The same
# accessor in C replaces it, unless pure Python is forced (the pure twins then run with
# element.py as written, even where a differential test imports this module).
cdef inline void _set_slot(object el, Py_ssize_t off, object value):
    cdef PyObject** slot = <PyObject**>((<char*><PyObject*>el) + off)
    cdef PyObject* old = slot[0]
    Py_INCREF(value)
    slot[0] = <PyObject*>value
    Py_XDECREF(old)


cdef object _PY_CHILDREN = None  # element.py's property: for elements with an unset slot


cdef inline bint _slots_set(object el):
    cdef char* o = <char*><PyObject*>el
    return (<PyObject**>(o + _OFF[3]))[0] != NULL and (<PyObject**>(o + _OFF[4]))[0] != NULL


def _children_get(el):
    """The mutable child list; using it drops the raw form kept for forwarding."""
    if not _slots_set(el):
        return _PY_CHILDREN.fget(el)
    _set_slot(el, _OFF[5], None)
    kids = <object>(<PyObject**>((<char*><PyObject*>el) + _OFF[3]))[0]
    if kids is None:
        lazy = <object>(<PyObject**>((<char*><PyObject*>el) + _OFF[4]))[0]
        kids = lazy() if lazy is not None else []
        _set_slot(el, _OFF[3], kids)
        _set_slot(el, _OFF[4], None)
    return kids


def _children_set(el, value):
    _set_slot(el, _OFF[5], None)
    _set_slot(el, _OFF[4], None)
    _set_slot(el, _OFF[3], value)


cdef int _install_children() except -1:
    global _PY_CHILDREN
    from xmppd._impl import PURE_PYTHON
    prop = Element.__dict__.get("children")
    if PURE_PYTHON or not _FAST_ELEMENT or type(prop) is not property or _PY_CHILDREN is not None:
        return 0
    _PY_CHILDREN = prop
    compiled = property(_children_get, _children_set, None, prop.__doc__)
    compiled.__set_name__(Element, "children")
    Element.children = compiled
    return 0


cdef inline void _put(PyObject* o, Py_ssize_t off, object value):
    Py_INCREF(value)
    (<PyObject**>((<char*>o) + off))[0] = <PyObject*>value


cdef object _element(object name, object ns, object attrs, object children, object lazy,
                     object raw_inner, object raw_ns):
    cdef PyObject* o
    if not _FAST_ELEMENT:
        return Element(name, ns, attrs, children, lazy=lazy, raw_inner=raw_inner, raw_ns=raw_ns)
    o = PyType_GenericAlloc(<PyTypeObject*>Element, 0)  # Element's tp_alloc
    el = <object>o
    Py_DECREF(el)  # tp_alloc's reference now belongs to ``el``
    _put(o, _OFF[0], name)
    _put(o, _OFF[1], ns)
    _put(o, _OFF[2], attrs)
    _put(o, _OFF[3], children)
    _put(o, _OFF[4], lazy)
    _put(o, _OFF[5], raw_inner)
    _put(o, _OFF[6], raw_ns)
    _put(o, _OFF[7], None)  # _wire: nothing kept yet
    return el


# -- the lazy builder ----------------------------------------------------------------------

# Attribute positions of the start tag the builder is reading.  A garbage collection
# triggered while building could run a finalizer that builds another element's children:
# the nested call then gets its own array instead of sharing this one.
cdef struct PosBuf:
    Py_ssize_t* data
    Py_ssize_t cap

cdef PosBuf _BA
_BA.data = NULL
_BA.cap = 0
cdef bint _BA_BUSY = False


cdef int _grow_pos(PosBuf* b) except -1:
    cdef Py_ssize_t cap = b.cap * 2 + 16
    cdef Py_ssize_t* a = <Py_ssize_t*>PyMem_Realloc(b.data, 5 * cap * sizeof(Py_ssize_t))
    if a == NULL:
        raise MemoryError()
    b.data = a
    b.cap = cap
    return 0


# One open element of the builder: its parent's child list (borrowed: the tree being built
# owns it), the parent's default namespace (a reference: a prefixed element's own
# xmlns='' value is held by nothing else) and the scope length to restore at its end tag.
cdef struct BFrame:
    PyObject* kids
    PyObject* dflt
    Py_ssize_t scope_len


# An element whose content holds child elements and is at least this long is built lazily
# (its own ``_LazyChildren``): skipping its content costs a scan, building it costs a few
# Python objects per element, and a lazy element costs two objects and a call when touched.
cdef enum:
    _LAZY_MIN = 128


cdef Py_ssize_t _skip_content(const unsigned char* p, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """In validated content, from the markup at ``i`` on: where the end tag of the element
    holding it starts (start tags are skipped with their quoted values, which may hold
    ``>``, and CDATA sections, which may hold ``<``)."""
    cdef Py_ssize_t depth = 0
    cdef unsigned char c
    while True:
        i = <Py_ssize_t>(<const unsigned char*>memchr(p + i, 0x3C, n - i) - p)
        c = p[i + 1]
        if c == 0x2F:
            if depth == 0:
                return i
            depth -= 1
            i += 2
        elif c == 0x21:  # <![CDATA[ ... ]]>
            i += 9
            while not (p[i] == 0x5D and p[i + 1] == 0x5D and p[i + 2] == 0x3E):
                i = <Py_ssize_t>(<const unsigned char*>memchr(p + i + 1, 0x5D, n - i - 1) - p)
            i += 3
        else:
            i += 1
            while True:
                i = xmppd_scan(p, i, n, n, 0x3E, 0x22, 0x27, -1, False, False)
                c = p[i]
                if c == 0x3E:
                    break
                i = <Py_ssize_t>(<const unsigned char*>memchr(p + i + 1, c, n - i - 1) - p) + 1
            if p[i - 1] != 0x2F:
                depth += 1
            i += 1


cdef list _build(bytes raw, Py_ssize_t start, Py_ssize_t end, object dflt, list scope):
    """Children of the validated content ``raw[start:end]``, nothing checked: the tokenizer
    has.  ``dflt`` is the default namespace there, ``scope`` the prefixes in scope (its
    default namespace entries are not read).  A child whose content holds elements (and is
    long enough) is itself lazy."""
    global _BA_BUSY
    cdef list root = [], kids = root, new_kids
    cdef TBuf tb
    cdef TBuf vb
    cdef Py_ssize_t i = 0, j, s, e, col, ncol, vs, ve, k, nat, scope_len
    cdef unsigned char c, q
    cdef const unsigned char* lt
    cdef Py_ssize_t depth = 0, fr_cap = 32
    cdef BFrame[32] fr_small
    cdef BFrame* fr = fr_small
    cdef BFrame* fr_heap = NULL
    cdef object uri, value, ns, new_dflt
    cdef dict attrs
    cdef bint empty = False, leaf, ascii
    cdef PosBuf own
    cdef PosBuf* ba = &own
    cdef bint shared
    cdef const unsigned char* p = <const unsigned char*>PyBytes_AS_STRING(raw) + start
    cdef Py_ssize_t n = end - start
    tb.data = NULL
    tb.len = tb.cap = 0
    vb.data = NULL
    vb.len = vb.cap = 0
    own.data = NULL
    own.cap = 0
    shared = not _BA_BUSY
    if shared:
        ba = &_BA
        _BA_BUSY = True
    try:
        while i < n:
            if p[i] != 0x3C:
                # One pass to the next markup, reference or CR, noting non-ASCII on the way.
                j = xmppd_scan(p, i, n, n, 0x3C, 0x26, 0x0D, -1, False, True)
                ascii = True
                if j < n and p[j] >= 0x80:
                    ascii = False
                    j = xmppd_scan(p, j, n, n, 0x3C, 0x26, 0x0D, -1, False, False)
                if (j >= n or p[j] == 0x3C) and tb.len == 0 and (j >= n or p[j + 1] != 0x21):
                    if ascii and j - i > 1:
                        value = <str>PyUnicode_New(j - i, 127)
                        memcpy(PyUnicode_1BYTE_DATA(value), p + i, j - i)
                    else:
                        value = PyUnicode_DecodeUTF8(<const char*>p + i, j - i, NULL)
                    kids.append(value)
                    i = j
                    continue
                lt = <const unsigned char*>memchr(p + j, 0x3C, n - j)
                s = n if lt == NULL else lt - p
                _text_put(&tb, p, i, s, True)
                i = s
                continue
            c = p[i + 1]
            if c == 0x21:  # <![CDATA[ ... ]]>
                s = i + 9
                e = s
                while not (p[e] == 0x5D and p[e + 1] == 0x5D and p[e + 2] == 0x3E):
                    e += 1
                _text_put(&tb, p, s, e, False)
                i = e + 3
                continue
            if tb.len:
                kids.append(_utf8(<const unsigned char*>tb.data, tb.len))
                tb.len = 0
            if c == 0x2F:  # end tag
                i = <Py_ssize_t>(<const unsigned char*>memchr(p + i, 0x3E, n - i) - p) + 1
                depth -= 1
                kids = <list>fr[depth].kids
                dflt = <object>fr[depth].dflt
                Py_DECREF(dflt)  # the frame's reference; ``dflt`` holds its own
                scope_len = fr[depth].scope_len
                while PyList_GET_SIZE(scope) > scope_len:
                    scope.pop()
                continue
            # start tag
            scope_len = PyList_GET_SIZE(scope)
            s = i + 1
            col = -1
            i = s
            while True:
                c = p[i]
                if c == 0x3E or c == 0x2F or CT[c] == C_S or CT[c] == C_LF or CT[c] == C_CR:
                    break
                if c == 0x3A:
                    col = i
                i += 1
            e = i
            nat = 0
            new_dflt = dflt
            while True:
                c = p[i]
                if c == 0x3E:
                    empty = False
                    i += 1
                    break
                if c == 0x2F:
                    empty = True
                    i += 2
                    break
                if CT[c] == C_S or CT[c] == C_LF or CT[c] == C_CR:
                    i += 1
                    continue
                vs = i
                ncol = -1
                while p[i] != 0x3D and CT[p[i]] != C_S and CT[p[i]] != C_LF and CT[p[i]] != C_CR:
                    if p[i] == 0x3A:
                        ncol = i
                    i += 1
                ve = i
                while p[i] != 0x22 and p[i] != 0x27:
                    i += 1
                q = p[i]
                j = <Py_ssize_t>(<const unsigned char*>memchr(p + i + 1, q, n - i - 1) - p)
                if nat >= ba.cap:
                    _grow_pos(ba)
                if ve - vs >= 5 and memcmp(p + vs, b"xmlns", 5) == 0 and (ve - vs == 5 or ncol == vs + 5):
                    value = _attr_str(p, i + 1, j, n, &vb, True)
                    if ve - vs == 5:
                        new_dflt = value  # tracked in the frames, not in the scope
                    else:
                        scope.append((PyBytes_FromStringAndSize(<const char*>p + vs + 6, ve - vs - 6), value))
                else:
                    ba.data[5 * nat] = vs
                    ba.data[5 * nat + 1] = ve
                    ba.data[5 * nat + 2] = ncol
                    ba.data[5 * nat + 3] = i + 1
                    ba.data[5 * nat + 4] = j
                    nat += 1
                i = j + 1
            if col >= 0:
                ns = XML_NS if _is_xml_prefix(p + s, col - s) else (<tuple>scope[_find_prefix(scope, p + s, col - s)])[1]
                name = _istr(p + col + 1, e - col - 1)
            else:
                ns = new_dflt
                name = _istr(p + s, e - s)
            attrs = {}
            for k in range(nat):
                vs = ba.data[5 * k]
                ve = ba.data[5 * k + 1]
                ncol = ba.data[5 * k + 2]
                value = _attr_str(p, ba.data[5 * k + 3], ba.data[5 * k + 4], n, &vb, False)
                if ncol < 0:
                    attrs[_istr(p + vs, ve - vs)] = value
                else:
                    uri = XML_NS if _is_xml_prefix(p + vs, ncol - vs) else (<tuple>scope[_find_prefix(scope, p + vs, ncol - vs)])[1]
                    attrs["{%s}%s" % (uri, _istr(p + ncol + 1, ve - ncol - 1))] = value
            # A leaf (``<x/>`` or ``<x></x>``) gets no child list: Element makes one on
            # first use, as Element(name) does.
            leaf = empty or (p[i] == 0x3C and p[i + 1] == 0x2F)
            if not leaf:
                lt = <const unsigned char*>memchr(p + i, 0x3C, n - i)
                if lt[1] != 0x2F and lt[1] != 0x21:  # the content holds an element
                    e = _skip_content(p, lt - p, n)
                    if e - i >= _LAZY_MIN:
                        kids.append(_element(name, ns, attrs, None, _lazy_children(
                            raw, start + i, start + e, new_dflt,
                            scope[:] if PyList_GET_SIZE(scope) else None), None, None))
                        i = <Py_ssize_t>(<const unsigned char*>memchr(p + e, 0x3E, n - e) - p) + 1
                        while PyList_GET_SIZE(scope) > scope_len:
                            scope.pop()
                        continue
            new_kids = None if leaf else []
            kids.append(_element(name, ns, attrs, new_kids, None, None, None))
            if empty:
                while PyList_GET_SIZE(scope) > scope_len:
                    scope.pop()
            else:
                if depth >= fr_cap:
                    fr_cap *= 2
                    fr_heap = <BFrame*>PyMem_Realloc(fr_heap, fr_cap * sizeof(BFrame))
                    if fr_heap == NULL:
                        raise MemoryError()
                    if fr == fr_small:
                        memcpy(fr_heap, fr_small, sizeof(fr_small))
                    fr = fr_heap
                fr[depth].kids = <PyObject*>kids
                Py_INCREF(dflt)
                fr[depth].dflt = <PyObject*>dflt
                fr[depth].scope_len = scope_len
                depth += 1
                kids = new_kids  # None for a leaf: its end tag comes next
                dflt = new_dflt
        if tb.len:
            kids.append(_utf8(<const unsigned char*>tb.data, tb.len))
    finally:
        for k in range(depth):  # only after an error
            Py_XDECREF(fr[k].dflt)
        PyMem_Free(tb.data)
        PyMem_Free(vb.data)
        PyMem_Free(own.data)
        PyMem_Free(fr_heap)
        if shared:
            _BA_BUSY = False
    return root


@cython.no_gc  # holds bytes, str and a list of (bytes, str) tuples: never part of a cycle
@cython.freelist(64)
@cython.final
cdef class _LazyChildren:
    """The ``lazy=`` callable of an element: decodes its validated content
    ``raw[start:end]`` on demand (``raw`` is the stanza's content: no copy), with ``ns`` the
    default namespace and ``scope`` the prefixes in scope there (None: none)."""

    cdef bytes raw
    cdef Py_ssize_t start
    cdef Py_ssize_t end
    cdef object ns
    cdef list scope

    def __call__(self):
        return _build(self.raw, self.start, self.end, self.ns,
                      [] if self.scope is None else self.scope[:])


cdef _LazyChildren _lazy_children(bytes raw, Py_ssize_t start, Py_ssize_t end, object ns,
                                  list scope):
    # __new__ without arguments: no argument parsing on the per-stanza path
    cdef _LazyChildren lazy = _LazyChildren.__new__(_LazyChildren)
    lazy.raw = raw
    lazy.start = start
    lazy.end = end
    lazy.ns = ns
    lazy.scope = scope
    return lazy
