# Content of the stream element: the dispatch loop, character data and CDATA sections.
#
# Included by tokenizer.pyx (textual include: one module, cdef inline functions stay inline).
# Its functions on ``Tokenizer self`` are Tokenizer methods written at module level:
# Cython allows ``include`` only at module level, not in a class body.  Calls to them are
# direct C calls.

cdef int _content(Tokenizer self, const unsigned char* p, Py_ssize_t n, list events) except -1:
    """Inside the stream element: text, tags, CDATA; stops when the stream closes."""
    cdef Py_ssize_t i = self._pos
    cdef int r, k
    cdef unsigned char c
    while i < n:
        k = self._ck_kind
        if k == K_NONE:
            if p[i] != 0x3C:
                r = _text(self, p, i, n)
                if r != R_OK:
                    return r
                i = self._pos
                continue
            self._pos = i
            if i + 1 >= n:
                return R_PARTIAL
            c = p[i + 1]
            if c == 0x2F:
                if self._depth > 2 and _inner_end(self, p, n):
                    i = self._pos
                    continue
                r = _end_tag(self, p, n, events)
                if r != R_OK:
                    return r
                if self._phase != PH_CONTENT:
                    return R_OK
                i = self._pos
                continue
            if c == 0x21:
                if i + 2 >= n:
                    return R_PARTIAL
                if p[i + 2] == 0x2D:
                    return _comment(self, p, n)
                if p[i + 2] != 0x5B:
                    return self._err(E_NWF, "not well-formed")
                if i + 9 > n:
                    return R_PARTIAL
                if memcmp(p + i + 3, b"CDATA[", 6) != 0:
                    return self._err(E_NWF, "not well-formed")
                self._ck_kind = K_CDATA
                self._ck_pos = i + 9
                k = K_CDATA
            elif c == 0x3F:
                k = K_PI
            else:
                k = K_STAG
        if k == K_STAG:
            r = -1 if self._ck_kind == K_STAG else _fast_stag(self, p, n)
            if r != R_OK:
                r = _scan_stag(self, p, n)
                if r != R_OK:
                    return r
            # inside a stanza, a plain tag needs no Python object: its own path
            r = _inner_tag(self, p) if self._depth >= 2 else -1
            if r == -1:
                r = _start_tag(self, p, events)
            if r != R_OK:
                return r
            if self._phase != PH_CONTENT:
                return R_OK
        elif k == K_CDATA:
            r = _cdata(self, p, n)
            if r != R_OK:
                return r
        elif k == K_COMMENT:
            return _comment(self, p, n)
        else:
            r = _pi(self, p, n)
            if r < T_PI:
                return r
            if r == T_XML_DECL:
                return self._err(E_NWF, "misplaced XML declaration")
            return self._err(E_RESTRICTED, "processing instructions are not allowed")
        i = self._pos
    self._pos = i
    return R_OK

cdef int _text(Tokenizer self, const unsigned char* p, Py_ssize_t i, Py_ssize_t n) except -1:
    """Character data from ``i`` to the next ``<``; directly inside the stream element
    only whitespace is allowed."""
    cdef bint ws_only = self._depth == 1
    cdef unsigned char c
    cdef Py_ssize_t j
    cdef int res = R_OK, k
    cdef long v
    while i < n:
        if not ws_only:
            i = _skip_tx(p, i, n)
            if i >= n:
                break
        c = p[i]
        if c == 0x3C:
            break
        if c < 0x80:
            if c == 0x26:
                j = _scan_ref(p, i, n, &res, self._hint if self._hint_at == i else 0)
                if res == R_PARTIAL:
                    self._hint_at = i
                    self._hint = j
                    self._pos = i
                    return R_PARTIAL
                if res != R_OK:
                    return self._err(E_NWF, "bad reference")
                v = _ref_value(p, i, j)
                if v == -2:
                    return self._err(E_RESTRICTED, "entity references are not allowed")
                if v == -1:
                    return self._err(E_NWF, "reference to a forbidden character")
                if ws_only and not (v == 0x20 or v == 0x0A or v == 0x09 or v == 0x0D):
                    return self._err(E_NWF, "text outside a stanza")
                i = j
                continue
            if c == 0x5D:
                if i + 1 >= n or (p[i + 1] == 0x5D and i + 2 >= n):
                    self._pos = i
                    return R_PARTIAL
                if p[i + 1] == 0x5D and p[i + 2] == 0x3E:
                    return self._err(E_NWF, "']]>' in text")
                if ws_only:
                    return self._err(E_NWF, "text outside a stanza")
                i += 1
                continue
            if CT[c] == C_NONXML:
                return self._err(E_NWF, "forbidden character")
            if ws_only and not _ws(c):
                return self._err(E_NWF, "text outside a stanza")
            i += 1
            continue
        # A run of non-ASCII characters (a word in most scripts) is read here, not with a
        # block scan per character.
        while True:
            k = _mb_len(p + i, n - i)
            if k == 0:
                return self._err(E_NWF, "invalid UTF-8")
            if k < 0:
                self._pos = i
                return R_PARTIAL
            if ws_only:
                return self._err(E_NWF, "text outside a stanza")
            i += k
            if i >= n or p[i] < 0x80:
                break
    self._pos = i
    return R_OK

cdef int _cdata(Tokenizer self, const unsigned char* p, Py_ssize_t n) except -1:
    """The body of a CDATA section, from the checkpoint to its ``]]>``."""
    cdef bint ws_only = self._depth == 1
    cdef Py_ssize_t i = self._ck_pos
    cdef unsigned char c
    cdef int k
    while i < n:
        c = p[i]
        if c == 0x5D:
            if i + 1 >= n or (p[i + 1] == 0x5D and i + 2 >= n):
                break
            if p[i + 1] == 0x5D and p[i + 2] == 0x3E:
                self._ck_kind = K_NONE
                self._pos = i + 3
                return R_OK
            if ws_only:
                return self._err(E_NWF, "text outside a stanza")
            i += 1
        elif c < 0x80:
            if CT[c] == C_NONXML:
                return self._err(E_NWF, "forbidden character")
            if ws_only and not _ws(c):
                return self._err(E_NWF, "text outside a stanza")
            i += 1
        else:
            k = _mb_len(p + i, n - i)
            if k == 0:
                return self._err(E_NWF, "invalid UTF-8")
            if k < 0:
                break
            if ws_only:
                return self._err(E_NWF, "text outside a stanza")
            i += k
    self._ck_pos = i
    return R_PARTIAL
