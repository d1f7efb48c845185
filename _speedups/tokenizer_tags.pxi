# Tags: the start-tag and attribute scanner (a fast path for plain tags, a resumable
# scanner for the rest), namespace resolution and stanza envelopes, and end tags.
#
# Included by tokenizer.pyx (textual include: one module, cdef inline functions stay inline).
# Its functions on ``Tokenizer self`` are Tokenizer methods written at module level:
# Cython allows ``include`` only at module level, not in a class body.  Calls to them are
# direct C calls.

cdef TBuf _VB  # attribute values are decoded here, then copied into a str at once
_VB.data = NULL
_VB.len = _VB.cap = 0


cdef int _check_value(const unsigned char* p, Py_ssize_t i, Py_ssize_t e) noexcept nogil:
    """The references of a scanned attribute value: undefined entity or bad character."""
    cdef const unsigned char* q
    cdef Py_ssize_t j
    cdef long v
    while i < e:
        q = <const unsigned char*>memchr(p + i, 0x26, e - i)
        if q == NULL:
            return R_OK
        i = q - p
        j = <Py_ssize_t>(<const unsigned char*>memchr(p + i, 0x3B, e - i) - p) + 1
        v = _ref_value(p, i, j)
        if v == -2:
            return E_RESTRICTED
        if v == -1:
            return E_NWF
        i = j
    return R_OK


cdef int _check_default_decl(const unsigned char* p, Py_ssize_t s, Py_ssize_t e,
                             Py_ssize_t lim) noexcept nogil:
    """A default namespace declaration's value on its bytes (the tag goes on to ``lim``):
    E_BADNS for whitespace, E_PREFIX for a reserved namespace, R_OK, or R_PARTIAL when it
    needs decoding (references or non-ASCII)."""
    cdef Py_ssize_t k = _skip_nsv(p, s, e, lim)
    if k < e:
        return R_PARTIAL if NSV[p[k]] == 1 else E_BADNS
    if (e - s == 36 and memcmp(p + s, b"http://www.w3.org/XML/1998/namespace", 36) == 0) or \
            (e - s == 29 and memcmp(p + s, b"http://www.w3.org/2000/xmlns/", 29) == 0):
        return E_PREFIX
    return R_OK


cdef int _grow_atts(Tokenizer self) except -1:
    cdef Py_ssize_t cap = self._att_cap * 2 + 8
    cdef Py_ssize_t* a = <Py_ssize_t*>PyMem_Realloc(self._att, 5 * (cap + 1) * sizeof(Py_ssize_t))
    if a == NULL:
        raise MemoryError()
    self._att = a
    self._att_cap = cap
    return 0

cdef int _fast_stag(Tokenizer self, const unsigned char* p, Py_ssize_t n) except -2:
    """The common start tag, complete and plain (ASCII names, ``name='value'`` with no
    space around ``=``), in one straight pass: R_OK with the same results as
    ``_scan_stag``, or -1 when anything else turns up, and ``_scan_stag`` starts over
    (so every byte is still looked at no more than twice)."""
    cdef Py_ssize_t i = self._pos + 1, natt = 0, colon = -1, j
    cdef Py_ssize_t* at
    cdef unsigned char c, q
    cdef int k, res = R_OK
    cdef bint refs = False
    if i >= n or CT[p[i]] != C_NMSTRT:
        return -1
    i += 1
    while i < n and NMC[p[i]]:
        i += 1
    if i < n and p[i] == 0x3A:
        colon = i
        i += 1
        if i >= n or CT[p[i]] != C_NMSTRT:
            return -1
        i += 1
        while i < n and NMC[p[i]]:
            i += 1
    if i >= n:
        return -1
    self._tag_name_end = i
    if self._att == NULL:
        _grow_atts(self, )
    while True:
        c = p[i]
        if c == 0x3E:
            self._tag_empty = False
            break
        if c == 0x2F:
            if i + 1 >= n or p[i + 1] != 0x3E:
                return -1
            i += 1
            self._tag_empty = True
            break
        if not (c == 0x20 or c == 0x0A or c == 0x09 or c == 0x0D):
            return -1
        i += 1
        while i < n and (p[i] == 0x20 or p[i] == 0x0A or p[i] == 0x09 or p[i] == 0x0D):
            i += 1
        if i >= n:
            return -1
        c = p[i]
        if c == 0x3E or c == 0x2F:
            continue
        if CT[c] != C_NMSTRT:
            return -1
        if natt >= self._att_cap:
            _grow_atts(self, )
        at = self._att + 5 * natt
        at[0] = i
        at[2] = -1
        i += 1
        while i < n and NMC[p[i]]:
            i += 1
        if i < n and p[i] == 0x3A:
            at[2] = i
            i += 1
            if i >= n or CT[p[i]] != C_NMSTRT:
                return -1
            i += 1
            while i < n and NMC[p[i]]:
                i += 1
        if i + 1 >= n or p[i] != 0x3D:
            return -1
        at[1] = i
        q = p[i + 1]
        if q != 0x22 and q != 0x27:
            return -1
        i += 2
        at[3] = i
        while True:
            i = _skip_av(p, i, n)
            if i >= n:
                return -1
            c = p[i]
            if c == q:
                break
            if c == 0x22 or c == 0x27:
                i += 1
            elif c == 0x26:
                j = _scan_ref(p, i, n, &res, 0)
                if res != R_OK:
                    return -1
                refs = True
                i = j
            elif c >= 0x80:
                k = _mb_len(p + i, n - i)
                if k <= 0:
                    return -1
                i += k
            else:
                return -1
        at[4] = i
        natt += 1
        i += 1
        if i >= n:
            return -1
    self._natt = natt
    self._tag_colon = colon
    self._tag_refs = refs
    self._tag_end = i + 1
    return R_OK

cdef int _scan_stag(Tokenizer self, const unsigned char* p, Py_ssize_t n) except -1:
    """Scan the start tag at ``_pos`` (expat's scanLt/scanAtts), resuming from the
    checkpoint; on R_OK the attributes are in ``_att`` and ``_tag_end`` is set."""
    cdef Py_ssize_t i, j
    cdef Py_ssize_t* at
    cdef int ph, k, t, res = R_OK
    cdef unsigned char c, q = 0
    if self._ck_kind == K_STAG:
        i = self._ck_pos
        ph = self._ck_phase
        q = <unsigned char>self._ck_aux
    else:
        i = self._pos + 1
        k = _name_char(p + i, n - i, 1)
        if k <= 0:
            return R_PARTIAL if k < 0 else self._err(E_NWF, "bad element name")
        i += k
        ph = P_NAME
        self._natt = 0
        self._tag_refs = False
        self._tag_colon = -1
        if self._att == NULL:
            _grow_atts(self, )
        self._ck_kind = K_STAG
    while i < n:
        c = p[i]
        t = CT[c]
        if ph == P_VAL:
            i = _skip_av(p, i, n)
            if i >= n:
                break
            c = p[i]
            if c == q:
                at = self._att + 5 * self._natt
                at[4] = i
                self._natt += 1
                ph = P_AFTERVAL
                i += 1
            elif c == 0x22 or c == 0x27:
                i += 1
            elif c == 0x26:
                self._tag_refs = True
                j = _scan_ref(p, i, n, &res, self._hint if self._hint_at == i else 0)
                if res == R_PARTIAL:
                    self._hint_at = i
                    self._hint = j
                    break
                if res != R_OK:
                    return self._err(E_NWF, "bad reference")
                i = j
            elif c >= 0x80:
                k = _mb_len(p + i, n - i)
                if k == 0:
                    return self._err(E_NWF, "invalid UTF-8")
                if k < 0:
                    break
                i += k
            else:
                return self._err(E_NWF, "not well-formed (invalid token)")
        elif ph == P_NAME or ph == P_ANAME:
            if t == C_NMSTRT or t == C_NAME:
                i += 1
                while i < n and NMC[p[i]]:
                    i += 1
                continue
            at = self._att + 5 * self._natt
            if t == C_COLON:
                if (self._tag_colon if ph == P_NAME else at[2]) >= 0:
                    return self._err(E_NWF, "two colons in a name")
                if i + 1 >= n:
                    break
                k = _name_char(p + i + 1, n - i - 1, 1)
                if k <= 0:
                    if k < 0:
                        break
                    return self._err(E_NWF, "bad name")
                if ph == P_NAME:
                    self._tag_colon = i
                else:
                    at[2] = i
                i += 1 + k
            elif t == C_S or t == C_LF or t == C_CR:
                if ph == P_NAME:
                    self._tag_name_end = i
                    ph = P_WS
                else:
                    at[1] = i
                    ph = P_EQ
                i += 1
            elif c == 0x3D and ph == P_ANAME:
                at[1] = i
                ph = P_QUOTE
                i += 1
            elif c == 0x3E and ph == P_NAME:
                self._tag_name_end = i
                self._tag_empty = False
                self._tag_end = i + 1
                self._ck_kind = K_NONE
                return R_OK
            elif c == 0x2F and ph == P_NAME:
                self._tag_name_end = i
                ph = P_SOL
                i += 1
            elif c >= 0x80:
                k = _name_char(p + i, n - i, 0)
                if k <= 0:
                    if k < 0:
                        break
                    return self._err(E_NWF, "bad name")
                i += k
            else:
                return self._err(E_NWF, "not well-formed (invalid token)")
        elif ph == P_WS:
            if t == C_S or t == C_LF or t == C_CR:
                i += 1
            elif c == 0x3E:
                self._tag_empty = False
                self._tag_end = i + 1
                self._ck_kind = K_NONE
                return R_OK
            elif c == 0x2F:
                ph = P_SOL
                i += 1
            else:
                k = _name_char(p + i, n - i, 1)
                if k <= 0:
                    if k < 0:
                        break
                    return self._err(E_NWF, "not well-formed (invalid token)")
                if self._natt >= self._att_cap:
                    _grow_atts(self, )
                at = self._att + 5 * self._natt
                at[0] = i
                at[2] = -1
                ph = P_ANAME
                i += k
        elif ph == P_EQ:
            if t == C_S or t == C_LF or t == C_CR:
                i += 1
            elif c == 0x3D:
                ph = P_QUOTE
                i += 1
            else:
                return self._err(E_NWF, "not well-formed (invalid token)")
        elif ph == P_QUOTE:
            if t == C_S or t == C_LF or t == C_CR:
                i += 1
            elif c == 0x22 or c == 0x27:
                q = c
                self._att[5 * self._natt + 3] = i + 1
                ph = P_VAL
                i += 1
            else:
                return self._err(E_NWF, "not well-formed (invalid token)")
        elif ph == P_AFTERVAL:
            if t == C_S or t == C_LF or t == C_CR:
                ph = P_WS
                i += 1
            elif c == 0x2F:
                ph = P_SOL
                i += 1
            elif c == 0x3E:
                self._tag_empty = False
                self._tag_end = i + 1
                self._ck_kind = K_NONE
                return R_OK
            else:
                return self._err(E_NWF, "not well-formed (invalid token)")
        else:  # P_SOL
            if c != 0x3E:
                return self._err(E_NWF, "not well-formed (invalid token)")
            self._tag_empty = True
            self._tag_end = i + 1
            self._ck_kind = K_NONE
            return R_OK
    self._ck_pos = i
    self._ck_phase = ph
    self._ck_aux = q
    return R_PARTIAL

# The stream header's namespace declarations are the same on nearly every stream (the
# default namespace and the streams prefix): one shared (prefix, uri) tuple each, instead of
# a tuple, a prefix and a URI per connection (~300 bytes of every idle session).  A bounded
# intern table: odd headers are kept per stream, as before, and cannot grow it.
cdef dict _HEADER_DECLS = {}
cdef Py_ssize_t _MAX_HEADER_DECLS = 64


cdef tuple _header_decl(bytes prefix, str uri):
    cdef tuple key = (prefix, uri)
    decl = _HEADER_DECLS.get(key)
    if decl is not None:
        return <tuple>decl
    if len(_HEADER_DECLS) < _MAX_HEADER_DECLS:
        _HEADER_DECLS[key] = key
    return key


# The whole scope a stream header leaves (nearly every client stream's: the default
# namespace and the streams prefix) is one list shared by the tokenizers whose header
# declared the same, instead of a list and its item array per connection (~90 bytes of
# every idle session).  Shared lists are never changed: a declaration in a stanza first
# copies the scope (_own_scope), and the stanza's end, popping back to the header's
# declarations, returns to the shared list (_pop_scope).  Bounded as above: emptied when
# full (a list still in use stays with its tokenizers).
cdef dict _HEADER_SCOPES = {}
cdef Py_ssize_t _MAX_HEADER_SCOPES = 64


cdef list _shared_scope(list scope):
    cdef tuple key = tuple(scope)
    shared = _HEADER_SCOPES.get(key)
    if shared is not None:
        return <list>shared
    if len(_HEADER_SCOPES) >= _MAX_HEADER_SCOPES:
        _HEADER_SCOPES.clear()
    _HEADER_SCOPES[key] = scope
    return scope


cdef inline list _own_scope(Tokenizer self):
    """The scope, made this tokenizer's own before a declaration is pushed onto it."""
    if self._scope is self._hdr_scope:
        self._scope = list(self._scope)
    return self._scope


cdef object _resolve(Tokenizer self, const unsigned char* p, Py_ssize_t s, Py_ssize_t col):
    """The URI bound to prefix ``p[s:col]``, or None; notes prefixes a stanza's
    content borrows from outside it (its raw bytes are then not self-contained)."""
    cdef Py_ssize_t k
    if _is_xml_prefix(p + s, col - s):
        return XML_NS
    k = _find_prefix(self._scope, p + s, col - s)
    if k < 0:
        return None
    if k < self._stz_scope and self._depth >= 2:
        self._stz_self = False
    return (<tuple>self._scope[k])[1]

cdef int _inner_tag(Tokenizer self, const unsigned char* p) except -2:
    """A complete start tag inside a stanza (depth >= 2) with no prefix anywhere and no
    declaration but plain ``xmlns='...'`` values: ``_start_tag``'s checks in its order,
    with no Python object touched (nothing is built there).  -1: anything else, and
    ``_start_tag`` takes the tag from the start (nothing has been changed yet)."""
    cdef Py_ssize_t natt = self._natt, k, j, s, ln, depth = self._depth, tag_start = self._pos
    cdef Py_ssize_t* a = self._att
    cdef int r
    if self._tag_colon >= 0 or natt > 16:
        return -1
    for k in range(natt):
        if a[5 * k + 2] >= 0:
            return -1
        s = a[5 * k]
        ln = a[5 * k + 1] - s
        for j in range(k):
            if a[5 * j + 1] - a[5 * j] == ln and p[a[5 * j]] == p[s] \
                    and memcmp(p + a[5 * j], p + s, ln) == 0:
                return self._err(E_NWF, "duplicate attribute")
        if self._tag_refs:
            r = _check_value(p, a[5 * k + 3], a[5 * k + 4])
            if r:
                return self._err(r, "bad reference in an attribute value")
        if ln == 5 and memcmp(p + s, b"xmlns", 5) == 0:
            r = _check_default_decl(p, a[5 * k + 3], a[5 * k + 4], self._tag_end)
            if r == E_BADNS:
                return self._err(E_BADNS, "namespace name contains whitespace")
            if r == E_PREFIX:
                return self._err(E_PREFIX, "reserved prefix or namespace")
            if r != R_OK:
                return -1  # a value to decode: _start_tag's way
    if natt > self.max_attrs:
        return self._err(E_POLICY, "too many attributes")
    if depth > self.max_depth:
        return self._err(E_POLICY, "elements nested too deeply")
    self._pos = self._tag_end
    if self._tag_empty:
        return R_OK
    return _push_frame(self, tag_start + 1, PyList_GET_SIZE(self._scope))


cdef int _start_tag(Tokenizer self, const unsigned char* p, list events) except -1:
    """A complete start tag: expat's storeAtts checks in its order, then the pure
    twin's limits, then the event or the element frame."""
    cdef Py_ssize_t natt = self._natt, k, j, s, e, ln, col
    cdef Py_ssize_t* a = self._att
    cdef Py_ssize_t depth = self._depth, sc0, tag_start = self._pos
    cdef bint build = depth <= 1, dflt_decl = False
    cdef list scope = self._scope
    cdef dict attrs = {} if build else None
    cdef dict hdr = {} if depth == 0 else None
    cdef set seen = None
    cdef list uris = None
    cdef int r
    cdef bytes prefix
    name = None
    sc0 = PyList_GET_SIZE(scope)
    for k in range(natt):
        s = a[5 * k]
        e = a[5 * k + 1]
        ln = e - s
        if natt > 16:
            key = PyBytes_FromStringAndSize(<const char*>p + s, ln)
            if seen is None:
                seen = set()
            if key in seen:
                return self._err(E_NWF, "duplicate attribute")
            seen.add(key)
        else:
            for j in range(k):
                if a[5 * j + 1] - a[5 * j] == ln and p[a[5 * j]] == p[s] \
                        and memcmp(p + a[5 * j], p + s, ln) == 0:
                    return self._err(E_NWF, "duplicate attribute")
        if self._tag_refs:
            r = _check_value(p, a[5 * k + 3], a[5 * k + 4])
            if r:
                return self._err(r, "bad reference in an attribute value")
        if ln >= 5 and p[s] == 0x78 and p[s + 1] == 0x6D and p[s + 2] == 0x6C and p[s + 3] == 0x6E \
                and p[s + 4] == 0x73 and (ln == 5 or a[5 * k + 2] == s + 5):  # xmlns, xmlns:*
            if ln == 5 and depth >= 2:
                # Inside a stanza nothing reads the default namespace (the builder
                # re-reads the declarations): check a plain value on its bytes only.
                r = _check_default_decl(p, a[5 * k + 3], a[5 * k + 4], self._tag_end)
                if r == E_BADNS:
                    return self._err(E_BADNS, "namespace name contains whitespace")
                if r == E_PREFIX:
                    return self._err(E_PREFIX, "reserved prefix or namespace")
                if r == R_OK:
                    a[5 * k + 2] = -2
                    continue
            value = _attr_str(p, a[5 * k + 3], a[5 * k + 4], self._tag_end, &_VB, True)
            prefix = PyBytes_FromStringAndSize(<const char*>p + s + 6, ln - 6) if ln > 5 else b""
            if not value and ln > 5:
                return self._err(E_PREFIX, "undeclaring a prefix")
            if (ln == 11 and memcmp(p + s + 6, b"xmlns", 5) == 0) \
                    or (ln == 9 and _is_xml_prefix(p + s + 6, 3)) != (value == XML_NS) \
                    or value == XMLNS_NS:
                return self._err(E_PREFIX, "reserved prefix or namespace")
            if value and _has_space(value):
                return self._err(E_BADNS, "namespace name contains whitespace")
            scope = _own_scope(self)
            if hdr is not None:  # the stream header
                hdr[prefix.decode()] = value
                scope.append(_header_decl(prefix, value))
            else:
                scope.append((prefix, value))
            if ln == 5:
                dflt_decl = True
            a[5 * k + 2] = -2  # a declaration, not an attribute
        elif build and a[5 * k + 2] == -1:
            attrs[_istr(p + s, ln)] = _attr_str(p, a[5 * k + 3], a[5 * k + 4], self._tag_end, &_VB, False)
    if dflt_decl:
        self._default = _default_ns(scope, "")
    for k in range(natt):
        col = a[5 * k + 2]
        if col < 0:
            continue
        s = a[5 * k]
        uri = _resolve(self, p, s, col)
        if uri is None:
            return self._err(E_PREFIX, "unbound prefix")
        if uris is None:
            uris = [None] * natt
        uris[k] = uri
        ln = a[5 * k + 1] - col
        for j in range(k):
            if a[5 * j + 2] >= 0 and a[5 * j + 1] - a[5 * j + 2] == ln and uris[j] == uri \
                    and memcmp(p + a[5 * j + 2], p + col, ln) == 0:
                return self._err(E_NWF, "duplicate attribute")
        if build:
            attrs["{%s}%s" % (uri, _istr(p + col + 1, ln - 1))] = _attr_str(
                p, a[5 * k + 3], a[5 * k + 4], self._tag_end, &_VB, False)
    col = self._tag_colon
    s = tag_start + 1
    if col >= 0:
        ns = _resolve(self, p, s, col)
        if ns is None:
            return self._err(E_PREFIX, "unbound prefix")
    else:
        ns = self._default
    if natt > self.max_attrs:
        return self._err(E_POLICY, "too many attributes")
    if depth > self.max_depth:
        return self._err(E_POLICY, "elements nested too deeply")
    e = self._tag_end
    self._pos = e
    if build:
        name = _istr(p + col + 1, self._tag_name_end - col - 1) if col >= 0 else \
            _istr(p + s, self._tag_name_end - s)
    if depth == 0:
        self._last = e
        events.append(StreamOpen(name, ns, attrs, hdr))
        self._root_qname = _istr(p + s, self._tag_name_end - s)
        self._scope = self._hdr_scope = _shared_scope(scope)
        self._depth = 1
        if self._tag_empty:
            events.append(StreamClose())
            self._depth = 0
            self._phase = PH_EPILOG
        return R_OK
    if depth == 1:
        if self._tag_empty:
            events.append(_element(name, ns, attrs, None, None, b"", self._default))
            self._last = e
            _pop_scope(self, sc0)
            return R_OK
        self._stz_inner = e
        self._stz_scope = PyList_GET_SIZE(scope)
        self._stz_self = True
        self._stz_name = name
        self._stz_ns = ns
        self._stz_attrs = attrs
        self._stz_rawns = self._default
    elif self._tag_empty:
        if PyList_GET_SIZE(scope) > sc0:  # rare: a declaration on an empty element
            _pop_scope(self, sc0)
        return R_OK
    return _push_frame(self, s, sc0)

cdef int _push_frame(Tokenizer self, Py_ssize_t s, Py_ssize_t sc0) except -1:
    """Open the element whose qname starts at ``s`` (the scope was ``sc0`` long before
    its tag): a frame for its end tag."""
    cdef Py_ssize_t k = self._depth - 1, cap
    cdef Py_ssize_t* a
    if k >= self._fr_cap:
        cap = self._fr_cap * 2 + 16
        a = <Py_ssize_t*>PyMem_Realloc(self._fr, 3 * cap * sizeof(Py_ssize_t))
        if a == NULL:
            raise MemoryError()
        self._fr = a
        self._fr_cap = cap
    self._fr[3 * k] = s
    self._fr[3 * k + 1] = self._tag_name_end - s
    self._fr[3 * k + 2] = sc0
    self._depth += 1
    return R_OK

cdef inline int _pop_scope(Tokenizer self, Py_ssize_t sc0) except -1:
    if PyList_GET_SIZE(self._scope) > sc0:
        while PyList_GET_SIZE(self._scope) > sc0:
            self._scope.pop()
        # Only the header's declarations left (they head every scope of the stream):
        # back to its shared list, the copy is dropped.
        if sc0 == PyList_GET_SIZE(self._hdr_scope):
            self._scope = self._hdr_scope
        self._default = _default_ns(self._scope, "")
    return 0

cdef inline int _inner_end(Tokenizer self, const unsigned char* p, Py_ssize_t n) except -1:
    """The end tag at ``_pos`` of an element inside a stanza's content (depth > 2) when it
    is exactly ``</qname>`` of the open element (its bytes are the start tag's, checked
    then): 1 when taken, 0 for ``_end_tag`` to scan (anything else: errors, partial)."""
    cdef Py_ssize_t i = self._pos + 2, k = 3 * (self._depth - 2)
    cdef Py_ssize_t ql = self._fr[k + 1]
    if i + ql >= n or p[i + ql] != 0x3E or memcmp(p + self._fr[k], p + i, ql) != 0:
        return 0
    self._depth -= 1
    self._pos = i + ql + 1
    if PyList_GET_SIZE(self._scope) > self._fr[k + 2]:
        _pop_scope(self, self._fr[k + 2])
    return 1


cdef int _end_tag(Tokenizer self, const unsigned char* p, Py_ssize_t n, list events) except -1:
    """The end tag at ``_pos`` (expat's scanEndTag), matched against the open element."""
    cdef Py_ssize_t i = self._pos + 2, j, end = 0, qs, ql, ne = -1, depth = self._depth
    cdef int k
    cdef unsigned char c
    cdef bytes inner
    if i >= n:
        return R_PARTIAL
    k = _name_char(p + i, n - i, 1)
    if k <= 0:
        return R_PARTIAL if k < 0 else self._err(E_NWF, "bad end tag")
    j = i + k
    if self._hint_at == self._pos and self._hint > j:  # resume a long one
        j = self._hint
        ne = self._hint_ne
    while True:
        if j >= n:
            self._hint_at = self._pos
            self._hint = j
            self._hint_ne = ne
            return R_PARTIAL
        c = p[j]
        if ne >= 0:  # whitespace after the name
            if _ws(c):
                j += 1
                continue
            if c != 0x3E:
                return self._err(E_NWF, "bad end tag")
            end = j + 1
            break
        if CT[c] == C_NMSTRT or CT[c] == C_NAME or CT[c] == C_COLON:
            j += 1
        elif c == 0x3E:
            ne = j
            end = j + 1
            break
        elif _ws(c):
            ne = j
            j += 1
        elif c >= 0x80:
            k = _name_char(p + j, n - j, 0)
            if k <= 0:
                if k < 0:
                    self._hint_at = self._pos
                    self._hint = j
                    self._hint_ne = -1
                    return R_PARTIAL
                return self._err(E_NWF, "bad end tag")
            j += k
        else:
            return self._err(E_NWF, "bad end tag")
    j = ne
    if depth == 1:
        qname = self._root_qname.encode()
        ql = PyBytes_GET_SIZE(qname)
        if ql != j - i or memcmp(PyBytes_AS_STRING(qname), p + i, ql) != 0:
            return self._err(E_NWF, "mismatched tag")
        self._last = end
        self._pos = end
        self._depth = 0
        self._phase = PH_EPILOG
        events.append(StreamClose())
        return R_OK
    qs = self._fr[3 * (depth - 2)]
    ql = self._fr[3 * (depth - 2) + 1]
    if ql != j - i or memcmp(p + qs, p + i, ql) != 0:
        return self._err(E_NWF, "mismatched tag")
    self._depth = depth - 1
    self._pos = end
    if depth == 2:
        inner = PyBytes_FromStringAndSize(<const char*>p + self._stz_inner, i - 2 - self._stz_inner)
        if PyBytes_GET_SIZE(inner) == 0:
            el = _element(self._stz_name, self._stz_ns, self._stz_attrs, None, None, inner,
                          self._stz_rawns)
        elif self._stz_self:
            el = _element(self._stz_name, self._stz_ns, self._stz_attrs, None,
                          _lazy_children(inner, 0, PyBytes_GET_SIZE(inner), self._stz_rawns, None),
                          inner, self._stz_rawns)
        else:
            el = _element(self._stz_name, self._stz_ns, self._stz_attrs,
                          _build(inner, 0, PyBytes_GET_SIZE(inner), self._stz_rawns,
                                 self._scope[:self._stz_scope]),
                          None, None, None)
        self._stz_name = self._stz_ns = self._stz_attrs = self._stz_rawns = None
        self._last = end
        events.append(el)
    if PyList_GET_SIZE(self._scope) > self._fr[3 * (depth - 2) + 2]:
        _pop_scope(self, self._fr[3 * (depth - 2) + 2])
    return R_OK
