package pyexec

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Sentinel errors, one per class of failure. Every error a call returns
// (other than a *PythonError) is a *StatusError that wraps exactly one of
// them, so callers test the class with errors.Is and read the details with
// errors.As.
var (
	// ErrSessionNotFound: NOT_FOUND. The session token is unknown, expired,
	// unbound, foreign, or its worker died on an earlier call.
	ErrSessionNotFound = errors.New("pyexec: session not found")
	// ErrTimeout: DEADLINE_EXCEEDED. The deadline passed; the server
	// interrupted the Python code (a bound session keeps its state).
	ErrTimeout = errors.New("pyexec: deadline exceeded")
	// ErrCancelled: CANCELLED. The caller cancelled; the code was interrupted.
	ErrCancelled = errors.New("pyexec: cancelled")
	// ErrPoolExhausted: RESOURCE_EXHAUSTED. No worker for a Bind
	// (--max_workers), the wait queue is full, or a message is too large.
	ErrPoolExhausted = errors.New("pyexec: resource exhausted")
	// ErrInvalidArgument: INVALID_ARGUMENT. Empty code, nesting too deep, a
	// value the server refuses, or a value this client cannot convert.
	ErrInvalidArgument = errors.New("pyexec: invalid argument")
	// ErrWorkerDied: ABORTED. The worker died during the call; its session
	// is gone (later calls on it get ErrSessionNotFound).
	ErrWorkerDied = errors.New("pyexec: worker died")
	// ErrUnavailable: UNAVAILABLE. The server is draining or unreachable, or
	// (scale-out) the replica that owns the session cannot be reached.
	ErrUnavailable = errors.New("pyexec: unavailable")
	// ErrUnauthenticated: UNAUTHENTICATED. Missing or wrong credentials.
	ErrUnauthenticated = errors.New("pyexec: unauthenticated")
	// ErrPermissionDenied: PERMISSION_DENIED.
	ErrPermissionDenied = errors.New("pyexec: permission denied")
	// ErrRPC: any other gRPC status (UNKNOWN, INTERNAL, UNIMPLEMENTED, ...).
	ErrRPC = errors.New("pyexec: rpc failed")
	// ErrUnknownRef: an INVALID_ARGUMENT that names a ref the session does
	// not hold (released, made up, from another session, or sent on a
	// stateless call). It matches as well as ErrInvalidArgument; the
	// session itself is fine.
	ErrUnknownRef = errors.New("pyexec: unknown ref")
	// ErrRefLimit: a RESOURCE_EXHAUSTED because the result would take the
	// session past --max_refs_per_session live refs; Release some. It
	// matches as well as ErrPoolExhausted; nothing of that result was kept.
	ErrRefLimit = errors.New("pyexec: too many live refs")
	// ErrPython matches every *PythonError: errors.Is(err, ErrPython).
	ErrPython = errors.New("pyexec: python exception")
)

// PythonError is an exception raised by the Python code. It is a result of
// the call, not a transport failure: the session (if any) is intact.
type PythonError struct {
	Type      string // exception class name, e.g. "ZeroDivisionError"
	Message   string // str(exception)
	Traceback string // formatted traceback, with the user's source lines
	Stdout    string // output the call printed before it raised
	Stderr    string
}

func (e *PythonError) Error() string {
	if e.Message == "" {
		return e.Type
	}
	return e.Type + ": " + e.Message
}

// Is makes errors.Is(err, ErrPython) true for every Python exception.
func (e *PythonError) Is(target error) bool { return target == ErrPython }

// StatusError is a non-OK gRPC status from the server (or from the client's
// own checks, for ErrInvalidArgument before anything is sent).
type StatusError struct {
	Code    codes.Code
	Message string
	kind    error
}

func (e *StatusError) Error() string {
	return fmt.Sprintf("%v (%s: %s)", e.kind, e.Code, e.Message)
}

// Unwrap returns the sentinel of the error's class.
func (e *StatusError) Unwrap() error { return e.kind }

// Is also lets a timeout match context.DeadlineExceeded and a cancellation
// match context.Canceled, so code written against plain contexts works.
func (e *StatusError) Is(target error) bool {
	switch target {
	case context.DeadlineExceeded:
		return e.kind == ErrTimeout
	case context.Canceled:
		return e.kind == ErrCancelled
	// The server's messages for these are documented in its README; they
	// refine a code that also has other causes.
	case ErrUnknownRef:
		return e.Code == codes.InvalidArgument && strings.Contains(e.Message, "unknown ref")
	case ErrRefLimit:
		return e.Code == codes.ResourceExhausted && strings.Contains(e.Message, "max_refs_per_session")
	}
	return false
}

// GRPCStatus lets status.FromError / status.Code see the original status.
func (e *StatusError) GRPCStatus() *status.Status { return status.New(e.Code, e.Message) }

var codeKinds = map[codes.Code]error{
	codes.NotFound:          ErrSessionNotFound,
	codes.DeadlineExceeded:  ErrTimeout,
	codes.Canceled:          ErrCancelled,
	codes.ResourceExhausted: ErrPoolExhausted,
	codes.InvalidArgument:   ErrInvalidArgument,
	codes.Aborted:           ErrWorkerDied,
	codes.Unavailable:       ErrUnavailable,
	codes.Unauthenticated:   ErrUnauthenticated,
	codes.PermissionDenied:  ErrPermissionDenied,
}

// fromRPC turns an error from a generated stub into a *StatusError.
func fromRPC(err error) error {
	if err == nil {
		return nil
	}
	st, ok := status.FromError(err)
	if !ok {
		// Not a status (cannot happen with grpc-go stubs); keep it wrapped.
		return &StatusError{Code: codes.Unknown, Message: err.Error(), kind: ErrRPC}
	}
	kind, ok := codeKinds[st.Code()]
	if !ok {
		kind = ErrRPC
	}
	return &StatusError{Code: st.Code(), Message: st.Message(), kind: kind}
}

// fromCall is fromRPC for a call made with ctx. gRPC core may end a call
// as a bare CANCELLED when the server shuts down (grpc/grpc#41785): a
// CANCELLED that this client did not cause (ctx is still live) and that is
// not the server's report of an Interrupt is the retryable ErrUnavailable.
func fromCall(ctx context.Context, err error) error {
	err = fromRPC(err)
	var se *StatusError
	if errors.As(err, &se) && se.Code == codes.Canceled && ctx.Err() == nil &&
		!strings.HasPrefix(se.Message, "interrupted") {
		return &StatusError{Code: codes.Unavailable, kind: ErrUnavailable,
			Message: "the server ended the call as CANCELLED (" + se.Message +
				"), which this client did not cause: taken as UNAVAILABLE"}
	}
	return err
}

func invalidArgument(format string, args ...any) error {
	return &StatusError{Code: codes.InvalidArgument, Message: fmt.Sprintf(format, args...), kind: ErrInvalidArgument}
}

func isErr(err, target error) bool { return errors.Is(err, target) }
