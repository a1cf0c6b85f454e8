#ifndef PYEXEC_COMMON_BACKGROUND_JOB_H_
#define PYEXEC_COMMON_BACKGROUND_JOB_H_

#include <functional>
#include <string>
#include <thread>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace pyexec {

// A job that runs on a thread of its own, so that a slow job (a zygote
// restart, a credentials file on a slow volume) never delays another (a
// session's expiry).
//
// `run` runs first `interval` after construction, then again after the
// duration it returned, at most `interval` later, and at once after Wake().
// It returns absl::InfiniteDuration() to keep the plain interval. A duration
// and not a time, so that a job keeping its own clock (the session table's
// is CLOCK_MONOTONIC) cannot hand back a deadline on another clock: a
// monotonic time read as a wall-clock one lies decades in the past and made
// the job run back to back. The destructor
// stops the thread and waits for a run in progress.
//
// Wake() only takes the job's own mutex, which is never held while `run`
// runs: it may be called from under any lock, including one that `run` takes.
class BackgroundJob {
 public:
  BackgroundJob(std::string name, absl::Duration interval, std::function<absl::Duration()> run);
  ~BackgroundJob();
  BackgroundJob(const BackgroundJob&) = delete;
  BackgroundJob& operator=(const BackgroundJob&) = delete;

  void Wake();

 private:
  void Loop();

  const std::string name_;
  const absl::Duration interval_;
  const std::function<absl::Duration()> run_;
  absl::Mutex mu_;
  bool stop_ ABSL_GUARDED_BY(mu_) = false;
  bool woken_ ABSL_GUARDED_BY(mu_) = false;
  std::thread thread_;  // last: starts once the fields above exist
};

}  // namespace pyexec

#endif  // PYEXEC_COMMON_BACKGROUND_JOB_H_
