#include "context_pool/death_cause.h"

namespace pyexec {

const char* DeathCauseLabel(DeathCause cause) {
  switch (cause) {
    case DeathCause::kExit:
      return "exit";
    case DeathCause::kSignal:
      return "signal";
    case DeathCause::kProtocolError:
      return "protocol_error";
    case DeathCause::kKillGrace:
      return "kill_grace";
    case DeathCause::kStartupTimeout:
      return "startup_timeout";
    case DeathCause::kDiskCap:
      return "disk_cap";
  }
  return "exit";
}

}  // namespace pyexec
