/* The wire format is header-only; this unit makes SwiftPM build the target
 * and compiles the header's layout assertions once. */
#include "sluice_wire.h"
