/* The choice of the kernel table: which instruction sets this CPU runs, narrowest first, and
 * the widest of them, capped by FASTLSTM_SIMD=portable|avx2 (for tests and comparisons).
 * Adding an instruction set is adding its file, which fills an fl_simd_table, and its line
 * in find_usable below. */
#include "fastlstm.h"
#include "fl_simd_internal.h"

#include <stdlib.h>
#include <string.h>

extern const fl_simd_table fl_simd_portable;
#if FL_SIMD_X86
extern const fl_simd_table fl_simd_avx2, fl_simd_avx512;
#define CPU_HAS(feature) __builtin_cpu_supports(feature)
#endif

#define FL_SIMD_TABLES_MAX 8

static const fl_simd_table *usable[FL_SIMD_TABLES_MAX];
static int n_usable = 0;

/* Each line: a table and the CPU features its target attributes name. */
static void find_usable(void)
{
    int n = 0;
    usable[n++] = &fl_simd_portable;
#if FL_SIMD_X86
    __builtin_cpu_init();
    if (CPU_HAS("avx2") && CPU_HAS("fma")) usable[n++] = &fl_simd_avx2;
    if (CPU_HAS("avx2") && CPU_HAS("fma") && CPU_HAS("avx512f")) usable[n++] = &fl_simd_avx512;
#endif
    n_usable = n;
}

const fl_simd_table *fl_simd_usable(int i)
{
    if (n_usable == 0) find_usable();
    return i >= 0 && i < n_usable ? usable[i] : NULL;
}

const fl_simd_table *fl_simd(void)
{
    static const fl_simd_table *chosen = NULL;
    if (!chosen) {
        const char *cap = getenv("FASTLSTM_SIMD");
        const fl_simd_table *pick = fl_simd_usable(0), *t;
        int i;
        for (i = 1; (t = fl_simd_usable(i)) != NULL; i++) {
            if (cap && strcmp(cap, pick->name) == 0) break;   /* capped at pick */
            pick = t;
        }
        chosen = pick;
    }
    return chosen;
}

int fl_cpu_runs_table(void) { return 1; }

const fl_qkernel *fl_qtile_kernel(const fl_simd_table *table, int precision, int i)
{
    const fl_qkernel *k;
    if (precision <= FL_PREC_FLOAT32 || precision >= FL_PRECISIONS) return NULL;
    for (k = table->quantized[precision]; k->tile != NULL; k++)
        if (k->usable() && i-- == 0) return k;
    return NULL;
}

const char *fl_simd_name(void) { return fl_simd()->name; }

int fl_cpu_has_avx2_fma(void)
{
#if FL_SIMD_X86
    __builtin_cpu_init();
    return CPU_HAS("avx2") && CPU_HAS("fma");
#else
    return 0;
#endif
}
