/* inc/types.h - fixed-width integer types for the freestanding i386 kernel (no libc). */
#ifndef KDIAG_I386_TYPES_H
#define KDIAG_I386_TYPES_H

#ifndef NULL
#define NULL ((void *) 0)
#endif

typedef _Bool bool;
enum { false, true };

typedef signed char int8_t;
typedef unsigned char uint8_t;
typedef short int16_t;
typedef unsigned short uint16_t;
typedef int int32_t;
typedef unsigned int uint32_t;
typedef long long int64_t;
typedef unsigned long long uint64_t;

typedef int32_t intptr_t;
typedef uint32_t uintptr_t;
typedef uint32_t physaddr_t;
typedef uint32_t size_t;
typedef int32_t ssize_t;
typedef int32_t off_t;

#define MIN(_a, _b) ((_a) <= (_b) ? (_a) : (_b))
#define ROUNDDOWN(a, n) ((uint32_t) (a) - (uint32_t) (a) % (n))
#define ROUNDUP(a, n) ROUNDDOWN((uint32_t) (a) + (n) - 1, (n))
#define offsetof(type, member) ((size_t) (&((type *) 0)->member))

#endif
