// A device timeline of any CUDA program, without Nsight Systems (which the lent GPU machines
// cannot run): loaded by the CUDA driver through CUDA_INJECTION64_PATH, it records every
// kernel, memset and memcpy with its device start and end, and every runtime and driver API
// call with its host start and end (CUPTI's activity API; both clocks are CUPTI's), and
// writes them as CSV to $LONGNET_TIMELINE (default timeline.csv) when the program exits.
// scripts/gpu/timeline.py reads the CSV: where the device sat idle between launches and
// whether the host was late (the launch call began after the device ran dry) or not.
//   LONGNET_TIMELINE_API=0  leaves the API calls out (less host overhead; no gap causes).
//   LONGNET_TIMELINE_MEMORY=1  adds every allocation and free (A, F rows, with the stream-
//     ordered pool's size and use after it) and the pools' own operations (P rows: created,
//     trimmed, ...): whether a slow cudaMallocFromPoolAsync grew the pool.
// Build: scripts/gpu/timeline/build.sh. A diagnostic tool, not part of the library.
#include <cupti.h>
#include <cxxabi.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <vector>

namespace {

struct Row {
  char kind;  // K kernel, S memset, C memcpy, R runtime API, D driver API, A/F allocation/free, P pool
  std::uint64_t start, end;
  std::uint32_t correlation, stream;
  std::string name;
  std::uint64_t bytes;
};

std::mutex rows_mutex;
std::vector<Row> rows;
constexpr std::size_t kBufferBytes = 8u << 20;

void check(CUptiResult result, const char* what) {
  if (result == CUPTI_SUCCESS) return;
  const char* text = nullptr;
  cuptiGetResultString(result, &text);
  std::fprintf(stderr, "cupti_timeline: %s failed: %s\n", what, text ? text : "?");
}

std::string demangled(const char* name) {
  if (name == nullptr) return "?";
  int status = 0;
  char* plain = abi::__cxa_demangle(name, nullptr, nullptr, &status);
  std::string out = status == 0 && plain ? plain : name;
  std::free(plain);
  for (char& c : out)
    if (c == ',' || c == '\n') c = ';';  // one CSV field
  return out;
}

std::string api_name(CUpti_CallbackDomain domain, std::uint32_t cbid) {
  const char* name = nullptr;
  if (cuptiGetCallbackName(domain, cbid, &name) != CUPTI_SUCCESS || name == nullptr)
    return "cbid" + std::to_string(cbid);
  return name;
}

void CUPTIAPI buffer_requested(std::uint8_t** buffer, std::size_t* size, std::size_t* max_records) {
  *buffer = static_cast<std::uint8_t*>(std::aligned_alloc(8, kBufferBytes));
  *size = kBufferBytes;
  *max_records = 0;
}

void CUPTIAPI buffer_completed(CUcontext, std::uint32_t, std::uint8_t* buffer, std::size_t, std::size_t valid) {
  std::vector<Row> got;
  CUpti_Activity* record = nullptr;
  while (cuptiActivityGetNextRecord(buffer, valid, &record) == CUPTI_SUCCESS) {
    switch (record->kind) {
      case CUPTI_ACTIVITY_KIND_KERNEL:
      case CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL: {
        const auto* k = reinterpret_cast<const CUpti_ActivityKernel10*>(record);
        got.push_back({'K', k->start, k->end, k->correlationId, k->streamId, demangled(k->name), 0});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMSET: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemset4*>(record);
        got.push_back({'S', m->start, m->end, m->correlationId, m->streamId, "memset", m->bytes});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMCPY: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemcpy6*>(record);
        got.push_back({'C', m->start, m->end, m->correlationId, m->streamId,
                       "memcpy kind " + std::to_string(m->copyKind), m->bytes});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMORY2: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemory4*>(record);
        const bool allocation = m->memoryOperationType == CUPTI_ACTIVITY_MEMORY_OPERATION_TYPE_ALLOCATION;
        got.push_back({allocation ? 'A' : 'F', m->timestamp, m->timestamp, m->correlationId, m->streamId,
                       "pool size " + std::to_string(m->memoryPoolConfig.pool.size) + " used " +
                           std::to_string(m->memoryPoolConfig.utilizedSize),
                       m->bytes});
        break;
      }
      case CUPTI_ACTIVITY_KIND_MEMORY_POOL: {
        const auto* m = reinterpret_cast<const CUpti_ActivityMemoryPool3*>(record);
        got.push_back({'P', m->timestamp, m->timestamp, m->correlationId, 0,
                       "pool operation " + std::to_string(static_cast<int>(m->memoryPoolOperationType)) + " size " +
                           std::to_string(m->size) + " used " + std::to_string(m->utilizedSize),
                       m->size});
        break;
      }
      case CUPTI_ACTIVITY_KIND_RUNTIME:
      case CUPTI_ACTIVITY_KIND_DRIVER: {
        const auto* a = reinterpret_cast<const CUpti_ActivityAPI*>(record);
        const bool runtime = record->kind == CUPTI_ACTIVITY_KIND_RUNTIME;
        got.push_back({runtime ? 'R' : 'D', a->start, a->end, a->correlationId, 0,
                       api_name(runtime ? CUPTI_CB_DOMAIN_RUNTIME_API : CUPTI_CB_DOMAIN_DRIVER_API, a->cbid), 0});
        break;
      }
      default:
        break;
    }
  }
  std::size_t dropped = 0;
  cuptiActivityGetNumDroppedRecords(nullptr, 0, &dropped);
  if (dropped > 0) std::fprintf(stderr, "cupti_timeline: %zu records dropped\n", dropped);
  std::free(buffer);
  const std::lock_guard<std::mutex> lock(rows_mutex);
  rows.insert(rows.end(), got.begin(), got.end());
}

void write_rows() {
  check(cuptiActivityFlushAll(1), "cuptiActivityFlushAll");
  const char* path = std::getenv("LONGNET_TIMELINE");
  if (path == nullptr || *path == '\0') path = "timeline.csv";
  std::FILE* out = std::fopen(path, "w");
  if (out == nullptr) {
    std::fprintf(stderr, "cupti_timeline: cannot write %s\n", path);
    return;
  }
  const std::lock_guard<std::mutex> lock(rows_mutex);
  std::fprintf(out, "kind,start_ns,end_ns,correlation,stream,bytes,name\n");
  for (const Row& r : rows)
    std::fprintf(out, "%c,%llu,%llu,%u,%u,%llu,%s\n", r.kind, static_cast<unsigned long long>(r.start),
                 static_cast<unsigned long long>(r.end), r.correlation, r.stream,
                 static_cast<unsigned long long>(r.bytes), r.name.c_str());
  std::fclose(out);
  std::fprintf(stderr, "cupti_timeline: %zu records -> %s\n", rows.size(), path);
}

}  // namespace

// The CUDA driver calls this once, when it loads the library named by CUDA_INJECTION64_PATH.
extern "C" int InitializeInjection() {
  check(cuptiActivityRegisterCallbacks(buffer_requested, buffer_completed), "cuptiActivityRegisterCallbacks");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_CONCURRENT_KERNEL), "enable kernels");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMSET), "enable memsets");
  check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMCPY), "enable memcpys");
  const char* api = std::getenv("LONGNET_TIMELINE_API");
  if (api == nullptr || std::strcmp(api, "0") != 0) {
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_RUNTIME), "enable runtime API");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_DRIVER), "enable driver API");
  }
  const char* memory = std::getenv("LONGNET_TIMELINE_MEMORY");
  if (memory != nullptr && std::strcmp(memory, "1") == 0) {
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMORY2), "enable memory");
    check(cuptiActivityEnable(CUPTI_ACTIVITY_KIND_MEMORY_POOL), "enable memory pools");
  }
  std::atexit(write_rows);
  return 1;
}
