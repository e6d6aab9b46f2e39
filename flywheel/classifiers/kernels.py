"""Compiled text kernels behind the classifier features (Numba; no Python work per row).

Texts arrive as UTF-8 bytes plus row offsets (an Arrow string column's buffers, no copy).
The kernels loop over rows in compiled code and release the GIL, so threads score chunks
in parallel. Training and scoring call the same kernels, so a model scores exactly the
features it was trained on. The first call compiles them (about 20 s); Numba caches the
machine code in ``__pycache__`` beside this file for later processes.

Definitions (the features of :mod:`flywheel.classifiers.features` rest on them):

- a *token* is ``[a-z0-9]+('[a-z]+)?`` of the ASCII-lower-cased text, where the right
  single quote (U+2019) counts as an apostrophe; any other byte separates tokens. A token
  is known by a 64-bit hash of its normalized bytes (FNV-1a, then a mixing step);
- an *n-gram* hash folds its token hashes: ``(h1 * M + h2) * M + h3``;
- a *number* is a run of digits with ``.`` or ``,`` groups between digits; commas are
  dropped (``1,000.5`` is ``1000.5``);
- a *capitalized word* is ``[A-Z][a-zA-Z]+`` (optionally ``-`` or ``'`` and more letters)
  between non-word characters; it *starts a sentence* when only spaces, and at most one
  quote or parenthesis, stand between it and the start of the text, a line break or one of
  ``.!?:;``;
- a *date* is a year token (1000-2099), ``d/m/y`` (or ``d-m-y``), a month name followed by a
  day number, or a day number (optionally 1st, 2nd ...) followed by a month name;
- a *sentence* ends between two tokens when the bytes between them hold a line break, or
  one of ``.!?`` followed by white space, a quote or a closing parenthesis, or ending the
  text (so ``3.5`` and ``e.g`` end none); its *content
  words* are its distinct tokens that are not stop words, and it is *negated* when one of
  its tokens is a negation word.
"""

from __future__ import annotations

import numpy as np
from numba import njit
from numba.cpython.unsafe.numbers import trailing_zeros
from numba.extending import register_jitable

# The kernels allocate nothing: their Python wrappers do. Without Numba's reference
# counting (_nrt=False) a helper that takes arrays costs no atomic operations per call,
# which made the hash-set helpers two to four times faster. The small hash-set helpers are
# inlined; the others are register_jitable (compiled into each kernel that calls them),
# which compiles in half the time of inlining them.
kernel = njit(nogil=True, cache=True, _nrt=False)

FNV_OFFSET = np.uint64(0xCBF29CE484222325)
FNV_PRIME = np.uint64(0x100000001B3)
MULT = np.uint64(0x9E3779B97F4A7C15)  # folds token hashes into an n-gram hash
MIX1 = np.uint64(0xFF51AFD7ED558CCD)
MIX2 = np.uint64(0xC4CEB9FE1A85EC53)
# distinct salts keep unigrams, bigrams, numbers ... apart in one hash set
SALTS = np.array([0, 0x243F6A8885A308D3, 0x13198A2E03707344, 0xA4093822299F31D0, 0x082EFA98EC4E6C89,
                  0x452821E638D01377, 0xBE5466CF34E90C6C, 0xC0AC29B7C97C50DD], dtype=np.uint64)
UNI, BI, TRI, NUM, DATE, STARTER, NAME = 1, 2, 3, 4, 5, 6, 7

STOP, MONTH, FIRST_PERSON, NEGATION, HEDGE_START, REFUSAL_START = 1, 2, 4, 8, 16, 32  # token flags
SENTENCE = 64  # token flag: a sentence ends between this token and the row's previous one
N_GROUNDING = 27
MAX_SENTENCES = 64  # output sentences told apart (a bit each); later ones count as the last
WEAK_SUPPORT = 0.5  # a sentence with less than this share of its content words supported is weak
FLIP_SUPPORT = 0.5  # negation flips are looked for in sentences at least this well supported
# byte classes: 1 lower-case letter, 2 digit, 3 upper-case letter, 0 anything else
_CLASS = np.zeros(256, np.uint8)
_CLASS[97:123], _CLASS[48:58], _CLASS[65:91] = 1, 2, 3
N_STYLE = 14


# --------------------------------------------------------------------------- bytes


@register_jitable
def _lower(b):
    b = np.int64(b)
    return b + 32 if 65 <= b <= 90 else b


@register_jitable
def _digit(b):
    return 48 <= b <= 57


@register_jitable
def _letter(b):  # ASCII letter, either case
    return (97 <= b <= 122) or (65 <= b <= 90)


@register_jitable
def _upper(b):
    return 65 <= b <= 90


@register_jitable
def _space(b):
    return b == 32 or (9 <= b <= 13)


@register_jitable
def _word_byte(b):
    """Bytes of a word for word boundaries: ASCII letters, digits, underscore and every
    byte of a non-ASCII character (most of them letters)."""
    return _letter(b) or _digit(b) or b == 95 or b >= 128


@register_jitable
def _fnv(h, b):
    return (h ^ np.uint64(b)) * FNV_PRIME


@register_jitable
def _mix(h):
    h ^= h >> np.uint64(33)
    h *= MIX1
    h ^= h >> np.uint64(33)
    h *= MIX2
    h ^= h >> np.uint64(33)
    return h


@register_jitable
def _fold(h, nxt):
    return h * MULT + nxt


@register_jitable
def _apostrophe(data, pos, end):
    """The length of an apostrophe (1, or 3 for U+2019) at ``pos`` followed by a letter, else 0."""
    if data[pos] == 39:
        skip = 1
    elif data[pos] == 0xE2 and pos + 2 < end and data[pos + 1] == 0x80 and data[pos + 2] == 0x99:
        skip = 3
    else:
        return 0
    if pos + skip < end and 97 <= _lower(data[pos + skip]) <= 122:
        return skip
    return 0


@register_jitable
def _token_end(data, pos, end):
    """The end of the token starting at ``pos``, and its (unmixed) hash."""
    h = FNV_OFFSET
    while pos < end:
        b = data[pos]
        if _CLASS[b] == 0:
            break
        h = (h ^ np.uint64(b | 32)) * FNV_PRIME  # | 32: lower case (digits keep their value)
        pos += 1
    if pos < end:
        skip = _apostrophe(data, pos, end)
        if skip:
            h = (h ^ np.uint64(39)) * FNV_PRIME
            pos += skip
            while pos < end:
                b = data[pos]
                if _CLASS[b] != 1 and _CLASS[b] != 3:
                    break
                h = (h ^ np.uint64(b | 32)) * FNV_PRIME
                pos += 1
    return pos, h


@kernel
def _tokens(data, offsets, word_slots, word_flags, ptr, hashes, starts, stops, flags):
    """Fill the tokens; return their number, or -1 when they do not fit."""
    n = len(offsets) - 1
    room = len(hashes)
    k = 0
    for r in range(n):
        pos, end = offsets[r], offsets[r + 1]
        ended = False  # a sentence ended since the last token (see the module docstring)
        while pos < end:
            b = data[pos]
            if _CLASS[b] == 0:
                if b == 10:
                    ended = True
                elif b == 46 or b == 33 or b == 63:
                    q = pos + 1
                    if q == end or _space(data[q]) or data[q] == 34 or data[q] == 39 or data[q] == 41:
                        ended = True
                pos += 1
                continue
            if k == room:
                return -1
            start = pos
            pos, h = _token_end(data, pos, end)
            h = _mix(h)
            hashes[k], starts[k], stops[k] = h, start, pos
            f = _find(word_slots, word_flags, h)
            flags[k] = (f if f > 0 else 0) | (SENTENCE if ended and k > ptr[r] else 0)
            ended = False
            k += 1
        ptr[r + 1] = k
    return k


def tokenize(data, offsets, word_slots, word_flags):
    """Tokens of every row: (ptr, hashes, starts, stops, flags); row r's tokens are
    ``ptr[r]:ptr[r+1]``, with their byte spans in ``data``, and each token's flags from
    the :func:`lookup_table` of special words (``STOP`` | ``MONTH`` | ...; 0 for others),
    plus ``SENTENCE`` when a sentence ends between it and the row's previous token."""
    ptr = np.zeros(len(offsets), np.int64)
    # room for a token every four bytes (English text has one every five or six); texts of
    # shorter tokens are tokenized again with room for the most there can be (a token and
    # the byte that ends it take at least two bytes)
    room = (int(offsets[-1] - offsets[0]) if len(offsets) else 0) // 4 + len(offsets) + 16
    for attempt in range(2):
        hashes, starts, stops = np.empty(room, np.uint64), np.empty(room, np.int64), np.empty(room, np.int64)
        flags = np.empty(room, np.uint8)
        k = _tokens(data, offsets, word_slots, word_flags, ptr, hashes, starts, stops, flags)
        if k >= 0:
            return ptr, hashes[:k], starts[:k], stops[:k], flags[:k]
        room = int(((np.diff(offsets) + 1) // 2).sum()) + 1
    raise AssertionError("tokens cannot outnumber half the bytes")


@kernel
def _nonblank(data, offsets, out):
    for r in range(len(offsets) - 1):
        for p in range(offsets[r], offsets[r + 1]):
            if not _space(data[p]):
                out[r] = True
                break


def nonblank(data, offsets):
    """Whether each row holds anything but ASCII white space."""
    out = np.zeros(len(offsets) - 1, np.bool_)
    _nonblank(data, offsets, out)
    return out


# --------------------------------------------------------------------------- hash sets


@register_jitable
def _capacity(items):
    size = 16
    while size < 2 * items + 2:
        size *= 2
    return size


@register_jitable
def _set_size(items, room):
    """The size of a per-row set of ``items``: kept at most an eighth full, where most
    lookups are of keys not in it (each then ends at the first empty slot), unless that
    exceeds ``room`` (the scratch array, sized for the longest row at half full)."""
    size = _capacity(4 * items)
    return size if size <= room else _capacity(items)


@register_jitable
def _key(h, kind):
    k = h ^ SALTS[kind]
    return k if k != 0 else np.uint64(1)


@njit(inline="always")
def _add(table, size, key):
    """Insert ``key`` (non-zero) into the open-addressing set ``table[:size]`` (``size``
    a power of two; empty slots are zero); True when it was new."""
    mask = size - 1
    i = np.int64(key & np.uint64(mask))
    while True:
        v = table[i]
        if v == 0:
            table[i] = key
            return True
        if v == key:
            return False
        i = (i + 1) & mask


@njit(inline="always")
def _put(table, size, key):
    """Insert ``key`` (non-zero) into the set ``table[:size]``; return (its slot, whether
    it was new)."""
    mask = size - 1
    i = np.int64(key & np.uint64(mask))
    while True:
        v = table[i]
        if v == 0:
            table[i] = key
            return i, True
        if v == key:
            return i, False
        i = (i + 1) & mask


@njit(inline="always")
def _has(table, size, key):
    return _slot(table, size, key) >= 0


@njit(inline="always")
def _slot(table, size, key):
    """The slot of ``key`` in the set ``table[:size]``, or -1."""
    mask = size - 1
    i = np.int64(key & np.uint64(mask))
    while True:
        v = table[i]
        if v == 0:
            return -1
        if v == key:
            return i
        i = (i + 1) & mask


@register_jitable
def _clear(table, size):
    for i in range(size):
        table[i] = 0


def capacity(items: int) -> int:
    """The size of a hash set for ``items`` (as the kernels' ``_capacity``)."""
    size = 16
    while size < 2 * items + 2:
        size *= 2
    return size


# --------------------------------------------------------------------------- numbers, names, dates


@register_jitable
def _numbers(data, start, end, out, pos, k):
    """Write the number hashes of ``data[start:end]`` into ``out`` (their first bytes into
    ``pos``) from ``k``; return the new k."""
    p = start
    while p < end:
        if not _digit(data[p]):
            p += 1
            continue
        h = FNV_OFFSET
        pos[k] = p
        while True:
            while p < end and _digit(data[p]):
                h = _fnv(h, data[p])
                p += 1
            if p + 1 < end and (data[p] == 44 or data[p] == 46) and _digit(data[p + 1]):
                if data[p] == 46:
                    h = _fnv(h, 46)
                p += 1
                continue
            break
        out[k] = _mix(h)
        k += 1
    return k


@register_jitable
def _starts_sentence(data, lo, p):
    """Whether the word at ``p`` starts a sentence (see the module docstring)."""
    q = p - 1
    while q >= lo and _space(data[q]):
        if data[q] == 10:
            return True
        q -= 1
    if q >= lo and (data[q] == 34 or data[q] == 39 or data[q] == 40):
        q -= 1
        while q >= lo and _space(data[q]):
            if data[q] == 10:
                return True
            q -= 1
    if q < lo:
        return True
    b = data[q]
    return b == 46 or b == 33 or b == 63 or b == 58 or b == 59


@register_jitable
def _capitalized(data, p, end):
    """The end of the capitalized word starting at ``p`` (after a non-word byte), or -1."""
    if not _upper(data[p]) or p + 1 >= end or not _letter(data[p + 1]):
        return -1
    q = p + 1
    while q < end and _letter(data[q]):
        q += 1
    if q + 1 < end and (data[q] == 45 or data[q] == 39) and _letter(data[q + 1]):
        r = q + 1
        while r < end and _letter(data[r]):
            r += 1
        if r >= end or not _word_byte(data[r]):
            return r
    if q >= end or not _word_byte(data[q]):
        return q
    return -1


@register_jitable
def _capitalized_words(data, start, end, case_h, lower_h, starter, pos, k):
    """Write every capitalized word of ``data[start:end]`` from ``k``: its hash with case
    kept, its hash lower-cased (as a token's), whether it starts a sentence and its first
    byte; return the new k."""
    p = start
    while p < end:
        if _upper(data[p]) and (p == start or not _word_byte(data[p - 1])):
            q = _capitalized(data, p, end)
            if q > 0:
                hc, hl = FNV_OFFSET, FNV_OFFSET
                for i in range(p, q):
                    hc = _fnv(hc, data[i])
                    hl = _fnv(hl, _lower(data[i]))
                case_h[k], lower_h[k], starter[k] = _mix(hc), _mix(hl), _starts_sentence(data, start, p)
                pos[k] = p
                k += 1
                p = q
                continue
        p += 1
    return k


@register_jitable
def _day_number(data, s, e, suffix):
    """Whether bytes [s, e) are 1-2 digits (with ``suffix``: optionally st/nd/rd/th)."""
    d = 0
    while s + d < e and _digit(data[s + d]):
        d += 1
    if d < 1 or d > 2:
        return False
    rest = e - s - d
    if rest == 0:
        return True
    if not suffix or rest != 2:
        return False
    a, b = _lower(data[s + d]), _lower(data[s + d + 1])
    return (a == 115 and b == 116) or (a == 110 and b == 100) or (a == 114 and b == 100) or (a == 116 and b == 104)


@register_jitable
def _all_space(data, s, e):
    """Whether bytes [s, e) are white space, and at least one."""
    return e > s and _only_space(data, s, e)


@register_jitable
def _only_space(data, s, e):
    for p in range(s, e):
        if not _space(data[p]):
            return False
    return True


@register_jitable
def _dates(data, hashes, starts, stops, flags, t0, t1, out, pos, k):
    """Write the date hashes of tokens t0:t1 into ``out`` (their first bytes into ``pos``)
    from ``k``; return the new k."""
    i = t0
    while i < t1:
        s, e = starts[i], stops[i]
        n = e - s
        if n == 4 and _digit(data[s]) and _digit(data[s + 1]) and _digit(data[s + 2]) and _digit(data[s + 3]) and (
                data[s] == 49 or (data[s] == 50 and data[s + 1] == 48)):
            out[k], pos[k] = hashes[i], s
            k += 1
            i += 1
            continue
        if i + 2 < t1 and _day_number(data, s, e, False) and stops[i] + 1 == starts[i + 1] \
                and (data[e] == 47 or data[e] == 45) and _day_number(data, starts[i + 1], stops[i + 1], False) \
                and stops[i + 1] + 1 == starts[i + 2] and data[stops[i + 1]] == data[e]:
            m = stops[i + 2] - starts[i + 2]
            ok = 2 <= m <= 4
            for p in range(starts[i + 2], stops[i + 2]):
                ok = ok and _digit(data[p])
            if ok:
                out[k], pos[k] = _fold(_fold(hashes[i], hashes[i + 1]), hashes[i + 2]), s
                k += 1
                i += 3
                continue
        if i + 1 < t1 and (flags[i] & MONTH) and _day_number(data, starts[i + 1], stops[i + 1], False):
            gap = e
            if data[gap] == 46:
                gap += 1
            if _all_space(data, gap, starts[i + 1]):
                out[k], pos[k] = _fold(hashes[i], hashes[i + 1]), s
                k += 1
                i += 2
                continue
        if i + 1 < t1 and _day_number(data, s, e, True) and (flags[i + 1] & MONTH) \
                and _all_space(data, e, starts[i + 1]):
            out[k], pos[k] = _fold(hashes[i], hashes[i + 1]), s
            k += 1
            i += 2
            continue
        i += 1
    return k


@register_jitable
def _sentence_of(starts, n_sentences, p):
    """The output sentence holding byte ``p`` (``starts``: each sentence's first byte)."""
    s = n_sentences - 1
    while s > 0 and starts[s] > p:
        s -= 1
    return s


# --------------------------------------------------------------------------- grounding


def grounding(out, references):
    """How well each output is supported by one or two references. ``out`` is the
    output's :meth:`Texts.arrays`; each reference is (A, B, use_a, present): row r's
    reference is text A where ``use_a[r]``, else text B (each a :meth:`Texts.arrays`), and
    ``present[r]`` says whether the reference was there. Returns an (n, 27 x references)
    float64 array: per reference, the columns of ``GroundingFeatures.feature_names``. The
    output's side (its n-grams, numbers, names, dates, sentences) is worked out once for
    all of them."""
    n = len(out[1]) - 1
    result = np.zeros((n, N_GROUNDING * len(references)), np.float64)
    if not n:
        return result
    first = references[0]
    second = references[1] if len(references) > 1 else first
    most_out = int(np.diff(out[1]).max())
    most_ref = max(int(np.diff(texts[1]).max()) for ref in references for texts in ref[:2])
    # scratch space for the longest row (a token or a number takes at least two bytes)
    ref_items, out_items = most_ref // 2 + 1, most_out // 2 + 1
    seen_size = capacity(16 * out_items + 32)
    sentences = (np.zeros(MAX_SENTENCES, np.int64), np.zeros(MAX_SENTENCES, np.int64),
                 np.zeros(MAX_SENTENCES, np.bool_), np.zeros(MAX_SENTENCES, np.int64),
                 np.zeros(MAX_SENTENCES, np.int64), np.zeros(MAX_SENTENCES, np.float64),
                 np.zeros(MAX_SENTENCES, np.bool_))
    _grounding(*out, *first[0], *first[1], first[2], first[3], *second[0], *second[1], second[2], second[3],
               len(references), result,
               np.zeros(capacity(3 * ref_items + 8), np.uint64), np.zeros(seen_size, np.uint64),
               np.zeros(seen_size, np.uint8), np.empty(ref_items, np.uint64),
               np.empty(ref_items, np.uint64), np.empty(ref_items, np.int64), np.empty(out_items, np.uint64),
               np.empty(out_items, np.uint64), np.empty(out_items, np.uint64), np.empty(out_items, np.uint64),
               np.empty(out_items, np.bool_), np.empty(out_items, np.int64), np.empty(out_items, np.int64),
               np.empty(out_items, np.int64), np.empty(out_items, np.int64), np.zeros(out_items, np.uint64),
               np.zeros(out_items + 1, np.int64), np.zeros(seen_size, np.int32), np.empty(out_items, np.int64),
               *sentences)
    return result


@kernel
def _grounding(out_data, out_off, out_ptr, out_h, out_st, out_sp, out_f,
               a_data, a_off, a_ptr, a_h, a_st, a_sp, a_f, b_data, b_off, b_ptr, b_h, b_st, b_sp, b_f, use_a, present,
               c_data, c_off, c_ptr, c_h, c_st, c_sp, c_f, d_data, d_off, d_ptr, d_h, d_st, d_sp, d_f, use_c, present_c,
               references, result, ref, seen, marks, ref_nums, ref_dates, ref_pos, nums, dates, case_h, lower_h,
               starter, num_pos, date_pos, name_pos, touched, sent_mask, stamps, word_of, word_slots,
               sent_start, sent_words, sent_neg, hits, ref_hits, best, best_neg):
    for r in range(len(out_off) - 1):
        o0, o1 = out_ptr[r], out_ptr[r + 1]
        n_out = o1 - o0
        lo_out, hi_out = out_off[r], out_off[r + 1]
        # the output's distinct unigrams, bigrams, trigrams, numbers, names and dates in one
        # set; marks[slot] says that the reference at hand has the n-gram too
        # (sized for what goes in, counted first: n-grams, numbers, capitalized words
        # twice, dates; see _set_size)
        m_nums = _numbers(out_data, lo_out, hi_out, nums, num_pos, 0)
        m_caps = _capitalized_words(out_data, lo_out, hi_out, case_h, lower_h, starter, name_pos, 0)
        m_dates = _dates(out_data, out_h, out_st, out_sp, out_f, o0, o1, dates, date_pos, 0)
        ss = _set_size(3 * n_out + m_nums + 2 * m_caps + m_dates + 8, len(seen))
        _clear(seen, ss)
        n_o1 = n_oc = n_o2 = n_o3 = 0
        # sentences: the output's distinct content words are numbered in order of first
        # appearance (word_of[slot]: the number plus one, 0 for other slots); sent_mask[w]
        # has bit s when word w is in sentence s. Kept by word rather than by slot so the
        # per-word arrays stay as small as the output (not the size of its set).
        # word_slots[w] is word w's slot
        n_sent = n_words = 0
        for i in range(o0, o1):
            x = out_h[i]
            if i == o0 or (n_sent < MAX_SENTENCES and out_f[i] & SENTENCE):
                sent_start[n_sent], sent_words[n_sent], sent_neg[n_sent] = out_st[i], 0, False
                n_sent += 1
            s = n_sent - 1
            if out_f[i] & NEGATION:
                sent_neg[s] = True
            j, new = _put(seen, ss, _key(x, UNI))
            if new:
                n_o1 += 1
                n_oc += not (out_f[i] & STOP)
            if not (out_f[i] & STOP):
                bit = np.uint64(1) << np.uint64(s)
                w = word_of[j] - 1
                if w < 0:
                    w = n_words
                    n_words += 1
                    word_of[j], sent_mask[w], word_slots[w] = w + 1, 0, j
                if not (sent_mask[w] & bit):
                    sent_mask[w] |= bit
                    sent_words[s] += 1
            if i + 1 < o1:
                g = _fold(x, out_h[i + 1])
                n_o2 += _add(seen, ss, _key(g, BI))
                if i + 2 < o1:
                    n_o3 += _add(seen, ss, _key(_fold(g, out_h[i + 2]), TRI))
        n_nums = 0  # distinct numbers, kept at the front of nums
        for j in range(m_nums):
            if _add(seen, ss, _key(nums[j], NUM)):
                nums[n_nums], num_pos[n_nums] = nums[j], num_pos[j]
                n_nums += 1
        # names: capitalized words that start no sentence anywhere in the output
        for j in range(m_caps):
            if starter[j]:
                _add(seen, ss, _key(case_h[j], STARTER))
        n_names = 0  # distinct names (lower-cased), kept at the front of lower_h
        for j in range(m_caps):
            if not _has(seen, ss, _key(case_h[j], STARTER)) and _add(seen, ss, _key(lower_h[j], NAME)):
                lower_h[n_names], name_pos[n_names] = lower_h[j], name_pos[j]
                n_names += 1
        n_dates = 0  # distinct dates, kept at the front of dates
        for j in range(m_dates):
            if _add(seen, ss, _key(dates[j], DATE)):
                dates[n_dates], date_pos[n_dates] = dates[j], date_pos[j]
                n_dates += 1
        for q in range(references):
            if q == 0 and use_a[r]:
                _against(r, 0, a_data, a_off, a_h, a_st, a_sp, a_f, a_ptr[r], a_ptr[r + 1], present[r], out_h, o0, o1,
                         n_o1, n_oc, n_o2, n_o3, seen, ss, marks, ref, ref_nums, ref_dates, ref_pos, nums, num_pos,
                         n_nums, lower_h, name_pos, n_names, dates, date_pos, n_dates, sent_mask, stamps, word_of, word_slots,
                         touched, n_sent, sent_start, sent_words, sent_neg, hits, ref_hits, best, best_neg, result)
            elif q == 0:
                _against(r, 0, b_data, b_off, b_h, b_st, b_sp, b_f, b_ptr[r], b_ptr[r + 1], present[r], out_h, o0, o1,
                         n_o1, n_oc, n_o2, n_o3, seen, ss, marks, ref, ref_nums, ref_dates, ref_pos, nums, num_pos,
                         n_nums, lower_h, name_pos, n_names, dates, date_pos, n_dates, sent_mask, stamps, word_of, word_slots,
                         touched, n_sent, sent_start, sent_words, sent_neg, hits, ref_hits, best, best_neg, result)
            elif use_c[r]:
                _against(r, N_GROUNDING, c_data, c_off, c_h, c_st, c_sp, c_f, c_ptr[r], c_ptr[r + 1], present_c[r],
                         out_h, o0, o1, n_o1, n_oc, n_o2, n_o3, seen, ss, marks, ref, ref_nums, ref_dates, ref_pos,
                         nums, num_pos, n_nums, lower_h, name_pos, n_names, dates, date_pos, n_dates, sent_mask,
                         stamps, word_of, word_slots, touched, n_sent, sent_start, sent_words, sent_neg, hits, ref_hits, best,
                         best_neg, result)
            else:
                _against(r, N_GROUNDING, d_data, d_off, d_h, d_st, d_sp, d_f, d_ptr[r], d_ptr[r + 1], present_c[r],
                         out_h, o0, o1, n_o1, n_oc, n_o2, n_o3, seen, ss, marks, ref, ref_nums, ref_dates, ref_pos,
                         nums, num_pos, n_nums, lower_h, name_pos, n_names, dates, date_pos, n_dates, sent_mask,
                         stamps, word_of, word_slots, touched, n_sent, sent_start, sent_words, sent_neg, hits, ref_hits, best,
                         best_neg, result)
        # word_of is non-zero only at the slots word_slots names: cleared there (not the whole set)
        for w in range(n_words):
            word_of[word_slots[w]] = 0


@register_jitable
def _close_sentence(touched, n_touched, sent_words, ref_hits, negated, best, best_neg):
    """End a reference sentence: each output sentence it supports (``touched[:n_touched]``,
    the ones with ``ref_hits``) better than any before takes its share of supported content
    words and its negation."""
    for t in range(n_touched):
        s = touched[t]
        share = ref_hits[s] / sent_words[s]
        if share > best[s]:
            best[s], best_neg[s] = share, negated
        ref_hits[s] = 0


@register_jitable
def _against(r, col, data, off, h, st, sp, fl, t0, t1, has_reference, out_h, o0, o1, n_o1, n_oc, n_o2, n_o3,
             seen, ss, marks, ref, ref_nums, ref_dates, ref_pos, nums, num_pos, n_nums, names, name_pos, n_names,
             dates, date_pos, n_dates, sent_mask, stamps, word_of, word_slots, touched, n_sent, sent_start, sent_words, sent_neg,
             hits, ref_hits, best, best_neg, result):
    """Write row r's grounding features against one reference (tokens t0:t1 of ``data``)
    from column ``col``, given the output's side."""
    n_out, n_ref = o1 - o0, t1 - t0
    for j in range(ss):
        marks[j] = 0
    for s in range(n_sent):
        hits[s], ref_hits[s], best[s], best_neg[s] = 0, 0, 0.0, False
    # the reference's distinct tokens (and numbers, dates) in a set of its own; each of its
    # n-grams is looked up in the output's set only when its first word is there
    # (the reference's dates only when the output has any; ref_pos is scratch for both)
    m_ref_nums = _numbers(data, off[r], off[r + 1], ref_nums, ref_pos, 0)
    m_ref_dates = _dates(data, h, st, sp, fl, t0, t1, ref_dates, ref_pos, 0) if n_dates else 0
    rs = _set_size(n_ref + m_ref_nums + m_ref_dates + 8, len(ref))
    _clear(ref, rs)
    n_rc = uni_hits = content_hits = bi_hits = tri_hits = 0
    # reference sentences: ref_hits[s] counts the content words of output sentence s in
    # the current one (stamps[w]: the last reference sentence that counted word w; the
    # numbers of reference sentences keep rising over all rows and references, in
    # stamps[-1], so the stamps never need clearing)
    # (`touched` lists the output sentences the current reference sentence touched). And
    # hits[s] counts the content words of output sentence s found anywhere in the reference,
    # added as each is first found.
    current, negated, n_touched = stamps[len(stamps) - 1] + 1, False, 0
    for i in range(t0, t1):
        if fl[i] & SENTENCE and i > t0:
            _close_sentence(touched, n_touched, sent_words, ref_hits, negated, best, best_neg)
            n_touched = 0
            current += 1
            negated = False
        if fl[i] & NEGATION:
            negated = True
        x = h[i]
        if _add(ref, rs, _key(x, UNI)) and not (fl[i] & STOP):
            n_rc += 1
        j = _slot(seen, ss, _key(x, UNI))
        if j < 0:
            continue
        first = not marks[j]
        if first:
            marks[j] = 1
            uni_hits += 1
            content_hits += not (fl[i] & STOP)
        w = word_of[j] - 1
        if w >= 0 and stamps[w] != current:
            stamps[w] = current
            mask = sent_mask[w]
            while mask:
                b = np.int64(trailing_zeros(mask))
                hits[b] += first
                if not ref_hits[b]:
                    touched[n_touched] = b
                    n_touched += 1
                ref_hits[b] += 1
                mask &= mask - np.uint64(1)
        if i + 1 < t1:
            g = _fold(x, h[i + 1])
            j = _slot(seen, ss, _key(g, BI))
            if j >= 0:
                if not marks[j]:
                    marks[j] = 1
                    bi_hits += 1
                if i + 2 < t1:
                    j = _slot(seen, ss, _key(_fold(g, h[i + 2]), TRI))
                    if j >= 0 and not marks[j]:
                        marks[j] = 1
                        tri_hits += 1
    _close_sentence(touched, n_touched, sent_words, ref_hits, negated, best, best_neg)
    stamps[len(stamps) - 1] = current
    for j in range(m_ref_nums):
        _add(ref, rs, _key(ref_nums[j], NUM))
    # sentences holding a number, name or date that the reference lacks (a bit each)
    novel_sentences = np.uint64(0)
    novel_numbers = 0
    for j in range(n_nums):
        if not _has(ref, rs, _key(nums[j], NUM)):
            novel_numbers += 1
            novel_sentences |= np.uint64(1) << np.uint64(_sentence_of(sent_start, n_sent, num_pos[j]))
    novel_names = 0
    for j in range(n_names):
        if not _has(ref, rs, _key(names[j], UNI)):
            novel_names += 1
            novel_sentences |= np.uint64(1) << np.uint64(_sentence_of(sent_start, n_sent, name_pos[j]))
    novel_dates = 0
    if n_dates:
        for j in range(m_ref_dates):
            _add(ref, rs, _key(ref_dates[j], DATE))
        for j in range(n_dates):
            if not _has(ref, rs, _key(dates[j], DATE)):
                novel_dates += 1
                novel_sentences |= np.uint64(1) << np.uint64(_sentence_of(sent_start, n_sent, date_pos[j]))
    # copied: the output's tokens appear in the reference in a row
    copied = 0.0
    if 0 < n_out <= n_ref and uni_hits == n_o1:
        for s in range(t0, t1 - n_out + 1):
            same = True
            for j in range(n_out):
                if h[s + j] != out_h[o0 + j]:
                    same = False
                    break
            if same:
                copied = 1.0
                break
    # per output sentence: the share of its content words anywhere in the reference, the
    # share in its best reference sentence, and whether its negation differs from that one's
    worded = weak = flips = 0
    least = least_best = 1.0
    best_sum = 0.0
    for s in range(n_sent):
        if not sent_words[s]:
            continue  # no content words ("Yes.", "I see."): nothing to support
        worded += 1
        share = hits[s] / sent_words[s]
        least = min(least, share)
        weak += share < WEAK_SUPPORT
        least_best = min(least_best, best[s])
        best_sum += best[s]
        if sent_words[s] >= 2 and best[s] >= FLIP_SUPPORT and sent_neg[s] != best_neg[s]:
            flips += 1
    n_novel_sentences = 0
    while novel_sentences:
        n_novel_sentences += novel_sentences & np.uint64(1)
        novel_sentences >>= np.uint64(1)
    uni = uni_hits / n_o1 if n_o1 else 1.0
    bi = bi_hits / n_o2 if n_o2 else uni
    tri = tri_hits / n_o3 if n_o3 else bi
    result[r, col] = uni
    result[r, col + 1] = content_hits / n_oc if n_oc else 1.0
    result[r, col + 2] = bi
    result[r, col + 3] = tri
    result[r, col + 4] = 1.0 - bi
    result[r, col + 5] = 1.0 - tri
    result[r, col + 6] = content_hits / n_rc if n_rc else 0.0
    result[r, col + 7] = np.log1p(novel_numbers)
    result[r, col + 8] = 1.0 if novel_numbers else 0.0
    result[r, col + 9] = np.log1p(novel_names)
    result[r, col + 10] = 1.0 if novel_names else 0.0
    result[r, col + 11] = novel_names / n_names if n_names else 0.0
    result[r, col + 12] = np.log1p(novel_dates)
    result[r, col + 13] = 1.0 if novel_dates else 0.0
    result[r, col + 14] = np.log1p(n_out)
    result[r, col + 15] = np.log1p(n_ref)
    result[r, col + 16] = np.log((n_out + 1.0) / (n_ref + 1.0))
    result[r, col + 17] = copied
    result[r, col + 18] = 1.0 if has_reference else 0.0
    result[r, col + 19] = least
    result[r, col + 20] = np.log1p(weak)
    result[r, col + 21] = weak / worded if worded else 0.0
    result[r, col + 22] = least_best
    result[r, col + 23] = best_sum / worded if worded else 1.0
    result[r, col + 24] = n_novel_sentences / n_sent if n_sent else 0.0
    result[r, col + 25] = np.log1p(flips)
    result[r, col + 26] = 1.0 if flips else 0.0


# --------------------------------------------------------------------------- style


@register_jitable
def _phrases_at(hashes, flags, i, end, first_flag, phrases, lengths):
    """The length in tokens of the longest phrase starting at token i, or 0.
    ``phrases`` (longest first) holds each phrase's token hashes, padded; a phrase can
    start only at a token with ``first_flag``."""
    if not flags[i] & first_flag:
        return 0
    for p in range(len(lengths)):
        n = lengths[p]
        if i + n > end:
            continue
        same = True
        for j in range(n):
            if hashes[i + j] != phrases[p, j]:
                same = False
                break
        if same:
            return n
    return 0


@register_jitable
def _count_phrases(hashes, flags, t0, t1, first_flag, phrases, lengths):
    """Non-overlapping phrase matches in tokens t0:t1 (longest first, left to right), and
    whether one starts at t0."""
    count, at_start, i = 0, False, t0
    while i < t1:
        n = _phrases_at(hashes, flags, i, t1, first_flag, phrases, lengths)
        if n:
            count += 1
            at_start = at_start or i == t0
            i += n
        else:
            i += 1
    return count, at_start


def style(data, offsets, ptr, hashes, starts, flags, hedges, hedge_lengths, refusals, refusal_lengths):
    """The style of each text: an (n, 14) float64 array, the columns of
    ``StyleFeatures.feature_names``."""
    result = np.zeros((len(offsets) - 1, N_STYLE), np.float64)
    _style(data, offsets, ptr, hashes, starts, flags, hedges, hedge_lengths, refusals, refusal_lengths, result)
    return result


@kernel
def _style(data, offsets, ptr, hashes, starts, flags, hedges, hedge_lengths, refusals, refusal_lengths, result):
    n = len(offsets) - 1
    for r in range(n):
        lo, hi = offsets[r], offsets[r + 1]
        chars = questions = digits = uppers = sentences = 0
        blank = True
        p = lo
        while p < hi:
            b = data[p]
            if (b & 0xC0) != 0x80:
                chars += 1
            if not _space(b):
                blank = False
            if b == 63:
                questions += 1
            elif _digit(b):
                digits += 1
            elif _upper(b):
                uppers += 1
            if b == 46 or b == 33 or b == 63:
                q = p + 1
                while q < hi and (data[q] == 46 or data[q] == 33 or data[q] == 63):
                    if data[q] == 63:
                        questions += 1
                    q += 1
                if q == hi or _space(data[q]):
                    sentences += 1
                p = q
                continue
            p += 1
        t0, t1 = ptr[r], ptr[r + 1]
        n_hedges, _ = _count_phrases(hashes, flags, t0, t1, HEDGE_START, hedges, hedge_lengths)
        n_refusals, refusal_first = _count_phrases(hashes, flags, t0, t1, REFUSAL_START, refusals, refusal_lengths)
        starts_with_refusal = refusal_first and _only_space(data, lo, starts[t0])
        n_first = n_negations = 0
        for i in range(t0, t1):
            n_first += (flags[i] & FIRST_PERSON) != 0
            n_negations += (flags[i] & NEGATION) != 0
        result[r, 0] = np.log1p(n_hedges)
        result[r, 1] = 1.0 if n_hedges else 0.0
        result[r, 2] = np.log1p(n_refusals)
        result[r, 3] = 1.0 if n_refusals else 0.0
        result[r, 4] = 1.0 if starts_with_refusal else 0.0
        result[r, 5] = np.log1p(n_first)
        result[r, 6] = np.log1p(questions)
        result[r, 7] = np.log1p(n_negations)
        result[r, 8] = np.log1p(chars)
        result[r, 9] = np.log1p(t1 - t0)
        result[r, 10] = np.log1p(sentences)
        result[r, 11] = 1.0 if blank else 0.0
        result[r, 12] = digits / chars if chars else 0.0
        result[r, 13] = uppers / chars if chars else 0.0


# --------------------------------------------------------------------------- terms


def gram_terms(ptr, hashes, low, high):
    """The n-gram hashes (n from ``low`` to ``high``, with repeats) of every row's tokens:
    (ptr, terms, first token index, n) per term."""
    lengths = np.diff(ptr)
    per_row = sum(np.maximum(lengths - (g - 1), 0) for g in range(low, high + 1))
    tptr = np.zeros(len(ptr), np.int64)
    np.cumsum(per_row, out=tptr[1:])
    terms, first, size = _term_arrays(tptr[-1])
    _grams(ptr, hashes, low, high, terms, first, size)
    return tptr, terms, first, size


def _term_arrays(total: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Room for ``total`` terms: their hashes and two locating integers each."""
    return np.empty(total, np.uint64), np.empty(total, np.int64), np.empty(total, np.int64)


@kernel
def _grams(ptr, hashes, low, high, terms, first, size):
    k = 0
    for r in range(len(ptr) - 1):
        for g in range(low, high + 1):
            for i in range(ptr[r], ptr[r + 1] - g + 1):
                x = hashes[i]
                for j in range(1, g):
                    x = _fold(x, hashes[i + j])
                terms[k], first[k], size[k] = x, i, g
                k += 1


def novel_terms(out_ptr, out_h, a_ptr, a_h, b_ptr, b_h, use_a):
    """The distinct tokens of each output absent from its reference (A where ``use_a``,
    else B), in order of first appearance: (ptr, terms, token index, 1)."""
    n = len(out_ptr) - 1
    tptr = np.zeros(n + 1, np.int64)
    terms, first = np.empty(len(out_h), np.uint64), np.empty(len(out_h), np.int64)
    longest = int((np.diff(out_ptr) + np.maximum(np.diff(a_ptr), np.diff(b_ptr))).max()) if n else 0
    k = _novel(out_ptr, out_h, a_ptr, a_h, b_ptr, b_h, use_a, np.zeros(capacity(longest), np.uint64),
               tptr, terms, first)
    return tptr, terms[:k], first[:k], np.ones(k, np.int64)


@kernel
def _novel(out_ptr, out_h, a_ptr, a_h, b_ptr, b_h, use_a, table, tptr, terms, first):
    k = 0
    for r in range(len(out_ptr) - 1):
        if use_a[r]:
            t0, t1, h = a_ptr[r], a_ptr[r + 1], a_h
        else:
            t0, t1, h = b_ptr[r], b_ptr[r + 1], b_h
        size = _capacity(t1 - t0 + out_ptr[r + 1] - out_ptr[r])
        _clear(table, size)
        for i in range(t0, t1):
            _add(table, size, _key(h[i], UNI))
        for i in range(out_ptr[r], out_ptr[r + 1]):
            if _add(table, size, _key(out_h[i], UNI)):
                terms[k], first[k] = out_h[i], i
                k += 1
        tptr[r + 1] = k
    return k


def name_terms(data, offsets):
    """Every capitalized word of each row (case kept, with repeats): (ptr, hashes, byte
    start, byte stop)."""
    tptr = np.zeros(len(offsets), np.int64)
    _names(data, offsets, tptr, *_term_arrays(0), False)
    terms, starts, stops = _term_arrays(tptr[-1])
    _names(data, offsets, tptr, terms, starts, stops, True)
    return tptr, terms, starts, stops


@kernel
def _names(data, offsets, tptr, terms, starts, stops, fill):
    """Count the capitalized words of each row into ``tptr`` (``fill`` False), or write
    their hashes and spans (``fill`` True)."""
    k = 0
    for r in range(len(offsets) - 1):
        p, lo, end = offsets[r], offsets[r], offsets[r + 1]
        while p < end:
            if _upper(data[p]) and (p == lo or not _word_byte(data[p - 1])):
                q = _capitalized(data, p, end)
                if q > 0:
                    if fill:
                        hc = FNV_OFFSET
                        for i in range(p, q):
                            hc = _fnv(hc, data[i])
                        terms[k], starts[k], stops[k] = _mix(hc), p, q
                    k += 1
                    p = q
                    continue
            p += 1
        if not fill:
            tptr[r + 1] = k


def distinct_per_row(tptr, terms):
    """Each row's distinct terms (flat) and the index of each one's first occurrence."""
    out, where = np.empty(len(terms), np.uint64), np.empty(len(terms), np.int64)
    longest = int(np.diff(tptr).max()) if len(tptr) > 1 else 0
    k = _distinct(tptr, terms, np.zeros(capacity(longest), np.uint64), out, where)
    return out[:k], where[:k]


@kernel
def _distinct(tptr, terms, table, out, where):
    k = 0
    for r in range(len(tptr) - 1):
        size = _capacity(tptr[r + 1] - tptr[r])
        _clear(table, size)
        for i in range(tptr[r], tptr[r + 1]):
            if _add(table, size, _key(terms[i], 0)):
                out[k], where[k] = terms[i], i
                k += 1
    return k


def lookup_table(keys, values):
    """An open-addressing table of ``keys`` (distinct) -> ``values`` (non-negative):
    (slots, values) for :func:`_find`. At most a quarter of the slots is used, so that
    a key not in the table (most n-grams) is told after one or two probes."""
    slots = np.zeros(capacity(2 * len(keys)), np.uint64)
    found = np.full(len(slots), -1, np.int64)
    _fill_table(keys, values, slots, found)
    return slots, found


@kernel
def _fill_table(keys, values, slots, found):
    mask = len(slots) - 1
    for j in range(len(keys)):
        key = _key(keys[j], 0)
        i = np.int64(key & np.uint64(mask))
        while slots[i] != 0 and slots[i] != key:
            i = (i + 1) & mask
        slots[i], found[i] = key, values[j]


@njit(inline="always")
def _find(slots, values, h):
    """The value of hash ``h`` in a :func:`lookup_table`, or -1."""
    i = _slot(slots, len(slots), _key(h, 0))
    return values[i] if i >= 0 else -1


def count_grams(ptr, hashes, low, high, slots, values):
    """:func:`count_terms` of the n-grams of :func:`gram_terms`, made on the fly."""
    lengths = np.diff(ptr)
    per_row = sum(np.maximum(lengths - (g - 1), 0) for g in range(low, high + 1))
    most = int(per_row.max()) if len(per_row) else 0
    total = int(per_row.sum())
    indptr = np.zeros(len(ptr), np.int64)
    indices, counts = np.empty(total, np.int32), np.empty(total, np.float64)
    k = _count_grams(ptr, hashes, low, high, slots, values, np.full(capacity(most), -1, np.int64),
                     indptr, indices, counts)
    return indptr, indices[:k], counts[:k]


@njit(inline="always")
def _tally(col, where, mask, indices, counts, k):
    """Count column ``col`` in the current row (``where``: the row's entries by column
    hash); return the new number of entries."""
    j = (col * 0x9E3779B1) & mask
    while True:
        e = where[j]
        if e < 0:
            where[j] = k
            indices[k] = col
            counts[k] = 1.0
            return k + 1
        if indices[e] == col:
            counts[e] += 1.0
            return k
        j = (j + 1) & mask


@register_jitable
def _end_row(r, k, size, where, indptr, counts):
    """Close row r at entry k: empty ``where`` and turn its counts into 1 + ln(count)."""
    for j in range(size):
        where[j] = -1
    for e in range(indptr[r], k):
        if counts[e] > 1.0:
            counts[e] = 1.0 + np.log(counts[e])
    indptr[r + 1] = k


@kernel
def _count_grams(ptr, hashes, low, high, slots, values, where, indptr, indices, counts):
    k = 0
    for r in range(len(ptr) - 1):
        t0, t1 = ptr[r], ptr[r + 1]
        items = 0
        for g in range(low, high + 1):
            items += max(0, t1 - t0 - g + 1)
        size = _capacity(items)
        mask = size - 1
        for g in range(low, high + 1):
            for i in range(t0, t1 - g + 1):
                x = hashes[i]
                for j in range(1, g):
                    x = _fold(x, hashes[i + j])
                col = _find(slots, values, x)
                if col >= 0:
                    k = _tally(col, where, mask, indices, counts, k)
        _end_row(r, k, size, where, indptr, counts)
    return k


def count_terms(tptr, terms, slots, values):
    """The sublinear term frequencies (1 + ln count) of each row's terms found in a
    :func:`lookup_table`, as a CSR matrix's (indptr, indices, tf): one entry per row and
    column (columns in order of first appearance, not sorted)."""
    indptr = np.zeros(len(tptr), np.int64)
    indices, counts = np.empty(len(terms), np.int32), np.empty(len(terms), np.float64)
    longest = int(np.diff(tptr).max()) if len(tptr) > 1 else 0
    k = _count(tptr, terms, slots, values, np.full(capacity(longest), -1, np.int64), indptr, indices, counts)
    return indptr, indices[:k], counts[:k]


@kernel
def _count(tptr, terms, slots, values, where, indptr, indices, counts):
    k = 0
    for r in range(len(tptr) - 1):
        size = _capacity(tptr[r + 1] - tptr[r])
        mask = size - 1
        for i in range(tptr[r], tptr[r + 1]):
            col = _find(slots, values, terms[i])
            if col >= 0:
                k = _tally(col, where, mask, indices, counts, k)
        _end_row(r, k, size, where, indptr, counts)
    return k


@kernel
def add_regime_decision(decision, dense, weights, regime):
    """Add each row's dense features times its regime's coefficients to ``decision``
    (n x k, in place): ``weights`` is (regimes x d x k), ``regime`` the row's regime or -1
    (none: nothing added). One pass over the rows: NumPy's einsum over a gathered
    (n x d x k) copy of the weights cost five times as much."""
    n, d = dense.shape
    k = weights.shape[2]
    for i in range(n):
        r = regime[i]
        if r < 0:
            continue
        for j in range(k):
            acc = 0.0
            for c in range(d):
                acc += dense[i, c] * weights[r, c, j]
            decision[i, j] += acc
