/*
 * harness.h: the tiny test harness shared by the C test suites (unit and
 * integration). Single-threaded use only. Each suite calls the checks below
 * and ends main() with `return test_summary();`, which prints the line
 * `N passed, M failed` and returns the process exit status.
 */
#ifndef TYCHO_HARNESS_H
#define TYCHO_HARNESS_H

#include <stdio.h>
#include <string.h>

static int test_passed_count, test_failed_count;

/* Records one check; prints failures with file:line so they can be found. */
static inline int test_check(int cond, const char *file, int line, const char *what)
{
    if (cond) {
        test_passed_count++;
    } else {
        test_failed_count++;
        printf("FAIL %s:%d: %s\n", file, line, what);
    }
    fflush(stdout);
    return cond;
}

#define ok(cond, what) test_check(!!(cond), __FILE__, __LINE__, (what))

#define is_int(got, want, what)                                                              \
    do {                                                                                     \
        long long g_ = (long long)(got), w_ = (long long)(want);                             \
        if (!test_check(g_ == w_, __FILE__, __LINE__, (what)))                               \
            printf("     got %lld, want %lld\n", g_, w_);                                    \
    } while (0)

#define is_str(got, want, what)                                                              \
    do {                                                                                     \
        const char *g_ = (got), *w_ = (want);                                                \
        if (!test_check(g_ && w_ && strcmp(g_, w_) == 0, __FILE__, __LINE__, (what)))        \
            printf("     got \"%s\", want \"%s\"\n", g_ ? g_ : "(null)", w_ ? w_ : "(null)"); \
    } while (0)

/* Prints the summary line and returns the exit status for main(). */
static inline int test_summary(void)
{
    printf("%d passed, %d failed\n", test_passed_count, test_failed_count);
    return test_failed_count ? 1 : 0;
}

#endif
