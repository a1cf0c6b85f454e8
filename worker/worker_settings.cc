#include "worker/worker_settings.h"

#include "common/limits.h"
#include "worker/confinement.h"

namespace pyexec {

internal::WorkerSettings DefaultWorkerSettings() {
  internal::WorkerSettings settings;
  settings.set_max_output_bytes(kDefaultMaxOutputBytes);
  settings.set_max_value_depth(kDefaultMaxValueDepth);
  settings.set_max_frame_bytes(kDefaultMaxFrameBytes);
  settings.set_max_response_bytes(kDefaultMaxMessageBytes);
  *settings.mutable_confinement() = DefaultConfinement();
  return settings;
}

}  // namespace pyexec
