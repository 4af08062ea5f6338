#ifndef TOKENFLOW_LIBRARY_FILE_H
#define TOKENFLOW_LIBRARY_FILE_H

/* Path of the shared object this code is linked into (as the dynamic loader opened it), or NULL.
 * In C because dladdr needs _GNU_SOURCE, which Swift's Glibc module is not built with.
 * Not exported: the name is outside the version script's tf_* pattern. */
const char *tokenflow_library_file(void);

#endif
