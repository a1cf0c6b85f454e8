#ifndef PYEXEC_WORKER_WORKER_SETTINGS_H_
#define PYEXEC_WORKER_WORKER_SETTINGS_H_

// The settings a worker runs with when nobody says otherwise: the default
// limits of common/limits.h and the default confinement (the seccomp
// filter only). pyexecd starts from them and fills in its flags.

#include "pyexec/v1/worker.pb.h"

namespace pyexec {

internal::WorkerSettings DefaultWorkerSettings();

}  // namespace pyexec

#endif  // PYEXEC_WORKER_WORKER_SETTINGS_H_
