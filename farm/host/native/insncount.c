/*
 * farm's QEMU TCG plugin: executed guest instructions by class, between marks the guest sets.
 *
 * Each instruction is classed once, when QEMU translates its block, from its disassembly (remembered by its bytes,
 * see the class cache); each translated block then adds its per-class counts to a per-vCPU scoreboard with inline
 * adds, so counting costs a few host instructions per executed block and no call into the plugin.
 *
 * Nothing is instrumented until the first begin mark: the code a job runs before it (its imports, its data, fp32's
 * accuracy) then runs at plain QEMU's speed, where the inline adds made it twice as slow. The first begin asks QEMU
 * to reset the plugin, which flushes every translated block before the guest runs another instruction, and from then
 * on every block is translated with its adds, so what a mark counts is what it counted when all blocks had them.
 *
 * Marks: the guest calls system call 17985 (0x4641, unused on x86_64 and aarch64, so QEMU answers ENOSYS) with
 * a1 = 1 (begin) or 2 (end) and a2 = an id. At end(id) the plugin appends one JSON line
 *   {"id": N, "counts": {"int_simd_mul": n, ...}, "total": n}
 * to the file named by the plugin argument out=PATH (a path as the guest sees it: QEMU runs inside the container),
 * with one write() on an O_APPEND descriptor, so the line is in the file when the guest's call returns. Counts are
 * summed over all vCPUs; a guest that wants deterministic counts runs its work on one thread (idle worker threads
 * that spin add instructions that depend on timing).
 *
 * Classes, checked in this order (the first that matches wins):
 *   branch        jumps, calls, returns (x86 j*, call, ret, loop; arm b, bl, br, blr, ret, cbz, tbz, ...)
 *   int_simd_mul  integer SIMD multiply and dot product (x86 pmadd*, pmul*, vpdp*; arm sdot, udot, usdot, smull,
 *                 umull, smlal, mul/mla (vector), sqdmulh, smmla, ...)
 *   fp_simd_fma   floating-point multiply and multiply-add on the SIMD/FP unit (x86 vfmadd*, vfnmadd*, mulps, mulpd,
 *                 mulss, mulsd, dpps; arm fmla, fmls, fmul, fmadd, fnmul, bfdot, bfmmla, ...)
 *   load, store   memory instructions. On aarch64 these are the load/store instructions (ld*, st*, prfm; atomics
 *                 and cas/swp are stores). x86 folds memory operands into computing instructions; such an
 *                 instruction is classed by what it computes (vfmadd231ps (%rax),%ymm1,%ymm0 is fp_simd_fma,
 *                 addq (%rbx),%rax is scalar), because its load is micro-fused and its cost is the computation's.
 *                 Only x86 data movement with a memory operand is load or store: mov* (also vmovups, movzx, ...),
 *                 push, pop, string stores and loads, broadcasts, gathers, scatters, masked moves, inserts,
 *                 extracts, xchg, cmpxchg, xadd, cmov, prefetch; it is a store when its last AT&T operand (the
 *                 destination) is memory, else a load.
 *   vector_other  any other instruction that names a SIMD/FP register (x86 xmm/ymm/zmm/mm/k/st, or a v-prefixed
 *                 AVX mnemonic; arm v/q/d/s/h/b/z/p registers) or is an FP instruction
 *   scalar        everything else
 */

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <qemu-plugin.h>

QEMU_PLUGIN_EXPORT int qemu_plugin_version = QEMU_PLUGIN_VERSION;

#define MARK_SYSCALL 17985
#define MARK_BEGIN 1
#define MARK_END 2
#define MAX_OPEN_MARKS 64

enum klass { BRANCH, INT_SIMD_MUL, FP_SIMD_FMA, LOAD, STORE, VECTOR_OTHER, SCALAR, N_CLASSES };

/* The JSON keys, in the order the line lists them. */
static const char *const CLASS_NAMES[N_CLASSES] = {
    "branch", "int_simd_mul", "fp_simd_fma", "load", "store", "vector_other", "scalar",
};

typedef struct {
    uint64_t count[N_CLASSES];
} VcpuCounts;

typedef struct {
    int64_t id;
    uint64_t start[N_CLASSES];
} OpenMark;

static struct qemu_plugin_scoreboard *counts;
static bool is_x86;
static int out_fd = -1;
static pthread_mutex_t marks_lock = PTHREAD_MUTEX_INITIALIZER;
static qemu_plugin_id_t plugin_id;
/* Whether the first begin mark has asked for the blocks' adds (under marks_lock). */
static bool instrumenting;
static OpenMark marks[MAX_OPEN_MARKS];
static int n_marks;

/* ---- disassembly parsing ---- */

static bool starts(const char *s, const char *prefix)
{
    return strncmp(s, prefix, strlen(prefix)) == 0;
}

static bool in_list(const char *s, const char *const *list)
{
    for (; *list; list++) {
        if (strcmp(s, *list) == 0) {
            return true;
        }
    }
    return false;
}

static bool starts_any(const char *s, const char *const *list)
{
    for (; *list; list++) {
        if (starts(s, *list)) {
            return true;
        }
    }
    return false;
}

/* Splits "lock addq %rax, (%rbx)" into the mnemonic (prefixes skipped) and the operand text. */
static void split(const char *text, char *mnemonic, size_t size, const char **operands)
{
    static const char *const prefixes[] = {"lock", "rep", "repe", "repz", "repne", "repnz", "bnd", "notrack",
                                           "data16", "addr32", "rex", "rex.w", "xacquire", "xrelease", NULL};
    const char *p = text;
    for (;;) {
        while (*p == ' ' || *p == '\t') {
            p++;
        }
        size_t n = strcspn(p, " \t");
        size_t k = n < size - 1 ? n : size - 1;
        memcpy(mnemonic, p, k);
        mnemonic[k] = '\0';
        for (char *c = mnemonic; *c; c++) {
            if (*c >= 'A' && *c <= 'Z') {
                *c = (char)(*c - 'A' + 'a');
            }
        }
        p += n;
        if (!in_list(mnemonic, prefixes) || *p == '\0') {
            break;
        }
    }
    while (*p == ' ' || *p == '\t') {
        p++;
    }
    *operands = p;
}

/* Calls check(token) on each alphanumeric token of the operands ("%ymm0", "v1.4s" -> "ymm0"; "v1", "4s"). */
static bool any_token(const char *operands, bool (*check)(const char *))
{
    char token[32];
    const char *p = operands;
    while (*p) {
        size_t n = 0;
        while (p[n] && ((p[n] >= 'a' && p[n] <= 'z') || (p[n] >= 'A' && p[n] <= 'Z') || (p[n] >= '0' && p[n] <= '9'))) {
            n++;
        }
        if (n > 0 && n < sizeof(token)) {
            memcpy(token, p, n);
            token[n] = '\0';
            if (check(token)) {
                return true;
            }
        }
        p += n ? n : 1;
    }
    return false;
}

static bool register_number(const char *s)
{
    if (!*s) {
        return false;
    }
    for (; *s; s++) {
        if (*s < '0' || *s > '9') {
            return false;
        }
    }
    return true;
}

static bool x86_vector_register(const char *t)
{
    return (starts(t, "xmm") && register_number(t + 3)) || (starts(t, "ymm") && register_number(t + 3)) ||
           (starts(t, "zmm") && register_number(t + 3)) || (starts(t, "mm") && register_number(t + 2)) ||
           (t[0] == 'k' && register_number(t + 1)) || (starts(t, "st") && (t[2] == '\0' || register_number(t + 2)));
}

static bool arm_vector_register(const char *t)
{
    return strchr("vqdshbzp", t[0]) != NULL && t[0] != '\0' && register_number(t + 1);
}

/* ---- x86 (AT&T syntax, as QEMU asks capstone for) ---- */

static bool x86_is_memory(const char *operand)
{
    /* "8(%rsp)", "(%rax,%rbx,4)", "%fs:0x28", "%es:(%rdi)"; an immediate "$0x10" or a register "%rax" is not. */
    return strchr(operand, '(') != NULL || (operand[0] == '%' && strchr(operand, ':') != NULL);
}

static enum klass classify_x86(const char *mnemonic, const char *operands)
{
    static const char *const branches[] = {"j", "call", "ret", "loop", "iret", "sysret", NULL};
    static const char *const int_mul[] = {"pmadd", "pmul", "pdp", NULL};
    static const char *const fp_fma[] = {"fmadd", "fmsub", "fnmadd", "fnmsub", "mulps", "mulpd", "mulss", "mulsd",
                                         "dpps", "dppd", "dpbf16ps", "mulph", "mulsh", NULL};
    static const char *const movement[] = {"mov", "push", "pop", "stos", "lods", "lddqu", "broadcast", "pbroadcast",
                                           "maskmov", "pmaskmov", "gather", "pgather", "scatter", "pscatter",
                                           "insert", "pinsr", "extract", "pextr", "xchg", "cmpxchg", "xadd",
                                           "cmov", "prefetch", "expand", "pexpand", "compress", "pcompress", NULL};
    static const char *const stores_always[] = {"stos", "push", "scatter", "pscatter", NULL};
    const bool avx = mnemonic[0] == 'v';
    const char *base = avx ? mnemonic + 1 : mnemonic;

    if (starts_any(mnemonic, branches)) {
        return BRANCH;
    }
    if (starts_any(base, int_mul)) {
        return INT_SIMD_MUL;
    }
    /* vfmadd231ps, mulps; x87's fmul has no 'v' and no "fmadd" spelling, so it stays vector_other */
    if (starts_any(base, fp_fma) && (avx || !starts(base, "f"))) {
        return FP_SIMD_FMA;
    }
    if (starts_any(base, movement)) {
        if (starts_any(base, stores_always)) {
            return STORE;
        }
        const char *last = strrchr(operands, ',');
        last = last ? last + 1 : operands;
        while (*last == ' ') {
            last++;
        }
        if (*operands && x86_is_memory(last)) {
            return STORE;
        }
        if (x86_is_memory(operands)) {
            return LOAD;
        }
    }
    if ((avx && strcmp(mnemonic, "verr") != 0 && strcmp(mnemonic, "verw") != 0) ||
        any_token(operands, x86_vector_register)) {
        return VECTOR_OTHER;
    }
    /* x87 and SSE state instructions without register operands (fld1, fldcw, ldmxcsr) */
    if (mnemonic[0] == 'f' || strstr(mnemonic, "mxcsr") != NULL) {
        return VECTOR_OTHER;
    }
    return SCALAR;
}

/* ---- aarch64 (capstone's spelling) ---- */

static enum klass classify_arm(const char *mnemonic, const char *operands)
{
    static const char *const branches[] = {"b", "bl", "br", "blr", "ret", "cbz", "cbnz", "tbz", "tbnz", "braa",
                                           "brab", "blraa", "blrab", "retaa", "retab", "braaz", "brabz", "blraaz",
                                           "blrabz", "eret", NULL};
    static const char *const int_mul[] = {"sdot", "udot", "usdot", "sudot", "smmla", "ummla", "usmmla", "smull",
                                          "smull2", "umull", "umull2", "smlal", "smlal2", "umlal", "umlal2", "smlsl",
                                          "smlsl2", "umlsl", "umlsl2", "mul", "mla", "mls", "sqdmulh", "sqrdmulh",
                                          "sqdmull", "sqdmull2", "sqdmlal", "sqdmlal2", "sqdmlsl", "sqdmlsl2",
                                          "sqrdmlah", "sqrdmlsh", NULL};
    static const char *const fp_fma[] = {"fmla", "fmls", "fmul", "fmulx", "fmadd", "fmsub", "fnmadd", "fnmsub",
                                         "fnmul", "fmlal", "fmlal2", "fmlsl", "fmlsl2", "fcmla", "fmmla", "bfdot",
                                         "bfmmla", "bfmlalb", "bfmlalt", NULL};
    static const char *const atomics[] = {"ldadd", "ldclr", "ldeor", "ldset", "ldsmax", "ldsmin", "ldumax",
                                          "ldumin", "swp", "cas", NULL};
    const bool vector = any_token(operands, arm_vector_register);

    if (in_list(mnemonic, branches) || starts(mnemonic, "b.")) {
        return BRANCH;
    }
    /* scalar mul/smull on x/w registers are integer ALU work, not SIMD */
    if (in_list(mnemonic, int_mul) && vector) {
        return INT_SIMD_MUL;
    }
    if (in_list(mnemonic, fp_fma)) {
        return FP_SIMD_FMA;
    }
    if (starts_any(mnemonic, atomics) || starts(mnemonic, "st")) {
        return STORE;
    }
    if (starts(mnemonic, "ld") || starts(mnemonic, "prfm") || starts(mnemonic, "prfum")) {
        return LOAD;
    }
    if (vector || mnemonic[0] == 'f' || strcmp(mnemonic, "scvtf") == 0 || strcmp(mnemonic, "ucvtf") == 0) {
        return VECTOR_OTHER;
    }
    return SCALAR;
}

/*
 * Debian bookworm's capstone 4 does not decode the Armv8.2+ dot products (sdot, udot, usdot, smmla, ...), and
 * QEMU then hands the plugin an empty string, so AdvSIMD integer multiplies are recognised from their encoding
 * (Arm ARM, "Advanced SIMD three same", "three different", "three-register extension", "vector x indexed element").
 */
static bool arm_int_simd_mul_encoding(uint32_t w)
{
    const uint32_t u = (w >> 29) & 1, size = (w >> 22) & 3;
    if ((w & 0x9F20C400u) == 0x0E008400u) { /* three-register extension: sqrdmlah/sh, [us]dot, usdot, [us]mmla */
        return ((w >> 11) & 0xF) <= 5;
    }
    if ((w & 0x9F200C00u) == 0x0E200000u) { /* three different: [us]mlal, sqdmlal, [us]mlsl, [us]mull, sqdmull */
        const uint32_t op = (w >> 12) & 0xF;
        return op >= 8 && op <= 13;
    }
    if ((w & 0x9F200400u) == 0x0E200400u) { /* three same: mla, mls, mul, sqdmulh, sqrdmulh (not pmul) */
        const uint32_t op = (w >> 11) & 0x1F;
        return op == 0x12 || (op == 0x13 && !u) || op == 0x16;
    }
    if ((w & 0x9F000400u) == 0x0F000000u) { /* vector x indexed element (integer forms only) */
        const uint32_t op = (w >> 12) & 0xF;
        if (!u) {
            return op == 2 || op == 3 || op == 6 || op == 7 || op == 8 || (op >= 10 && op <= 14) ||
                   (op == 15 && size != 1);
        }
        return op == 0 || op == 2 || op == 4 || op == 6 || op == 10 || op == 13 || op == 14 || op == 15;
    }
    return false;
}

/* An aarch64 instruction capstone cannot name, classed by its top-level encoding group. */
static enum klass arm_group(uint32_t w)
{
    const uint32_t op0 = (w >> 25) & 0xF;
    if ((op0 & 0x5) == 0x4) { /* x1x0: loads and stores; bit 22 is L in the common forms */
        return (w >> 22) & 1 ? LOAD : STORE;
    }
    if ((op0 & 0x7) == 0x7) { /* x111: SIMD and floating point */
        return VECTOR_OTHER;
    }
    if ((op0 & 0xE) == 0xA && (w >> 22) != 0x354) { /* 101x: branches, but not system instructions */
        return BRANCH;
    }
    return SCALAR;
}

static enum klass classify(const struct qemu_plugin_insn *insn)
{
    char mnemonic[32];
    const char *operands;
    uint32_t word = 0;
    enum klass k;
    if (!is_x86 && qemu_plugin_insn_data(insn, &word, sizeof(word)) == sizeof(word)) {
        if (arm_int_simd_mul_encoding(word)) {
            return INT_SIMD_MUL;
        }
    }
    char *text = qemu_plugin_insn_disas(insn);
    if (!text || !*text) {
        /* executed all the same: x86 without a name counts as scalar, aarch64 by its encoding group */
        k = is_x86 ? SCALAR : arm_group(word);
    } else {
        split(text, mnemonic, sizeof(mnemonic), &operands);
        k = is_x86 ? classify_x86(mnemonic, operands) : classify_arm(mnemonic, operands);
    }
    g_free(text);
    return k;
}

/* ---- the class cache ---- */

/*
 * Classing an instruction from its disassembly is most of the plugin's cost (measured: Python importing onnx,
 * onnxruntime and numpy under qemu-aarch64 took 2.9 s with a plugin that classes nothing, 6.6 s classing each
 * instruction, 5.3 s with this cache), and a job translates the same instructions again and again: the same
 * encodings at many places, and the same code in every process it forks (its workers, the profile's children, each
 * translating anew what its parent had not run); the bundled model's arm64 job took 20.8 s without, 13.4 s with. A class
 * depends on the instruction's bytes only, so classes are kept in a table keyed by the bytes, in memory shared with
 * every process forked from this one. Entries are written once and published by their state word, so a process
 * that reads one half-written, or finds the table full, classes the instruction itself: the counts are the same.
 */
/* 6 MiB, shared: a job's processes class some 10^5 distinct encodings. */
#define CACHE_SLOTS (1u << 18)
#define CACHE_PROBES 32
#define MAX_INSN_BYTES 15
#define SLOT_EMPTY 0u
#define SLOT_WRITING 1u

typedef struct {
    uint32_t state; /* SLOT_EMPTY, SLOT_WRITING, or the key's hash with the top bit set: written */
    uint8_t length;
    uint8_t klass;
    uint8_t bytes[MAX_INSN_BYTES];
} CachedClass;

static CachedClass *cache;

static uint32_t key_hash(const uint8_t *bytes, size_t length)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < length; i++) {
        h = (h ^ bytes[i]) * 16777619u;
    }
    return h | 0x80000000u;
}

static enum klass classify_cached(const struct qemu_plugin_insn *insn)
{
    uint8_t bytes[MAX_INSN_BYTES];
    const size_t length = qemu_plugin_insn_size(insn);
    if (!cache || length == 0 || length > MAX_INSN_BYTES || qemu_plugin_insn_data(insn, bytes, length) != length) {
        return classify(insn);
    }
    const uint32_t key = key_hash(bytes, length);
    CachedClass *empty = NULL;
    for (uint32_t probe = 0; probe < CACHE_PROBES; probe++) {
        CachedClass *slot = &cache[(key + probe) & (CACHE_SLOTS - 1)];
        const uint32_t state = __atomic_load_n(&slot->state, __ATOMIC_ACQUIRE);
        if (state == SLOT_EMPTY) {
            empty = slot;
            break;
        }
        if (state == key && slot->length == length && memcmp(slot->bytes, bytes, length) == 0) {
            return (enum klass)slot->klass;
        }
    }
    const enum klass k = classify(insn);
    uint32_t expected = SLOT_EMPTY;
    if (empty && __atomic_compare_exchange_n(&empty->state, &expected, SLOT_WRITING, false, __ATOMIC_ACQUIRE,
                                             __ATOMIC_RELAXED)) {
        empty->length = (uint8_t)length;
        empty->klass = (uint8_t)k;
        memcpy(empty->bytes, bytes, length);
        __atomic_store_n(&empty->state, key, __ATOMIC_RELEASE);
    }
    return k;
}

/* ---- translation and marks ---- */

static qemu_plugin_u64 class_entry(int k)
{
    return (qemu_plugin_u64){counts, offsetof(VcpuCounts, count) + (size_t)k * sizeof(uint64_t)};
}

static void tb_translated(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    uint64_t n[N_CLASSES] = {0};
    size_t insns = qemu_plugin_tb_n_insns(tb);
    for (size_t i = 0; i < insns; i++) {
        n[classify_cached(qemu_plugin_tb_get_insn(tb, i))]++;
    }
    for (int k = 0; k < N_CLASSES; k++) {
        if (n[k]) {
            qemu_plugin_register_vcpu_tb_exec_inline_per_vcpu(tb, QEMU_PLUGIN_INLINE_ADD_U64, class_entry(k), n[k]);
        }
    }
}

static void totals(uint64_t out[N_CLASSES])
{
    for (int k = 0; k < N_CLASSES; k++) {
        out[k] = qemu_plugin_u64_sum(class_entry(k));
    }
}

static void emit(const char *line, size_t length)
{
    ssize_t written;
    do {
        written = write(out_fd, line, length);
    } while (written < 0 && errno == EINTR);
    if (written != (ssize_t)length) {
        qemu_plugin_outs("insncount: could not append a line to the counts file\n");
    }
}

static void end_mark(int64_t id)
{
    char line[1024];
    int k, found = -1;
    for (k = 0; k < n_marks; k++) {
        if (marks[k].id == id) {
            found = k;
            break;
        }
    }
    if (found < 0) {
        int n = snprintf(line, sizeof(line), "{\"id\": %" PRId64 ", \"error\": \"end without begin\"}\n", id);
        emit(line, (size_t)n);
        return;
    }
    uint64_t now[N_CLASSES], total = 0;
    totals(now);
    int n = snprintf(line, sizeof(line), "{\"id\": %" PRId64 ", \"counts\": {", id);
    for (k = 0; k < N_CLASSES; k++) {
        uint64_t d = now[k] - marks[found].start[k];
        total += d;
        n += snprintf(line + n, sizeof(line) - (size_t)n, "%s\"%s\": %" PRIu64, k ? ", " : "", CLASS_NAMES[k], d);
    }
    n += snprintf(line + n, sizeof(line) - (size_t)n, "}, \"total\": %" PRIu64 "}\n", total);
    emit(line, (size_t)n);
    marks[found] = marks[--n_marks];
}

static void syscall_entered(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1, uint64_t a2,
                            uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8);

/* After the reset (QEMU unregistered every callback and flushed the translated blocks): all of them again. */
static void instrument(qemu_plugin_id_t id)
{
    qemu_plugin_register_vcpu_tb_trans_cb(id, tb_translated);
    qemu_plugin_register_vcpu_syscall_cb(id, syscall_entered);
}

static void syscall_entered(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1, uint64_t a2,
                            uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    if (num != MARK_SYSCALL) {
        return;
    }
    pthread_mutex_lock(&marks_lock);
    if (a1 == MARK_BEGIN && !instrumenting) {
        /* The flush runs before the guest's next block: the mark's start (all zeros) misses no instruction. */
        instrumenting = true;
        qemu_plugin_reset(plugin_id, instrument);
    }
    if (a1 == MARK_BEGIN) {
        int k;
        for (k = 0; k < n_marks && marks[k].id != (int64_t)a2; k++) {
        }
        if (k == n_marks && n_marks < MAX_OPEN_MARKS) {
            n_marks++;
        }
        if (k < MAX_OPEN_MARKS) {
            marks[k].id = (int64_t)a2; /* a second begin with the same id restarts it */
            totals(marks[k].start);
        }
    } else if (a1 == MARK_END) {
        end_mark((int64_t)a2);
    }
    pthread_mutex_unlock(&marks_lock);
}

QEMU_PLUGIN_EXPORT int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    const char *out = NULL;
    for (int i = 0; i < argc; i++) {
        if (starts(argv[i], "out=")) {
            out = argv[i] + 4;
        } else {
            fprintf(stderr, "insncount: unknown argument %s; the only argument is out=PATH\n", argv[i]);
            return -1;
        }
    }
    if (!out || !*out) {
        fprintf(stderr, "insncount: no counts file; pass -plugin libinsncount.so,out=PATH\n");
        return -1;
    }
    if (strcmp(info->target_name, "x86_64") == 0 || strcmp(info->target_name, "i386") == 0) {
        is_x86 = true;
    } else if (strcmp(info->target_name, "aarch64") != 0) {
        fprintf(stderr, "insncount: target %s is not classified; farm's plugin knows x86_64 and aarch64\n",
                info->target_name);
        return -1;
    }
    out_fd = open(out, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (out_fd < 0) {
        fprintf(stderr, "insncount: cannot open the counts file %s: %s\n", out, strerror(errno));
        return -1;
    }
    /* No cache (no memory for it) only costs time. */
    cache = mmap(NULL, CACHE_SLOTS * sizeof(CachedClass), PROT_READ | PROT_WRITE,
                 MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (cache == MAP_FAILED) {
        cache = NULL;
    }
    counts = qemu_plugin_scoreboard_new(sizeof(VcpuCounts));
    plugin_id = id;
    /* The blocks' adds come with the first begin mark (instrument). */
    qemu_plugin_register_vcpu_syscall_cb(id, syscall_entered);
    return 0;
}
