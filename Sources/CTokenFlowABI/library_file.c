#define _GNU_SOURCE
#include <dlfcn.h>
#include <stddef.h>

#include "library_file.h"

const char *tokenflow_library_file(void) {
    Dl_info info;
    if (dladdr((const void *)&tokenflow_library_file, &info) == 0) return NULL;
    return info.dli_fname;
}
