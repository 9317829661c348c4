/*
 * testing.h: `tycho test` (run an app's *_test.lua files in-process) and
 * `tycho new` (write a starter app). Main thread.
 */
#ifndef TYCHO_TESTING_H
#define TYCHO_TESTING_H

#include "core/config.h"

/*
 * Runs the tests; prints a line per test and `N passed, M failed`. Exit
 * status: 0 all passed, 1 otherwise.
 */
int tycho_test_run(const struct tycho_config *cfg);

/* Makes NAME with app.lua, tests/app_test.lua and README.md. Exit status 0, or 1 (printed why). */
int tycho_new_app(const char *name);

#endif
