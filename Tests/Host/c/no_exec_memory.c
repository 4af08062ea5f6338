/* An LD_PRELOAD stand-in for a host that forbids writable-then-executable memory (SELinux deny_execmem,
 * PaX MPROTECT): anonymous executable mappings and every mprotect adding PROT_EXEC fail with EACCES, as the
 * kernel answers there. oneDNN generates its GEMM kernels at run time, so it cannot run; the engine must
 * compute the products on OpenBLAS. Prints how many requests it refused at exit, so the test knows oneDNN
 * tried. */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <sys/mman.h>

static atomic_long refused;

void *mmap(void *address, size_t length, int protection, int flags, int fd, off_t offset) {
    static void *(*real)(void *, size_t, int, int, int, off_t);
    if (!real) real = (void *(*)(void *, size_t, int, int, int, off_t))dlsym(RTLD_NEXT, "mmap");
    if ((protection & PROT_EXEC) && (flags & MAP_ANONYMOUS)) {
        atomic_fetch_add(&refused, 1);
        errno = EACCES;
        return MAP_FAILED;
    }
    return real(address, length, protection, flags, fd, offset);
}

void *mmap64(void *address, size_t length, int protection, int flags, int fd, off_t offset) {
    return mmap(address, length, protection, flags, fd, offset);
}

int mprotect(void *address, size_t length, int protection) {
    static int (*real)(void *, size_t, int);
    if (!real) real = (int (*)(void *, size_t, int))dlsym(RTLD_NEXT, "mprotect");
    if (protection & PROT_EXEC) {
        atomic_fetch_add(&refused, 1);
        errno = EACCES;
        return -1;
    }
    return real(address, length, protection);
}

__attribute__((destructor)) static void report(void) {
    fprintf(stderr, "no_exec_memory: refused %ld executable mappings\n", atomic_load(&refused));
}
