# Prolog and epilog: stray text, the XML declaration and its pseudo-attributes, comments
# and processing instructions (also used inside the stream element).
#
# Included by tokenizer.pyx (textual include: one module, cdef inline functions stay inline).
# Its functions on ``Tokenizer self`` are Tokenizer methods written at module level:
# Cython allows ``include`` only at module level, not in a class body.  Calls to them are
# direct C calls.

cdef int _junk(const unsigned char* p, Py_ssize_t i, Py_ssize_t n, bint epilog) noexcept nogil:
    """Something other than markup in the prolog or epilog: an error once expat's token is
    complete.  Names, literals and some DTD punctuation wait for their next byte in the
    prolog; in the epilog expat takes such a token as complete at the end of the data."""
    cdef unsigned char c = p[i], q
    cdef int k
    cdef int at_end = E_NWF if epilog else R_PARTIAL
    cdef bint colon_ok = True
    if c == 0x29 or c == 0x5D:  # ) ]
        if i + 1 >= n:
            return at_end
        if c == 0x5D and p[i + 1] == 0x5D and i + 2 >= n:
            return R_PARTIAL
        return E_NWF
    if c == 0x22 or c == 0x27:  # a literal
        q = c
        i += 1
        while i < n:
            c = p[i]
            if c == q:
                return at_end if i + 1 >= n else E_NWF
            if c < 0x80:
                if CT[c] == C_NONXML:
                    return E_NWF
                i += 1
            else:
                k = _mb_len(p + i, n - i)
                if k <= 0:
                    return R_PARTIAL if k < 0 else E_NWF
                i += k
        return R_PARTIAL
    if c == 0x25 or c == 0x23:  # %name; #name: no colon in these (scanPercent/PoundName)
        colon_ok = False
        if c == 0x25:
            at_end = R_PARTIAL
        i += 1
        if i >= n:
            return R_PARTIAL
        k = _name_char(p + i, n - i, 1)
        if k <= 0:
            return R_PARTIAL if k < 0 else E_NWF
        i += k
    elif not (c >= 0x80 or CT[c] == C_NMSTRT or CT[c] == C_NAME or CT[c] == C_COLON):
        return E_NWF
    while i < n:  # a name or name token
        if p[i] == 0x3A:
            if not colon_ok:
                return E_NWF
            i += 1
            continue
        k = _name_char(p + i, n - i, 0)
        if k <= 0:
            return R_PARTIAL if k < 0 else E_NWF
        i += k
    return at_end


cdef int _xml_decl(const unsigned char* p, Py_ssize_t i, Py_ssize_t end) noexcept nogil:
    """Check ``<?xml ... ?>`` at ``p[i:end]`` as expat's doParseXmlDecl does; a declared
    encoding other than UTF-8 is unsupported-encoding (the pure twin's handler, which runs
    once the whole declaration is known good)."""
    cdef Py_ssize_t s = i + 5, e = end - 2, ns = 0, ne = 0, vs = 0, ve = 0
    cdef bint enc_bad = False
    cdef int got
    if _pseudo_attr(p, &s, e, &ns, &ne, &vs, &ve) <= 0:
        return E_NWF
    if not (ne - ns == 7 and memcmp(p + ns, b"version", 7) == 0):
        return E_NWF
    got = _pseudo_attr(p, &s, e, &ns, &ne, &vs, &ve)
    if got <= 0:
        return E_NWF if got < 0 else R_OK
    if ne - ns == 8 and memcmp(p + ns, b"encoding", 8) == 0:
        if not (0x61 <= (p[vs] | 0x20) <= 0x7A):
            return E_NWF
        enc_bad = not (
            ve - vs >= 4 and (p[vs] | 0x20) == 0x75 and (p[vs + 1] | 0x20) == 0x74
            and (p[vs + 2] | 0x20) == 0x66
            and ((ve - vs == 5 and p[vs + 3] == 0x2D and p[vs + 4] == 0x38)
                 or (ve - vs == 4 and p[vs + 3] == 0x38))
        )
        got = _pseudo_attr(p, &s, e, &ns, &ne, &vs, &ve)
        if got <= 0:
            return E_NWF if got < 0 else (E_ENCODING if enc_bad else R_OK)
    if not (ne - ns == 10 and memcmp(p + ns, b"standalone", 10) == 0):
        return E_NWF
    if not ((ve - vs == 3 and memcmp(p + vs, b"yes", 3) == 0)
            or (ve - vs == 2 and memcmp(p + vs, b"no", 2) == 0)):
        return E_NWF
    while s < e and _ws(p[s]):
        s += 1
    if s != e:
        return E_NWF
    return E_ENCODING if enc_bad else R_OK


cdef int _pseudo_attr(const unsigned char* p, Py_ssize_t* pos, Py_ssize_t e, Py_ssize_t* ns,
                      Py_ssize_t* ne, Py_ssize_t* vs, Py_ssize_t* ve) noexcept nogil:
    """expat's parsePseudoAttribute: 1 found, 0 none left, -1 malformed."""
    cdef Py_ssize_t i = pos[0]
    cdef unsigned char c, q
    if i == e:
        return 0
    if not _ws(p[i]):
        return -1
    while i < e and _ws(p[i]):
        i += 1
    if i == e:
        return 0
    ns[0] = i
    while True:
        if i >= e or p[i] >= 0x80:
            return -1
        c = p[i]
        if c == 0x3D:
            ne[0] = i
            break
        if _ws(c):
            ne[0] = i
            while i < e and _ws(p[i]):
                i += 1
            if i >= e or p[i] != 0x3D:
                return -1
            break
        i += 1
    if i == ns[0]:
        return -1
    i += 1
    while i < e and _ws(p[i]):
        i += 1
    if i >= e or (p[i] != 0x22 and p[i] != 0x27):
        return -1
    q = p[i]
    i += 1
    vs[0] = i
    while True:
        if i >= e:
            return -1
        c = p[i]
        if c == q:
            break
        if not ((0x61 <= c <= 0x7A) or (0x41 <= c <= 0x5A) or (0x30 <= c <= 0x39)
                or c == 0x2E or c == 0x2D or c == 0x5F):
            return -1
        i += 1
    ve[0] = i
    pos[0] = i + 1
    return 1


cdef int _prolog(Tokenizer self, const unsigned char* p, Py_ssize_t n) except -1:
    """Prolog (before the stream element) and epilog (after it)."""
    cdef Py_ssize_t i = self._pos, j
    cdef unsigned char c, c2
    cdef bint epilog = self._phase == PH_EPILOG
    cdef int r
    while i < n:
        self._pos = i
        if self._ck_kind == K_COMMENT:
            return _comment(self, p, n)
        c = p[i]
        if epilog:  # after the closing tag: whitespace only (the twin's rule)
            if not _ws(c):
                return self._err(E_NWF, "junk after the stream's closing tag")
            i += 1
            continue
        if self._bom_ok:
            if c == 0xEF:
                if i + 1 >= n:
                    return R_PARTIAL
                if p[i + 1] == 0xBB:
                    if i + 2 >= n:
                        return R_PARTIAL
                    if p[i + 2] == 0xBF:
                        self._bom_ok = False
                        i += 3
                        continue
            self._bom_ok = False
        if _ws(c):
            if not epilog:
                self._phase = PH_PROLOG1
            i += 1
            continue
        if c != 0x3C:
            return self._err(_junk(p, i, n, epilog), "junk outside the stream element")
        if i + 1 >= n:
            return R_PARTIAL
        c2 = p[i + 1]
        if c2 == 0x3F or self._ck_kind == K_PI:  # <?
            r = _pi(self, p, n)
            if r < T_PI:
                return r
            if r == T_XML_DECL and self._phase == PH_PROLOG0:
                r = _xml_decl(p, i, self._pos)
                if r:
                    return self._err(r, "bad XML declaration")
                self._phase = PH_PROLOG1
                i = self._pos
                continue
            if r == T_XML_DECL:
                return self._err(E_NWF, "misplaced XML declaration")
            return self._err(E_RESTRICTED, "processing instructions are not allowed")
        if c2 == 0x21:  # <!
            if i + 2 >= n:
                return R_PARTIAL
            if p[i + 2] == 0x2D:
                return _comment(self, p, n)
            if CT[p[i + 2]] != C_NMSTRT:
                return self._err(E_NWF, "bad declaration")
            j = i + 3
            while True:
                if j >= n:
                    return R_PARTIAL
                c = p[j]
                if c == 0x25:
                    if j + 1 >= n:
                        return R_PARTIAL
                    if _ws(p[j + 1]) or p[j + 1] == 0x25:
                        return self._err(E_NWF, "bad declaration")
                    break
                if _ws(c):
                    break
                if CT[c] != C_NMSTRT:
                    return self._err(E_NWF, "bad declaration")
                j += 1
            if not epilog and j - i == 9 and memcmp(p + i + 2, b"DOCTYPE", 7) == 0:
                return self._err(E_RESTRICTED, "DTDs are not allowed")
            return self._err(E_NWF, "declaration outside a DTD")
        if CT[c2] == C_NMSTRT or CT[c2] == C_LEAD2 or CT[c2] == C_LEAD3 or CT[c2] == C_LEAD4:
            if epilog:
                return self._err(E_NWF, "junk after the stream element")
            self._phase = PH_CONTENT
            return R_OK
        return self._err(E_NWF, "not well-formed")
    self._pos = i
    return R_OK

cdef int _comment(Tokenizer self, const unsigned char* p, Py_ssize_t n) except -1:
    """A comment at ``_pos``: restricted once complete (expat's scanComment)."""
    cdef Py_ssize_t i
    cdef int k
    cdef unsigned char c
    if self._ck_kind == K_COMMENT:
        i = self._ck_pos
    else:
        i = self._pos + 3
        if i >= n:
            return R_PARTIAL
        if p[i] != 0x2D:
            return self._err(E_NWF, "not well-formed")
        i += 1
        self._ck_kind = K_COMMENT
    while i < n:
        c = p[i]
        if c == 0x2D:
            if i + 1 >= n:
                break
            if p[i + 1] == 0x2D:
                if i + 2 >= n:
                    break
                if p[i + 2] == 0x3E:
                    return self._err(E_RESTRICTED, "comments are not allowed")
                return self._err(E_NWF, "'--' in a comment")
            i += 1
        elif c < 0x80:
            if CT[c] == C_NONXML:
                return self._err(E_NWF, "forbidden character")
            i += 1
        else:
            k = _mb_len(p + i, n - i)
            if k == 0:
                return self._err(E_NWF, "invalid UTF-8")
            if k < 0:
                break
            i += k
    self._ck_pos = i
    return R_PARTIAL

cdef int _pi(Tokenizer self, const unsigned char* p, Py_ssize_t n) except -1:
    """A processing instruction at ``_pos`` (expat's scanPi): T_PI or T_XML_DECL once
    complete, with ``_pos`` after it."""
    cdef Py_ssize_t i, t0
    cdef int k, tok
    cdef unsigned char c = 0
    if self._ck_kind == K_PI:
        i = self._ck_pos
        tok = self._ck_aux
    else:
        t0 = self._pos + 2
        if t0 >= n:
            return R_PARTIAL
        k = _name_char(p + t0, n - t0, 1)
        if k <= 0:
            return R_PARTIAL if k < 0 else self._err(E_NWF, "bad PI target")
        i = t0 + k
        while True:
            if i >= n:
                return R_PARTIAL
            c = p[i]
            if _ws(c) or c == 0x3F:
                break
            k = _name_char(p + i, n - i, 0)
            if k <= 0:
                return R_PARTIAL if k < 0 else self._err(E_NWF, "bad PI target")
            i += k
        tok = T_PI
        if i - t0 == 3 and (p[t0] | 0x20) == 0x78 and (p[t0 + 1] | 0x20) == 0x6D and (p[t0 + 2] | 0x20) == 0x6C:
            if p[t0] != 0x78 or p[t0 + 1] != 0x6D or p[t0 + 2] != 0x6C:
                return self._err(E_NWF, "reserved PI target")
            tok = T_XML_DECL
        if c == 0x3F:
            if i + 1 >= n:
                return R_PARTIAL
            if p[i + 1] != 0x3E:
                return self._err(E_NWF, "bad PI")
            self._pos = i + 2
            return tok
        i += 1
        self._ck_kind = K_PI
        self._ck_aux = tok
    while i < n:
        c = p[i]
        if c == 0x3F:
            if i + 1 >= n:
                break
            if p[i + 1] == 0x3E:
                self._ck_kind = K_NONE
                self._pos = i + 2
                return tok
            i += 1
        elif c < 0x80:
            if CT[c] == C_NONXML:
                return self._err(E_NWF, "forbidden character")
            i += 1
        else:
            k = _mb_len(p + i, n - i)
            if k == 0:
                return self._err(E_NWF, "invalid UTF-8")
            if k < 0:
                break
            i += k
    self._ck_pos = i
    return R_PARTIAL
