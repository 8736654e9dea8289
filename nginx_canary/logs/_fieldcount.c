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
 * WalkCounter (see "The walk" below) counts the same tuples for the formats
 * nginx_canary/logs/walk_strategy.py compiles into steps, literal to literal,
 * and hands the lines it cannot read to the regex; tests/logs/test_fast_path.py
 * holds it to the regex on every format of tests/data/real-world/log-formats.
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
    /* WalkCounter only (see "The walk" below); NULL / 0 in a FieldCounter */
    struct Step *steps;
    Py_ssize_t nsteps;
    PyObject *literals;   /* list of the steps' literal bytes, kept alive */
    PyObject *fallback;   /* callable(line) -> tuple of bytes or None */
    Py_ssize_t *vstart;   /* scratch: where each step's value starts and ends */
    Py_ssize_t *vend;
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

/* The contiguous bytes of a block (bytes, bytearray, memoryview): the reader
 * hands out views of one reused buffer so that no block is copied. Holding the
 * buffer also keeps its owner alive and unresizable while Python code (the
 * walk's regex fallback) runs. */
static int
get_block(PyObject *block, Py_buffer *view)
{
    if (!PyObject_CheckBuffer(block) || PyUnicode_Check(block)) {
        PyErr_Format(PyExc_TypeError, "feed_block() needs bytes, not %.100s", Py_TYPE(block)->tp_name);
        return -1;
    }
    return PyObject_GetBuffer(block, view, PyBUF_SIMPLE);
}

PyDoc_STRVAR(feed_block_doc,
"feed_block(block: bytes-like) -> (lines, misfits)\n\n"
"Count every line of block that ends with b'\\n' (bytes after the last one are\n"
"ignored, as block.split(b'\\n')[:-1] would). Returns how many lines there were\n"
"and how many did not fit the layout. Raises TypeError for anything but a\n"
"contiguous bytes-like object (bytes, bytearray, memoryview), BufferError when it\n"
"cannot be read as one,\n"
"MemoryError when the tables cannot grow (lines before the failure stay counted).");

static PyObject *
FieldCounter_feed_block(FieldCounter *self, PyObject *block)
{
    Py_ssize_t lines = 0, misfits = 0;
    Py_buffer view;
    int failed;

    if (get_block(block, &view) < 0)
        return NULL;
    failed = scan_block(self, view.buf, view.len, &lines, &misfits) < 0;
    PyBuffer_Release(&view);
    if (failed)
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

/* self->wanted (nwanted indexes, each in [0, limit): the fields or steps whose
 * values make a row), with room for their starts and sizes; *last is raised
 * to the highest. 0, or -1 with TypeError, ValueError, OverflowError or MemoryError. */
static int
read_wanted(FieldCounter *self, PyObject *wanted, Py_ssize_t limit, const char *what, Py_ssize_t *last)
{
    PyObject *seq = PySequence_Fast(wanted, "wanted must be a sequence of indexes");
    Py_ssize_t nwanted, room;

    if (seq == NULL)
        return -1;
    nwanted = PySequence_Fast_GET_SIZE(seq);
    room = nwanted > 0 ? nwanted : 1;
    self->wanted = PyMem_Malloc((size_t)room * sizeof(Py_ssize_t));
    self->starts = PyMem_Malloc((size_t)room * sizeof(Py_ssize_t));
    self->sizes = PyMem_Malloc((size_t)room * sizeof(Py_ssize_t));
    if (self->wanted == NULL || self->starts == NULL || self->sizes == NULL) {
        Py_DECREF(seq);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < nwanted; k++) {
        Py_ssize_t i = PyNumber_AsSsize_t(PySequence_Fast_GET_ITEM(seq, k), PyExc_OverflowError);
        if (i == -1 && PyErr_Occurred()) {
            Py_DECREF(seq);
            return -1;
        }
        if (i < 0 || i >= limit) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_ValueError, "wanted %s %zd is not between 0 and %zd", what, i, limit - 1);
            return -1;
        }
        self->wanted[k] = i;
        if (i > *last)
            *last = i;
    }
    Py_DECREF(seq);
    self->nwanted = nwanted;
    return 0;
}

static int
FieldCounter_init(FieldCounter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"sep", "fields", "wanted", "prefix", "suffix", NULL};
    Py_buffer sep;
    Py_ssize_t fields;
    PyObject *wanted, *prefix, *suffix;
    Py_ssize_t last_wanted = 0;

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
    self->seps = PyMem_Malloc((size_t)fields * sizeof(Py_ssize_t));
    if (self->seps == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (read_wanted(self, wanted, fields, "field", &last_wanted) < 0)
        return -1;
    self->fields = fields;
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
    PyMem_Free(self->steps);
    PyMem_Free(self->vstart);
    PyMem_Free(self->vend);
    Py_XDECREF(self->literals);
    Py_XDECREF(self->fallback);
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

/*
 * The walk: WalkCounter counts the same key tuples for any format that
 * nginx_canary/logs/walk_strategy.py compiles into steps (literal, variable,
 * literal, ...), without the regex. Each step reads one variable's value the
 * way the first try of that format's regex (regex_strategy.py) does, and the
 * literal after it:
 *
 *   STOP      the longest run of atoms, then the literal (its first byte is
 *             never in the value, so no other end is possible);
 *   FINAL     the longest run of atoms given back until the last literal and a
 *             line end ("", "\n", "\r\n") follow;
 *   END       the longest run (END_LAZY: the shortest) up to a line end;
 *   STRUCT    $upstream_* lists: as many whole entries and separators as fit,
 *             then the literal;
 *   SHORTEST  an address list ended by the first literal that follows an
 *             address byte (": " after an address);
 *   LAZY      up to the literal's first occurrence after a run of atoms;
 *   RIGHT     bounded from the right (anchors.py): the step's anchor literal
 *             is found by its last occurrence, then each value between starts
 *             after the last occurrence of the preceding literal's last byte
 *             (tried after the first occurrence, which is the same end
 *             whenever the rest of the line reads: see walk_steps).
 *
 * Values of the two common classes (what escape=default or escape=json
 * writes raw) are scanned 16 bytes at a time where SSE2 is there.
 *
 * A line the steps read is one the regex's first try matches with the same
 * values (tests/logs/test_fast_path.py holds the two to it). A line they do
 * not read goes to the fallback (the regex itself), so misfits, hostile lines
 * and the regex's backtracking retry are decided there, once per such line.
 */

enum { W_STOP = 1, W_FINAL, W_END, W_END_LAZY, W_STRUCT, W_SHORTEST, W_LAZY, W_RIGHT };
enum { E_NONE = 0, E_ADDR, E_STATUS, E_TIME, E_INT };

typedef struct Step {
    int kind;
    int json;                /* a backslash and the byte after it are one atom */
    int entry;               /* E_*: STRUCT and SHORTEST */
    int optional;            /* escape=json: an empty list is a value */
    Py_ssize_t anchor;       /* RIGHT: the step whose literal is the anchor */
    int wide;                /* the atoms are a class atom_run scans 16 bytes at a time (WIDE_*) */
    const char *lit;         /* the literal after the value (in self->literals) */
    Py_ssize_t lit_len;
    unsigned char atom[256]; /* bytes that are an atom on their own */
} Step;

static inline int
tail_ok(const char *l, Py_ssize_t p, Py_ssize_t n)
{
    Py_ssize_t r = n - p;
    return r == 0 || (r == 1 && l[p] == '\n') || (r == 2 && l[p] == '\r' && l[p + 1] == '\n');
}

/* Whether a and b hold the same n bytes: most literals are short, and a call to memcmp costs more than a loop. */
static inline int
same_bytes(const char *a, const char *b, Py_ssize_t n)
{
    if (n > 8)
        return a[0] == b[0] && memcmp(a, b, (size_t)n) == 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        if (a[i] != b[i])
            return 0;
    }
    return 1;
}

static inline int
lit_at(const char *l, Py_ssize_t p, Py_ssize_t n, const char *lit, Py_ssize_t len)
{
    return p >= 0 && n - p >= len && same_bytes(l + p, lit, len);
}

/* The two classes most values have: what escape=default writes raw (0x20 to
   0x7e but '"'), and what escape=json does (0x20 and up but '"' and '\\'). */
enum { WIDE_NONE = 0, WIDE_DEFAULT, WIDE_JSON };

static int
wide_class(const unsigned char *atom)
{
    int is_default = 1, is_json = 1;
    for (int b = 0; b < 256; b++) {
        int in_default = b >= 0x20 && b <= 0x7e && b != '"';
        int in_json = b >= 0x20 && b != '"' && b != '\\';
        is_default &= (atom[b] != 0) == in_default;
        is_json &= (atom[b] != 0) == in_json;
    }
    return is_default ? WIDE_DEFAULT : is_json ? WIDE_JSON : WIDE_NONE;
}

#ifdef HAVE_SSE2_SCAN
/* Skip whole 16-byte runs of atoms of a wide class: where the first block with a byte outside it starts
   its non-atoms, or where fewer than 16 bytes are left. */
static inline Py_ssize_t
wide_run(int wide, const unsigned char *u, Py_ssize_t p, Py_ssize_t limit)
{
    const __m128i quote = _mm_set1_epi8('"');
    for (; limit - p >= 16; p += 16) {
        __m128i v = _mm_loadu_si128((const __m128i *)(const void *)(u + p));
        __m128i out;
        unsigned mask;
        if (wide == WIDE_DEFAULT)
            /* signed: below 0x20 are the control bytes and 0x80 to 0xff */
            out = _mm_or_si128(_mm_or_si128(_mm_cmplt_epi8(v, _mm_set1_epi8(0x20)),
                                            _mm_cmpeq_epi8(v, _mm_set1_epi8(0x7f))),
                               _mm_cmpeq_epi8(v, quote));
        else
            out = _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(_mm_max_epu8(v, _mm_set1_epi8(0x1f)), _mm_set1_epi8(0x1f)),
                                            _mm_cmpeq_epi8(v, _mm_set1_epi8('\\'))),
                               _mm_cmpeq_epi8(v, quote));
        mask = (unsigned)_mm_movemask_epi8(out);
        if (mask != 0)
            return p + __builtin_ctz(mask);
    }
    return p;
}
#endif

/* The end of the longest run of atoms from p, stopping at limit. */
static inline Py_ssize_t
atom_run(const Step *st, const char *l, Py_ssize_t p, Py_ssize_t limit)
{
    const unsigned char *u = (const unsigned char *)l;
    for (;;) {
#ifdef HAVE_SSE2_SCAN
        if (st->wide != WIDE_NONE)
            p = wide_run(st->wide, u, p, limit);
#endif
        while (p < limit && st->atom[u[p]])
            p++;
        if (!st->json || p + 1 >= limit || u[p] != '\\')
            return p;
        p += 2;
    }
}

/* Whether [p, j) is a run of whole atoms. */
static inline int
atoms_to(const Step *st, const char *l, Py_ssize_t p, Py_ssize_t j)
{
    return p <= j && atom_run(st, l, p, j) == j;
}

static inline int
is_space(unsigned char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static inline int
is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

/* The end of one list entry at p (greedy, as the regex's first try), or -1. */
static Py_ssize_t
entry_end(int entry, const char *l, Py_ssize_t p, Py_ssize_t n)
{
    const unsigned char *u = (const unsigned char *)l;
    Py_ssize_t q = p;
    switch (entry) {
    case E_ADDR:
        while (q < n && !is_space(u[q]) && u[q] != ',' && u[q] != '"')
            q++;
        return q > p ? q : -1;
    case E_STATUS:
        if (n - p >= 3 && is_digit(u[p]) && is_digit(u[p + 1]) && is_digit(u[p + 2]))
            return p + 3;
        break;
    case E_TIME:
    case E_INT:
        while (q < n && is_digit(u[q]))
            q++;
        if (q == p)
            break;
        if (entry == E_TIME && q + 1 < n && u[q] == '.' && is_digit(u[q + 1])) {
            q++;
            while (q < n && is_digit(u[q]))
                q++;
        }
        return q;
    default:
        return -1;
    }
    return p < n && u[p] == '-' ? p + 1 : -1;
}

/* The length of an entry separator (", " or " : ") at p, or 0. */
static inline Py_ssize_t
separator_at(const char *l, Py_ssize_t p, Py_ssize_t n)
{
    if (n - p >= 2 && l[p] == ',' && l[p + 1] == ' ')
        return 2;
    if (n - p >= 3 && l[p] == ' ' && l[p + 1] == ':' && l[p + 2] == ' ')
        return 3;
    return 0;
}

/* STRUCT: the end of as many entries and separators as fit from p, or -1. */
static Py_ssize_t
list_end(const Step *st, const char *l, Py_ssize_t p, Py_ssize_t n)
{
    Py_ssize_t q = entry_end(st->entry, l, p, n);
    if (q < 0)
        return st->optional ? p : -1;
    for (;;) {
        Py_ssize_t s = separator_at(l, q, n), r;
        if (s == 0 || (r = entry_end(st->entry, l, q + s, n)) < 0)
            return q;
        q = r;
    }
}

static inline int
addr_byte(unsigned char c)
{
    return !is_space(c) && c != ',' && c != '"';
}

/* SHORTEST: where the literal first follows an address byte of a list from p, or -1. */
static Py_ssize_t
shortest_list_end(const Step *st, const char *l, Py_ssize_t p, Py_ssize_t n)
{
    const unsigned char *u = (const unsigned char *)l;
    Py_ssize_t q = p;
    if (st->optional && lit_at(l, p, n, st->lit, st->lit_len))
        return p;
    if (q >= n || !addr_byte(u[q]))
        return -1;
    q++;
    while (q <= n) {
        Py_ssize_t s;
        if (lit_at(l, q, n, st->lit, st->lit_len))
            return q;
        if (q == n)
            return -1;
        if ((s = separator_at(l, q, n)) > 0 && q + s < n && addr_byte(u[q + s]))
            q += s + 1;
        else if (addr_byte(u[q]))
            q++;
        else
            return -1;
    }
    return -1;
}

/* The first occurrence of lit in [p, n), or -1. */
static Py_ssize_t
find_first(const char *l, Py_ssize_t p, Py_ssize_t n, const char *lit, Py_ssize_t len)
{
    while (n - p >= len) {
        const char *hit = memchr(l + p, lit[0], (size_t)(n - p - len + 1));
        if (hit == NULL)
            return -1;
        p = hit - l;
        if (same_bytes(hit, lit, len))
            return p;
        p++;
    }
    return -1;
}

/* The last occurrence of lit in [p, n), or -1. */
static Py_ssize_t
find_last(const char *l, Py_ssize_t p, Py_ssize_t n, const char *lit, Py_ssize_t len)
{
    for (Py_ssize_t q = n - len; q >= p; q--) {
        if (l[q] == lit[0] && same_bytes(l + q, lit, len))
            return q;
    }
    return -1;
}

/* LAZY: the first atom boundary from p where the literal follows, or -1. */
static Py_ssize_t
lazy_end(const Step *st, const char *l, Py_ssize_t p, Py_ssize_t n)
{
    const unsigned char *u = (const unsigned char *)l;
    if (!st->json) {
        Py_ssize_t hit = find_first(l, p, n, st->lit, st->lit_len);
        return hit >= 0 && atom_run(st, l, p, hit) == hit ? hit : -1;
    }
    while (p <= n) {
        if (lit_at(l, p, n, st->lit, st->lit_len))
            return p;
        if (p < n && st->atom[u[p]])
            p++;
        else if (p + 1 < n && u[p] == '\\')
            p += 2;
        else
            return -1;
    }
    return -1;
}

/* RIGHT: where the value of step k ends, read from its anchor leftwards, or -1. */
static Py_ssize_t
right_end(FieldCounter *self, Py_ssize_t k, const char *l, Py_ssize_t p, Py_ssize_t n)
{
    const Step *steps = self->steps;
    const Step *a = &steps[steps[k].anchor];
    Py_ssize_t end = find_last(l, p, n, a->lit, a->lit_len);
    if (end < 0)
        return -1;
    /* end: where the literal after step s starts; step s starts after step s-1's literal */
    for (Py_ssize_t s = steps[k].anchor; s > k; s--) {
        const Step *before = &steps[s - 1];
        char last = before->lit[before->lit_len - 1];
        Py_ssize_t q = end - 1;
        while (q >= p && l[q] != last)
            q--;
        end = q + 1 - before->lit_len;
        if (q < p || end < p || !lit_at(l, end, n, before->lit, before->lit_len))
            return -1;
    }
    return atoms_to(&steps[k], l, p, end) ? end : -1;
}

/* FINAL: the largest atom boundary where the last literal and a line end follow, or -1. */
static Py_ssize_t
final_end(const Step *st, const char *l, Py_ssize_t p, Py_ssize_t n)
{
    Py_ssize_t longest = atom_run(st, l, p, n);
    for (Py_ssize_t t = 0; t <= 2; t++) {
        Py_ssize_t j = n - t - st->lit_len;
        if (j < p || j > longest || !tail_ok(l, j + st->lit_len, n) || !lit_at(l, j, n, st->lit, st->lit_len))
            continue;
        if (atoms_to(st, l, p, j))
            return j;
    }
    return -1;
}

/* Run the steps from step k at offset p. With forward set, the first RIGHT
   step takes the first occurrence of its literal (as LAZY would) and records
   where it began in *right_k and *right_p: anchors.py's reasoning makes the
   end of such a value the same in every reading of the whole line, so a first
   occurrence that lets the rest of the line be read is the right one, found
   without the scan from the right (which walk_line runs when it is not).
   1 read into vstart/vend, 0 not read. */
static int
walk_steps(FieldCounter *self, const char *l, Py_ssize_t n, Py_ssize_t k, Py_ssize_t p, int forward,
           Py_ssize_t *right_k, Py_ssize_t *right_p)
{
    for (; k < self->nsteps; k++) {
        const Step *st = &self->steps[k];
        Py_ssize_t end;
        switch (st->kind) {
        case W_STOP:
            end = atom_run(st, l, p, n);
            break;
        case W_FINAL:
            end = final_end(st, l, p, n);
            break;
        case W_END:
            end = atom_run(st, l, p, n);
            if (!tail_ok(l, end, n))
                return 0;
            break;
        case W_END_LAZY:
            end = n - (n - p >= 1 && l[n - 1] == '\n') - (n - p >= 2 && l[n - 1] == '\n' && l[n - 2] == '\r');
            if (!atoms_to(st, l, p, end))
                return 0;
            break;
        case W_STRUCT:
            end = list_end(st, l, p, n);
            break;
        case W_SHORTEST:
            end = shortest_list_end(st, l, p, n);
            break;
        case W_LAZY:
            end = lazy_end(st, l, p, n);
            break;
        case W_RIGHT:
            if (forward && *right_k < 0) {
                *right_k = k;
                *right_p = p;
                end = lazy_end(st, l, p, n);
            } else {
                end = right_end(self, k, l, p, n);
            }
            break;
        default:
            return 0;
        }
        if (end < 0 || !lit_at(l, end, n, st->lit, st->lit_len))
            return 0;
        self->vstart[k] = p;
        self->vend[k] = end;
        p = end + st->lit_len;
    }
    return tail_ok(l, p, n);
}

/* Read one line (without or with its line end). 1 read into vstart/vend, 0 not read. */
static int
walk_line(FieldCounter *self, const char *l, Py_ssize_t n)
{
    Py_ssize_t plen = PyBytes_GET_SIZE(self->prefix);
    Py_ssize_t right_k = -1, right_p = 0;

    if (!lit_at(l, 0, n, PyBytes_AS_STRING(self->prefix), plen))
        return 0;
    if (walk_steps(self, l, n, 0, plen, 1, &right_k, &right_p))
        return 1;
    return right_k >= 0 && walk_steps(self, l, n, right_k, right_p, 0, &right_k, &right_p);
}

/* Count one line: walked, or handed to the fallback. 1 counted, 0 misfit, -1 error. */
static int
walk_take(FieldCounter *self, const char *l, Py_ssize_t n)
{
    PyObject *line, *row;
    int r;

    if (walk_line(self, l, n)) {
        for (Py_ssize_t k = 0; k < self->nwanted; k++) {
            Py_ssize_t s = self->wanted[k];
            self->starts[k] = self->vstart[s];
            self->sizes[k] = self->vend[s] - self->vstart[s];
        }
        return count_key(self, l, self->starts, self->sizes) < 0 ? -1 : 1;
    }
    line = PyBytes_FromStringAndSize(l, n);
    if (line == NULL)
        return -1;
    row = PyObject_CallOneArg(self->fallback, line);
    Py_DECREF(line);
    if (row == NULL)
        return -1;
    if (row == Py_None) {
        Py_DECREF(row);
        return 0;
    }
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != self->nwanted) {
        Py_DECREF(row);
        PyErr_SetString(PyExc_TypeError, "the fallback must return None or a tuple of one bytes per wanted field");
        return -1;
    }
    {
        /* count_key reads the parts as offsets into one buffer: the row's values back to back. */
        Py_ssize_t size = 0;
        char *joined;
        for (Py_ssize_t k = 0; k < self->nwanted; k++) {
            PyObject *part = PyTuple_GET_ITEM(row, k);
            if (!PyBytes_Check(part)) {
                Py_DECREF(row);
                PyErr_SetString(PyExc_TypeError, "the fallback must return bytes values");
                return -1;
            }
            self->starts[k] = size;
            self->sizes[k] = PyBytes_GET_SIZE(part);
            size += PyBytes_GET_SIZE(part);
        }
        joined = PyMem_Malloc((size_t)(size > 0 ? size : 1));
        if (joined == NULL) {
            Py_DECREF(row);
            PyErr_NoMemory();
            return -1;
        }
        for (Py_ssize_t k = 0; k < self->nwanted; k++)
            memcpy(joined + self->starts[k], PyBytes_AS_STRING(PyTuple_GET_ITEM(row, k)), (size_t)self->sizes[k]);
        Py_DECREF(row);
        r = count_key(self, joined, self->starts, self->sizes);
        PyMem_Free(joined);
    }
    return r < 0 ? -1 : 1;
}

static PyObject *
WalkCounter_feed_block(FieldCounter *self, PyObject *block)
{
    Py_ssize_t lines = 0, misfits = 0, start = 0, n;
    const char *buf;
    Py_buffer view;

    if (!ready(self))
        return NULL;
    if (get_block(block, &view) < 0)
        return NULL;
    buf = view.buf;
    n = view.len;
    for (;;) {
        const char *nl = memchr(buf + start, '\n', (size_t)(n - start));
        int r;
        if (nl == NULL)
            break;
        r = walk_take(self, buf + start, nl - buf - start);
        if (r < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
        lines++;
        misfits += r == 0;
        start = nl - buf + 1;
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(nn)", lines, misfits);
}

static PyObject *
WalkCounter_feed_lines(FieldCounter *self, PyObject *lines)
{
    PyObject *seq;
    Py_ssize_t n, misfits = 0;

    if (!ready(self))
        return NULL;
    seq = PySequence_Fast(lines, "feed_lines() needs a sequence of bytes");
    if (seq == NULL)
        return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!PyBytes_Check(item)) {
            PyErr_Format(PyExc_TypeError, "feed_lines() needs bytes items, not %.100s", Py_TYPE(item)->tp_name);
            Py_DECREF(seq);
            return NULL;
        }
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        int r;
        Py_INCREF(item);
        r = walk_take(self, PyBytes_AS_STRING(item), PyBytes_GET_SIZE(item));
        Py_DECREF(item);
        if (r < 0) {
            Py_DECREF(seq);
            return NULL;
        }
        misfits += r == 0;
    }
    Py_DECREF(seq);
    return PyLong_FromSsize_t(misfits);
}

/* One step from its tuple (kind, json, entry, optional, anchor, literal, atoms). 0, or -1 with an error set. */
static int
read_step(FieldCounter *self, Py_ssize_t k, PyObject *item)
{
    Step *st = &self->steps[k];
    int kind, json, entry, optional;
    Py_ssize_t anchor;
    PyObject *lit;
    Py_buffer atoms;

    if (!PyArg_ParseTuple(item, "iiiinSy*:step", &kind, &json, &entry, &optional, &anchor, &lit, &atoms))
        return -1;
    if (atoms.len != 256) {
        PyBuffer_Release(&atoms);
        PyErr_SetString(PyExc_ValueError, "a step's atoms must be 256 bytes (1: the byte is an atom)");
        return -1;
    }
    memcpy(st->atom, atoms.buf, 256);
    PyBuffer_Release(&atoms);
    st->wide = wide_class(st->atom);
    if (kind < W_STOP || kind > W_RIGHT || entry < E_NONE || entry > E_INT) {
        PyErr_Format(PyExc_ValueError, "step %zd: unknown kind %d or entry %d", k, kind, entry);
        return -1;
    }
    if (((kind == W_STRUCT || kind == W_SHORTEST) && entry == E_NONE) || (kind == W_SHORTEST && entry != E_ADDR)) {
        PyErr_Format(PyExc_ValueError, "step %zd: a list step needs its entry kind (SHORTEST: addresses)", k);
        return -1;
    }
    if ((PyBytes_GET_SIZE(lit) == 0) != (kind == W_END || kind == W_END_LAZY)) {
        PyErr_Format(PyExc_ValueError, "step %zd: only a last value has no literal after it", k);
        return -1;
    }
    if ((kind == W_END || kind == W_END_LAZY) && k != self->nsteps - 1) {
        PyErr_Format(PyExc_ValueError, "step %zd: a line end before the last step", k);
        return -1;
    }
    if (kind == W_RIGHT && (anchor < k || anchor >= self->nsteps)) {
        PyErr_Format(PyExc_ValueError, "step %zd: its anchor must be a later step or itself", k);
        return -1;
    }
    if (PyList_Append(self->literals, lit) < 0)
        return -1;
    st->kind = kind;
    st->json = json != 0;
    st->entry = entry;
    st->optional = optional != 0;
    st->anchor = anchor;
    st->lit = PyBytes_AS_STRING(lit);
    st->lit_len = PyBytes_GET_SIZE(lit);
    return 0;
}

static int
WalkCounter_init(FieldCounter *self, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"prefix", "steps", "wanted", "fallback", NULL};
    PyObject *prefix, *steps, *wanted, *fallback, *seq;
    Py_ssize_t nsteps, last_wanted = 0;

    if (self->steps != NULL || self->entries != NULL) {
        PyErr_SetString(PyExc_TypeError, "WalkCounter is initialised once");
        return -1;
    }
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "SOOO:WalkCounter", kwlist, &prefix, &steps, &wanted, &fallback))
        return -1;
    if (!PyCallable_Check(fallback)) {
        PyErr_SetString(PyExc_TypeError, "fallback must be callable");
        return -1;
    }
    seq = PySequence_Fast(steps, "steps must be a sequence of tuples");
    if (seq == NULL)
        return -1;
    nsteps = PySequence_Fast_GET_SIZE(seq);
    if (nsteps < 1 || nsteps > (1 << 16)) {
        Py_DECREF(seq);
        PyErr_SetString(PyExc_ValueError, "steps must hold between 1 and 2**16 steps");
        return -1;
    }
    self->nsteps = nsteps;
    self->steps = PyMem_Calloc((size_t)nsteps, sizeof(Step));
    self->vstart = PyMem_Malloc((size_t)nsteps * sizeof(Py_ssize_t));
    self->vend = PyMem_Malloc((size_t)nsteps * sizeof(Py_ssize_t));
    self->literals = PyList_New(0);
    if (self->steps == NULL || self->vstart == NULL || self->vend == NULL || self->literals == NULL) {
        Py_DECREF(seq);
        if (!PyErr_Occurred())
            PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t k = 0; k < nsteps; k++) {
        if (read_step(self, k, PySequence_Fast_GET_ITEM(seq, k)) < 0) {
            Py_DECREF(seq);
            return -1;
        }
    }
    Py_DECREF(seq);
    if (read_wanted(self, wanted, nsteps, "step", &last_wanted) < 0)
        return -1;
    Py_INCREF(prefix);
    self->prefix = prefix;
    Py_INCREF(fallback);
    self->fallback = fallback;
    self->seed = hash_seed;
    return allocate_tables(self);
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

static PyMethodDef WalkCounter_methods[] = {
    {"feed_block", (PyCFunction)WalkCounter_feed_block, METH_O, feed_block_doc},
    {"feed_lines", (PyCFunction)WalkCounter_feed_lines, METH_O, feed_lines_doc},
    {"items", (PyCFunction)FieldCounter_items, METH_NOARGS, items_doc},
    {"clear", (PyCFunction)checked_clear, METH_NOARGS, clear_doc},
    {NULL, NULL, 0, NULL},
};

PyDoc_STRVAR(WalkCounter_doc,
"WalkCounter(prefix: bytes, steps: Sequence[tuple], wanted: Sequence[int], fallback: Callable)\n\n"
"Counts identical tuples of the values of the wanted steps of lines read by\n"
"walking the steps (see nginx_canary/logs/walk_strategy.py); a line the walk\n"
"does not read is passed to fallback(line), which returns the tuple or None\n"
"(a misfit). Raises ValueError for a malformed step, TypeError for a fallback\n"
"that is not callable.");

static PyTypeObject WalkCounterType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "nginx_canary.logs._fieldcount.WalkCounter",
    .tp_basicsize = sizeof(FieldCounter),
    .tp_dealloc = (destructor)FieldCounter_dealloc,
    .tp_as_sequence = &FieldCounter_as_sequence,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = WalkCounter_doc,
    .tp_methods = WalkCounter_methods,
    .tp_getset = FieldCounter_getset,
    .tp_init = (initproc)WalkCounter_init,
    .tp_new = PyType_GenericNew,
};

static struct PyModuleDef fieldcount_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "nginx_canary.logs._fieldcount",
    .m_doc = "C accelerator for nginx_canary.logs.counting: counts raw field tuples of log lines (split layout, or a walk).",
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

    if (PyType_Ready(&FieldCounterType) < 0 || PyType_Ready(&WalkCounterType) < 0)
        return NULL;
    m = PyModule_Create(&fieldcount_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddType(m, &FieldCounterType) < 0 || PyModule_AddType(m, &WalkCounterType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
