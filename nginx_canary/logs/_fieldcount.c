/*
 * nginx_canary.logs._fieldcount: the C accelerator of nginx_canary.logs.counting.
 *
 * FieldCounter counts identical tuples of raw (still escaped) field values of
 * log lines in the "split" layout (see nginx_canary/logs/format.py):
 * [prefix] field SEP field SEP ... field [suffix]. It gives exactly what
 * CompiledFormat.extract() followed by collections.Counter.update() gives,
 * entries in order of first appearance, without a Python object per line.
 * The Python reference is PyFieldCounter in counting.py; tests/logs/
 * test_counting.py holds the two to the same results.
 *
 * Per line (what _extract_split does, in this order):
 *   1. exactly FIELDS - 1 separator bytes anywhere in the line, else a misfit;
 *   2. when there is a suffix or the last field is wanted: drop one trailing
 *      "\n" (lines of a list may have one), then one trailing "\r";
 *   3. the line must start with the prefix and end with the suffix, which are
 *      then cut off;
 *   4. the wanted fields, in the order asked for, form the key.
 * The constructor refuses a separator found in the prefix or the suffix (the
 * layout never has one), so every separator lies in the body of a line that
 * passes step 3.
 *
 * Not thread-safe: the GIL is held throughout and the object has one owner.
 */

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <stdint.h>
#include <string.h>

#if defined(__SSE2__) && (defined(__GNUC__) || defined(__clang__))
#include <emmintrin.h>
#define HAVE_SSE2_SCAN 1
#endif

#define INITIAL_SLOTS ((Py_ssize_t)1 << 12)
#define INITIAL_ENTRIES ((Py_ssize_t)1 << 10)
#define INITIAL_ARENA ((Py_ssize_t)1 << 15)
/* clear() gives memory back when a burst made the tables this much larger */
#define SHRINK_FACTOR 16

typedef struct {
    uint64_t hash;
    Py_ssize_t offset; /* of the key's bytes in the arena */
    Py_ssize_t size;   /* of the key: every wanted field, back to back */
    long long count;
} Entry;

typedef struct {
    PyObject_HEAD
    char sep;
    Py_ssize_t fields;
    Py_ssize_t nwanted;
    Py_ssize_t *wanted;   /* field index of each key part */
    int strip_cr;         /* step 2 applies */
    PyObject *prefix;     /* bytes */
    PyObject *suffix;     /* bytes */
    Py_ssize_t *seps;     /* scratch: offsets of the FIELDS - 1 separators of a line */
    Py_ssize_t *starts;   /* scratch: offset of each key part in its line */
    Py_ssize_t *sizes;    /* scratch: length of each key part */
    Entry *entries;       /* in order of first appearance */
    Py_ssize_t used;
    Py_ssize_t entries_cap;
    Py_ssize_t *lens;     /* nwanted lengths per entry */
    char *arena;
    Py_ssize_t arena_used;
    Py_ssize_t arena_cap;
    Py_ssize_t *slots;    /* open addressing: entry index + 1, 0 = free */
    Py_ssize_t slots_cap; /* a power of two, at least twice used */
    uint64_t seed;
} FieldCounter;

static uint64_t hash_seed;

static inline uint64_t
rotl64(uint64_t x, int r)
{
    return (x << r) | (x >> (64 - r));
}

static inline uint64_t
fmix64(uint64_t h)
{
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdULL;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ULL;
    h ^= h >> 33;
    return h;
}

static inline uint64_t
hash_part(uint64_t h, const char *p, Py_ssize_t n)
{
    /* The length goes in first, so ("ab", "c") and ("a", "bc") differ. */
    h = (rotl64(h, 23) ^ (uint64_t)n) * 0x9e3779b97f4a7c15ULL;
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (rotl64(h, 31) ^ w) * 0x87c37b91114253d5ULL;
        p += 8;
        n -= 8;
    }
    if (n > 0) {
        uint64_t w = 0;
        memcpy(&w, p, (size_t)n);
        h = (rotl64(h, 31) ^ w) * 0x4cf5ad432745937fULL;
    }
    return h;
}

/* buf (elements of elem bytes, capacity *cap) grown to hold at least need elements;
   NULL with MemoryError (buf and *cap untouched then). */
static void *
grow(void *buf, Py_ssize_t *cap, Py_ssize_t need, size_t elem)
{
    Py_ssize_t new_cap = *cap > 0 ? *cap : 1;
    void *p;
    if (need <= *cap)
        return buf;
    while (new_cap < need)
        new_cap = new_cap > PY_SSIZE_T_MAX / 2 ? need : new_cap * 2;
    if ((size_t)new_cap > (size_t)PY_SSIZE_T_MAX / elem) {
        PyErr_NoMemory();
        return NULL;
    }
    p = PyMem_Realloc(buf, (size_t)new_cap * elem);
    if (p == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    *cap = new_cap;
    return p;
}

static int
rehash(FieldCounter *self, Py_ssize_t cap)
{
    Py_ssize_t *slots = PyMem_Calloc((size_t)cap, sizeof(Py_ssize_t));
    Py_ssize_t mask = cap - 1;
    if (slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < self->used; i++) {
        Py_ssize_t s = (Py_ssize_t)(self->entries[i].hash & (uint64_t)mask);
        while (slots[s] != 0)
            s = (s + 1) & mask;
        slots[s] = i + 1;
    }
    PyMem_Free(self->slots);
    self->slots = slots;
    self->slots_cap = cap;
    return 0;
}

static int
allocate_tables(FieldCounter *self)
{
    self->entries_cap = INITIAL_ENTRIES;
    self->arena_cap = INITIAL_ARENA;
    self->slots_cap = INITIAL_SLOTS;
    self->entries = PyMem_Malloc((size_t)INITIAL_ENTRIES * sizeof(Entry));
    self->lens = PyMem_Malloc((size_t)INITIAL_ENTRIES * (size_t)(self->nwanted > 0 ? self->nwanted : 1) * sizeof(Py_ssize_t));
    self->arena = PyMem_Malloc((size_t)INITIAL_ARENA);
    self->slots = PyMem_Calloc((size_t)INITIAL_SLOTS, sizeof(Py_ssize_t));
    if (self->entries == NULL || self->lens == NULL || self->arena == NULL || self->slots == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static void
free_tables(FieldCounter *self)
{
    PyMem_Free(self->entries);
    PyMem_Free(self->lens);
    PyMem_Free(self->arena);
    PyMem_Free(self->slots);
    self->entries = NULL;
    self->lens = NULL;
    self->arena = NULL;
    self->slots = NULL;
    self->used = self->entries_cap = self->arena_used = self->arena_cap = self->slots_cap = 0;
}

/* Count one occurrence of the key made of parts (start, length pairs). 0, or -1 with MemoryError. */
static int
count_key(FieldCounter *self, const char *line, const Py_ssize_t *starts, const Py_ssize_t *sizes)
{
    Py_ssize_t nwanted = self->nwanted;
    Py_ssize_t size = 0;
    uint64_t h = self->seed;
    Py_ssize_t mask = self->slots_cap - 1;
    Py_ssize_t s;
    Entry *e;

    for (Py_ssize_t k = 0; k < nwanted; k++) {
        h = hash_part(h, line + starts[k], sizes[k]);
        size += sizes[k];
    }
    h = fmix64(h);
    s = (Py_ssize_t)(h & (uint64_t)mask);
    while (self->slots[s] != 0) {
        Py_ssize_t i = self->slots[s] - 1;
        e = &self->entries[i];
        if (e->hash == h && e->size == size) {
            const Py_ssize_t *lens = self->lens + i * nwanted;
            const char *key = self->arena + e->offset;
            int same = 1;
            for (Py_ssize_t k = 0; k < nwanted && same; k++) {
                same = lens[k] == sizes[k] && memcmp(key, line + starts[k], (size_t)sizes[k]) == 0;
                key += sizes[k];
            }
            if (same) {
                e->count++;
                return 0;
            }
        }
        s = (s + 1) & mask;
    }

    /* A new key: grow first so that no failure leaves a half-made entry. */
    if (self->used >= PY_SSIZE_T_MAX / 4 || size > PY_SSIZE_T_MAX - self->arena_used) {
        PyErr_NoMemory();
        return -1;
    }
    if (self->used + 1 > self->entries_cap) {
        Py_ssize_t cap = self->entries_cap;
        Py_ssize_t per = nwanted > 0 ? nwanted : 1;
        Py_ssize_t lens_cap = cap * per;
        Entry *entries = grow(self->entries, &cap, self->used + 1, sizeof(Entry));
        Py_ssize_t *lens;
        if (entries == NULL)
            return -1;
        /* Until lens has grown too, the larger entries block is only slack. */
        self->entries = entries;
        if (cap > PY_SSIZE_T_MAX / per) {
            PyErr_NoMemory();
            return -1;
        }
        lens = grow(self->lens, &lens_cap, cap * per, sizeof(Py_ssize_t));
        if (lens == NULL)
            return -1;
        self->lens = lens;
        self->entries_cap = cap;
    }
    {
        char *arena = grow(self->arena, &self->arena_cap, self->arena_used + size, 1);
        if (arena == NULL)
            return -1;
        self->arena = arena;
    }
    /* At most half the slots are taken, so every probe above ends at a free one. */
    if ((self->used + 1) * 2 > self->slots_cap) {
        if (self->slots_cap > PY_SSIZE_T_MAX / 2 / (Py_ssize_t)sizeof(Py_ssize_t)) {
            PyErr_NoMemory();
            return -1;
        }
        if (rehash(self, self->slots_cap * 2) < 0)
            return -1;
        mask = self->slots_cap - 1;
        s = (Py_ssize_t)(h & (uint64_t)mask);
        while (self->slots[s] != 0)
            s = (s + 1) & mask;
    }
    e = &self->entries[self->used];
    e->hash = h;
    e->offset = self->arena_used;
    e->size = size;
    e->count = 1;
    {
        Py_ssize_t *lens = self->lens + self->used * nwanted;
        char *key = self->arena + self->arena_used;
        for (Py_ssize_t k = 0; k < nwanted; k++) {
            lens[k] = sizes[k];
            if (sizes[k] > 0)
                memcpy(key, line + starts[k], (size_t)sizes[k]);
            key += sizes[k];
        }
    }
    self->arena_used += size;
    self->used++;
    self->slots[s] = self->used;
    return 0;
}

/* Steps 2 to 4 for a line whose separators are in self->seps, found of them
   (more than FIELDS - 1 is a misfit whatever the number).
   1 counted, 0 misfit, -1 error (MemoryError set). */
static int
take_line(FieldCounter *self, const char *line, Py_ssize_t n, Py_ssize_t found)
{
    Py_ssize_t nseps = self->fields - 1;
    Py_ssize_t plen = PyBytes_GET_SIZE(self->prefix);
    Py_ssize_t slen = PyBytes_GET_SIZE(self->suffix);
    Py_ssize_t body_start, body_end;

    if (found != nseps)
        return 0;
    if (self->strip_cr) {
        if (n > 0 && line[n - 1] == '\n')
            n--;
        if (n > 0 && line[n - 1] == '\r')
            n--;
    }
    if (n < plen + slen)
        return 0; /* unreachable: a separator lies outside prefix and suffix */
    if (plen > 0 && memcmp(line, PyBytes_AS_STRING(self->prefix), (size_t)plen) != 0)
        return 0;
    if (slen > 0 && memcmp(line + n - slen, PyBytes_AS_STRING(self->suffix), (size_t)slen) != 0)
        return 0;
    body_start = plen;
    body_end = n - slen;
    for (Py_ssize_t k = 0; k < self->nwanted; k++) {
        Py_ssize_t f = self->wanted[k];
        Py_ssize_t a = f == 0 ? body_start : self->seps[f - 1] + 1;
        Py_ssize_t b = f == nseps ? body_end : self->seps[f];
        self->starts[k] = a;
        self->sizes[k] = b - a;
    }
    return count_key(self, line, self->starts, self->sizes) < 0 ? -1 : 1;
}

/* Step 1 for one line of a list: record its separators (up to one too many). */
static Py_ssize_t
find_seps(FieldCounter *self, const char *line, Py_ssize_t n)
{
    const char *p = line;
    const char *end = line + n;
    Py_ssize_t nseps = self->fields - 1;
    Py_ssize_t found = 0;

    while (p < end && found <= nseps) {
        const char *q = memchr(p, self->sep, (size_t)(end - p));
        if (q == NULL)
            break;
        if (found < nseps)
            self->seps[found] = q - line;
        found++;
        p = q + 1;
    }
    return found;
}

/* One byte of a block that is a separator or a newline, at offset at: end the
   line or record the separator. 0, or -1 with MemoryError. */
static inline int
block_event(FieldCounter *self, const char *buf, Py_ssize_t at, Py_ssize_t *line_start, Py_ssize_t *found,
            Py_ssize_t *lines, Py_ssize_t *misfits)
{
    if (buf[at] == '\n') {
        int r = take_line(self, buf + *line_start, at - *line_start, *found);
        if (r < 0)
            return -1;
        *lines += 1;
        *misfits += r == 0;
        *line_start = at + 1;
        *found = 0;
    } else if (*found < self->fields) {
        if (*found < self->fields - 1)
            self->seps[*found] = at - *line_start;
        *found += 1;
    }
    return 0;
}

/* Step 1 for every line of a block in one pass: where the separators and the
   newlines are, 16 bytes at a time where SSE2 is there. 0, or -1 with MemoryError. */
static int
scan_block(FieldCounter *self, const char *buf, Py_ssize_t n, Py_ssize_t *lines, Py_ssize_t *misfits)
{
    Py_ssize_t line_start = 0, found = 0, i = 0;
    const char sep = self->sep;

#ifdef HAVE_SSE2_SCAN
    const __m128i vsep = _mm_set1_epi8(sep);
    const __m128i vnl = _mm_set1_epi8('\n');
    for (; n - i >= 16; i += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(buf + i));
        unsigned mask = (unsigned)_mm_movemask_epi8(_mm_or_si128(_mm_cmpeq_epi8(v, vsep), _mm_cmpeq_epi8(v, vnl)));
        while (mask != 0) {
            Py_ssize_t at = i + __builtin_ctz(mask);
            mask &= mask - 1;
            if (block_event(self, buf, at, &line_start, &found, lines, misfits) < 0)
                return -1;
        }
    }
#endif
    for (; i < n; i++) {
        if (buf[i] == sep || buf[i] == '\n') {
            if (block_event(self, buf, i, &line_start, &found, lines, misfits) < 0)
                return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(feed_block_doc,
"feed_block(block: bytes) -> (lines, misfits)\n\n"
"Count every line of block that ends with b'\\n' (bytes after the last one are\n"
"ignored, as block.split(b'\\n')[:-1] would). Returns how many lines there were\n"
"and how many did not fit the layout. Raises TypeError for anything but bytes,\n"
"MemoryError when the tables cannot grow (lines before the failure stay counted).");

static PyObject *
FieldCounter_feed_block(FieldCounter *self, PyObject *block)
{
    Py_ssize_t lines = 0, misfits = 0;

    if (!PyBytes_Check(block)) {
        PyErr_Format(PyExc_TypeError, "feed_block() needs bytes, not %.100s", Py_TYPE(block)->tp_name);
        return NULL;
    }
    if (scan_block(self, PyBytes_AS_STRING(block), PyBytes_GET_SIZE(block), &lines, &misfits) < 0)
        return NULL;
    return Py_BuildValue("(nn)", lines, misfits);
}

PyDoc_STRVAR(feed_lines_doc,
"feed_lines(lines: Sequence[bytes]) -> misfits\n\n"
"Count each item as one line (it may end with b'\\n' or b'\\r\\n'). Returns how many\n"
"did not fit the layout. Raises TypeError, counting nothing, unless lines is a\n"
"sequence of bytes; MemoryError as feed_block() does.");

static PyObject *
FieldCounter_feed_lines(FieldCounter *self, PyObject *lines)
{
    PyObject *seq = PySequence_Fast(lines, "feed_lines() needs a sequence of bytes");
    Py_ssize_t n, misfits = 0;
    PyObject **items;

    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    items = PySequence_Fast_ITEMS(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        if (!PyBytes_Check(items[i])) {
            PyErr_Format(PyExc_TypeError, "feed_lines() needs bytes items, not %.100s", Py_TYPE(items[i])->tp_name);
            Py_DECREF(seq);
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        const char *line = PyBytes_AS_STRING(items[i]);
        Py_ssize_t size = PyBytes_GET_SIZE(items[i]);
        int r = take_line(self, line, size, find_seps(self, line, size));
        if (r < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        misfits += r == 0;
    }
    Py_DECREF(seq);
    return PyLong_FromSsize_t(misfits);
}

PyDoc_STRVAR(items_doc,
"items() -> list[tuple[tuple[bytes, ...], int]]\n\n"
"Every distinct key with its count, in order of first appearance. Raises MemoryError.");

static PyObject *
FieldCounter_items(FieldCounter *self, PyObject *Py_UNUSED(ignored))
{
    PyObject *out = PyList_New(self->used);
    if (out == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < self->used; i++) {
        const Entry *e = &self->entries[i];
        const Py_ssize_t *lens = self->lens + i * self->nwanted;
        const char *key = self->arena + e->offset;
        PyObject *parts = PyTuple_New(self->nwanted);
        PyObject *count, *pair;
        if (parts == NULL)
            goto error;
        for (Py_ssize_t k = 0; k < self->nwanted; k++) {
            PyObject *part = PyBytes_FromStringAndSize(key, lens[k]);
            if (part == NULL) {
                Py_DECREF(parts);
                goto error;
            }
            PyTuple_SET_ITEM(parts, k, part); /* steals the reference */
            key += lens[k];
        }
        count = PyLong_FromLongLong(e->count);
        if (count == NULL) {
            Py_DECREF(parts);
            goto error;
        }
        pair = PyTuple_Pack(2, parts, count);
        Py_DECREF(parts);
        Py_DECREF(count);
        if (pair == NULL)
            goto error;
        PyList_SET_ITEM(out, i, pair); /* steals the reference */
    }
    return out;
error:
    /* PyList_New filled the list with NULLs, which its dealloc skips. */
    Py_DECREF(out);
    return NULL;
}

PyDoc_STRVAR(clear_doc, "clear() -> None\n\nForget every key. Raises MemoryError (the counter is then empty but unusable).");

static PyObject *
FieldCounter_clear(FieldCounter *self, PyObject *Py_UNUSED(ignored))
{
    if (self->slots_cap > INITIAL_SLOTS * SHRINK_FACTOR || self->arena_cap > INITIAL_ARENA * SHRINK_FACTOR) {
        free_tables(self);
        if (allocate_tables(self) < 0) {
            free_tables(self);
            return NULL;
        }
    } else {
        memset(self->slots, 0, (size_t)self->slots_cap * sizeof(Py_ssize_t));
        self->used = 0;
        self->arena_used = 0;
    }
    Py_RETURN_NONE;
}

static Py_ssize_t
FieldCounter_len(FieldCounter *self)
{
    return self->used;
}

static PyObject *
FieldCounter_get_key_bytes(FieldCounter *self, void *Py_UNUSED(closure))
{
    return PyLong_FromSsize_t(self->arena_used);
}

static int
FieldCounter_init(FieldCounter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sep", "fields", "wanted", "prefix", "suffix", NULL};
    Py_buffer sep;
    Py_ssize_t fields;
    PyObject *wanted, *prefix, *suffix, *seq;
    Py_ssize_t nwanted, last_wanted = 0;

    if (self->wanted != NULL || self->entries != NULL) {
        PyErr_SetString(PyExc_TypeError, "FieldCounter is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "y*nOSS:FieldCounter", kwlist,
                                     &sep, &fields, &wanted, &prefix, &suffix))
        return -1;
    if (sep.len != 1 || ((const char *)sep.buf)[0] == '\n' || ((const char *)sep.buf)[0] == '\r') {
        PyBuffer_Release(&sep);
        PyErr_SetString(PyExc_ValueError, "sep must be one byte other than \\n and \\r");
        return -1;
    }
    self->sep = ((const char *)sep.buf)[0];
    PyBuffer_Release(&sep);
    if (fields < 1 || fields > (1 << 20)) {
        PyErr_SetString(PyExc_ValueError, "fields must be between 1 and 2**20");
        return -1;
    }
    if (memchr(PyBytes_AS_STRING(prefix), self->sep, (size_t)PyBytes_GET_SIZE(prefix)) != NULL
        || memchr(PyBytes_AS_STRING(suffix), self->sep, (size_t)PyBytes_GET_SIZE(suffix)) != NULL) {
        PyErr_SetString(PyExc_ValueError, "the prefix and the suffix must not hold the separator");
        return -1;
    }
    seq = PySequence_Fast(wanted, "wanted must be a sequence of field indexes");
    if (seq == NULL)
        return -1;
    nwanted = PySequence_Fast_GET_SIZE(seq);
    self->wanted = PyMem_Malloc((size_t)(nwanted > 0 ? nwanted : 1) * sizeof(Py_ssize_t));
    self->seps = PyMem_Malloc((size_t)fields * sizeof(Py_ssize_t));
    self->starts = PyMem_Malloc((size_t)(nwanted > 0 ? nwanted : 1) * sizeof(Py_ssize_t));
    self->sizes = PyMem_Malloc((size_t)(nwanted > 0 ? nwanted : 1) * sizeof(Py_ssize_t));
    if (self->wanted == NULL || self->seps == NULL || self->starts == NULL || self->sizes == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < nwanted; k++) {
        Py_ssize_t f = PyNumber_AsSsize_t(PySequence_Fast_GET_ITEM(seq, k), PyExc_OverflowError);
        if (f == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (f < 0 || f >= fields) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "wanted field %zd is not between 0 and %zd", f, fields - 1);
            return -1;
        }
        self->wanted[k] = f;
        if (f > last_wanted)
            last_wanted = f;
    }
    Py_DECREF(seq);
    self->fields = fields;
    self->nwanted = nwanted;
    self->strip_cr = PyBytes_GET_SIZE(suffix) > 0 || last_wanted == fields - 1;
    Py_INCREF(prefix);
    self->prefix = prefix;
    Py_INCREF(suffix);
    self->suffix = suffix;
    self->seed = hash_seed;
    return allocate_tables(self);
}

static void
FieldCounter_dealloc(FieldCounter *self)
{
    free_tables(self);
    PyMem_Free(self->wanted);
    PyMem_Free(self->seps);
    PyMem_Free(self->starts);
    PyMem_Free(self->sizes);
    Py_XDECREF(self->prefix);
    Py_XDECREF(self->suffix);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* Every method needs a finished __init__: tables exist only then. */
static int
ready(FieldCounter *self)
{
    if (self->slots == NULL) {
        PyErr_SetString(PyExc_ValueError, "FieldCounter is not initialised");
        return 0;
    }
    return 1;
}

static PyObject *
checked_feed_block(FieldCounter *self, PyObject *block)
{
    return ready(self) ? FieldCounter_feed_block(self, block) : NULL;
}

static PyObject *
checked_feed_lines(FieldCounter *self, PyObject *lines)
{
    return ready(self) ? FieldCounter_feed_lines(self, lines) : NULL;
}

static PyObject *
checked_clear(FieldCounter *self, PyObject *ignored)
{
    return ready(self) ? FieldCounter_clear(self, ignored) : NULL;
}

static PyMethodDef FieldCounter_methods[] = {
    {"feed_block", (PyCFunction)checked_feed_block, METH_O, feed_block_doc},
    {"feed_lines", (PyCFunction)checked_feed_lines, METH_O, feed_lines_doc},
    {"items", (PyCFunction)FieldCounter_items, METH_NOARGS, items_doc},
    {"clear", (PyCFunction)checked_clear, METH_NOARGS, clear_doc},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef FieldCounter_getset[] = {
    {"key_bytes", (getter)FieldCounter_get_key_bytes, NULL, "Bytes of key data held.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PySequenceMethods FieldCounter_as_sequence = {
    .sq_length = (lenfunc)FieldCounter_len,
};

PyDoc_STRVAR(FieldCounter_doc,
"FieldCounter(sep: bytes, fields: int, wanted: Sequence[int], prefix: bytes, suffix: bytes)\n\n"
"Counts identical tuples of the wanted fields of lines laid out as\n"
"prefix + field (sep field) * (fields - 1) + suffix. Raises ValueError for a sep\n"
"that is not one byte or is \\n or \\r, a wanted index out of range, or a prefix\n"
"or suffix holding sep.");

static PyTypeObject FieldCounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nginx_canary.logs._fieldcount.FieldCounter",
    .tp_basicsize = sizeof(FieldCounter),
    .tp_dealloc = (destructor)FieldCounter_dealloc,
    .tp_as_sequence = &FieldCounter_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = FieldCounter_doc,
    .tp_methods = FieldCounter_methods,
    .tp_getset = FieldCounter_getset,
    .tp_init = (initproc)FieldCounter_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef fieldcount_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "nginx_canary.logs._fieldcount",
    .m_doc = "C accelerator for nginx_canary.logs.counting: counts raw field tuples of split-layout log lines.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__fieldcount(void)
{
    PyObject *m, *probe;
    Py_hash_t h;

    /* Python's bytes hash is salted per process (PYTHONHASHSEED): borrowing it
       keeps crafted keys from colliding on purpose. */
    probe = PyBytes_FromString("nginx-canary field counter");
    if (probe == NULL)
        return NULL;
    h = PyObject_Hash(probe);
    Py_DECREF(probe);
    if (h == -1)
        return NULL;
    hash_seed = fmix64((uint64_t)h);

    if (PyType_Ready(&FieldCounterType) < 0)
        return NULL;
    m = PyModule_Create(&fieldcount_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddType(m, &FieldCounterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
