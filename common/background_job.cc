#include "common/background_job.h"

#include <algorithm>
#include <utility>

#include "absl/time/clock.h"
#include "common/thread_name.h"

namespace pyexec {

BackgroundJob::BackgroundJob(std::string name, absl::Duration interval,
                             std::function<absl::Duration()> run)
    : name_(std::move(name)), interval_(interval), run_(std::move(run)),
      thread_([this] { Loop(); }) {}

BackgroundJob::~BackgroundJob() {
  {
    absl::MutexLock lock(&mu_);
    stop_ = true;
  }
  thread_.join();
}

void BackgroundJob::Wake() {
  absl::MutexLock lock(&mu_);
  woken_ = true;
}

void BackgroundJob::Loop() {
  // pthread names hold 15 characters.
  NameThisThread(name_.substr(0, 15).c_str());
  absl::Duration wait = interval_;
  while (true) {
    {
      absl::MutexLock lock(&mu_);
      auto stopped_or_woken = [this]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) {
        return stop_ || woken_;
      };
      mu_.AwaitWithTimeout(absl::Condition(&stopped_or_woken), wait);
      if (stop_) return;
      woken_ = false;
    }
    wait = std::clamp(run_(), absl::ZeroDuration(), interval_);
  }
}

}  // namespace pyexec
