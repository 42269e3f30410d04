/* Makes a process (and the processes it starts) see an AVX2-only x86-64 CPU on a host with AVX-512/AMX, so
 * a benchmark measures the code paths an AVX2-only host runs (issue 22). Loaded with LD_PRELOAD by
 * bench/as_host.py, which builds it.
 *
 * How: arch_prctl(ARCH_SET_CPUID, 0) makes the CPUID instruction fault (Linux, CPUs with `cpuid_fault`);
 * the SIGSEGV handler runs CPUID for the program with faulting briefly off, clears the AVX-512, AVX-VNNI and
 * AMX bits (leaf 7) and their XSAVE state components (leaf 0xD), and steps over the instruction. The setting
 * survives fork and clone, and each exec'd program loads this library again. Every library that picks its
 * kernels by CPUID at run time (numpy, torch/ATen, oneDNN, MKL, ONNX Runtime's MLAS) then picks AVX2 ones;
 * glibc's own string functions read CPUID before this library loads, so bench/as_host.py masks them with
 * GLIBC_TUNABLES. Memory bandwidth, caches and clocks stay this host's.
 *
 * A program's own SIGSEGV handler (Python's faulthandler) is kept behind this one and called for real
 * faults; without one, a real fault kills the process as before. */
#define _GNU_SOURCE
#include <asm/prctl.h>
#include <cpuid.h>
#include <dlfcn.h>
#include <signal.h>
#include <string.h>
#include <sys/syscall.h>
#include <ucontext.h>
#include <unistd.h>

typedef int (*sigaction_fn)(int, const struct sigaction *, struct sigaction *);

static struct sigaction next_segv; /* what the program asked for SIGSEGV */
static int next_set;

static sigaction_fn real_sigaction(void) {
    static sigaction_fn real;
    if (!real) real = (sigaction_fn)dlsym(RTLD_NEXT, "sigaction");
    return real;
}

static long cpuid_faults(int on) { return syscall(SYS_arch_prctl, ARCH_SET_CPUID, on ? 0 : 1); }

static void mask(unsigned leaf, unsigned sub, unsigned *a, unsigned *b, unsigned *c, unsigned *d) {
    if (leaf == 7 && sub == 0) {
        /* AVX512 F DQ IFMA PF ER CD BW VL */
        *b &= ~((1u << 16) | (1u << 17) | (1u << 21) | (1u << 26) | (1u << 27) | (1u << 28) | (1u << 30) | (1u << 31));
        /* AVX512 VBMI VBMI2 VNNI BITALG VPOPCNTDQ */
        *c &= ~((1u << 1) | (1u << 6) | (1u << 11) | (1u << 12) | (1u << 14));
        /* AVX512 4VNNIW 4FMAPS VP2INTERSECT, AMX-BF16, AVX512-FP16, AMX-TILE, AMX-INT8 */
        *d &= ~((1u << 2) | (1u << 3) | (1u << 8) | (1u << 22) | (1u << 23) | (1u << 24) | (1u << 25));
    } else if (leaf == 7 && sub == 1) {
        *a &= ~((1u << 4) | (1u << 5)); /* AVX-VNNI, AVX512-BF16 */
    } else if (leaf == 0xd && sub == 0) {
        *a &= ~((1u << 5) | (1u << 6) | (1u << 7) | (1u << 17) | (1u << 18)); /* opmask, ZMM, AMX tiles */
    }
    (void)d;
}

static void on_segv(int sig, siginfo_t *info, void *ctx) {
    greg_t *r = ((ucontext_t *)ctx)->uc_mcontext.gregs;
    const unsigned char *ip = (const unsigned char *)r[REG_RIP];
    if (ip[0] == 0x0f && ip[1] == 0xa2) { /* a faulted CPUID */
        unsigned leaf = (unsigned)r[REG_RAX], sub = (unsigned)r[REG_RCX], a, b, c, d;
        cpuid_faults(0);
        __cpuid_count(leaf, sub, a, b, c, d);
        cpuid_faults(1);
        mask(leaf, sub, &a, &b, &c, &d);
        r[REG_RAX] = a, r[REG_RBX] = b, r[REG_RCX] = c, r[REG_RDX] = d;
        r[REG_RIP] += 2;
        return;
    }
    if (next_set && (next_segv.sa_flags & SA_SIGINFO) && next_segv.sa_sigaction) {
        next_segv.sa_sigaction(sig, info, ctx);
    } else if (next_set && next_segv.sa_handler != SIG_DFL && next_segv.sa_handler != SIG_IGN) {
        next_segv.sa_handler(sig);
    } else { /* a real fault and no handler of the program's: returning re-runs it and it kills as before */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        real_sigaction()(SIGSEGV, &dfl, NULL);
    }
}

int sigaction(int sig, const struct sigaction *act, struct sigaction *old) {
    if (sig != SIGSEGV) return real_sigaction()(sig, act, old);
    if (old) {
        if (next_set) *old = next_segv;
        else memset(old, 0, sizeof *old), old->sa_handler = SIG_DFL;
    }
    if (act) next_segv = *act, next_set = 1;
    return 0;
}

sighandler_t signal(int sig, sighandler_t handler) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = SA_RESTART;
    return sigaction(sig, &act, &old) == 0 ? old.sa_handler : SIG_ERR;
}

__attribute__((constructor)) static void start(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_segv;
    sa.sa_flags = SA_SIGINFO | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    if (real_sigaction()(SIGSEGV, &sa, NULL) == 0) cpuid_faults(1);
}
