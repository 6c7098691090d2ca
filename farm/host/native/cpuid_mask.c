/*
 * libfarmcpuid: makes this process see a narrower x86 CPU, so that onnxruntime's MLAS and numpy pick the kernels of
 * the ISA tier farm evaluates, and run them at native speed.
 *
 * Preloaded (LD_PRELOAD) into the job's Python. Its constructor reads FARM_CPUID_MASK, a list of
 * "leaf.subleaf.register:hexmask" rules such as "7.0.ebx:0xd0230000,7.0.ecx:0x800", and turns on CPUID faulting
 * for the process (arch_prctl(ARCH_SET_CPUID, 0): CPUs with the cpuid_fault flag). From then on every CPUID
 * instruction traps with SIGSEGV; the handler runs the real CPUID with faulting briefly off, clears the rule's bits,
 * writes the registers back and steps over the two-byte instruction. The setting is inherited by threads and fork,
 * and reset by execve, where the preload runs this constructor again.
 *
 * It reports how that went in FARM_CPUID_MASK_STATUS ("active", or "failed: why"), which the job reads: a tier whose
 * mask did not take must fail rather than report this CPU's own kernels under the tier's name.
 *
 * Something that later installs its own SIGSEGV handler (Python's faulthandler, for one) takes the traps over, and
 * the next CPUID then ends the process with a segmentation fault: loud, never a silently unmasked result.
 */
#define _GNU_SOURCE
#include <cpuid.h>
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

#ifndef ARCH_GET_CPUID
#define ARCH_GET_CPUID 0x1011
#endif
#ifndef ARCH_SET_CPUID
#define ARCH_SET_CPUID 0x1012
#endif

#define MAX_RULES 64

struct rule {
    uint32_t leaf, subleaf;
    int reg; /* 0 eax, 1 ebx, 2 ecx, 3 edx */
    uint32_t clear;
};

static struct rule rules[MAX_RULES];
static int rule_count;
static struct sigaction previous;

/* A number in C's notation (0x... hexadecimal, else decimal), without sscanf or strtoul: with _GNU_SOURCE, a host
   glibc of 2.38 or newer links those to __isoc23_* symbols that the images' glibc 2.36 lacks. */
static int parse_number(const char **text, unsigned long *value) {
    const char *p = *text;
    unsigned long result = 0;
    int base = 10, digits = 0;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    }
    for (;; p++, digits++) {
        int digit;
        if (*p >= '0' && *p <= '9') digit = *p - '0';
        else if (base == 16 && *p >= 'a' && *p <= 'f') digit = *p - 'a' + 10;
        else if (base == 16 && *p >= 'A' && *p <= 'F') digit = *p - 'A' + 10;
        else break;
        if (result > (0xFFFFFFFFul - (unsigned long)digit) / (unsigned long)base) return -1;
        result = result * (unsigned long)base + (unsigned long)digit;
    }
    if (digits == 0) return -1;
    *text = p;
    *value = result;
    return 0;
}

static int expect(const char **text, char c) {
    if (**text != c) return -1;
    (*text)++;
    return 0;
}

/* Parse FARM_CPUID_MASK; returns the number of rules, or -1 (with the rules left empty) on a malformed list. */
int farm_cpuid_parse(const char *text) {
    static const char *names[] = {"eax", "ebx", "ecx", "edx"};
    rule_count = 0;
    while (text && *text) {
        unsigned long leaf, subleaf, clear;
        int index = -1;
        if (rule_count == MAX_RULES || parse_number(&text, &leaf) || expect(&text, '.') ||
            parse_number(&text, &subleaf) || expect(&text, '.')) {
            rule_count = 0;
            return -1;
        }
        for (int i = 0; i < 4; i++)
            if (strncmp(text, names[i], 3) == 0) index = i;
        if (index < 0) {
            rule_count = 0;
            return -1;
        }
        text += 3;
        if (expect(&text, ':') || parse_number(&text, &clear) || (*text && expect(&text, ','))) {
            rule_count = 0;
            return -1;
        }
        rules[rule_count++] = (struct rule){(uint32_t)leaf, (uint32_t)subleaf, index, (uint32_t)clear};
    }
    return rule_count;
}

/* Clear the rules' bits from what CPUID returned for leaf/subleaf (regs: eax, ebx, ecx, edx). */
void farm_cpuid_apply(uint32_t leaf, uint32_t subleaf, uint32_t regs[4]) {
    for (int i = 0; i < rule_count; i++)
        if (rules[i].leaf == leaf && rules[i].subleaf == subleaf) regs[rules[i].reg] &= ~rules[i].clear;
}

static long set_faulting(int on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

static void on_segv(int signal_number, siginfo_t *info, void *context) {
    ucontext_t *uc = context;
    greg_t *g = uc->uc_mcontext.gregs;
    /* A trapped CPUID arrives as a general protection fault: SIGSEGV with SI_KERNEL, at an instruction that can be
       read. Only then look at the bytes. */
    const unsigned char *ip = (const unsigned char *)g[REG_RIP];
    if (info->si_code != SI_KERNEL || ip[0] != 0x0f || ip[1] != 0xa2) {
        /* Not ours: whoever handled SIGSEGV before gets it. A fault happens again when the instruction re-runs under
           the previous handler; a signal sent by software (kill, raise) would not, so it is raised again. */
        sigaction(SIGSEGV, &previous, NULL);
        if (info->si_code <= 0) raise(signal_number);
        return;
    }
    uint32_t leaf = (uint32_t)g[REG_RAX], subleaf = (uint32_t)g[REG_RCX], r[4];
    set_faulting(0);
    __cpuid_count(leaf, subleaf, r[0], r[1], r[2], r[3]);
    set_faulting(1);
    farm_cpuid_apply(leaf, subleaf, r);
    /* CPUID writes 32-bit registers, which zeroes their upper halves. */
    g[REG_RAX] = r[0];
    g[REG_RBX] = r[1];
    g[REG_RCX] = r[2];
    g[REG_RDX] = r[3];
    g[REG_RIP] += 2;
}

static void report(const char *status) { setenv("FARM_CPUID_MASK_STATUS", status, 1); }

__attribute__((constructor)) static void farm_cpuid_start(void) {
    const char *mask = getenv("FARM_CPUID_MASK");
    if (!mask) return; /* preloaded without a mask: nothing to do */
    if (farm_cpuid_parse(mask) <= 0) {
        /* An empty mask would report "active" while hiding nothing: a tier that cannot be told apart from the host. */
        report("failed: FARM_CPUID_MASK is empty or not a list of leaf.subleaf.register:hexmask rules");
        return;
    }
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_sigaction = on_segv;
    action.sa_flags = SA_SIGINFO;
    /* Nothing may run while faulting is briefly off inside the handler: a CPUID there would see the real CPU. */
    sigfillset(&action.sa_mask);
    if (sigaction(SIGSEGV, &action, &previous) != 0) {
        report("failed: cannot install the SIGSEGV handler");
        return;
    }
    if (set_faulting(1) != 0) {
        char why[160];
        snprintf(why, sizeof why, "failed: arch_prctl(ARCH_SET_CPUID) refused (%s): this CPU or kernel has no "
                 "cpuid_fault", strerror(errno));
        sigaction(SIGSEGV, &previous, NULL);
        report(why);
        return;
    }
    report("active");
}
