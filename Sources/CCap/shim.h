/* libcap, found through pkg-config (Debian: libcap-dev). */
#include <sys/capability.h>
#include <sys/prctl.h>
