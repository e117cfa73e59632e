// longnet.cpp — the whole public API: #include <longnet/longnet.hpp>.
#pragma once

#include "longnet/attention/attention.hpp"
#include "longnet/attention/dilated_attention.hpp"
#include "longnet/core/build_info.hpp"
#include "longnet/core/device.hpp"
#include "longnet/core/dtype.hpp"
#include "longnet/core/error.hpp"
#include "longnet/core/half.hpp"
#include "longnet/core/memory_pool.hpp"
#include "longnet/core/parallel.hpp"
#include "longnet/core/stream.hpp"
#include "longnet/core/tensor.hpp"
#include "longnet/io/atomic_file.hpp"
#include "longnet/io/safetensors.hpp"
#include "longnet/kernels/dilation.hpp"
