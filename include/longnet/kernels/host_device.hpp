// LONGNET_HOST_DEVICE marks the inline functions that host and device code share (the
// pattern math, the clip factor), so the two compute the same bits from one definition.
#pragma once

#if defined(__CUDACC__)
#define LONGNET_HOST_DEVICE __host__ __device__
#else
#define LONGNET_HOST_DEVICE
#endif
